using FiberCuda.Backends;
using FiberCuda.Models;
using FiberCuda.Tensors;

namespace FiberCuda.IO;

/// <summary>Missing, unexpected and shape-mismatched names of a load, each by name.</summary>
public sealed class LoadReport
{
    public List<string> Missing { get; } = [];
    public List<string> Unexpected { get; } = [];
    public List<string> Mismatched { get; } = [];
    public bool Ok => Missing.Count == 0 && Unexpected.Count == 0 && Mismatched.Count == 0;

    public override string ToString()
    {
        var parts = new List<string>();
        static string L(List<string> l) => string.Join(", ", l.Take(20)) + (l.Count > 20 ? $", … ({l.Count - 20} more)" : "");
        if (Missing.Count > 0) parts.Add($"{Missing.Count} missing: {L(Missing)}");
        if (Unexpected.Count > 0) parts.Add($"{Unexpected.Count} unexpected: {L(Unexpected)}");
        if (Mismatched.Count > 0) parts.Add($"{Mismatched.Count} shape mismatches: {L(Mismatched)}");
        return parts.Count == 0 ? "ok" : string.Join("; ", parts);
    }
}

public sealed class WeightLoadException(string message, LoadReport report) : WeightFormatException(message)
{
    public LoadReport Report { get; } = report;
}

/// <summary>
/// The engine's weight format: safetensors whose `__metadata__` holds `format` = "fibercuda", `format_version`
/// and `config` (the <see cref="FiberConfig"/> JSON). Loading checks every name and shape against the
/// parameter catalog; strict (the default) fails on anything missing, unexpected or mis-shaped.
/// </summary>
public static class EngineWeights
{
    public const string FormatName = "fibercuda";
    public const int FormatVersion = 1;

    public static Dictionary<string, string> Metadata(FiberConfig c, string? source = null)
    {
        var m = new Dictionary<string, string>
        {
            ["format"] = FormatName,
            ["format_version"] = FormatVersion.ToString(),
            ["config"] = c.ToJson(indented: false),
        };
        if (source is not null) m["source"] = source;
        return m;
    }

    /// <summary>Reads the config of an engine file (fails clearly for a safetensors file of another origin).</summary>
    public static FiberConfig ReadConfig(SafeTensorsFile f)
    {
        if (!f.Metadata.TryGetValue("format", out var fmt) || fmt != FormatName)
            throw new WeightFormatException($"{f.Path}: not a FiberCuda weight file (no __metadata__ format=\"{FormatName}\")");
        if (!f.Metadata.TryGetValue("format_version", out var v) || !int.TryParse(v, out int ver) || ver > FormatVersion || ver < 1)
            throw new WeightFormatException($"{f.Path}: format_version '{v}' is not supported (this build reads {FormatVersion})");
        if (!f.Metadata.TryGetValue("config", out var cfg)) throw new WeightFormatException($"{f.Path}: no config in __metadata__");
        try { return FiberConfig.FromJson(cfg); }
        catch (Exception e) when (e is System.Text.Json.JsonException or ArgumentException)
        { throw new WeightFormatException($"{f.Path}: bad config in __metadata__: {e.Message}", e); }
    }

    /// <summary>Compares a source's names and shapes with the catalog's stored parameters.</summary>
    public static LoadReport Check(IReadOnlyList<ParamSpec> catalog, IWeightSource src)
    {
        var r = new LoadReport();
        var have = src.ByName();
        var want = catalog.Where(p => p.Stored).ToDictionary(p => p.Name);
        foreach (var p in want.Values)
        {
            if (!have.TryGetValue(p.Name, out var t)) r.Missing.Add(p.Name);
            else if (!t.Shape.SequenceEqual(p.Shape.Select(d => (long)d)))
                r.Mismatched.Add($"{p.Name} (file {HostTensor.Fmt(t.Shape)}, model {ShapeUtil.Format(p.Shape)})");
        }
        foreach (var n in have.Keys) if (!want.ContainsKey(n)) r.Unexpected.Add(n);
        return r;
    }

    /// <summary>Loads every stored parameter of <paramref name="config"/> onto <paramref name="backend"/> (f32 unless the
    /// file holds bf16). Strict: any missing, unexpected or mis-shaped tensor fails with all their names.
    /// Non-strict: shape mismatches still fail; missing ones are left out of the result.</summary>
    public static Dictionary<string, Tensor> Load(FiberConfig config, IWeightSource src, IBackend backend, bool strict = true)
    {
        var cat = FiberParameters.Enumerate(config);
        var rep = Check(cat, src);
        if (rep.Mismatched.Count > 0 || strict && !rep.Ok)
            throw new WeightLoadException($"{src.Path}: does not fit {config.Name}: {rep}", rep);
        var result = new Dictionary<string, Tensor>();
        var have = src.ByName();
        foreach (var p in cat)
        {
            if (!p.Stored || !have.ContainsKey(p.Name)) continue;
            var h = src.Read(p.Name);
            if (h.DType is not (WeightDType.F32 or WeightDType.BF16)) h = h.ConvertTo(WeightDType.F32);
            var t = h.ToTensor(backend);
            t.Name = p.Name;
            result[p.Name] = t;
        }
        return result;
    }
}
