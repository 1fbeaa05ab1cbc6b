using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;
using static FiberCuda.Tests.Heads.HeadReference;

namespace FiberCuda.Tests.Heads;

/// <summary>Runs the MLM head op (forward, and backward when <c>dloss</c> is given) on any backend at a chosen tile width.</summary>
public static class HeadRuns
{
    public sealed record MlmOut(double[] Loss, double[] Lse, double[]? DH, double[]? DW, double[]? DB);

    public static MlmOut RunMlm(IBackend be, Mlm p, DType dt, DType labelType, int tile, double[]? dloss = null, DType? biasType = null)
    {
        var st = dt == DType.F64 ? DType.F64 : DType.F32;
        var ops = be.Heads();
        int saved = ops.MlmTileColumns;
        ops.MlmTileColumns = tile;
        try
        {
            using var h = be.FromDoubles(p.Hidden, [p.N, p.H], dt);
            using var w = be.FromDoubles(p.Weight, [p.V, p.H], dt);
            using var b = p.Bias is null ? null : be.FromDoubles(p.Bias, [p.V], biasType ?? dt);
            using var lab = be.FromInts(p.Labels, [p.N], labelType);
            using var loss = be.Empty([p.N], st);
            using var lse = be.Empty([p.N], st);
            ops.MlmForward(h, w, b, lab, -100, loss, lse);
            if (dloss is null) return new MlmOut(loss.ToDoubleArray(), lse.ToDoubleArray(), null, null, null);
            using var dl = be.FromDoubles(dloss, [p.N], st);
            using var dh = be.Zeros([p.N, p.H], dt);
            using var dw = be.Zeros([p.V, p.H], dt);
            using var db = b is null ? null : be.Zeros([p.V], b.DType);
            ops.MlmBackward(h, w, b, lab, -100, lse, dl, dh, dw, db);
            return new MlmOut(loss.ToDoubleArray(), lse.ToDoubleArray(), dh.ToDoubleArray(), dw.ToDoubleArray(), db?.ToDoubleArray());
        }
        finally { ops.MlmTileColumns = saved; }
    }
}
