using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Optim;

/// <summary>A set of parameters sharing a learning rate and weight decay (e.g. no decay for biases and norms).</summary>
public sealed class ParamGroup
{
    public ParamGroup(IEnumerable<Tensor> parameters, float lr, float weightDecay = 0f, string? name = null)
    {
        Params = parameters.ToList(); Lr = lr; WeightDecay = weightDecay; Name = name;
    }
    public List<Tensor> Params { get; }
    public float Lr { get; set; }
    public float WeightDecay { get; set; }
    public string? Name { get; }
}

/// <summary>Per-parameter optimizer state: moments (f32; f64 for f64 params) and, for bf16 params, the f32 master weights.</summary>
public sealed class AdamWState : IDisposable
{
    public AdamWState(Tensor m, Tensor v, Tensor? master) { M = m; V = v; Master = master; }
    public Tensor M { get; }
    public Tensor V { get; }
    public Tensor? Master { get; }
    public void Dispose() { M.Dispose(); V.Dispose(); Master?.Dispose(); }
}

/// <summary>
/// AdamW (decoupled weight decay, bias-corrected moments; defaults are FIBER's: β (0.9, 0.98), eps 1e-8) over <see cref="IBackend.AdamW"/>: one fused
/// backend call per group. bf16 parameters get fp32 master weights (created from the parameter on first
/// use) and receive their rounding after each step. Parameters without a gradient are skipped (their
/// state does not advance, but the shared step counter does, as in PyTorch).
/// </summary>
public sealed class AdamW : IDisposable
{
    readonly Dictionary<Tensor, AdamWState> _state = new(ReferenceEqualityComparer.Instance);

    public AdamW(IEnumerable<ParamGroup> groups, float beta1 = 0.9f, float beta2 = 0.98f, float eps = 1e-8f)
    {
        Groups = groups.ToList(); Beta1 = beta1; Beta2 = beta2; Eps = eps;
    }

    public AdamW(IEnumerable<Tensor> parameters, float lr, float weightDecay = 0.01f, float beta1 = 0.9f, float beta2 = 0.98f, float eps = 1e-8f)
        : this(new[] { new ParamGroup(parameters, lr, weightDecay) }, beta1, beta2, eps) { }

    public List<ParamGroup> Groups { get; }
    public float Beta1 { get; set; }
    public float Beta2 { get; set; }
    public float Eps { get; set; }
    /// <summary>Steps taken so far (the next Step uses Step + 1 for bias correction).</summary>
    public int StepCount { get; set; }

    /// <summary>State of <paramref name="p"/> (null before its first step), for checkpointing.</summary>
    public AdamWState? StateOf(Tensor p) => _state.TryGetValue(p, out var s) ? s : null;
    public IReadOnlyDictionary<Tensor, AdamWState> State => _state;

    /// <summary>Installs state loaded from a checkpoint (tensors on the parameter's backend, shapes as the parameter).</summary>
    public void SetState(Tensor p, AdamWState s)
    {
        if (_state.Remove(p, out var old)) old.Dispose();
        _state[p] = s;
    }

    /// <summary>One step; <paramref name="gradScale"/> multiplies every gradient first (clipping, loss-scale undo).</summary>
    public void Step(float gradScale = 1f)
    {
        StepCount++;
        using var _ = Grad.NoGrad();
        foreach (var group in Groups)
        {
            var items = new List<AdamWTensor>();
            IBackend? be = null;
            foreach (var p in group.Params)
            {
                if (p.Grad is null) continue;
                var s = GetOrCreate(p);
                items.Add(new AdamWTensor(p, p.Grad, s.M, s.V, s.Master, group.Lr, group.WeightDecay));
                be ??= p.Backend;
                if (!ReferenceEquals(be, p.Backend)) throw new InvalidOperationException("AdamW: a group's parameters live on different backends");
            }
            if (be is not null && items.Count > 0) be.AdamW(items, Beta1, Beta2, Eps, StepCount, gradScale);
        }
    }

    AdamWState GetOrCreate(Tensor p)
    {
        if (_state.TryGetValue(p, out var s)) return s;
        var be = p.Backend;
        var mt = p.DType == DType.F64 ? DType.F64 : DType.F32;
        Tensor? master = null;
        using (TensorScope.Suspend()) // optimizer state outlives the step that creates it
        {
            if (p.DType == DType.BF16) { master = be.Empty(p.Shape, DType.F32); be.Cast(p, master); }
            s = new AdamWState(be.Zeros(p.Shape, mt), be.Zeros(p.Shape, mt), master);
        }
        _state[p] = s;
        return s;
    }

    /// <summary>Zeroes (keeps) every gradient buffer, or drops them when <paramref name="setToNull"/>.</summary>
    public void ZeroGrad(bool setToNull = false)
    {
        foreach (var g in Groups)
            foreach (var p in g.Params)
            {
                if (p.Grad is null) continue;
                if (setToNull) { p.Grad.Dispose(); p.Grad = null; }
                else p.Backend.Fill(p.Grad, 0);
            }
    }

    public void Dispose()
    {
        foreach (var s in _state.Values) s.Dispose();
        _state.Clear();
    }
}

public static class GradClip
{
    /// <summary>‖all gradients‖₂ (one SumOfSquares per backend, read back to the host).</summary>
    public static double GlobalNorm(IEnumerable<Tensor> parameters)
    {
        var grads = parameters.Where(p => p.Grad is not null).Select(p => p.Grad!).ToList();
        if (grads.Count == 0) return 0;
        double total = 0;
        foreach (var byBackend in grads.GroupBy(g => g.Backend))
        {
            var be = byBackend.Key;
            using var y = be.Empty(new[] { 1 }, byBackend.Any(g => g.DType == DType.F64) ? DType.F64 : DType.F32);
            be.SumOfSquares(byBackend.ToList(), y);
            total += y.ToDoubleArray()[0];
        }
        return Math.Sqrt(total);
    }

    /// <summary>
    /// Scales every gradient by maxNorm/(norm + 1e-6) when the global norm exceeds maxNorm (PyTorch's
    /// clip_grad_norm_); returns the norm before clipping.
    /// </summary>
    public static double ClipGradNorm(IEnumerable<Tensor> parameters, double maxNorm)
    {
        var ps = parameters.ToList();
        double norm = GlobalNorm(ps);
        double coef = maxNorm / (norm + 1e-6);
        if (coef < 1)
            foreach (var p in ps)
                if (p.Grad is { } g) g.Backend.Scale(g, (float)coef, g);
        return norm;
    }
}
