using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Autograd;

/// <summary>
/// Differentiable fused Swin window attention (see <see cref="IWindowAttentionOps"/> for the exact math).
///
/// <code>
/// // in a Swin block, with h = LN1(x) [B, R·R, C] (NOT rolled: the shift is inside the op)
/// var qkv = F.Linear(h, Qkv.Weight, Qkv.Bias);                          // [B, R·R, 3C]
/// var a   = WindowAttentionOp.Apply(qkv, RelativePositionBiasTable,     // [(2w−1)², nH]
///                                   R, R, heads, window, shift, scale: 1/√32);   // [B, R·R, C], token order
/// a = F.Linear(a, Proj.Weight, Proj.Bias);                              // proj; no reverse roll needed
/// </code>
/// Backward rule ("window_attention"): inputs (qkv, table[, pad]); saved (y, lse). The CUDA/CPU backward
/// recomputes P from qkv and lse, adds dQ/dK/dV into qkv's gradient and Σ dS per relative offset into the
/// table's gradient (both +=), and the padding tokens' dK, dV into pad's. lse [B·nW, nH, w²] (f32; f64 for
/// f64 inputs) is owned by the node.
///
/// A map that is not a multiple of the window (the detection Swin) is padded inside the op: the padding tokens'
/// q, k, v are <c>pad</c> (the qkv Linear's bias, i.e. what the official zero-padded normalised map gives), they
/// are attended to and never stored; no padded copy of the map is made.
/// </summary>
public static class WindowAttentionOp
{
    public const string OpName = "window_attention";

    /// <param name="qkv">[B, H·W, 3·nH·d] (any shape with that element count; B is inferred).</param>
    /// <param name="table">Relative position bias table [(2w−1)², nH].</param>
    /// <param name="height">Image rows in tokens; not a multiple of <paramref name="window"/>: padded up inside the op.</param>
    /// <param name="width">Image columns in tokens.</param>
    /// <param name="shift">0 or w/2; when &gt; 0 the official −100 shift mask (of the padded map) is applied.</param>
    /// <param name="scale">Score scale, head_dim^-0.5 by default.</param>
    /// <param name="pad">q|k|v of the padding tokens [3C] (qkv's dtype), zeros when null; unused without padding.</param>
    /// <returns>y [B, H·W, nH·d] in token order, qkv's dtype.</returns>
    public static Tensor Apply(Tensor qkv, Tensor table, int height, int width, int heads, int window, int shift, float? scale = null, Tensor? pad = null)
    {
        long perImage = (long)height * width * qkv.Dim(-1);
        if (qkv.Dim(-1) % (3 * heads) != 0) throw new ArgumentException($"window attention: qkv width {qkv.Dim(-1)} is not 3·{heads}·d");
        if (perImage == 0 || qkv.Numel % perImage != 0) throw new ArgumentException($"window attention: {qkv} is not [B, {height}·{width}, 3C]");
        int d = qkv.Dim(-1) / (3 * heads);
        var a = WindowAttentionShape.ForMap(checked((int)(qkv.Numel / perImage)), height, width, heads, d, window, shift,
            scale ?? (float)(1.0 / Math.Sqrt(d)));
        if (!a.Padded) pad = null;
        var be = qkv.Backend;
        var y = be.Empty(a.OutShape, qkv.DType);
        var lse = be.Empty(a.LseShape, F.StatType(qkv));
        WindowAttentionOps.For(be).Forward(qkv, table, a, y, lse, pad);
        if (Engine.ShouldRecord(qkv, table, pad))
        {
            var attrs = new Dictionary<string, object?> { ["shape"] = a };
            Tensor[] inputs = pad is null ? [qkv, table] : [qkv, table, pad];
            Engine.Attach(new Node(OpName, inputs, [y], saved: [y, lse], attrs: attrs, owned: [lse]), y);
        }
        else lse.Dispose();
        return y;
    }

    // y = WindowAttention(qkv, table): dqkv += [dQ|dK|dV], dtable += Σ dS (kernel recomputes P from lse).
    internal static void Backward(Node n, Tensor?[] g, GradSink sink)
    {
        var dy = g[0]!;
        Tensor qkv = n.Inputs[0], table = n.Inputs[1];
        Tensor y = n.Saved[0]!, lse = n.Saved[1]!;
        var a = n.Attr<WindowAttentionShape>("shape");
        Tensor? pad = n.Inputs.Length > 2 ? n.Inputs[2] : null;
        var dq = sink.For(0);
        var dt = sink.For(1);
        var dp = pad is null ? null : sink.For(2);
        if (dq is null && dt is null && dp is null) return;
        Tensor? scratch = null;
        if (dq is null) dq = scratch = qkv.Backend.Zeros(qkv.Shape, qkv.DType);
        try { WindowAttentionOps.For(dy.Backend).Backward(qkv, table, a, y, lse, dy, dq, dt, pad, dp); }
        finally { scratch?.Dispose(); }
    }
}
