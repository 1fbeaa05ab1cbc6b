using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Attention;

/// <summary>
/// The fused op equals the F-op composition the Swin model uses today (roll, partition, split heads,
/// q·kᵀ, bias gathered by relative_position_index, SwinBlock.ShiftMask, softmax, ·v, merge, reverse,
/// roll back), values and gradients (qkv and table), in f64 on the CPU: Swin can switch to
/// WindowAttentionOp without changing results. (The qkv Linear is per token, so rolling its output is
/// the same as rolling its input.)
/// </summary>
[TestClass]
public sealed class WindowAttentionComposedTests
{
    internal static Tensor Composed(Tensor qkv, Tensor table, Tensor relIndex, Tensor? mask, int B, int r, int w, int s, int nH, int d, float scale)
    {
        int c = nH * d, nw = r / w, n = w * w, bw = B * nw * nw;
        var h = F.Reshape(qkv, B, r, r, 3 * c);
        if (s > 0) h = Fx.Roll(Fx.Roll(h, -s, 1), -s, 2);
        var win = F.Reshape(F.Permute(F.Reshape(h, B, nw, w, nw, w, 3 * c), 0, 1, 3, 2, 4, 5), bw, n, 3 * c);
        var q = F.Scale(Fx.SplitHeads(F.Slice(win, 2, 0, c), nH), scale);
        var k = Fx.SplitHeads(F.Slice(win, 2, c, c), nH);
        var v = Fx.SplitHeads(F.Slice(win, 2, 2 * c, c), nH);
        var sc = F.MatMul(q, k, transB: true);
        var bias = F.Reshape(F.Permute(F.Embedding(table, relIndex), 1, 0), nH * n * n);
        sc = F.AddBias(F.Reshape(sc, bw, nH * n * n), bias);
        if (mask is not null) sc = F.AddBias(F.Reshape(sc, B, (int)(sc.Numel / B)), mask);
        var p = F.Softmax(F.Reshape(sc, bw, nH, n, n));
        var o = Fx.MergeHeads(F.MatMul(p, v));
        var a = F.Reshape(F.Permute(F.Reshape(o, B, nw, nw, w, w, c), 0, 1, 3, 2, 4, 5), B, r, r, c);
        if (s > 0) a = Fx.Roll(Fx.Roll(a, s, 1), s, 2);
        return F.Reshape(a, B, r * r, c);
    }

    [TestMethod]
    [DataRow(2, 8, 4, 2, 2, 4)]
    [DataRow(1, 14, 7, 3, 2, 8)]
    [DataRow(1, 14, 7, 0, 1, 8)]
    public void FusedOpEqualsModelComposition(int B, int r, int w, int s, int nH, int d)
    {
        var be = Backend.Cpu;
        var rnd = new Random(r * 31 + s);
        int c = nH * d;
        float scale = 1 / MathF.Sqrt(d);
        using var qkv = be.FromDoubles(WindowAttentionCpuTests.Rand(rnd, (long)B * r * r * 3 * c, 1.5), [B, r * r, 3 * c], DType.F64);
        using var table = be.FromDoubles(WindowAttentionCpuTests.Rand(rnd, (2 * w - 1) * (2 * w - 1) * nH, 2), [(2 * w - 1) * (2 * w - 1), nH], DType.F64);
        using var wts = be.FromDoubles(WindowAttentionCpuTests.Rand(rnd, (long)B * r * r * c, 1), [B, r * r, c], DType.F64);
        using var relIndex = be.FromInts(WindowAttention.RelativePositionIndex(w), [w * w * w * w]);
        using var mask = s > 0 ? be.FromDoubles(SwinBlock.ShiftMask(r, w, s, nH), [(r / w) * (r / w) * nH * w * w * w * w], DType.F64) : null;
        qkv.RequiresGrad = true; table.RequiresGrad = true;

        (double[] Y, double[] Gq, double[] Gt) Run(Func<Tensor> f)
        {
            qkv.Grad = null; table.Grad = null;
            var y = f();
            var yv = y.ToDoubleArray();
            using (var loss = F.Sum(F.Mul(y, wts))) loss.Backward();
            return (yv, qkv.Grad!.ToDoubleArray(), table.Grad!.ToDoubleArray());
        }
        var fused = Run(() => WindowAttentionOp.Apply(qkv, table, r, r, nH, w, s, scale));
        var comp = Run(() => Composed(qkv, table, relIndex, mask, B, r, w, s, nH, d, scale));
        Assert.IsLessThan(1e-10, WindowAttentionCpuTests.MaxDiff(fused.Y, comp.Y), "y");
        Assert.IsLessThan(1e-9, WindowAttentionCpuTests.MaxDiff(fused.Gq, comp.Gq), "dqkv");
        Assert.IsLessThan(1e-9, WindowAttentionCpuTests.MaxDiff(fused.Gt, comp.Gt), "dtable");
        Assert.IsGreaterThan(1e-3, fused.Gt.Max(Math.Abs), "table gradient is all zero");
    }
}
