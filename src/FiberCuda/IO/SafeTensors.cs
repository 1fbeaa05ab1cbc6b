using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;

namespace FiberCuda.IO;

/// <summary>
/// safetensors reader and writer (anchors.md §C1): u64 LE header length N, N bytes of JSON starting with '{'
/// (space padded), then the byte buffer. The reader validates everything the reference implementation does —
/// header ≤ 100 MB, known dtypes, no duplicate names, offsets in range, sizes matching shapes, and a buffer
/// covered exactly (no holes, no overlaps) — and maps the file instead of reading it.
/// </summary>
public sealed class SafeTensorsFile : IWeightSource
{
    public const long MaxHeaderSize = 100_000_000;

    readonly MemoryMappedFile? _map;
    readonly MemoryMappedViewAccessor? _view;
    readonly Dictionary<string, (TensorInfo Info, long Begin, long End)> _entries = new();
    readonly List<TensorInfo> _order = [];
    long _bytesRead;

    public string Path { get; }
    public IReadOnlyList<TensorInfo> Tensors => _order;
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public long DataStart { get; }
    public long BytesRead => _bytesRead;

    SafeTensorsFile(string path)
    {
        Path = path;
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such file", path);
        long len;
        try { len = new FileInfo(path).Length; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new WeightFormatException($"{path}: {e.Message}", e); }
        if (len < 8) throw new WeightFormatException($"{path}: {len} bytes is too short for a safetensors file (needs an 8-byte header length)");
        byte[] header;
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            Span<byte> n8 = stackalloc byte[8];
            fs.ReadExactly(n8);
            ulong n = BinaryPrimitives.ReadUInt64LittleEndian(n8);
            if (n > MaxHeaderSize) throw new WeightFormatException($"{path}: header length {n} exceeds the safetensors limit of {MaxHeaderSize} bytes");
            if ((long)n > len - 8) throw new WeightFormatException($"{path}: header length {n} runs past the end of the {len}-byte file");
            header = new byte[n];
            try { fs.ReadExactly(header); }
            catch (EndOfStreamException e) { throw new WeightFormatException($"{path}: truncated header", e); }
        }
        DataStart = 8 + header.LongLength;
        long bufLen = len - DataStart;
        Metadata = ParseHeader(path, header, bufLen, _entries, _order);
        if (bufLen > 0)
        {
            _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        }
    }

    public static SafeTensorsFile Open(string path) => new(path);

    static Dictionary<string, string> ParseHeader(string path, byte[] header, long bufLen,
        Dictionary<string, (TensorInfo, long, long)> entries, List<TensorInfo> order)
    {
        string Where(string s) => $"{path}: {s}";
        if (header.Length == 0 || header[0] != (byte)'{') throw new WeightFormatException(Where("header does not start with '{'"));
        var meta = new Dictionary<string, string>();
        JsonDocument doc;
        try
        {
            _ = new UTF8Encoding(false, true).GetString(header); // strict UTF-8
            doc = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (Exception e) when (e is JsonException or DecoderFallbackException or ArgumentException)
        { throw new WeightFormatException(Where($"header is not valid UTF-8 JSON: {e.Message}"), e); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new WeightFormatException(Where("header is not a JSON object"));
            var seen = new HashSet<string>();
            var ranges = new List<(long B, long E, string N)>();
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (!seen.Add(prop.Name)) throw new WeightFormatException(Where($"duplicate entry '{prop.Name}' in the header"));
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw new WeightFormatException(Where("__metadata__ is not an object"));
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String) throw new WeightFormatException(Where($"__metadata__ value '{m.Name}' is not a string"));
                        if (!meta.TryAdd(m.Name, m.Value.GetString()!)) throw new WeightFormatException(Where($"duplicate __metadata__ key '{m.Name}'"));
                    }
                    continue;
                }
                var v = prop.Value;
                string N = prop.Name;
                if (v.ValueKind != JsonValueKind.Object) throw new WeightFormatException(Where($"tensor '{N}': entry is not an object"));
                if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
                    throw new WeightFormatException(Where($"tensor '{N}': missing dtype"));
                if (!WeightDTypeInfo.TryParseSafetensors(dt.GetString()!, out var dtype))
                    throw new WeightFormatException(Where($"tensor '{N}': unknown or unsupported dtype '{dt.GetString()}'"));
                if (!v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
                    throw new WeightFormatException(Where($"tensor '{N}': missing shape"));
                var shape = new List<long>();
                foreach (var d in sh.EnumerateArray())
                {
                    if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long x) || x < 0)
                        throw new WeightFormatException(Where($"tensor '{N}': shape entries must be non-negative integers"));
                    shape.Add(x);
                }
                if (!v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
                    throw new WeightFormatException(Where($"tensor '{N}': data_offsets must be [begin, end]"));
                if (!off[0].TryGetInt64(out long b) || !off[1].TryGetInt64(out long e) || b < 0 || e < b)
                    throw new WeightFormatException(Where($"tensor '{N}': invalid data_offsets"));
                if (e > bufLen) throw new WeightFormatException(Where($"tensor '{N}': data_offsets [{b},{e}] run past the {bufLen}-byte buffer"));
                long numel;
                try { numel = HostTensor.CountElements(shape.ToArray()); checked { numel *= dtype.Size(); } }
                catch (OverflowException) { throw new WeightFormatException(Where($"tensor '{N}': shape too large")); }
                if (numel != e - b)
                    throw new WeightFormatException(Where($"tensor '{N}': {dtype.SafetensorsName()}{HostTensor.Fmt(shape.ToArray())} needs {numel} bytes but data_offsets span {e - b}"));
                var info = new TensorInfo(N, dtype, shape.ToArray());
                entries[N] = (info, b, e);
                order.Add(info);
                ranges.Add((b, e, N));
            }
            ranges.Sort((x, y) => x.B != y.B ? x.B.CompareTo(y.B) : x.E.CompareTo(y.E));
            long at = 0; string prev = "(start)";
            foreach (var (B, E, N) in ranges)
            {
                if (B < at) throw new WeightFormatException(Where($"tensors '{prev}' and '{N}' overlap at byte {B}"));
                if (B > at) throw new WeightFormatException(Where($"hole in the byte buffer between {at} and {B} (before '{N}')"));
                at = E; prev = N;
            }
            if (at != bufLen) throw new WeightFormatException(Where($"the tensors cover {at} bytes but the buffer holds {bufLen}: the file has trailing or missing data"));
        }
        return meta;
    }

    public HostTensor Read(string name)
    {
        if (!_entries.TryGetValue(name, out var e)) throw new KeyNotFoundException($"{Path}: no tensor '{name}'");
        long n = e.End - e.Begin;
        if (n > Array.MaxLength) throw new WeightFormatException($"{Path}: tensor '{name}' ({n} bytes) is too large to read at once");
        var data = new byte[n];
        if (n > 0) _view!.ReadArray(DataStart + e.Begin, data, 0, (int)n);
        Interlocked.Add(ref _bytesRead, n);
        return new HostTensor(e.Info.DType, e.Info.Shape, data);
    }

    public void Dispose() { _view?.Dispose(); _map?.Dispose(); }

    // ------------------------------------------------------------------ writing

    /// <summary>
    /// The JSON header for tensors stored back to back in the given order (metadata keys sorted), space-padded so the
    /// data that follows starts 8-byte aligned. For writers that stream the data themselves.
    /// </summary>
    public static byte[] Header(IEnumerable<(string Name, string DType, IEnumerable<long> Shape, long Bytes)> entries, IReadOnlyDictionary<string, string>? metadata)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long off = 0;
            foreach (var (n, dt, shape, bytes) in entries)
            {
                w.WriteStartObject(n);
                w.WriteString("dtype", dt);
                w.WriteStartArray("shape"); foreach (var d in shape) w.WriteNumberValue(d); w.WriteEndArray();
                w.WriteStartArray("data_offsets"); w.WriteNumberValue(off); w.WriteNumberValue(off + bytes); w.WriteEndArray();
                w.WriteEndObject();
                off += bytes;
            }
            w.WriteEndObject();
        }
        int pad = (int)((8 - ms.Length % 8) % 8);
        for (int i = 0; i < pad; i++) ms.WriteByte((byte)' ');
        return ms.ToArray();
    }

    /// <summary>
    /// Writes tensors (sorted by descending dtype alignment, then name, as the reference writer does) with the header
    /// space-padded so the data starts 8-byte aligned; goes through a temporary file renamed over the target, so a
    /// crash never leaves a half-written model.
    /// </summary>
    public static void Write(string path, IEnumerable<KeyValuePair<string, HostTensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var names = new HashSet<string>();
        foreach (var (n, _) in list)
        {
            if (n == "__metadata__") throw new ArgumentException("'__metadata__' is reserved");
            if (!names.Add(n)) throw new ArgumentException($"duplicate tensor '{n}'");
        }
        list.Sort((a, b) =>
        {
            int c = b.Value.DType.Size().CompareTo(a.Value.DType.Size());
            return c != 0 ? c : string.CompareOrdinal(a.Key, b.Key);
        });
        var header = Header(list.Select(kv => (kv.Key, kv.Value.DType.SafetensorsName(), (IEnumerable<long>)kv.Value.Shape, kv.Value.Data.LongLength)), metadata);

        AtomicFile.Replace(path, tmp =>
        {
            using var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
            Span<byte> n8 = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(n8, (ulong)header.Length);
            fs.Write(n8);
            fs.Write(header);
            foreach (var (_, t) in list) fs.Write(t.Data);
        });
    }
}
