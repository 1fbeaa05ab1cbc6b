using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Autograd;

/// <summary>
/// Differentiable stochastic depth with an optional fused residual add (see <see cref="IDropPathOps"/>):
/// out = (residual ?? 0) + y·s[b], s[b] = [Philox.Uniform(seed, offset, b) ≥ p] / (1 − p). Nn.DropPath uses it with
/// offset = Ctx.TakeOffset(B).
/// Backward rule ("drop_path"): inputs (y) or (y, residual); nothing saved (the kernel redraws s[b]);
/// dy += dout·s[b], dresidual += dout.
/// </summary>
public static class DropPathOp
{
    public const string OpName = "drop_path";

    /// <param name="y">[B, ...]: the branch output.</param>
    /// <param name="p">Drop probability in [0, 1].</param>
    /// <param name="residual">null, or a tensor with y's element count and dtype.</param>
    /// <returns>out with y's shape (residual's when given) and dtype.</returns>
    public static Tensor Apply(Tensor y, float p, ulong seed, ulong offset, Tensor? residual = null)
    {
        var be = y.Backend;
        var o = be.Empty((residual ?? y).Shape, y.DType);
        DropPathOps.For(be).Forward(y, residual, p, seed, offset, o);
        Tensor[] inputs = residual is null ? [y] : [y, residual];
        if (Engine.ShouldRecord(inputs))
        {
            var attrs = new Dictionary<string, object?> { ["p"] = p, ["seed"] = seed, ["offset"] = offset };
            Engine.Attach(new Node(OpName, inputs, [o], attrs: attrs), o);
        }
        return o;
    }

    internal static void Backward(Node n, Tensor?[] g, GradSink sink)
    {
        var dout = g[0]!;
        Tensor? dy = sink.For(0), dr = n.Inputs.Length > 1 ? sink.For(1) : null;
        if (dy is null && dr is null) return;
        DropPathOps.For(dout.Backend).Backward(dout, n.Attr<float>("p"), n.Attr<ulong>("seed"), n.Attr<ulong>("offset"), dy, dr);
    }
}
