using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Autograd;

/// <summary>
/// Backward rules of the head losses (<see cref="HeadOps"/>), kept apart from <see cref="BackwardRules"/>
/// (which dispatches "itc_loss" and "mlm_loss" here).
/// </summary>
public static class HeadBackwardRules
{
    // The forward already holds ∂loss/∂(img, txt, τ); each input gets dy times its share.
    internal static void Itc(Node n, Tensor dy, GradSink sink)
    {
        var ops = dy.Backend.Heads();
        for (int i = 0; i < 3; i++)
            if (n.Saved[i] is { } gi && sink.For(i) is { } dst) ops.ScaleAccumulate(dy, gi, dst);
    }

    internal static void Mlm(Node n, Tensor dy, GradSink sink)
    {
        Tensor hidden = n.Inputs[0], weight = n.Inputs[1];
        Tensor? bias = n.Inputs.Length > 2 ? n.Inputs[2] : null;
        Tensor labels = n.Saved[0]!, lse = n.Saved[1]!;
        int count = n.Attr<int>("count"); if (count == 0) return;
        var dh = sink.For(0); var dw = sink.For(1); var db = bias is null ? null : sink.For(2);
        if (dh is null && dw is null && db is null) return;
        var be = dy.Backend;
        int rows = (int)lse.Numel, h = hidden.Dim(-1);
        using var gs = be.Empty(new[] { 1 }, lse.DType);
        be.Scale(dy, 1f / count, gs);
        using var dloss = be.Zeros(new[] { rows, 1 }, lse.DType);
        be.AddBias(dloss, gs, dloss); // the scalar on every row without a host read
        be.Heads().MlmBackward(hidden.Reshape(rows, h), weight, bias, labels, n.Attr<int>("ignoreIndex"), lse, dloss.Reshape(rows),
            dh?.Reshape(rows, h), dw, db);
    }
}
