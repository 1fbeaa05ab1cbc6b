using System.Reflection;
using System.Text.RegularExpressions;

namespace FiberCuda.Kernels;

/// <summary>
/// Kernel sources embedded in the FiberCuda assembly (resource names "kernels/&lt;relative path&gt;", see FiberCuda.csproj),
/// and the quoted-include closure NVRTC needs as header sources.
/// </summary>
public static partial class KernelSource
{
    const string Prefix = "kernels/";
    static readonly Assembly Asm = typeof(KernelSource).Assembly;

    /// <summary>Every embedded resource path under kernels/ (relative, '/' separators).</summary>
    public static IReadOnlyList<string> AllFiles() =>
        Asm.GetManifestResourceNames()
           .Where(n => n.StartsWith(Prefix, StringComparison.Ordinal))
           .Select(n => n[Prefix.Length..].Replace('\\', '/'))
           .OrderBy(n => n, StringComparer.Ordinal).ToArray();

    /// <summary>All embedded .cu files (relative to kernels/).</summary>
    public static IReadOnlyList<string> ListKernelFiles() =>
        AllFiles().Where(f => f.EndsWith(".cu", StringComparison.Ordinal)).ToArray();

    public static bool Exists(string relativePath) =>
        Asm.GetManifestResourceInfo(Prefix + Normalize(relativePath)) is not null;

    /// <summary>Text of kernels/<paramref name="relativePath"/>.</summary>
    public static string Read(string relativePath)
    {
        var name = Prefix + Normalize(relativePath);
        using var s = Asm.GetManifestResourceStream(name)
            ?? throw new FileNotFoundException($"kernel source '{relativePath}' is not embedded in {Asm.GetName().Name} (resource {name}); " +
                                               $"embedded: {string.Join(", ", AllFiles())}");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }

    static string Normalize(string p)
    {
        p = p.Replace('\\', '/');
        if (p.StartsWith(Prefix, StringComparison.Ordinal)) p = p[Prefix.Length..];
        // Collapse "a/../b" so includes like "../common.cuh" map to a resource name.
        var parts = new List<string>();
        foreach (var seg in p.Split('/'))
        {
            if (seg is "" or ".") continue;
            if (seg == ".." ) { if (parts.Count > 0) parts.RemoveAt(parts.Count - 1); continue; }
            parts.Add(seg);
        }
        return string.Join('/', parts);
    }

    [GeneratedRegex(@"^\s*#\s*include\s*""([^""]+)""", RegexOptions.Multiline)]
    private static partial Regex IncludeRegex();

    /// <summary>The quoted include names in a source, in order.</summary>
    public static IEnumerable<string> QuotedIncludes(string source) =>
        IncludeRegex().Matches(source).Select(m => m.Groups[1].Value);

    /// <summary>
    /// Header sources for NVRTC, keyed by the include name exactly as written (NVRTC matches the directive's text).
    /// A name is looked up relative to the including file's folder, then relative to kernels/. <paramref name="read"/>
    /// and <paramref name="exists"/> default to the embedded resources (tests pass in-memory files).
    /// </summary>
    public static IReadOnlyDictionary<string, string> ResolveHeaders(string file, string source,
        Func<string, string>? read = null, Func<string, bool>? exists = null)
    {
        read ??= Read;
        exists ??= Exists;
        var headers = new SortedDictionary<string, string>(StringComparer.Ordinal);
        var pending = new Stack<(string from, string text)>();
        pending.Push((file, source));
        while (pending.Count > 0)
        {
            var (from, text) = pending.Pop();
            var dir = Path.GetDirectoryName(from.Replace('\\', '/'))?.Replace('\\', '/') ?? "";
            foreach (var inc in QuotedIncludes(text))
            {
                if (headers.ContainsKey(inc)) continue;
                var rel = Normalize(dir.Length > 0 ? dir + "/" + inc : inc);
                var path = exists(rel) ? rel : exists(Normalize(inc)) ? Normalize(inc) : null;
                if (path is null) continue; // NVRTC reports the missing header with file and line
                var body = read(path);
                headers[inc] = body;
                pending.Push((path, body));
            }
        }
        return headers;
    }
}
