using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Autograd;

/// <summary>
/// Differentiable fused gated residual y = r + α·x (see <see cref="IGatedResidualOps"/>): the FIBER fusion
/// output <c>F.Add(a, Fx.ScaleBy(proj, alpha))</c> in one pass.
/// Backward rule ("gated_residual"): inputs (r, x, α); saved nothing beyond the inputs; dr += dy,
/// dx += α·dy, dα += Σ dy·x.
/// </summary>
public static class GatedResidualOp
{
    public const string OpName = "gated_residual";

    /// <returns>y with r's shape and dtype.</returns>
    public static Tensor Apply(Tensor r, Tensor x, Tensor alpha)
    {
        var y = r.Backend.Empty(r.Shape, r.DType);
        GatedResidualOps.For(r.Backend).Forward(r, x, alpha, y);
        if (Engine.ShouldRecord(r, x, alpha)) Engine.Attach(new Node(OpName, [r, x, alpha], [y]), y);
        return y;
    }

    internal static void Backward(Node n, Tensor?[] g, GradSink sink)
    {
        var dy = g[0]!;
        Tensor? dr = sink.For(0), dx = sink.For(1), da = sink.For(2);
        if (dr is null && dx is null && da is null) return;
        GatedResidualOps.For(dy.Backend).Backward(n.Inputs[1], n.Inputs[2], dy, dr, dx, da);
    }
}
