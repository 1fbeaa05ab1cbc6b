using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Autograd;

/// <summary>
/// Every backward rule, one per op name (tinygrad keeps its gradient table in one place too). A rule
/// gets the output gradients (null where an output received none) and adds (+=) each input's gradient
/// into the buffer <see cref="GradSink.For"/> hands out. Only IBackend ops are used, so the same rules
/// run on the CPU, the emulated GPU and the GPU.
/// </summary>
public static class BackwardRules
{
    public static void Apply(Node n, Tensor?[] g, GradSink sink)
    {
        switch (n.Op)
        {
            case "linear": Linear(n, g[0]!, sink); break;
            case "matmul": MatMul(n, g[0]!, sink); break;
            case "add": Add(n, g[0]!, sink); break;
            case "mul": Mul(n, g[0]!, sink); break;
            case "scale": Scale(n, g[0]!, sink); break;
            case "add_bias": AddBias(n, g[0]!, sink); break;
            case "add_broadcast": AddBroadcast(n, g[0]!, sink); break;
            case "mul_scalar": MulScalar(n, g[0]!, sink); break;
            case "bias_gelu": BiasGelu(n, g[0]!, sink); break;
            case "layernorm": LayerNorm(n, g[0]!, sink); break;
            case "layernorm_residual": LayerNormResidual(n, g[0], g[1], sink); break;
            case "softmax": Softmax(n, g[0]!, sink); break;
            case "l2normalize": L2Normalize(n, g[0]!, sink); break;
            case "cross_entropy": CrossEntropy(n, g[0]!, sink); break;
            case "embedding": Embedding(n, g[0]!, sink); break;
            case "dropout": Dropout(n, g[0]!, sink); break;
            case "sum": Sum(n, g[0]!, sink); break;
            case "sum_last_dim": SumLastDim(n, g[0]!, sink); break;
            case "reshape": Reshape(n, g[0]!, sink); break;
            case "permute": Permute(n, g[0]!, sink); break;
            case "slice": Slice(n, g[0]!, sink); break;
            case "concat": Concat(n, g[0]!, sink); break;
            case "cast": Cast(n, g[0]!, sink); break;
            // Fused ops with their own op classes; their rules live beside the kernels' wrappers.
            case "itc_loss": HeadBackwardRules.Itc(n, g[0]!, sink); break;
            case "mlm_loss": HeadBackwardRules.Mlm(n, g[0]!, sink); break;
            case WindowAttentionOp.OpName: WindowAttentionOp.Backward(n, g, sink); break;
            case CrossAttentionOp.OpName: CrossAttentionOp.Backward(n, g, sink); break;
            case GatedResidualOp.OpName: GatedResidualOp.Backward(n, g, sink); break;
            case PatchMergeNormOp.OpName: PatchMergeNormOp.Backward(n, g, sink); break;
            case DropPathOp.OpName: DropPathOp.Backward(n, g, sink); break;
            default: throw new NotSupportedException($"no backward rule for op '{n.Op}'");
        }
    }

    /// <summary>A gradient buffer, or a zeroed scratch when the backend op insists on one the caller does not need.</summary>
    static Tensor GradOrScratch(GradSink sink, int i, Tensor like, List<Tensor> scratch)
    {
        if (sink.For(i) is { } g) return g;
        var t = like.Backend.Zeros(like.Shape, like.DType);
        scratch.Add(t);
        return t;
    }

    static void Free(List<Tensor> ts) { foreach (var t in ts) t.Dispose(); }

    // y = x·Wᵀ + b:  dx += dy·W,  dW += dyᵀ·x,  db += Σrows dy
    static void Linear(Node n, Tensor dy, GradSink sink)
    {
        Tensor x = n.Inputs[0], w = n.Inputs[1]; var be = dy.Backend;
        int k = x.Dim(-1), o = w.Dim(0), m = (int)(x.Numel / Math.Max(1, k));
        if (sink.For(0) is { } dx) be.Gemm(new GemmArgs(dy, w, dx, m, k, o, Beta: 1f));
        if (sink.For(1) is { } dw) be.Gemm(new GemmArgs(dy, x, dw, o, k, m, TransA: true, Beta: 1f));
        if (n.Inputs.Length > 2 && sink.For(2) is { } db) be.SumRows(dy, db, accumulate: true);
    }

    // C = op(A)·op(B):  dop(A) = dC·op(B)ᵀ,  dop(B) = op(A)ᵀ·dC
    static void MatMul(Node n, Tensor dc, GradSink sink)
    {
        Tensor a = n.Inputs[0], b = n.Inputs[1]; var be = dc.Backend;
        bool ta = n.Attr<bool>("transA"), tb = n.Attr<bool>("transB");
        var s = F.MatMulShape.Of(a, b, ta, tb);
        int m = s.M, nn = s.N, k = s.K, batch = s.Batch;
        long sa = (long)m * k, sb = s.BroadcastB ? 0 : (long)k * nn, sc = (long)m * nn;
        if (sink.For(0) is { } da)
        {
            if (!ta) be.Gemm(new GemmArgs(dc, b, da, m, k, nn, false, !tb, Beta: 1f, Batch: batch, StrideA: sc, StrideB: sb, StrideC: sa));
            else be.Gemm(new GemmArgs(b, dc, da, k, m, nn, tb, true, Beta: 1f, Batch: batch, StrideA: sb, StrideB: sc, StrideC: sa));
        }
        if (sink.For(1) is { } db)
        {
            if (!s.BroadcastB)
            {
                if (!tb) be.Gemm(new GemmArgs(a, dc, db, k, nn, m, !ta, false, Beta: 1f, Batch: batch, StrideA: sa, StrideB: sc, StrideC: sb));
                else be.Gemm(new GemmArgs(dc, a, db, nn, k, m, true, ta, Beta: 1f, Batch: batch, StrideA: sc, StrideB: sa, StrideC: sb));
            }
            else if (!ta)
            {
                // b is shared by the batch: fold the batch into the rows of a and dC (contiguous when a is not transposed).
                int rows = batch * m;
                if (!tb) be.Gemm(new GemmArgs(a, dc, db, k, nn, rows, true, false, Beta: 1f));
                else be.Gemm(new GemmArgs(dc, a, db, nn, k, rows, true, false, Beta: 1f));
            }
            else
            {
                long per = (long)k * nn;
                using var tmp = be.Zeros(new[] { batch, (int)per }, db.DType);
                if (!tb) be.Gemm(new GemmArgs(a, dc, tmp, k, nn, m, !ta, false, Batch: batch, StrideA: sa, StrideB: sc, StrideC: per));
                else be.Gemm(new GemmArgs(dc, a, tmp, nn, k, m, true, ta, Batch: batch, StrideA: sc, StrideB: sa, StrideC: per));
                be.SumRows(tmp, db.Reshape((int)per), accumulate: true);
            }
        }
    }

    static void Add(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is { } da) dy.Backend.Axpy(1f, dy, da);
        if (sink.For(1) is { } db) dy.Backend.Axpy(1f, dy, db);
    }

    static void Mul(Node n, Tensor dy, GradSink sink)
    {
        var be = dy.Backend;
        using var tmp = be.Empty(dy.Shape, dy.DType);
        if (sink.For(0) is { } da) { be.Mul(dy, n.Inputs[1], tmp); be.Axpy(1f, tmp, da); }
        if (sink.For(1) is { } db) { be.Mul(dy, n.Inputs[0], tmp); be.Axpy(1f, tmp, db); }
    }

    static void Scale(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is { } dx) dy.Backend.Axpy(n.Attr<float>("s"), dy, dx);
    }

    static void AddBias(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is { } dx) dy.Backend.Axpy(1f, dy, dx);
        if (sink.For(1) is { } db) dy.Backend.SumRows(dy, db, accumulate: true);
    }

    // y = x + b (b over leading dims):  dx += dy,  db += Σ over the leading dims of dy
    static void AddBroadcast(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is { } dx) dy.Backend.Axpy(1f, dy, dx);
        if (sink.For(1) is { } db && db.Numel > 0)
        {
            int w = (int)db.Numel;
            dy.Backend.SumRows(dy.Reshape(-1, w), db.Reshape(w), accumulate: true);
        }
    }

    // y = s·x:  dx[n,1] += dy[n,1]·s[1,1],  ds[1,1] += dyᵀ[1,n]·x[n,1]
    static void MulScalar(Node n, Tensor dy, GradSink sink)
    {
        Tensor x = n.Inputs[0], s = n.Inputs[1]; var be = dy.Backend;
        int m = (int)x.Numel; if (m == 0) return;
        if (sink.For(0) is { } dx) be.Gemm(new GemmArgs(dy.Reshape(m, 1), s.Reshape(1, 1), dx.Reshape(m, 1), m, 1, 1, Beta: 1f));
        if (sink.For(1) is { } ds) be.Gemm(new GemmArgs(dy.Reshape(m, 1), x.Reshape(m, 1), ds.Reshape(1, 1), 1, 1, m, TransA: true, Beta: 1f));
    }

    static void BiasGelu(Node n, Tensor dy, GradSink sink)
    {
        var scratch = new List<Tensor>();
        Tensor x = n.Inputs[0]; Tensor? bias = n.Inputs.Length > 1 ? n.Inputs[1] : null;
        var dx = GradOrScratch(sink, 0, x, scratch);
        var db = bias is null ? null : sink.For(1);
        dy.Backend.BiasGeluBackward(x, bias, dy, dx, db);
        Free(scratch);
    }

    static void LayerNorm(Node n, Tensor dy, GradSink sink)
    {
        var scratch = new List<Tensor>();
        Tensor x = n.Inputs[0], gamma = n.Inputs[1], beta = n.Inputs[2];
        Tensor s = n.Saved[0]!, mean = n.Saved[1]!, rstd = n.Saved[2]!;
        var dx = GradOrScratch(sink, 0, x, scratch);
        var dg = GradOrScratch(sink, 1, gamma, scratch);
        var dbt = GradOrScratch(sink, 2, beta, scratch);
        dy.Backend.LayerNormBackward(s, gamma, mean, rstd, dy, dx, dg, dbt);
        Free(scratch);
    }

    // s = x + r, y = LN(s):  ds = ds_direct + LN'(dy);  dx += ds, dr += ds
    static void LayerNormResidual(Node n, Tensor? dsum, Tensor? dy, GradSink sink)
    {
        var scratch = new List<Tensor>();
        Tensor x = n.Inputs[0], gamma = n.Inputs[2], beta = n.Inputs[3];
        Tensor s = n.Saved[0]!, mean = n.Saved[1]!, rstd = n.Saved[2]!;
        var be = x.Backend;
        using var ds = be.Zeros(x.Shape, x.DType);
        if (dsum is not null) be.Axpy(1f, dsum, ds);
        if (dy is not null)
        {
            var dg = GradOrScratch(sink, 2, gamma, scratch);
            var dbt = GradOrScratch(sink, 3, beta, scratch);
            be.LayerNormBackward(s, gamma, mean, rstd, dy, ds, dg, dbt);
        }
        if (sink.For(0) is { } dx) be.Axpy(1f, ds, dx);
        if (sink.For(1) is { } dr) be.Axpy(1f, ds, dr);
        Free(scratch);
    }

    static void Softmax(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is { } dx) dy.Backend.SoftmaxBackward(n.Saved[0]!, dy, n.Attr<float>("scale"), dx);
    }

    static void L2Normalize(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is { } dx) dy.Backend.L2NormalizeBackward(n.Saved[0]!, n.Saved[1]!, n.Attr<float>("eps"), dy, dx);
    }

    // loss = Σ_kept loss_i / count:  dloss_i = g / count (the backend skips ignored rows)
    static void CrossEntropy(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is not { } dlogits) return;
        Tensor logits = n.Inputs[0], targets = n.Saved[0]!, lse = n.Saved[1]!;
        int count = n.Attr<int>("count"); if (count == 0) return;
        var be = dy.Backend;
        int rows = (int)lse.Numel;
        using var gs = be.Empty(new[] { 1 }, lse.DType);
        be.Scale(dy, 1f / count, gs);
        using var dloss = be.Zeros(new[] { rows, 1 }, lse.DType);
        be.AddBias(dloss, gs, dloss); // broadcast the scalar to every row without reading it on the host
        int c = logits.Dim(-1);
        be.CrossEntropyBackward(logits.Reshape(rows, c), targets.Reshape(rows), n.Attr<int>("ignoreIndex"), lse, dloss.Reshape(rows), dlogits.Reshape(rows, c));
    }

    static void Embedding(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is not { } dw) return;
        var ids = n.Saved[0]!; int d = dw.Dim(-1);
        dy.Backend.EmbeddingBackward(dy.Reshape((int)ids.Numel, d), ids.Reshape((int)ids.Numel), dw);
    }

    static void Dropout(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is { } dx) dy.Backend.DropoutBackward(dy, n.Attr<float>("p"), n.Attr<ulong>("seed"), n.Attr<ulong>("offset"), dx);
    }

    // y = Σx:  dx += g everywhere (AddBias broadcasts the one-element g over a [numel, 1] view)
    static void Sum(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is not { } dx || dx.Numel == 0) return;
        var be = dy.Backend;
        var v = dx.Reshape((int)dx.Numel, 1);
        if (dy.DType == dx.DType) { be.AddBias(v, dy, v); return; }
        using var g = be.Empty(new[] { 1 }, dx.DType); // keep AddBias single-dtype for the GPU kernels
        be.Cast(dy, g);
        be.AddBias(v, g, v);
    }

    // y[r] = Σ_c x[r,c]:  dx[r,c] += g[r]  (a rank-1 GEMM: g[R,1]·ones[1,C])
    static void SumLastDim(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is not { } dx) return;
        var be = dy.Backend;
        int c = dx.Rank == 0 ? 1 : dx.Dim(-1); int r = (int)(dx.Numel / Math.Max(1, c));
        using var ones = be.Empty(new[] { 1, c }, dy.DType);
        be.Fill(ones, 1.0);
        be.Gemm(new GemmArgs(dy, ones, dx, r, c, 1, Beta: 1f));
    }

    static void Reshape(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is { } dx) dy.Backend.Axpy(1f, dy.Reshape(dx.Shape), dx);
    }

    static void Permute(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is not { } dx) return;
        var perm = n.Attr<int[]>("perm");
        var inv = new int[perm.Length];
        for (int i = 0; i < perm.Length; i++) inv[perm[i]] = i;
        dy.Backend.Permute(dy, inv, dx, accumulate: true);
    }

    static void Slice(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is { } dx)
            dy.Backend.CopySlice(dy, n.Attr<int>("axis"), 0, dx, n.Attr<int>("start"), n.Attr<int>("len"), accumulate: true);
    }

    static void Concat(Node n, Tensor dy, GradSink sink)
    {
        int axis = n.Attr<int>("axis"), off = 0;
        for (int i = 0; i < n.Inputs.Length; i++)
        {
            int len = n.Inputs[i].Shape[axis];
            if (sink.For(i) is { } dx) dy.Backend.CopySlice(dy, axis, off, dx, 0, len, accumulate: true);
            off += len;
        }
    }

    static void Cast(Node n, Tensor dy, GradSink sink)
    {
        if (sink.For(0) is not { } dx) return;
        using var tmp = dy.Backend.Empty(dx.Shape, dx.DType);
        dy.Backend.Cast(dy, tmp);
        dy.Backend.Axpy(1f, tmp, dx);
    }
}
