using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Autograd;

/// <summary>
/// Differentiable fused multi-head cross-attention (see <see cref="ICrossAttentionOps"/> for the exact math).
///
/// <code>
/// // image → text (Swin fused block): q from image tokens, k/v from text, text padding mask per key
/// var o = CrossAttentionOp.Apply(F.Linear(img, Wq, bq), kText, vText, keyMask /* [B, L], 0 or −10000 */, heads);
/// // text → image (RoBERTa fused layer): q from text, k/v from all image tokens of the stage, no mask
/// var o = CrossAttentionOp.Apply(qText, kImg, vImg, null, heads);
/// </code>
/// Backward rule ("cross_attention"): inputs (q, k, v); saved (keyMask, y, lse). The backward recomputes P
/// from q, k, the mask and lse and adds dq, dk, dv (+=). lse [B, nH, Lq] (f32; f64 for f64 inputs) is owned
/// by the node. The mask is a constant: it gets no gradient.
/// </summary>
public static class CrossAttentionOp
{
    public const string OpName = "cross_attention";

    /// <param name="q">[B, Lq, nH·d] (any shape with B·Lq rows of C; B is taken from k).</param>
    /// <param name="k">[B, Lk, nH·d].</param>
    /// <param name="v">[B, Lk, nH·d].</param>
    /// <param name="keyMask">Additive per-key mask [B, Lk] (float), or null.</param>
    /// <param name="scale">Score scale, head_dim^-0.5 by default.</param>
    /// <param name="dropP">Dropout on the attention probabilities (0: none), as F.Dropout(P, dropP, seed, offset)
    /// on the [B, nH, Lq, Lk] probability tensor (the caller takes <c>B·nH·Lq·Lk</c> offsets from its stream).</param>
    /// <returns>y [B, Lq, nH·d], q's dtype.</returns>
    public static Tensor Apply(Tensor q, Tensor k, Tensor v, Tensor? keyMask, int heads, float? scale = null,
                               float dropP = 0f, ulong seed = 0, ulong offset = 0)
    {
        if (q.Rank != 3 || k.Rank != 3 || v.Rank != 3) throw new ArgumentException($"cross attention: q {q}, k {k}, v {v} must be [B, L, C]");
        int C = q.Dim(2);
        if (C % heads != 0 || k.Dim(2) != C || v.Dim(2) != C) throw new ArgumentException($"cross attention: widths of q {q}, k {k}, v {v} must be one C = {heads}·d");
        if (k.Dim(0) != q.Dim(0) || v.Dim(0) != q.Dim(0) || v.Dim(1) != k.Dim(1)) throw new ArgumentException($"cross attention: q {q}, k {k}, v {v} disagree on B or Lk");
        int d = C / heads;
        var a = new CrossAttentionShape(q.Dim(0), q.Dim(1), k.Dim(1), heads, d, scale ?? (float)(1.0 / Math.Sqrt(d)), dropP, seed, offset);
        var be = q.Backend;
        var y = be.Empty(a.OutShape, q.DType);
        var lse = be.Empty(a.LseShape, F.StatType(q));
        CrossAttentionOps.For(be).Forward(q, k, v, keyMask, a, y, lse);
        if (Engine.ShouldRecord(q, k, v))
        {
            var attrs = new Dictionary<string, object?> { ["shape"] = a };
            Engine.Attach(new Node(OpName, [q, k, v], [y], saved: [keyMask, y, lse], attrs: attrs, owned: [lse]), y);
        }
        else lse.Dispose();
        return y;
    }

    // y = CrossAttention(q, k, v; mask): dq, dk, dv += (the kernel recomputes P from lse).
    internal static void Backward(Node n, Tensor?[] g, GradSink sink)
    {
        var dy = g[0]!;
        Tensor q = n.Inputs[0], k = n.Inputs[1], v = n.Inputs[2];
        Tensor? mask = n.Saved[0];
        Tensor y = n.Saved[1]!, lse = n.Saved[2]!;
        var a = n.Attr<CrossAttentionShape>("shape");
        Tensor? dq = sink.For(0), dk = sink.For(1), dv = sink.For(2);
        if (dq is null && dk is null && dv is null) return;
        CrossAttentionOps.For(dy.Backend).Backward(q, k, v, mask, a, y, lse, dy, dq, dk, dv);
    }
}
