using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Autograd;

/// <summary>
/// Differentiable fused Swin PatchMerging gather + LayerNorm(4C) (see <see cref="IPatchMergeNormOps"/> for the exact
/// math). In PatchMerging:
/// <code>
/// // x [B, H·W, C] in token order
/// var m = PatchMergeNormOp.Apply(x, H, W, Norm.Weight, Norm.Bias, Norm.Eps);   // [B, (H/2)·(W/2), 4C]
/// return Reduction.Forward(m);                                                 // [B, (H/2)·(W/2), 2C]
/// </code>
/// the same values as <c>Norm.Forward(F.Reshape(F.Permute(F.Reshape(x, B, H/2, 2, W/2, 2, C), 0, 1, 3, 4, 2, 5), B, −1, 4C))</c>
/// without the gathered copy.
/// Backward rule ("patch_merge_norm"): inputs (x, weight, bias); saved (mean, rstd), owned by the node;
/// dx += the scattered LayerNorm input gradient, dweight += Σ dy·x̂, dbias += Σ dy.
/// </summary>
public static class PatchMergeNormOp
{
    public const string OpName = "patch_merge_norm";

    /// <param name="x">[B, H·W, C] tokens in row-major order.</param>
    /// <param name="height">H in tokens (even; ArgumentException otherwise).</param>
    /// <param name="width">W in tokens (even).</param>
    /// <param name="weight">LayerNorm weight [4C].</param>
    /// <param name="bias">LayerNorm bias [4C] (weight's dtype).</param>
    /// <returns>y [B, (H/2)·(W/2), 4C] in x's dtype.</returns>
    public static Tensor Apply(Tensor x, int height, int width, Tensor weight, Tensor bias, float eps = 1e-5f)
    {
        var (b, c) = PatchMergeNormOps.Geometry(x, height, width);
        long rows = PatchMergeNormOps.Rows(b, height, width);
        var be = x.Backend;
        var y = be.Empty([b, height / 2 * (width / 2), 4 * c], x.DType);
        var mean = be.Empty([(int)rows], F.StatType(x));
        var rstd = be.Empty([(int)rows], F.StatType(x));
        PatchMergeNormOps.For(be).Forward(x, height, width, weight, bias, eps, y, mean, rstd);
        if (Engine.ShouldRecord(x, weight, bias))
        {
            var attrs = new Dictionary<string, object?> { ["height"] = height, ["width"] = width };
            Engine.Attach(new Node(OpName, [x, weight, bias], [y], saved: [mean, rstd], attrs: attrs, owned: [mean, rstd]), y);
        }
        else { mean.Dispose(); rstd.Dispose(); }
        return y;
    }

    internal static void Backward(Node n, Tensor?[] g, GradSink sink)
    {
        var dy = g[0]!;
        Tensor? dx = sink.For(0), dw = sink.For(1), db = sink.For(2);
        if (dx is null && dw is null && db is null) return;
        PatchMergeNormOps.For(dy.Backend).Backward(n.Inputs[0], n.Attr<int>("height"), n.Attr<int>("width"), n.Inputs[1],
            n.Saved[0]!, n.Saved[1]!, dy, dx, dw, db);
    }
}
