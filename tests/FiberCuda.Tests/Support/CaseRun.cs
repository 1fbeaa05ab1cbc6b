using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Support;

/// <summary>
/// One run of an <see cref="OpCase"/> on one backend in one float dtype. Inputs are deterministic per
/// (case, input name) and lie on the bf16 grid, so f64, f32 and bf16 runs see identical values and
/// differences come from the op alone. A run can be replayed (gradcheck): the same names return the
/// same tensors.
/// </summary>
public sealed class CaseRun : IDisposable
{
    readonly string _caseName;
    readonly Dictionary<string, Tensor> _tensors = new();
    readonly List<(string Name, Tensor T)> _gradInputs = new();
    readonly List<(string Name, Tensor T)> _outputs = new();
    readonly Dictionary<string, double[]> _values = new();

    public CaseRun(string caseName, IBackend backend, DType dtype, bool autograd)
    {
        _caseName = caseName; Backend = backend; DType = dtype; Autograd = autograd;
    }

    public IBackend Backend { get; }
    /// <summary>The float dtype of this run (f64 for the reference run).</summary>
    public DType DType { get; }
    public bool Autograd { get; }
    /// <summary>Stats dtype the backend uses for this run (f32, or f64 in the f64 run).</summary>
    public DType StatType => DType == DType.F64 ? DType.F64 : DType.F32;

    internal IReadOnlyList<(string Name, Tensor T)> GradInputs => _gradInputs;
    internal IReadOnlyList<(string Name, Tensor T)> Outputs => _outputs;
    internal Dictionary<string, double[]> Values => _values;
    internal void ResetOutputs() { _outputs.Clear(); _values.Clear(); }

    /// <summary>Deterministic values in [lo, hi), rounded to bf16.</summary>
    public static double[] Values01(string seedText, long n, double lo = -1, double hi = 1)
    {
        var rng = new Random(StableHash(seedText));
        var v = new double[n];
        for (long i = 0; i < n; i++) v[i] = BFloat16.Round((float)(lo + (hi - lo) * rng.NextDouble()));
        return v;
    }

    public static int StableHash(string s)
    {
        unchecked
        {
            int h = (int)2166136261;
            foreach (char c in s) h = (h ^ c) * 16777619;
            return h & 0x7fffffff;
        }
    }

    /// <summary>A float input of this run's dtype (or <paramref name="dtype"/>); requires grad in autograd cases unless <paramref name="grad"/> is false.</summary>
    public Tensor Input(string name, int[] shape, double lo = -1, double hi = 1, bool grad = true, DType? dtype = null)
    {
        if (_tensors.TryGetValue(name, out var t)) return t;
        t = Backend.FromDoubles(Values01(_caseName + "/" + name, ShapeUtil.Numel(shape), lo, hi), shape, dtype ?? DType);
        t.Name = name;
        _tensors[name] = t;
        if (Autograd && grad) { t.RequiresGrad = true; _gradInputs.Add((name, t)); }
        return t;
    }

    /// <summary>Index tensor with values in [0, vocab); every <paramref name="ignoreEvery"/>-th entry is <paramref name="ignoreValue"/>.</summary>
    public Tensor Ids(string name, int[] shape, int vocab, DType dtype = DType.I32, int ignoreEvery = 0, int ignoreValue = -100)
    {
        if (_tensors.TryGetValue(name, out var t)) return t;
        var rng = new Random(StableHash(_caseName + "/" + name));
        long n = ShapeUtil.Numel(shape);
        var v = new double[n];
        for (long i = 0; i < n; i++) v[i] = ignoreEvery > 0 && i % ignoreEvery == ignoreEvery - 1 ? ignoreValue : rng.Next(vocab);
        t = Backend.FromDoubles(v, shape, dtype);
        t.Name = name;
        _tensors[name] = t;
        return t;
    }

    /// <summary>A tensor made by the case itself (e.g. a zeroed or prefilled output buffer), freed with the run.</summary>
    public Tensor Keep(string name, Tensor t) { _tensors[name + "#" + _tensors.Count] = t; return t; }

    /// <summary>Records an output: its values are compared across runs; in autograd cases it also feeds the loss.</summary>
    public void Output(string name, Tensor t)
    {
        _outputs.Add((name, t));
        _values[name] = t.ToDoubleArray();
    }

    public void Dispose()
    {
        foreach (var t in _tensors.Values) { t.Grad?.Dispose(); t.Grad = null; t.Dispose(); }
        _tensors.Clear();
    }
}
