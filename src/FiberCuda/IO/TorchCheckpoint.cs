using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace FiberCuda.IO;

/// <summary>
/// A `torch.save` file read safely and lazily (anchors.md §C2): the zip format of PyTorch ≥ 1.6 and the legacy
/// stream format. The pickle goes through the whitelisting <see cref="Pickle"/>; tensors become
/// <see cref="TorchTensorRef"/>s whose bytes are read only when asked for, so a checkpoint's optimizer state
/// and multi-GB queue buffers cost nothing unless requested.
/// The tensor list (<see cref="Tensors"/>) is the model state dict: `state_dict` of a Lightning checkpoint,
/// `model` of a maskrcnn_benchmark checkpoint, or the root dict itself; a DDP `module.` prefix is removed.
/// </summary>
public sealed class TorchCheckpoint : IWeightSource
{
    static readonly BigInteger LegacyMagic = BigInteger.Parse("119547037146038801333356");

    readonly FileStream _fs;
    readonly object _lock = new();
    readonly Dictionary<string, TorchStorage> _storages = new();
    readonly Dictionary<string, TorchTensorRef> _refs = new();
    readonly List<TensorInfo> _infos = [];
    ZipDirectory? _zip;
    string _prefix = "";
    long _bytesRead;

    public string Path { get; }
    public string Format { get; private set; } = "";
    public bool BigEndian { get; private set; }
    /// <summary>The whole unpickled object (tensors as <see cref="TorchTensorRef"/>).</summary>
    public object? Root { get; private set; }
    /// <summary>Where the state dict was found: "state_dict", "model" or "" (the root).</summary>
    public string StateDictKey { get; private set; } = "";
    public bool StrippedModulePrefix { get; private set; }
    public IReadOnlyList<TensorInfo> Tensors => _infos;
    public long BytesRead => Interlocked.Read(ref _bytesRead);

    TorchCheckpoint(string path)
    {
        Path = path;
        if (Directory.Exists(path)) throw new WeightFormatException($"{path}: is a directory, not a checkpoint file");
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such file", path);
        _fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        try { Parse(); }
        catch (EndOfStreamException e) { _fs.Dispose(); throw new WeightFormatException($"{path}: unexpected end of file (truncated?)", e); }
        catch { _fs.Dispose(); throw; }
    }

    public static TorchCheckpoint Open(string path) => new(path);

    /// <summary>True when the file starts like a torch.save file (zip or a pickle PROTO opcode).</summary>
    public static bool Sniff(ReadOnlySpan<byte> head) =>
        head.Length >= 4 && (head[..4].SequenceEqual("PK\x03\x04"u8) || head[..4].SequenceEqual("PK\x05\x06"u8))
        || head.Length >= 2 && head[0] == 0x80 && head[1] <= 5;

    void Parse()
    {
        Span<byte> head = stackalloc byte[4];
        int got = _fs.Read(head);
        _fs.Position = 0;
        if (got >= 2 && head[0] == (byte)'P' && head[1] == (byte)'K') ParseZip();
        else if (got >= 2 && head[0] == 0x80) ParseLegacy();
        else if (_fs.Length > 262 && IsTar()) throw new WeightFormatException($"{Path}: the pre-1.0 tar checkpoint format is not supported; re-save it with a newer torch");
        else throw new WeightFormatException($"{Path}: not a torch.save file (neither a zip archive nor a pickle)");
        SelectStateDict();
    }

    bool IsTar()
    {
        var b = new byte[5];
        _fs.Position = 257; _fs.ReadExactly(b); _fs.Position = 0;
        return b.AsSpan().SequenceEqual("ustar"u8);
    }

    // ------------------------------------------------------------------ zip
    void ParseZip()
    {
        Format = "torch zip";
        _zip = ZipDirectory.Read(_fs, Path);
        if (_zip.Entries.Count == 0) throw new WeightFormatException($"{Path}: empty zip archive");
        string first = _zip.Entries[0].Name;
        int slash = first.IndexOf('/');
        _prefix = slash >= 0 ? first[..(slash + 1)] : "";
        if (_zip.Find(_prefix + "constants.pkl") is not null || _zip.Entries.Any(e => e.Name.StartsWith(_prefix + "code/", StringComparison.Ordinal)))
            throw new WeightFormatException($"{Path}: a TorchScript archive (torch.jit.save), not a torch.save checkpoint");
        var pkl = _zip.Find(_prefix + "data.pkl") ?? throw new WeightFormatException($"{Path}: no '{_prefix}data.pkl' record: not a torch.save archive");
        var bo = _zip.Find(_prefix + "byteorder");
        if (bo is not null)
        {
            string order = Encoding.ASCII.GetString(ReadRecord(bo, 16)).Trim();
            BigEndian = order switch
            {
                "little" => false, "big" => true,
                _ => throw new WeightFormatException($"{Path}: unknown byteorder '{order}'"),
            };
        }
        if (pkl.Size > 1L << 30) throw new WeightFormatException($"{Path}: data.pkl of {pkl.Size} bytes is implausibly large");
        var bytes = ReadRecord(pkl, int.MaxValue);
        Root = Pickle.Load(bytes, $"{Path}:{pkl.Name}", pid => PersistentLoad(pid, legacy: false), Resolve);
    }

    byte[] ReadRecord(ZipDirectory.Entry e, int max)
    {
        if (e.Method != 0) throw new WeightFormatException($"{Path}: record '{e.Name}' is compressed (method {e.Method}); torch.save writes stored records only");
        if (e.Size > max) throw new WeightFormatException($"{Path}: record '{e.Name}' is too large");
        var b = new byte[e.Size];
        lock (_lock) { _fs.Position = e.DataOffset; _fs.ReadExactly(b); }
        return b;
    }

    // ------------------------------------------------------------------ legacy
    void ParseLegacy()
    {
        Format = "torch legacy";
        var magic = new Pickle(_fs, Path).Load();
        if (!(magic is BigInteger m && m == LegacyMagic))
        {
            // A bare pickle (pickle.dump of a dict): read it as the whole content, with no storages.
            _fs.Position = 0;
            Format = "pickle";
            Root = new Pickle(_fs, Path) { PersistentLoad = _ => throw new WeightFormatException($"{Path}: persistent id in a plain pickle"), Resolver = Resolve }.Load();
            return;
        }
        var proto = new Pickle(_fs, Path).Load();
        if (proto is not long p || p != 1001) throw new WeightFormatException($"{Path}: unsupported legacy protocol version {Pickle.Repr(proto)}");
        var sys = new Pickle(_fs, Path).Load();
        if (sys is PyDict d && d.TryGet("little_endian", out var le) && le is bool little) BigEndian = !little;
        Root = new Pickle(_fs, Path) { PersistentLoad = pid => PersistentLoad(pid, legacy: true), Resolver = Resolve }.Load();
        var keys = new Pickle(_fs, Path).Load() as PyList ?? throw new WeightFormatException($"{Path}: legacy storage key list missing");
        Span<byte> n8 = stackalloc byte[8];
        foreach (var k in keys)
        {
            if (k is not string key) throw new WeightFormatException($"{Path}: bad storage key {Pickle.Repr(k)}");
            if (_fs.Length - _fs.Position < 8) throw new WeightFormatException($"{Path}: truncated before storage '{key}'");
            _fs.ReadExactly(n8);
            long n = BigEndian ? BinaryPrimitives.ReadInt64BigEndian(n8) : BinaryPrimitives.ReadInt64LittleEndian(n8);
            if (!_storages.TryGetValue(key, out var st)) throw new WeightFormatException($"{Path}: storage '{key}' is not used by any tensor");
            long bytes;
            try { bytes = checked(n * st.DType.Size()); } catch (OverflowException) { throw new WeightFormatException($"{Path}: storage '{key}' size overflows"); }
            if (n < st.Numel || bytes < 0 || bytes > _fs.Length - _fs.Position)
                throw new WeightFormatException($"{Path}: storage '{key}' ({n} elements) runs past the end of the file (truncated?)");
            st.FileOffset = _fs.Position;
            _fs.Position += bytes;
        }
        foreach (var st in _storages.Values)
            if (st.Root is null && st.FileOffset < 0) throw new WeightFormatException($"{Path}: storage '{st.Key}' has no data");
    }

    // ------------------------------------------------------------------ pickle hooks
    object? PersistentLoad(object? pid, bool legacy)
    {
        if (pid is not PyTuple t || t.Count < 5 || t[0] is not "storage")
            throw new WeightFormatException($"{Path}: unexpected persistent id {Pickle.Repr(pid)}");
        if (t[1] is not PyGlobal type) throw new WeightFormatException($"{Path}: storage type {Pickle.Repr(t[1])} is not a name");
        string key = t[2] as string ?? throw new WeightFormatException($"{Path}: storage key is not a string");
        string loc = t[3] as string ?? "cpu";
        long numel = t[4] is long nl ? nl : throw new WeightFormatException($"{Path}: storage size is not an integer");
        if (numel < 0) throw new WeightFormatException($"{Path}: negative storage size");
        var dtype = StorageDType(type);
        if (_storages.TryGetValue(key, out var existing))
        {
            if (legacy && t.Count >= 6 && t[5] is PyTuple view) return LegacyView(existing, view);
            return existing;
        }
        var st = new TorchStorage { Key = key, DType = dtype, Numel = numel, Location = loc };
        if (!legacy)
        {
            var rec = _zip!.Find($"{_prefix}data/{key}") ?? throw new WeightFormatException($"{Path}: storage record '{_prefix}data/{key}' is missing");
            if (rec.Method != 0) throw new WeightFormatException($"{Path}: storage record '{rec.Name}' is compressed");
            if (rec.Size < numel * dtype.Size()) throw new WeightFormatException($"{Path}: storage record '{rec.Name}' holds {rec.Size} bytes, {numel} {dtype.Lower()} elements need {numel * dtype.Size()}");
            st.FileOffset = rec.DataOffset;
        }
        _storages[key] = st;
        if (legacy && t.Count >= 6 && t[5] is PyTuple v) return LegacyView(st, v);
        return st;
    }

    TorchStorage LegacyView(TorchStorage root, PyTuple view)
    {
        // (view_key, offset, view_size): a pre-0.4 storage slice.
        if (view.Count < 3 || view[0] is not string vk || view[1] is not long off || view[2] is not long size || off < 0 || size < 0 || off + size > root.Numel)
            throw new WeightFormatException($"{Path}: bad storage view {Pickle.Repr(view)}");
        if (_storages.TryGetValue(vk, out var v)) return v;
        v = new TorchStorage { Key = vk, DType = root.DType, Numel = size, Location = root.Location, Root = root, RootOffset = off };
        _storages[vk] = v;
        return v;
    }

    WeightDType StorageDType(PyGlobal g)
    {
        if (g.Module is not ("torch" or "torch.cuda")) throw new WeightFormatException($"{Path}: unknown storage type {g.FullName}");
        return g.Name switch
        {
            "FloatStorage" => WeightDType.F32, "HalfStorage" => WeightDType.F16, "BFloat16Storage" => WeightDType.BF16,
            "DoubleStorage" => WeightDType.F64, "LongStorage" => WeightDType.I64, "IntStorage" => WeightDType.I32,
            "ShortStorage" => WeightDType.I16, "CharStorage" => WeightDType.I8, "ByteStorage" => WeightDType.U8,
            "BoolStorage" => WeightDType.Bool, "UntypedStorage" => WeightDType.U8,
            _ => throw new WeightFormatException($"{Path}: unsupported storage type {g.FullName}"),
        };
    }

    static WeightDType? TorchDType(object? o) => o is PyGlobal { Module: "torch" } g ? g.Name switch
    {
        "float32" or "float" => WeightDType.F32, "float16" or "half" => WeightDType.F16, "bfloat16" => WeightDType.BF16,
        "float64" or "double" => WeightDType.F64, "int64" or "long" => WeightDType.I64, "int32" or "int" => WeightDType.I32,
        "int16" or "short" => WeightDType.I16, "int8" => WeightDType.I8, "uint8" => WeightDType.U8, "bool" => WeightDType.Bool,
        "uint16" => WeightDType.U16, "uint32" => WeightDType.U32, "uint64" => WeightDType.U64,
        "float8_e4m3fn" => WeightDType.F8E4M3, "float8_e5m2" => WeightDType.F8E5M2, _ => null,
    } : null;

    bool Resolve(PyGlobal g, object?[] a, out object? result)
    {
        result = null;
        switch (g.FullName)
        {
            case "torch._utils._rebuild_tensor":
            case "torch._utils._rebuild_tensor_v2":
                if (a.Length < 4) throw Bad(g, "too few arguments");
                result = MakeRef(g, a[0], a[1], a[2], a[3], a.Length > 4 && a[4] is true, null);
                return true;
            case "torch._utils._rebuild_tensor_v3":
                if (a.Length < 7) throw Bad(g, "too few arguments");
                result = MakeRef(g, a[0], a[1], a[2], a[3], a[4] is true, TorchDType(a[6]) ?? throw Bad(g, $"unsupported dtype {Pickle.Repr(a[6])}"));
                return true;
            case "torch._utils._rebuild_parameter":
            case "torch._utils._rebuild_parameter_with_state":
                if (a.Length < 1) throw Bad(g, "no data");
                if (a[0] is TorchTensorRef r) r.IsParameter = true;
                result = a[0];
                return true;
            case "torch._tensor._rebuild_from_type_v2":
            case "torch._tensor._rebuild_from_type":
                // (func, new_type, args, state): rebuild with func if it is one of ours, ignore the subclass.
                if (a.Length >= 3 && a[0] is PyGlobal f && a[2] is PyTuple args && !Pickle.IsDangerous(f) && Resolve(f, args.Items, out result))
                    return true;
                return false;
            case "torch.Size":
                result = a.Length > 0 ? a[0] : new PyTuple([]);
                return true;
            default:
                return false;
        }
    }

    WeightFormatException Bad(PyGlobal g, string m) => new($"{Path}: {g.Name}: {m}");

    TorchTensorRef MakeRef(PyGlobal g, object? storage, object? offset, object? size, object? stride, bool rg, WeightDType? v3)
    {
        if (storage is not TorchStorage st) throw Bad(g, $"storage argument is {Pickle.Repr(storage)}");
        if (offset is not long off) throw Bad(g, "storage offset is not an integer");
        long[] shape = Longs(g, size, "size"), strides = Longs(g, stride, "stride");
        if (shape.Length != strides.Length) throw Bad(g, $"size has {shape.Length} dims but stride has {strides.Length}");
        if (v3 is { } dt && dt != st.DType)
        {
            // UntypedStorage (bytes) viewed as dtype: offsets and sizes are in elements of the tensor dtype.
            int es = dt.Size();
            long key = st.Numel;
            st = new TorchStorage { Key = st.Key, DType = dt, Numel = key / es, Location = st.Location, Root = st.Root, RootOffset = st.RootOffset / es, FileOffset = st.FileOffset };
        }
        var r = new TorchTensorRef { Storage = st, Offset = off, Shape = shape, Stride = strides, RequiresGrad = rg };
        try { HostTensor.CountElements(shape); } catch (Exception e) when (e is OverflowException or WeightFormatException) { throw Bad(g, $"bad size {HostTensor.Fmt(shape)}"); }
        var (_, hi) = r.Extent();
        if (hi > st.Numel) throw Bad(g, $"view {HostTensor.Fmt(shape)} at offset {off} with strides {HostTensor.Fmt(strides)} reaches element {hi} of a {st.Numel}-element storage");
        return r;
    }

    static long[] Longs(PyGlobal g, object? o, string what)
    {
        if (o is not PyTuple t) throw new WeightFormatException($"{g.Name}: {what} is not a tuple");
        var r = new long[t.Count];
        for (int i = 0; i < r.Length; i++) r[i] = t[i] is long l ? l : throw new WeightFormatException($"{g.Name}: {what} entry is not an integer");
        return r;
    }

    // ------------------------------------------------------------------ state dict selection
    void SelectStateDict()
    {
        PyDict? sd = null;
        if (Root is PyDict d)
        {
            if (d.TryGet("state_dict", out var s) && s is PyDict s1) { sd = s1; StateDictKey = "state_dict"; }
            else if (d.TryGet("model", out var m) && m is PyDict m1 && HoldsTensors(m1)) { sd = m1; StateDictKey = "model"; }
            else sd = d;
        }
        if (sd is null) return;
        foreach (var (name, r) in Flatten(sd, "", 0))
        {
            string n = name;
            if (n.StartsWith("module.", StringComparison.Ordinal)) { n = n["module.".Length..]; StrippedModulePrefix = true; }
            if (!_refs.TryAdd(n, r)) throw new WeightFormatException($"{Path}: tensor '{n}' appears twice");
            _infos.Add(new TensorInfo(n, r.DType, r.Shape));
        }
    }

    static bool HoldsTensors(PyDict d) => d.Items.Any(kv => kv.Value is TorchTensorRef);

    /// <summary>Every tensor under <paramref name="o"/>, named by its dict keys / list indices joined with '.'.</summary>
    public static IEnumerable<(string Name, TorchTensorRef Ref)> Flatten(object? o, string prefix, int depth)
    {
        if (depth > 64) yield break; // cycles through the memo cannot recurse forever
        switch (o)
        {
            case TorchTensorRef r: yield return (prefix, r); break;
            case PyDict d:
                foreach (var kv in d.Items)
                    foreach (var x in Flatten(kv.Value, Join(prefix, KeyText(kv.Key)), depth + 1)) yield return x;
                break;
            case PyList l:
                for (int i = 0; i < l.Count; i++) foreach (var x in Flatten(l[i], Join(prefix, i.ToString()), depth + 1)) yield return x;
                break;
            case PyTuple t:
                for (int i = 0; i < t.Count; i++) foreach (var x in Flatten(t[i], Join(prefix, i.ToString()), depth + 1)) yield return x;
                break;
        }
    }

    static string Join(string p, string k) => p.Length == 0 ? k : p + "." + k;
    static string KeyText(object? k) => k switch { string s => s, null => "None", _ => Pickle.Repr(k) };

    /// <summary>Every tensor in the file (optimizer state included), for `fiber inspect`.</summary>
    public IEnumerable<(string Name, TorchTensorRef Ref)> AllTensors() => Flatten(Root, "", 0);

    /// <summary>The non-tensor leaves of the file as (path, short text), state dict excluded.</summary>
    public IEnumerable<(string Path, string Value)> Metadata(int maxDepth = 6, int maxItems = 40)
    {
        var list = new List<(string, string)>();
        void Walk(object? o, string p, int depth)
        {
            if (list.Count > 2000) return;
            switch (o)
            {
                case TorchTensorRef: return;
                case PyDict d when depth < maxDepth:
                    if (p.Length > 0 && p == StateDictKey) { list.Add((p, $"<state dict: {_infos.Count} tensors>")); return; }
                    int i = 0;
                    foreach (var kv in d.Items)
                    {
                        if (i++ >= maxItems) { list.Add((Join(p, "…"), $"{d.Count - maxItems} more")); break; }
                        Walk(kv.Value, Join(p, KeyText(kv.Key)), depth + 1);
                    }
                    return;
                case PyList or PyTuple when depth < maxDepth:
                    {
                        var items = o is PyList l ? l.ToArray() : ((PyTuple)o).Items;
                        if (items.All(x => x is not (PyDict or PyList or PyTuple or TorchTensorRef or PyObject)))
                        { list.Add((p, Pickle.Repr(o))); return; }
                        for (int k = 0; k < items.Length && k < maxItems; k++) Walk(items[k], Join(p, k.ToString()), depth + 1);
                        return;
                    }
                case PyObject po:
                    list.Add((p, po.ToString()));
                    if (po.State is PyDict st && depth < maxDepth) Walk(st, p, depth + 1);
                    return;
                default:
                    list.Add((p, Pickle.Repr(o)));
                    return;
            }
        }
        Walk(Root, "", 0);
        return list;
    }

    // ------------------------------------------------------------------ reading
    public HostTensor Read(string name) =>
        _refs.TryGetValue(name, out var r) ? ReadRef(r) : throw new KeyNotFoundException($"{Path}: no tensor '{name}'");

    public TorchTensorRef GetRef(string name) => _refs[name];

    /// <summary>Reads one tensor: only the storage elements its view spans, gathered into C order.</summary>
    public HostTensor ReadRef(TorchTensorRef r)
    {
        int es = r.DType.Size();
        var (lo, hi) = r.Extent();
        long rootOff = 0; var st = r.Storage;
        while (st.Root is not null) { rootOff += st.RootOffset; st = st.Root; }
        if (st.FileOffset < 0) throw new WeightFormatException($"{Path}: storage '{st.Key}' has no data");
        long spanBytes = checked((hi - lo) * es);
        if (spanBytes > Array.MaxLength) throw new WeightFormatException($"{Path}: tensor of {spanBytes} bytes is too large to read at once");
        long start = st.FileOffset + (rootOff + lo) * es;
        if (start + spanBytes > _fs.Length) throw new WeightFormatException($"{Path}: storage '{st.Key}' runs past the end of the file");
        var span = new byte[spanBytes];
        lock (_lock) { _fs.Position = start; _fs.ReadExactly(span); }
        Interlocked.Add(ref _bytesRead, spanBytes);
        long n = r.Numel;
        // A stride-0 (expanded) view may describe far more elements than it stores; refuse absurd ones
        // rather than allocate gigabytes for a corrupt size.
        if (n * es > Array.MaxLength || n * es > Math.Max(256L << 20, 64 * spanBytes))
            throw new WeightFormatException($"{Path}: view {HostTensor.Fmt(r.Shape)} of a {hi - lo}-element span is implausibly large");
        byte[] outb;
        if (IsContiguous(r.Shape, r.Stride) && span.LongLength == n * es) outb = span;
        else
        {
            outb = new byte[n * es];
            int rank = r.Shape.Length;
            var idx = new long[rank];
            for (long i = 0; i < n; i++)
            {
                long src = 0;
                for (int d = 0; d < rank; d++) src += idx[d] * r.Stride[d];
                Buffer.BlockCopy(span, (int)(src * es), outb, (int)(i * es), es);
                for (int d = rank - 1; d >= 0; d--) { if (++idx[d] < r.Shape[d]) break; idx[d] = 0; }
            }
        }
        if (BigEndian) HostTensor.SwapInPlace(outb, es);
        return new HostTensor(r.DType, (long[])r.Shape.Clone(), outb);
    }

    static bool IsContiguous(long[] shape, long[] stride)
    {
        long s = 1;
        for (int d = shape.Length - 1; d >= 0; d--)
        {
            if (shape[d] != 1 && stride[d] != s) return false;
            s *= shape[d];
        }
        return true;
    }

    public void Dispose() => _fs.Dispose();
}
