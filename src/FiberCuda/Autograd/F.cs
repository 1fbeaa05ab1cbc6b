using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Autograd;

/// <summary>
/// Differentiable ops over whatever backend the inputs live on. Each forward is a few IBackend calls
/// plus a <see cref="Node"/> on the tape (when grad mode is on and an input needs a gradient); the
/// matching backward rule is in <see cref="BackwardRules"/>. Outputs are new tensors (Reshape shares
/// storage); statistics are f32 (f64 for f64 inputs).
/// </summary>
public static class F
{
    public const int DefaultIgnoreIndex = -100;

    internal static DType StatType(Tensor x) => x.DType == DType.F64 ? DType.F64 : DType.F32;

    static Dictionary<string, object?> A(params (string k, object? v)[] kv)
    {
        var d = new Dictionary<string, object?>();
        foreach (var (k, v) in kv) d[k] = v;
        return d;
    }

    static Tensor Record(string op, Tensor y, Tensor[] inputs, Tensor?[]? saved = null,
                         Dictionary<string, object?>? attrs = null, Tensor[]? owned = null)
    {
        if (Engine.ShouldRecord(inputs)) Engine.Attach(new Node(op, inputs, new[] { y }, saved, attrs, owned), y);
        else if (owned is not null) foreach (var t in owned) t.Dispose();
        return y;
    }

    static int[] WithLast(int[] shape, int last) { var s = (int[])shape.Clone(); s[^1] = last; return s; }

    static void Same(Tensor a, Tensor b, string op)
    {
        if (!ShapeUtil.Equal(a.Shape, b.Shape)) throw new ArgumentException($"{op}: shapes {ShapeUtil.Format(a.Shape)} and {ShapeUtil.Format(b.Shape)} differ");
    }

    // ---------------------------------------------------------------- linear algebra

    /// <summary>y = x·Wᵀ + b; x [..., in], W [out, in] (PyTorch layout), b [out].</summary>
    public static Tensor Linear(Tensor x, Tensor w, Tensor? b = null)
    {
        var be = x.Backend;
        int k = x.Dim(-1), n = w.Dim(0);
        if (w.Rank != 2 || w.Dim(1) != k) throw new ArgumentException($"Linear: weight {w} does not take inputs of width {k}");
        int m = checked((int)(x.Numel / Math.Max(1, k)));
        var y = be.Empty(WithLast(x.Shape, n), x.DType);
        be.Gemm(new GemmArgs(x, w, y, m, n, k, TransB: true, Bias: b));
        return Record("linear", y, b is null ? new[] { x, w } : new[] { x, w, b });
    }

    /// <summary>
    /// Batched op(a)·op(b): a [..., M, K] ([..., K, M] when transA), b the same batch dims or 2-D
    /// (shared by every batch item), [K, N] ([N, K] when transB).
    /// </summary>
    public static Tensor MatMul(Tensor a, Tensor b, bool transA = false, bool transB = false)
    {
        var be = a.Backend;
        var mm = MatMulShape.Of(a, b, transA, transB);
        var shape = a.Shape[..^2].Concat(new[] { mm.M, mm.N }).ToArray();
        var y = be.Empty(shape, a.DType);
        be.Gemm(new GemmArgs(a, b, y, mm.M, mm.N, mm.K, transA, transB, Batch: mm.Batch,
            StrideA: (long)mm.M * mm.K, StrideB: mm.BroadcastB ? 0 : (long)mm.K * mm.N, StrideC: (long)mm.M * mm.N));
        return Record("matmul", y, new[] { a, b }, attrs: A(("transA", transA), ("transB", transB)));
    }

    internal readonly record struct MatMulShape(int M, int N, int K, int Batch, bool BroadcastB)
    {
        public static MatMulShape Of(Tensor a, Tensor b, bool transA, bool transB)
        {
            if (a.Rank < 2 || b.Rank < 2) throw new ArgumentException("MatMul: operands need rank ≥ 2");
            int m = transA ? a.Dim(-1) : a.Dim(-2), k = transA ? a.Dim(-2) : a.Dim(-1);
            int kb = transB ? b.Dim(-1) : b.Dim(-2), n = transB ? b.Dim(-2) : b.Dim(-1);
            if (k != kb) throw new ArgumentException($"MatMul: inner dims {k} and {kb} differ ({a}, {b})");
            int batch = checked((int)ShapeUtil.Numel(a.Shape.AsSpan(0, a.Rank - 2)));
            bool bc = b.Rank == 2 && batch != 1;
            if (!bc && !ShapeUtil.Equal(a.Shape.AsSpan(0, a.Rank - 2), b.Shape.AsSpan(0, b.Rank - 2)))
                throw new ArgumentException($"MatMul: batch dims of {a} and {b} differ");
            return new MatMulShape(m, n, k, batch, bc);
        }
    }

    // ---------------------------------------------------------------- elementwise

    public static Tensor Add(Tensor a, Tensor b)
    {
        Same(a, b, "Add");
        var y = a.Backend.Empty(a.Shape, a.DType);
        a.Backend.Add(a, b, y);
        return Record("add", y, new[] { a, b });
    }

    public static Tensor Mul(Tensor a, Tensor b)
    {
        Same(a, b, "Mul");
        var y = a.Backend.Empty(a.Shape, a.DType);
        a.Backend.Mul(a, b, y);
        return Record("mul", y, new[] { a, b });
    }

    public static Tensor Scale(Tensor x, float s)
    {
        var y = x.Backend.Empty(x.Shape, x.DType);
        x.Backend.Scale(x, s, y);
        return Record("scale", y, new[] { x }, attrs: A(("s", s)));
    }

    /// <summary>a − b.</summary>
    public static Tensor Sub(Tensor a, Tensor b) => Add(a, Scale(b, -1f));

    /// <summary>y = x + bias, bias [C] over rows of x [..., C].</summary>
    public static Tensor AddBias(Tensor x, Tensor bias)
    {
        var y = x.Backend.Empty(x.Shape, x.DType);
        x.Backend.AddBias(x, bias, y);
        return Record("add_bias", y, new[] { x, bias });
    }

    /// <summary>
    /// y = x + b where b's shape is a suffix of x's (b repeats over x's leading dims): relative-position
    /// biases, masks, positional embeddings. An AddBias over [rows, b.Numel] views.
    /// </summary>
    public static Tensor AddBroadcast(Tensor x, Tensor b)
    {
        if (b.Rank > x.Rank || !ShapeUtil.Equal(x.Shape.AsSpan(x.Rank - b.Rank), b.Shape))
            throw new ArgumentException($"AddBroadcast: {ShapeUtil.Format(b.Shape)} is not a suffix of {ShapeUtil.Format(x.Shape)}");
        int w = (int)b.Numel;
        var y = x.Backend.Empty(x.Shape, x.DType);
        if (w > 0 && x.Numel > 0) x.Backend.AddBias(x.Reshape(-1, w), b.Reshape(w), y.Reshape(-1, w));
        return Record("add_broadcast", y, new[] { x, b });
    }

    /// <summary>
    /// y = s·x with s a one-element tensor (a learnable gate such as FIBER's α). Two rank-1 GEMMs in the
    /// backward: dx += s·dy, ds += Σ dy⊙x. s must have x's dtype.
    /// </summary>
    public static Tensor MulScalar(Tensor x, Tensor s)
    {
        if (s.Numel != 1) throw new ArgumentException($"MulScalar: {s} is not one element");
        int n = checked((int)x.Numel);
        var y = x.Backend.Empty(x.Shape, x.DType);
        if (n > 0) x.Backend.Gemm(new GemmArgs(x.Reshape(n, 1), s.Reshape(1, 1), y.Reshape(n, 1), n, 1, 1));
        return Record("mul_scalar", y, new[] { x, s });
    }

    /// <summary>The same values with no history: gradients stop here.</summary>
    public static Tensor Detach(Tensor x) => new(x.Storage, (int[])x.Shape.Clone(), x.DType) { Name = x.Name };

    /// <summary>y = gelu(x + bias) with the exact erf GELU; bias optional.</summary>
    public static Tensor BiasGelu(Tensor x, Tensor? bias)
    {
        var y = x.Backend.Empty(x.Shape, x.DType);
        x.Backend.BiasGelu(x, bias, y);
        return Record("bias_gelu", y, bias is null ? new[] { x } : new[] { x, bias });
    }

    public static Tensor Gelu(Tensor x) => BiasGelu(x, null);

    // ---------------------------------------------------------------- normalisation

    public static Tensor LayerNorm(Tensor x, Tensor gamma, Tensor beta, float eps = 1e-5f)
    {
        var be = x.Backend;
        long rows = ShapeUtil.Rows(x.Shape);
        var y = be.Empty(x.Shape, x.DType);
        var mean = be.Empty(new[] { (int)rows }, StatType(x));
        var rstd = be.Empty(new[] { (int)rows }, StatType(x));
        be.LayerNorm(x, null, gamma, beta, eps, y, null, mean, rstd);
        return Record("layernorm", y, new[] { x, gamma, beta }, saved: new[] { x, mean, rstd }, owned: new[] { mean, rstd });
    }

    /// <summary>
    /// Fused residual + LayerNorm: s = x + residual, y = LayerNorm(s). Returns both (s carries the
    /// residual stream on, y feeds the next sublayer); gradients reaching s and y both flow back.
    /// </summary>
    public static (Tensor Sum, Tensor Y) LayerNormResidual(Tensor x, Tensor residual, Tensor gamma, Tensor beta, float eps = 1e-5f)
    {
        Same(x, residual, "LayerNormResidual");
        var be = x.Backend;
        long rows = ShapeUtil.Rows(x.Shape);
        var s = be.Empty(x.Shape, x.DType);
        var y = be.Empty(x.Shape, x.DType);
        var mean = be.Empty(new[] { (int)rows }, StatType(x));
        var rstd = be.Empty(new[] { (int)rows }, StatType(x));
        be.LayerNorm(x, residual, gamma, beta, eps, y, s, mean, rstd);
        var inputs = new[] { x, residual, gamma, beta };
        if (Engine.ShouldRecord(inputs))
            Engine.Attach(new Node("layernorm_residual", inputs, new[] { s, y }, saved: new[] { s, mean, rstd }, owned: new[] { mean, rstd }), s, y);
        else { mean.Dispose(); rstd.Dispose(); }
        return (s, y);
    }

    /// <summary>y = softmax(scale·x) over the last dim.</summary>
    public static Tensor Softmax(Tensor x, float scale = 1f)
    {
        var y = x.Backend.Empty(x.Shape, x.DType);
        x.Backend.Softmax(x, scale, y);
        return Record("softmax", y, new[] { x }, saved: new[] { y }, attrs: A(("scale", scale)));
    }

    /// <summary>y = x / max(‖x‖₂, eps) over the last dim.</summary>
    public static Tensor L2Normalize(Tensor x, float eps = 1e-12f)
    {
        var be = x.Backend;
        var y = be.Empty(x.Shape, x.DType);
        var norm = be.Empty(new[] { (int)ShapeUtil.Rows(x.Shape) }, StatType(x));
        be.L2Normalize(x, eps, y, norm);
        return Record("l2normalize", y, new[] { x }, saved: new[] { y, norm }, attrs: A(("eps", eps)), owned: new[] { norm });
    }

    // ---------------------------------------------------------------- losses

    /// <summary>
    /// Mean cross-entropy over the rows whose target is not <paramref name="ignoreIndex"/> (0 when every
    /// row is ignored). logits [..., C], targets [...] i32/i64 (read on the host to count rows).
    /// Returns a one-element tensor [1], f32 (f64 for f64 logits).
    /// </summary>
    /// <param name="keptRows">The number of non-ignored targets when the caller knows it (skips reading targets back from a GPU).</param>
    public static Tensor CrossEntropy(Tensor logits, Tensor targets, int ignoreIndex = DefaultIgnoreIndex, int? keptRows = null)
    {
        var be = logits.Backend;
        int n = checked((int)ShapeUtil.Rows(logits.Shape));
        if (targets.Numel != n) throw new ArgumentException($"CrossEntropy: {targets.Numel} targets for {n} rows");
        var st = StatType(logits);
        var loss = be.Empty(new[] { n }, st);
        var lse = be.Empty(new[] { n }, st);
        int c = logits.Dim(-1);
        be.CrossEntropy(logits.Reshape(n, c), targets.Reshape(n), ignoreIndex, loss, lse); // the op's contract is [N,C] and [N]
        int count = keptRows ?? CountKept(targets, ignoreIndex);
        var y = be.Empty(new[] { 1 }, st);
        be.SumAll(loss, y);
        be.Scale(y, count == 0 ? 0f : 1f / count, y);
        loss.Dispose();
        return Record("cross_entropy", y, new[] { logits }, saved: new[] { targets, lse },
            attrs: A(("ignoreIndex", ignoreIndex), ("count", count)), owned: new[] { lse });
    }

    static int CountKept(Tensor targets, int ignoreIndex)
    {
        int c = 0;
        if (targets.DType == DType.I32) { foreach (int t in targets.ToArray<int>()) if (t != ignoreIndex) c++; }
        else if (targets.DType == DType.I64) { foreach (long t in targets.ToArray<long>()) if (t != ignoreIndex) c++; }
        else throw new ArgumentException($"targets must be i32 or i64, not {targets.DType.Name()}");
        return c;
    }

    // ---------------------------------------------------------------- embedding, dropout

    /// <summary>y[..., :] = weight[ids[...], :]; weight [V, D].</summary>
    public static Tensor Embedding(Tensor weight, Tensor ids)
    {
        var be = weight.Backend;
        int d = weight.Dim(-1);
        var y = be.Empty(ids.Shape.Concat(new[] { d }).ToArray(), weight.DType);
        be.Embedding(weight, ids.Reshape((int)ids.Numel), y.Reshape((int)ids.Numel, d)); // the op's contract is ids [N], y [N,D]
        return Record("embedding", y, new[] { weight }, saved: new[] { ids });
    }

    /// <summary>
    /// Inverted dropout with the Philox mask of (seed, offset): identity (the same tensor) when not
    /// training or p = 0. Callers advance offset by x.Numel per call so masks never repeat.
    /// </summary>
    public static Tensor Dropout(Tensor x, float p, ulong seed, ulong offset, bool training = true)
    {
        if (!training || p == 0f) return x;
        var y = x.Backend.Empty(x.Shape, x.DType);
        x.Backend.Dropout(x, p, seed, offset, y);
        return Record("dropout", y, new[] { x }, attrs: A(("p", p), ("seed", seed), ("offset", offset)));
    }

    // ---------------------------------------------------------------- reductions

    /// <summary>Σ of all elements, a one-element tensor [1] (f32; f64 for f64 inputs).</summary>
    public static Tensor Sum(Tensor x)
    {
        var y = x.Backend.Empty(new[] { 1 }, StatType(x));
        x.Backend.SumAll(x, y);
        return Record("sum", y, new[] { x });
    }

    public static Tensor Mean(Tensor x) => Scale(Sum(x), x.Numel == 0 ? 0f : (float)(1.0 / x.Numel));

    /// <summary>y[...] = Σ over the last dim; shape drops the last dim (a rank-1 input gives [1]).</summary>
    public static Tensor SumLastDim(Tensor x)
    {
        var shape = x.Rank <= 1 ? new[] { 1 } : x.Shape[..^1];
        var y = x.Backend.Empty(shape, x.DType);
        x.Backend.SumLastDim(x, y);
        return Record("sum_last_dim", y, new[] { x });
    }

    // ---------------------------------------------------------------- layout

    /// <summary>Same storage, new shape (one -1 allowed).</summary>
    public static Tensor Reshape(Tensor x, params int[] shape)
    {
        var y = x.Reshape(shape);
        return Record("reshape", y, new[] { x });
    }

    /// <summary>y.shape[i] = x.shape[perm[i]].</summary>
    public static Tensor Permute(Tensor x, params int[] perm)
    {
        var shape = new int[x.Rank];
        if (perm.Length != x.Rank) throw new ArgumentException($"Permute: {perm.Length} axes for {x}");
        for (int i = 0; i < perm.Length; i++) shape[i] = x.Shape[perm[i]];
        var y = x.Backend.Empty(shape, x.DType);
        x.Backend.Permute(x, perm, y, accumulate: false);
        return Record("permute", y, new[] { x }, attrs: A(("perm", (int[])perm.Clone())));
    }

    /// <summary>Swap two axes (a permute).</summary>
    public static Tensor Transpose(Tensor x, int a, int b)
    {
        var perm = Enumerable.Range(0, x.Rank).ToArray();
        if (a < 0) a += x.Rank; if (b < 0) b += x.Rank;
        (perm[a], perm[b]) = (perm[b], perm[a]);
        return Permute(x, perm);
    }

    /// <summary>x[..., start:start+len, ...] along <paramref name="axis"/>.</summary>
    public static Tensor Slice(Tensor x, int axis, int start, int len)
    {
        if (axis < 0) axis += x.Rank;
        var shape = (int[])x.Shape.Clone(); shape[axis] = len;
        var y = x.Backend.Empty(shape, x.DType);
        x.Backend.CopySlice(x, axis, start, y, 0, len, accumulate: false);
        return Record("slice", y, new[] { x }, attrs: A(("axis", axis), ("start", start), ("len", len)));
    }

    /// <summary>Concatenation along <paramref name="axis"/>; all other dims must match.</summary>
    public static Tensor Concat(IReadOnlyList<Tensor> xs, int axis)
    {
        if (xs.Count == 0) throw new ArgumentException("Concat of nothing");
        var x0 = xs[0];
        if (axis < 0) axis += x0.Rank;
        var shape = (int[])x0.Shape.Clone(); shape[axis] = xs.Sum(t => t.Shape[axis]);
        var y = x0.Backend.Empty(shape, x0.DType);
        int off = 0;
        foreach (var t in xs) { x0.Backend.CopySlice(t, axis, 0, y, off, t.Shape[axis], accumulate: false); off += t.Shape[axis]; }
        return Record("concat", y, xs.ToArray(), attrs: A(("axis", axis)));
    }

    /// <summary>x converted to <paramref name="dtype"/> (float dtypes); the gradient is cast back.</summary>
    public static Tensor Cast(Tensor x, DType dtype)
    {
        var y = x.Backend.Empty(x.Shape, dtype);
        x.Backend.Cast(x, y);
        return Record("cast", y, new[] { x });
    }
}
