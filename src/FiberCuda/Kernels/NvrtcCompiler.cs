using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using FiberCuda.Native;

namespace FiberCuda.Kernels;

/// <summary>Output of one NVRTC compile: a CUBIN (preferred) or NUL-terminated PTX for cuModuleLoadData.</summary>
public sealed record CompiledKernel(string File, byte[] Image, bool IsCubin, string Arch, string Log, bool FromCache, string CacheKey);

/// <summary>A kernel failed to compile; carries the file, the first error line and NVRTC's full log.</summary>
public sealed class KernelCompileException : Exception
{
    public string File { get; }
    /// <summary>File named by the first error (a header when the error is in one).</summary>
    public string? ErrorFile { get; }
    public int? Line { get; }
    public string Log { get; }

    public KernelCompileException(string file, string arch, string? errorFile, int? line, string firstError, string log)
        : base($"NVRTC could not compile kernels/{file} for {arch}" +
               (line is null ? "" : $" at {errorFile}:{line}") +
               (firstError.Length > 0 ? $": {firstError}" : "") + $"\n--- NVRTC log ---\n{log.TrimEnd()}")
    {
        File = file; ErrorFile = errorFile; Line = line; Log = log;
    }
}

/// <summary>
/// Compiles kernels/*.cu with NVRTC. CUBIN for the device's sm_XX (no driver JIT, no PTX-version trap); PTX for
/// compute_XX only when this NVRTC cannot target the SM. Never --use_fast_math (GELU needs exact erf).
/// Results are cached on disk under FIBER_KERNEL_CACHE or ~/.cache/fibercuda/kernels, keyed by SHA-256 of
/// (source + headers, options, arch, NVRTC version).
/// </summary>
public sealed unsafe partial class NvrtcCompiler
{
    static readonly Lazy<NvrtcCompiler> SharedLazy = new(() => new NvrtcCompiler());
    /// <summary>The process-wide compiler (throws <see cref="Runtime.GpuNotAvailableException"/> without NVRTC).</summary>
    public static NvrtcCompiler Shared => SharedLazy.Value;

    public (int Major, int Minor) Version { get; }
    /// <summary>SMs this NVRTC emits CUBIN for (empty = unknown: we try CUBIN and fall back to PTX).</summary>
    public IReadOnlyList<int> SupportedArchs { get; }
    public string CacheDirectory { get; }
    public bool LineInfo { get; init; } = Environment.GetEnvironmentVariable("FIBER_LINEINFO") == "1";
    /// <summary>FIBER_DEBUG ≥ 3 prints NVRTC logs (warnings) of successful compiles.</summary>
    readonly int _debug = int.TryParse(Environment.GetEnvironmentVariable("FIBER_DEBUG"), out var d) ? d : 0;

    public NvrtcCompiler(string? cacheDirectory = null)
    {
        Nvrtc.Load();
        Version = Nvrtc.Version();
        SupportedArchs = Nvrtc.SupportedArchs();
        CacheDirectory = cacheDirectory ?? DefaultCacheDirectory();
    }

    public static string DefaultCacheDirectory()
    {
        if (Environment.GetEnvironmentVariable("FIBER_KERNEL_CACHE") is { Length: > 0 } c) return c;
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        var root = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(string.IsNullOrEmpty(home) ? Path.GetTempPath() : home, ".cache");
        return Path.Combine(root, "fibercuda", "kernels");
    }

    /// <summary>CUBIN for sm_<paramref name="sm"/> when supported, else PTX for the newest compute_XX ≤ sm.</summary>
    public CompiledKernel CompileForDevice(string file, int sm)
    {
        if (SupportedArchs.Count == 0 || SupportedArchs.Contains(sm))
        {
            try { return CompileForArch(file, sm, wantCubin: true); }
            catch (CudaException e) when (e.Code == Nvrtc.NVRTC_ERROR_INVALID_OPTION) { /* arch unknown: PTX below */ }
        }
        var ptxSm = SupportedArchs.Where(a => a <= sm).DefaultIfEmpty(sm).Max();
        return CompileForArch(file, ptxSm, wantCubin: false);
    }

    /// <summary>Compiles an embedded kernels/<paramref name="file"/> for one architecture.</summary>
    public CompiledKernel CompileForArch(string file, int sm, bool wantCubin)
    {
        var source = KernelSource.Read(file);
        return CompileSource(file, source, KernelSource.ResolveHeaders(file, source), sm, wantCubin);
    }

    public IReadOnlyList<string> Options(int sm, bool wantCubin, IEnumerable<string>? extra = null)
    {
        var o = new List<string>
        {
            wantCubin ? $"--gpu-architecture=sm_{sm}" : $"--gpu-architecture=compute_{sm}",
            "-default-device",
            "--std=c++17",
        };
        if (LineInfo) o.Add("-lineinfo");
        if (extra is not null) o.AddRange(extra);
        return o;
    }

    /// <summary>Compiles source text (tests feed strings here); headers keyed by include name.</summary>
    public CompiledKernel CompileSource(string file, string source, IReadOnlyDictionary<string, string> headers,
                                       int sm, bool wantCubin, IEnumerable<string>? extraOptions = null)
    {
        var options = Options(sm, wantCubin, extraOptions);
        var arch = wantCubin ? $"sm_{sm}" : $"compute_{sm}";
        var key = CacheKey(file, source, headers, options, arch, Version);
        var ext = wantCubin ? ".cubin" : ".ptx";
        var cachePath = Path.Combine(CacheDirectory, $"{SafeName(file)}-{arch}-{key[..32]}{ext}");
        if (TryReadCache(cachePath) is { } cached)
            return new CompiledKernel(file, cached, wantCubin, arch, "", FromCache: true, key);

        var (image, log) = Compile(file, source, headers, options, wantCubin, arch);
        if (_debug >= 3 && log.Trim().Length > 0) Console.Error.WriteLine($"[nvrtc] {file} {arch}:\n{log}");
        TryWriteCache(cachePath, image);
        return new CompiledKernel(file, image, wantCubin, arch, log, FromCache: false, key);
    }

    public static string CacheKey(string file, string source, IReadOnlyDictionary<string, string> headers,
                                  IReadOnlyList<string> options, string arch, (int Major, int Minor) version)
    {
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Add(string s)
        {
            var b = Encoding.UTF8.GetBytes(s);
            h.AppendData(BitConverter.GetBytes(b.Length)); // length-prefixed so field boundaries cannot shift
            h.AppendData(b);
        }
        Add("fibercuda-nvrtc-v1");
        Add($"{version.Major}.{version.Minor}");
        Add(arch);
        foreach (var o in options) Add(o);
        Add(file);
        Add(source);
        foreach (var (name, text) in headers.OrderBy(kv => kv.Key, StringComparer.Ordinal)) { Add(name); Add(text); }
        return Convert.ToHexString(h.GetHashAndReset()).ToLowerInvariant();
    }

    static string SafeName(string file) => Regex.Replace(file, @"[^A-Za-z0-9_.-]", "_");

    static byte[]? TryReadCache(string path)
    {
        try { return File.Exists(path) ? File.ReadAllBytes(path) : null; }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    static void TryWriteCache(string path, byte[] image)
    {
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            var tmp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
            File.WriteAllBytes(tmp, image);
            File.Move(tmp, path, overwrite: true); // atomic: parallel processes never read a half-written file
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    static (byte[] image, string log) Compile(string file, string source, IReadOnlyDictionary<string, string> headers,
                                              IReadOnlyList<string> options, bool wantCubin, string arch)
    {
        var strings = new List<nint>();
        nint U8(string s)
        {
            var p = Utf8Z(s);
            strings.Add(p);
            return p;
        }
        nint prog = 0;
        try
        {
            var names = headers.Keys.ToArray();
            var hdrSrc = stackalloc byte*[Math.Max(1, names.Length)];
            var hdrNames = stackalloc byte*[Math.Max(1, names.Length)];
            for (int i = 0; i < names.Length; i++)
            {
                hdrSrc[i] = (byte*)U8(headers[names[i]]);
                hdrNames[i] = (byte*)U8(names[i]);
            }
            Nvrtc.Check(Nvrtc.nvrtcCreateProgram(&prog, (byte*)U8(source), (byte*)U8(file), names.Length,
                                                 names.Length > 0 ? hdrSrc : null, names.Length > 0 ? hdrNames : null),
                        $"creating program for {file}");
            var opts = stackalloc byte*[options.Count];
            for (int i = 0; i < options.Count; i++) opts[i] = (byte*)U8(options[i]);
            int rc = Nvrtc.nvrtcCompileProgram(prog, options.Count, opts);
            var log = GetLog(prog);
            if (rc == Nvrtc.NVRTC_ERROR_COMPILATION) throw CompileError(file, arch, log);
            Nvrtc.Check(rc, $"compiling {file} for {arch} with [{string.Join(' ', options)}]; log:\n{log}");

            byte[] image;
            nuint size;
            if (wantCubin)
            {
                if (Nvrtc.nvrtcGetCUBINSize == null) throw new NotSupportedException("this NVRTC cannot emit CUBIN (nvrtcGetCUBIN missing)");
                Nvrtc.Check(Nvrtc.nvrtcGetCUBINSize(prog, &size));
                image = new byte[(int)size];
                fixed (byte* p = image) Nvrtc.Check(Nvrtc.nvrtcGetCUBIN(prog, p));
            }
            else
            {
                Nvrtc.Check(Nvrtc.nvrtcGetPTXSize(prog, &size)); // includes the terminating NUL
                image = new byte[(int)size];
                fixed (byte* p = image) Nvrtc.Check(Nvrtc.nvrtcGetPTX(prog, p));
                if (image.Length == 0 || image[^1] != 0) image = [.. image, 0]; // cuModuleLoadData needs NUL-terminated PTX
            }
            if (image.Length == 0) throw new InvalidOperationException($"NVRTC returned an empty image for {file} ({arch})");
            return (image, log);
        }
        finally
        {
            if (prog != 0) Nvrtc.nvrtcDestroyProgram(&prog);
            foreach (var p in strings) System.Runtime.InteropServices.Marshal.FreeHGlobal(p);
        }
    }

    static string GetLog(nint prog)
    {
        nuint n;
        if (Nvrtc.nvrtcGetProgramLogSize(prog, &n) != 0 || n <= 1) return "";
        var buf = new byte[(int)n];
        fixed (byte* p = buf)
            if (Nvrtc.nvrtcGetProgramLog(prog, p) != 0) return "";
        return Encoding.UTF8.GetString(buf, 0, buf.Length - 1);
    }

    static nint Utf8Z(string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        var p = System.Runtime.InteropServices.Marshal.AllocHGlobal(bytes.Length + 1);
        bytes.CopyTo(new Span<byte>((void*)p, bytes.Length));
        ((byte*)p)[bytes.Length] = 0;
        return p;
    }

    // NVRTC log lines look like: "layernorm.cu(42): error: identifier "x" is undefined"
    [GeneratedRegex(@"^(?<file>[^\r\n(]+)\((?<line>\d+)\): (?:catastrophic )?error(?: [^:]*)?: (?<msg>.*)$", RegexOptions.Multiline)]
    private static partial Regex ErrorLineRegex();

    /// <summary>Builds the compile exception from an NVRTC log (public so tests can check the parsing without NVRTC).</summary>
    public static KernelCompileException CompileError(string file, string arch, string log)
    {
        var m = ErrorLineRegex().Match(log);
        if (!m.Success) return new KernelCompileException(file, arch, null, null, "", log);
        return new KernelCompileException(file, arch, m.Groups["file"].Value.Trim(), int.Parse(m.Groups["line"].Value),
                                          m.Groups["msg"].Value.Trim(), log);
    }
}
