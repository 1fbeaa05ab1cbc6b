using System.Text.Json;

namespace FiberCuda.IO;

/// <summary>
/// Opens any supported weight file by content, not by name: safetensors, torch.save (zip or legacy; `.pt`, `.pth`,
/// `.ckpt`, HF `pytorch_model.bin`), an HF shard index (`*.index.json`), or an HF model directory
/// (`model.safetensors[.index.json]` or `pytorch_model.bin[.index.json]`).
/// </summary>
public static class WeightFiles
{
    public static IWeightSource Open(string path)
    {
        if (Directory.Exists(path))
        {
            foreach (var name in new[] { "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json" })
            {
                var p = System.IO.Path.Combine(path, name);
                if (File.Exists(p)) return Open(p);
            }
            throw new FileNotFoundException($"{path}: directory holds no model.safetensors, pytorch_model.bin or shard index", path);
        }
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such file", path);
        if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return ShardedWeights.Open(path);
        var head = new byte[16];
        int n;
        using (var fs = File.OpenRead(path)) n = fs.Read(head);
        if (TorchCheckpoint.Sniff(head.AsSpan(0, n))) return TorchCheckpoint.Open(path);
        if (n >= 9 && head[8] == (byte)'{') return SafeTensorsFile.Open(path);
        if (n >= 8) return SafeTensorsFile.Open(path); // let the safetensors validation say what is wrong
        throw new WeightFormatException($"{path}: {n} bytes: too short to be a weight file");
    }
}

/// <summary>An HF sharded checkpoint: `{"metadata": …, "weight_map": {tensor: shard file}}`, shards opened lazily.</summary>
public sealed class ShardedWeights : IWeightSource
{
    readonly Dictionary<string, string> _map = new();
    readonly Dictionary<string, IWeightSource> _open = new();
    readonly List<TensorInfo> _infos = [];

    public string Path { get; }
    public IReadOnlyList<TensorInfo> Tensors => _infos;
    public long BytesRead => _open.Values.Sum(s => s.BytesRead);

    ShardedWeights(string path)
    {
        Path = path;
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new WeightFormatException($"{path}: not valid JSON: {e.Message}", e); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new WeightFormatException($"{path}: no \"weight_map\" object: not an HF shard index");
            foreach (var p in wm.EnumerateObject())
            {
                var f = p.Value.GetString();
                if (p.Value.ValueKind != JsonValueKind.String || string.IsNullOrEmpty(f) || f.Contains("..") || System.IO.Path.IsPathRooted(f))
                    throw new WeightFormatException($"{path}: weight_map entry '{p.Name}' names an invalid shard");
                _map[p.Name] = System.IO.Path.Combine(dir, f);
            }
        }
        // Shard order = first appearance in the map; each shard's own listing gives dtype and shape.
        try
        {
            foreach (var shard in _map.Values.Distinct())
            {
                var src = Shard(shard);
                foreach (var t in src.Tensors)
                    if (_map.TryGetValue(t.Name, out var s) && s == shard) _infos.Add(t);
            }
            var have = _infos.Select(t => t.Name).ToHashSet();
            var missing = _map.Keys.Where(k => !have.Contains(k)).ToList();
            if (missing.Count > 0) throw new WeightFormatException($"{path}: {missing.Count} tensors of the weight_map are not in their shards, e.g. '{missing[0]}' (expected in {_map[missing[0]]})");
        }
        catch { Dispose(); throw; }
    }

    public static ShardedWeights Open(string path) => new(path);

    IWeightSource Shard(string file)
    {
        if (!_open.TryGetValue(file, out var s))
        {
            if (!File.Exists(file)) throw new FileNotFoundException($"{Path}: shard {file} does not exist", file);
            s = WeightFiles.Open(file);
            _open[file] = s;
        }
        return s;
    }

    public HostTensor Read(string name) =>
        _map.TryGetValue(name, out var f) ? Shard(f).Read(name) : throw new KeyNotFoundException($"{Path}: no tensor '{name}'");

    public void Dispose()
    {
        foreach (var s in _open.Values) s.Dispose();
        _open.Clear();
    }
}
