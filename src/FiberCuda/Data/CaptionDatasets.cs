using System.Text.RegularExpressions;

namespace FiberCuda.Data;

/// <summary>
/// Opens a caption dataset from a short specification, for command lines and configs:
/// <list type="bullet">
/// <item><c>path.jsonl</c> — JSON Lines manifest;</item>
/// <item><c>path.json</c> — COCO Karpathy split or COCO caption annotations (images under <c>imageRoot</c>, default the file's folder);</item>
/// <item><c>shards-{000000..000031}.tar</c>, a single <c>.tar</c>, or a folder of <c>.tar</c> files — WebDataset shards;</item>
/// <item><c>synthetic:N[:seed[:size[:maxShapes[:where]]]]</c> — N in-memory synthetic scenes (1 to maxShapes shapes each, default 3;
/// <c>where</c>: single-object captions say where the shape is).</item>
/// </list>
/// Several specifications can be joined with <c>;</c>; the datasets are concatenated.
/// </summary>
public static partial class CaptionDatasets
{
    public static ListCaptionDataset Open(string spec, DataStats stats, string? imageRoot = null, IReadOnlyCollection<string>? splits = null)
    {
        var parts = spec.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length > 1) return ListCaptionDataset.Concat(parts.Select(p => (ICaptionDataset)Open(p, stats, imageRoot, splits)).ToArray());
        if (spec.StartsWith("synthetic:", StringComparison.Ordinal))
        {
            var f = spec.Split(':');
            if (f.Length > 6) throw new ArgumentException($"'{spec}': synthetic:N[:seed[:size[:maxShapes[:where]]]] has at most 6 fields");
            int n = int.Parse(f[1]);
            ulong seed = f.Length > 2 ? ulong.Parse(f[2]) : 0;
            var o = new SyntheticOptions();
            o = o with { ImageSize = f.Length > 3 ? int.Parse(f[3]) : o.ImageSize, MaxShapes = f.Length > 4 ? int.Parse(f[4]) : o.MaxShapes,
                     SayWhere = f.Length > 5 && (f[5] == "where" ? true : throw new ArgumentException($"'{spec}': the 6th field can only be 'where'")) };
            return new SyntheticShapes(seed, o).InMemory(0, n);
        }
        if (Directory.Exists(spec))
            return Manifests.ReadWebDataset(Directory.GetFiles(spec, "*.tar").OrderBy(p => p, StringComparer.Ordinal), stats);
        if (spec.EndsWith(".tar", StringComparison.OrdinalIgnoreCase))
            return Manifests.ReadWebDataset(ExpandBraces(spec), stats);
        var ds = spec.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase)
            ? Manifests.ReadJsonl(spec, stats, imageRoot)
            : spec.EndsWith(".json", StringComparison.OrdinalIgnoreCase)
                ? Manifests.ReadCoco(spec, imageRoot ?? Path.GetDirectoryName(Path.GetFullPath(spec)) ?? ".", stats, splits)
                : throw new ArgumentException($"unknown dataset specification '{spec}'");
        return splits is null || spec.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? ds : ds.WhereSplit(splits.ToArray());
    }

    /// <summary>
    /// Everything a pre-training run needs in one call: the dataset from <paramref name="spec"/>, the tokenizer
    /// (RoBERTa files from <paramref name="tokenizerDir"/>, else the GPT-2 demo fallback) and a loader.
    /// </summary>
    public static CaptionLoader OpenLoader(string spec, LoaderOptions options, string? tokenizerDir = null, DataStats? stats = null,
        string? imageRoot = null, IReadOnlyCollection<string>? splits = null)
    {
        stats ??= new DataStats();
        return new CaptionLoader(Open(spec, stats, imageRoot, splits), CaptionTokenizer.FromDirectoryOrGpt2(tokenizerDir), options, stats);
    }

    [GeneratedRegex(@"\{(\d+)\.\.(\d+)\}")]
    private static partial Regex RangePattern();

    /// <summary>WebDataset's shard notation: <c>a-{000..012}.tar</c> → a-000.tar … a-012.tar (zero padding kept).</summary>
    public static IEnumerable<string> ExpandBraces(string pattern)
    {
        var m = RangePattern().Match(pattern);
        if (!m.Success) { yield return pattern; yield break; }
        long lo = long.Parse(m.Groups[1].Value), hi = long.Parse(m.Groups[2].Value);
        int width = m.Groups[1].Value.Length;
        for (long i = lo; i <= hi; i++)
            foreach (var rest in ExpandBraces(pattern[(m.Index + m.Length)..]))
                yield return pattern[..m.Index] + i.ToString().PadLeft(width, '0') + rest;
    }
}
