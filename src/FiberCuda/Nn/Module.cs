using FiberCuda.Backends;
using FiberCuda.IO;
using FiberCuda.Tensors;

namespace FiberCuda.Nn;

/// <summary>
/// Where a model's tensors live and how its dropout masks are drawn. One context is shared by every
/// module of a model: dropout masks are Philox streams of (Seed, offset), and each dropout call takes
/// a fresh offset range so no two masks of a step repeat. Call <see cref="NextStep"/> between steps
/// to change the masks deterministically.
/// </summary>
public sealed class NnContext(IBackend backend, DType dtype = DType.F32, ulong seed = 0)
{
    public IBackend Backend { get; } = backend;
    public DType DType { get; } = dtype;
    public ulong Seed { get; set; } = seed;
    public ulong Offset { get; set; }

    /// <summary>Reserves <paramref name="n"/> counter values and returns the first.</summary>
    public ulong TakeOffset(long n) { var o = Offset; Offset += (ulong)n; return o; }

    /// <summary>Moves the counter to the start of step <paramref name="step"/> (2^40 values per step).</summary>
    public void NextStep(ulong step) => Offset = step << 40;

    public static NnContext Cpu(DType dtype = DType.F32) => new(Backends.Backend.Cpu, dtype);

    readonly Dictionary<string, Tensor> _constants = [];

    /// <summary>A constant tensor shared by every module of the model that asks for the same key (shift masks,
    /// relative-position indices: one per stage, not one per block).</summary>
    public Tensor Constant(string key, Func<Tensor> make)
    {
        lock (_constants)
        {
            if (!_constants.TryGetValue(key, out var t)) _constants[key] = t = make();
            return t;
        }
    }
}

/// <summary>
/// A TorchSharp-style module: named parameters, recomputed buffers and children, so that a
/// parameter's full dotted name is the PyTorch state_dict key (`vit_model.layers.2.blocks.15.attn.qkv_i2t.weight`).
/// Parameters are allocated (zeros) at construction on the context's backend; values come from
/// <see cref="LoadStateDict"/> or an initialiser. Buffers the official code stores but the engine
/// rebuilds (`relative_position_index`, `attn_mask`, `position_ids`) are declared by name only, so a
/// strict load accepts and skips them.
/// </summary>
public abstract class Module
{
    readonly List<KeyValuePair<string, Tensor>> _params = [];
    readonly List<string> _recomputed = [];
    readonly List<KeyValuePair<string, Module>> _children = [];

    protected Module(NnContext ctx) { Ctx = ctx; }

    public NnContext Ctx { get; }
    public bool Training { get; private set; } = true;

    /// <summary>Registers a parameter (zeros, requires grad) under <paramref name="name"/>.</summary>
    protected Tensor Param(string name, params int[] shape) => Param(name, Ctx.DType, shape);

    /// <summary>A parameter in a fixed dtype whatever the model's (e.g. a scalar the kernels read in f32).</summary>
    protected Tensor Param(string name, DType dtype, params int[] shape)
    {
        Check(name);
        var t = Ctx.Backend.Zeros(shape, dtype);
        t.RequiresGrad = true;
        t.Name = name;
        _params.Add(new(name, t));
        return t;
    }

    /// <summary>Declares a buffer that the official state_dict carries but this module recomputes.</summary>
    protected void RecomputedBuffer(string name) { Check(name); _recomputed.Add(name); }

    protected T Child<T>(string name, T m) where T : Module
    {
        Check(name);
        _children.Add(new(name, m));
        return m;
    }

    void Check(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('.')) throw new ArgumentException($"bad member name '{name}'");
        if (_params.Any(p => p.Key == name) || _children.Any(c => c.Key == name) || _recomputed.Contains(name))
            throw new ArgumentException($"member '{name}' registered twice");
    }

    public IEnumerable<KeyValuePair<string, Module>> NamedChildren() => _children;

    /// <summary>All parameters with their full names, own first, then children in registration order (as PyTorch).</summary>
    public IEnumerable<(string Name, Tensor Tensor)> NamedParameters(string prefix = "")
    {
        foreach (var (n, t) in _params) yield return (prefix + n, t);
        foreach (var (n, c) in _children)
            foreach (var p in c.NamedParameters(prefix + n + ".")) yield return p;
    }

    public IEnumerable<Tensor> Parameters() => NamedParameters().Select(p => p.Tensor);

    /// <summary>Full names of the recomputed buffers.</summary>
    public IEnumerable<string> RecomputedBufferNames(string prefix = "")
    {
        foreach (var n in _recomputed) yield return prefix + n;
        foreach (var (n, c) in _children)
            foreach (var b in c.RecomputedBufferNames(prefix + n + ".")) yield return b;
    }

    /// <summary>Training mode (dropout, drop-path) for this module and every descendant.</summary>
    public void Train(bool on = true)
    {
        Training = on;
        foreach (var (_, c) in _children) c.Train(on);
    }

    public void Eval() => Train(false);

    /// <summary>Drops the gradients of every parameter (the next backward starts from zero).</summary>
    public void ZeroGrad()
    {
        foreach (var (_, t) in NamedParameters()) { t.Grad?.Dispose(); t.Grad = null; }
    }

    /// <summary>Names missing from, unexpected in, or mis-shaped in <paramref name="sd"/>. Recomputed buffers are neither.</summary>
    public LoadReport CheckStateDict(IReadOnlyDictionary<string, Tensor> sd, string prefix = "")
    {
        var r = new LoadReport();
        var mine = new HashSet<string>();
        foreach (var (n, t) in NamedParameters(prefix))
        {
            mine.Add(n);
            if (!sd.TryGetValue(n, out var s)) r.Missing.Add(n);
            else if (!ShapeUtil.Equal(s.Shape, t.Shape)) r.Mismatched.Add($"{n} (given {ShapeUtil.Format(s.Shape)}, model {ShapeUtil.Format(t.Shape)})");
        }
        foreach (var b in RecomputedBufferNames(prefix)) mine.Add(b);
        foreach (var k in sd.Keys) if (!mine.Contains(k)) r.Unexpected.Add(k);
        return r;
    }

    /// <summary>
    /// Copies every parameter's value from <paramref name="sd"/> (any backend, any float dtype; cast as
    /// needed). Strict: anything missing, unexpected or mis-shaped fails with all their names and nothing is
    /// copied. Non-strict: mis-shapes still fail; missing parameters keep their values, unexpected keys are ignored.
    /// </summary>
    public LoadReport LoadStateDict(IReadOnlyDictionary<string, Tensor> sd, bool strict = true, string prefix = "")
    {
        var r = CheckStateDict(sd, prefix);
        if (r.Mismatched.Count > 0 || strict && !r.Ok)
            throw new WeightLoadException($"state dict does not fit {GetType().Name}: {r}", r);
        var be = Ctx.Backend;
        foreach (var (n, t) in NamedParameters(prefix))
        {
            if (!sd.TryGetValue(n, out var s)) continue;
            if (ReferenceEquals(s.Backend, be)) be.Cast(s, t);
            else { using var c = be.CopyFrom(s); be.Cast(c, t); }
        }
        return r;
    }
}

public static class ModuleLoading
{
    /// <summary>
    /// Loads the parameters of <paramref name="m"/> straight from a weight file (safetensors, torch checkpoint, HF shards),
    /// reading only the tensors it needs. <paramref name="keep"/> selects the file's keys that belong to this module
    /// (default: all); strictness is as <see cref="Module.LoadStateDict"/> over the kept keys.
    /// </summary>
    public static LoadReport LoadFrom(this Module m, IWeightSource src, bool strict = true, Func<string, bool>? keep = null)
    {
        var names = src.Tensors.Select(t => t.Name).Where(n => keep is null || keep(n)).ToList();
        var mine = m.NamedParameters().Select(p => p.Name).ToHashSet();
        // Shapes and names are checked before any data is read; only this module's parameters are read.
        var shapes = src.Tensors.Where(t => names.Contains(t.Name)).ToDictionary(t => t.Name, t => t);
        var sd = new Dictionary<string, Tensor>();
        var probe = new LoadReport();
        foreach (var (n, p) in m.NamedParameters())
            if (shapes.TryGetValue(n, out var info) && !info.Shape.SequenceEqual(p.Shape.Select(d => (long)d)))
                probe.Mismatched.Add($"{n} (file {HostTensor.Fmt(info.Shape)}, model {ShapeUtil.Format(p.Shape)})");
        if (probe.Mismatched.Count > 0) throw new WeightLoadException($"{src.Path}: {probe}", probe);
        try
        {
            foreach (var n in names)
            {
                if (mine.Contains(n))
                {
                    var h = src.Read(n);
                    if (h.DType is not (WeightDType.F32 or WeightDType.BF16 or WeightDType.F64)) h = h.ConvertTo(WeightDType.F32);
                    sd[n] = h.ToTensor(m.Ctx.Backend);
                }
                else
                {
                    // an unexpected (or recomputed-buffer) key: a placeholder so the report names it without reading it
                    sd[n] = m.Ctx.Backend.Empty([1], m.Ctx.DType);
                }
            }
            return m.LoadStateDict(sd, strict);
        }
        finally { foreach (var t in sd.Values) t.Dispose(); }
    }
}

/// <summary>Children named "0", "1", … (nn.ModuleList).</summary>
public sealed class ModuleList<T> : Module where T : Module
{
    readonly List<T> _items = [];
    public ModuleList(NnContext ctx, IEnumerable<T> items) : base(ctx)
    {
        foreach (var m in items) { Child(_items.Count.ToString(), m); _items.Add(m); }
    }
    public T this[int i] => _items[i];
    public int Count => _items.Count;
}
