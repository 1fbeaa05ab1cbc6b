using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Backends.Cpu;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Attention;

/// <summary>
/// The RoBERTa attention module takes the fused path without a mask and the composed path with one; an
/// all-zero mask must give the same values and gradients, with attention-probability dropout active in
/// training (the fused op must take the same Philox offsets and drop the same elements).
/// </summary>
[TestClass]
public sealed class RobertaCrossAttentionFusedTests
{
    [TestMethod]
    public void FusedPathEqualsComposedPathWithDropout()
    {
        var ctx = new NnContext(Backend.Cpu, DType.F64, seed: 42);
        int B = 2, Lq = 5, Lk = 11, hidden = 8, kvDim = 6, heads = 2;
        var m = new RobertaSelfAttention(ctx, hidden, kvDim, heads, 0.3f);
        var rnd = new Random(8);
        foreach (var (_, t) in m.NamedParameters()) HostIO.Write<double>(t, 0, WindowAttentionCpuTests.Rand(rnd, t.Numel));
        using var hq = ctx.Backend.FromDoubles(WindowAttentionCpuTests.Rand(rnd, B * Lq * hidden), [B, Lq, hidden], DType.F64);
        using var hkv = ctx.Backend.FromDoubles(WindowAttentionCpuTests.Rand(rnd, B * Lk * kvDim), [B, Lk, kvDim], DType.F64);
        using var w = ctx.Backend.FromDoubles(WindowAttentionCpuTests.Rand(rnd, B * Lq * hidden), [B, Lq, hidden], DType.F64);
        using var zeros = ctx.Backend.Zeros([B, heads, Lq, Lk], DType.F64);
        hq.RequiresGrad = true; hkv.RequiresGrad = true;
        List<double[]> Run(Tensor? mask)
        {
            m.ZeroGrad(); hq.Grad = null; hkv.Grad = null;
            ctx.NextStep(3);
            var y = m.Forward(hq, hkv, mask);
            var res = new List<double[]> { y.ToDoubleArray(), new double[] { ctx.Offset } };
            using (var loss = F.Sum(F.Mul(y, w))) loss.Backward();
            res.Add(hq.Grad!.ToDoubleArray()); res.Add(hkv.Grad!.ToDoubleArray());
            foreach (var (_, t) in m.NamedParameters()) res.Add(t.Grad!.ToDoubleArray());
            return res;
        }
        var fused = Run(null);
        var comp = Run(zeros);
        Assert.AreEqual(comp[1][0], fused[1][0], "the two paths took different dropout offsets");
        for (int i = 0; i < comp.Count; i++) Assert.IsLessThan(1e-10, WindowAttentionCpuTests.MaxDiff(fused[i], comp[i]), $"output {i}");
        // Dropout was really on: a different step gives another result.
        ctx.NextStep(4);
        using (Grad.NoGrad())
        {
            var other = m.Forward(hq, hkv, null).ToDoubleArray();
            Assert.IsGreaterThan(1e-3, WindowAttentionCpuTests.MaxDiff(other, fused[0]), "dropout had no effect");
        }
    }
}
