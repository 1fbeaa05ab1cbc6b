using System.Runtime.InteropServices;
using FiberCuda.Runtime;

namespace FiberCuda.Native;

/// <summary>
/// The one place that finds and loads CUDA shared libraries, by logical name: "cuda", "nvrtc", "cublas", "cublasLt".
/// Versioned sonames only (the unversioned names exist only where -dev symlinks are installed). Folders are tried
/// in order: FIBER_CUDA_LIB_DIR (':'-separated), CUDA_PATH/CUDA_HOME lib64, /usr/local/cuda, /usr/local/nvidia,
/// Python wheel folders (site-packages/nvidia/*/lib), then the default loader path. A path with "/stubs/" is never
/// loaded: the toolkit's link stub of libcuda answers every call with CUDA_ERROR_STUB_LIBRARY.
/// </summary>
public static class CudaLibraryResolver
{
    public static readonly string[] LogicalNames = ["cuda", "nvrtc", "cublas", "cublasLt"];

    /// <summary>Sonames to try, newest first.</summary>
    public static IReadOnlyList<string> Sonames(string logical) => logical switch
    {
        "cuda" => ["libcuda.so.1"],
        // CUDA 11.2..11.8 all ship soname 11.2.
        "nvrtc" => ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2"],
        "cublas" => ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11"],
        "cublasLt" => ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11"],
        _ => throw new ArgumentException($"unknown CUDA library '{logical}'", nameof(logical)),
    };

    public static bool IsStubPath(string path) => path.Replace('\\', '/').Contains("/stubs/", StringComparison.Ordinal);

    /// <summary>Roots under which Python installs packages (wheels put CUDA libs in site-packages/nvidia/*/lib).</summary>
    public static IEnumerable<string> DefaultPythonPackageRoots(Func<string, string?> env)
    {
        var home = env("HOME");
        var patterns = new List<(string dir, string sub)>
        {
            ("/usr/lib", "dist-packages"), ("/usr/local/lib", "dist-packages"), ("/usr/local/lib", "site-packages"),
            ("/usr/lib", "site-packages"),
        };
        if (!string.IsNullOrEmpty(home)) patterns.Add((Path.Combine(home, ".local/lib"), "site-packages"));
        foreach (var venvVar in new[] { "VIRTUAL_ENV", "CONDA_PREFIX" })
            if (env(venvVar) is { Length: > 0 } v) patterns.Add((Path.Combine(v, "lib"), "site-packages"));
        // Virtual environments under /opt (the GPU machine's torch lives in /opt/torch/.venv).
        foreach (var opt in SafeDirs("/opt"))
            foreach (var venv in new[] { ".venv", "venv" })
                patterns.Add((Path.Combine(opt, venv, "lib"), "site-packages"));

        foreach (var (dir, sub) in patterns)
            foreach (var py in SafeDirs(dir).Where(d => Path.GetFileName(d).StartsWith("python3", StringComparison.Ordinal))
                                            .OrderByDescending(d => d, StringComparer.Ordinal))
            {
                var root = Path.Combine(py, sub);
                if (Directory.Exists(root)) yield return root;
            }
    }

    /// <summary>Folders to search, in order, without duplicates. Pure apart from directory listing, so tests can use temp folders.</summary>
    public static IReadOnlyList<string> SearchDirectories(Func<string, string?> env, IEnumerable<string>? pythonRoots = null)
    {
        var dirs = new List<string>();
        void Add(string? d)
        {
            if (string.IsNullOrWhiteSpace(d)) return;
            d = d.TrimEnd('/');
            if (d.Length == 0 || IsStubPath(d + "/") || dirs.Contains(d)) return;
            dirs.Add(d);
        }
        foreach (var d in (env("FIBER_CUDA_LIB_DIR") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)) Add(d);
        foreach (var v in new[] { "CUDA_PATH", "CUDA_HOME" })
            if (env(v) is { Length: > 0 } root)
            {
                Add(Path.Combine(root, "lib64"));
                Add(Path.Combine(root, "targets/x86_64-linux/lib"));
                Add(Path.Combine(root, "lib"));
            }
        Add("/usr/local/cuda/lib64");
        Add("/usr/local/cuda/targets/x86_64-linux/lib");
        Add("/usr/local/nvidia/lib64");
        Add("/usr/local/nvidia/lib");
        foreach (var root in pythonRoots ?? DefaultPythonPackageRoots(env))
        {
            var nv = Path.Combine(root, "nvidia");
            // CUDA 13 wheels: nvidia/cu13/lib; CUDA 12 wheels: nvidia/<component>/lib.
            foreach (var comp in SafeDirs(nv).OrderBy(d => d, StringComparer.Ordinal))
                Add(Path.Combine(comp, "lib"));
        }
        return dirs;
    }

    /// <summary>Existing files to try for <paramref name="logical"/>: folder order first, then newest soname.</summary>
    public static IReadOnlyList<string> CandidatePaths(string logical, IReadOnlyList<string> dirs, Func<string, bool>? fileExists = null)
    {
        fileExists ??= File.Exists;
        var result = new List<string>();
        foreach (var dir in dirs)
            foreach (var so in Sonames(logical))
            {
                var p = Path.Combine(dir, so);
                if (!IsStubPath(p) && fileExists(p)) result.Add(p);
            }
        return result;
    }

    /// <summary>The NVRTC builtins library next to a given libnvrtc, if any (NVRTC dlopens it by soname at compile time).</summary>
    public static string? FindNvrtcBuiltins(string nvrtcPath)
    {
        var dir = Path.GetDirectoryName(nvrtcPath);
        if (dir is null || !Directory.Exists(dir)) return null;
        return Directory.EnumerateFiles(dir, "libnvrtc-builtins.so.*")
            .Where(f => !IsStubPath(f))
            .OrderBy(f => Path.GetFileName(f).Length).ThenByDescending(f => f, StringComparer.Ordinal)
            .FirstOrDefault();
    }

    static IEnumerable<string> SafeDirs(string dir)
    {
        try { return Directory.Exists(dir) ? Directory.GetDirectories(dir) : []; }
        catch (Exception) { return []; }
    }

    // ---------------- loading ----------------

    static readonly object Gate = new();
    static readonly Dictionary<string, (nint handle, string path)> Loaded = new();
    static readonly Dictionary<string, string> Failed = new();

    /// <summary>Where a logical library was loaded from (null until loaded).</summary>
    public static string? LoadedPath(string logical)
    {
        lock (Gate) return Loaded.TryGetValue(logical, out var l) ? l.path : null;
    }

    /// <summary>Loads (once) and returns the handle, or throws <see cref="GpuNotAvailableException"/>.</summary>
    public static nint Load(string logical)
    {
        lock (Gate)
        {
            if (Loaded.TryGetValue(logical, out var l)) return l.handle;
            if (Failed.TryGetValue(logical, out var why)) throw new GpuNotAvailableException(why);
            try
            {
                var (h, p) = LoadUncached(logical);
                Loaded[logical] = (h, p);
                return h;
            }
            catch (GpuNotAvailableException e)
            {
                Failed[logical] = e.Message;
                throw;
            }
        }
    }

    public static bool TryLoad(string logical, out nint handle, out string reason)
    {
        try { handle = Load(logical); reason = ""; return true; }
        catch (GpuNotAvailableException e) { handle = 0; reason = e.Message; return false; }
    }

    static (nint, string) LoadUncached(string logical)
    {
        var dirs = SearchDirectories(Environment.GetEnvironmentVariable);
        // cuBLAS needs cuBLASLt of the same major: prefer the folder cuBLASLt came from.
        if (logical == "cublas" && LoadedPath("cublasLt") is { } ltPath)
            dirs = [Path.GetDirectoryName(ltPath)!, .. dirs];
        if (logical == "cublasLt" && LoadedPath("cublas") is { } blasPath)
            dirs = [Path.GetDirectoryName(blasPath)!, .. dirs];

        var errors = new List<string>();
        foreach (var path in CandidatePaths(logical, dirs))
        {
            if (logical == "nvrtc" && FindNvrtcBuiltins(path) is { } builtins)
                NativeLibrary.TryLoad(builtins, out _); // best effort; NVRTC reports its own error if still missing
            if (NativeLibrary.TryLoad(path, out var h)) return (h, path);
            errors.Add(path);
        }
        foreach (var so in Sonames(logical))
            if (NativeLibrary.TryLoad(so, out var h)) return (h, so);

        var tried = string.Join(", ", Sonames(logical));
        var msg = $"CUDA library '{logical}' not found (tried {tried} in {dirs.Count} folders and the default loader path" +
                  (errors.Count > 0 ? $"; present but failed to load: {string.Join(", ", errors)}" : "") + "). " +
                  GpuNotAvailableException.InstallHint(logical);
        throw new GpuNotAvailableException(msg);
    }

    /// <summary>An exported symbol or a clear error naming the library and symbol.</summary>
    public static nint Export(string logical, nint handle, string symbol)
    {
        if (NativeLibrary.TryGetExport(handle, symbol, out var p)) return p;
        throw new GpuNotAvailableException(
            $"symbol {symbol} not found in {LoadedPath(logical) ?? logical}: the library is too old for FiberCuda. " +
            GpuNotAvailableException.InstallHint(logical));
    }

    public static nint TryExport(nint handle, string symbol) =>
        NativeLibrary.TryGetExport(handle, symbol, out var p) ? p : 0;
}
