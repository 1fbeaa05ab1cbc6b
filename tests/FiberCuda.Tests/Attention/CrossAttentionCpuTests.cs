using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Backends.Cpu;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Attention;

/// <summary>
/// The fused cross-attention CPU reference against the F-op composition the models use today (split heads,
/// q·kᵀ, scale, additive mask expanded to the full score tensor, softmax, ·v, merge heads), values and the
/// gradients of q, k and v in f64; the gradients against finite differences; `+=` accumulation.
/// </summary>
[TestClass]
public sealed class CrossAttentionCpuTests
{
    static CpuBackend Cpu => Backend.Cpu;

    /// <summary>Additive text-padding mask [B, Lk]: 0 for kept keys, −10000 for the padded tail of each item.</summary>
    internal static double[] PaddingMask(int B, int Lk, Random r)
    {
        var m = new double[B * Lk];
        for (int b = 0; b < B; b++)
        {
            int keep = Math.Max(1, Lk - 1 - r.Next(0, Lk / 2 + 1)); // at least one padded key
            for (int j = keep; j < Lk; j++) m[b * Lk + j] = -10000;
        }
        return m;
    }

    internal static Tensor Composed(Tensor q, Tensor k, Tensor v, double[]? mask, int nH, float scale)
    {
        int B = q.Dim(0), Lq = q.Dim(1), Lk = k.Dim(1);
        var s = F.Scale(F.MatMul(Fx.SplitHeads(q, nH), Fx.SplitHeads(k, nH), transB: true), scale);
        if (mask is not null)
        {
            var full = new double[(long)B * nH * Lq * Lk];
            for (int b = 0; b < B; b++)
                for (int h = 0; h < nH; h++)
                    for (int i = 0; i < Lq; i++)
                        Array.Copy(mask, b * Lk, full, (((long)b * nH + h) * Lq + i) * Lk, Lk);
            s = F.Add(s, q.Backend.FromDoubles(full, [B, nH, Lq, Lk], q.DType));
        }
        return Fx.MergeHeads(F.MatMul(F.Softmax(s), Fx.SplitHeads(v, nH)));
    }

    [TestMethod]
    [DataRow(2, 7, 13, 2, 8, true)]
    [DataRow(1, 20, 5, 3, 4, true)]
    [DataRow(2, 9, 40, 2, 6, false)]
    public void FusedOpEqualsModelComposition(int B, int Lq, int Lk, int nH, int d, bool masked)
    {
        var rnd = new Random(Lq * 100 + Lk);
        int C = nH * d;
        float scale = 1 / MathF.Sqrt(d);
        using var q = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, (long)B * Lq * C, 1.5), [B, Lq, C], DType.F64);
        using var k = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, (long)B * Lk * C, 1.5), [B, Lk, C], DType.F64);
        using var v = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, (long)B * Lk * C, 1.5), [B, Lk, C], DType.F64);
        using var wts = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, (long)B * Lq * C, 1), [B, Lq, C], DType.F64);
        var mask = masked ? PaddingMask(B, Lk, rnd) : null;
        using var tm = mask is null ? null : Cpu.FromDoubles(mask, [B, Lk], DType.F64);
        q.RequiresGrad = true; k.RequiresGrad = true; v.RequiresGrad = true;

        (double[] Y, double[] Gq, double[] Gk, double[] Gv) Run(Func<Tensor> f)
        {
            q.Grad = null; k.Grad = null; v.Grad = null;
            var y = f();
            var yv = y.ToDoubleArray();
            using (var loss = F.Sum(F.Mul(y, wts))) loss.Backward();
            return (yv, q.Grad!.ToDoubleArray(), k.Grad!.ToDoubleArray(), v.Grad!.ToDoubleArray());
        }
        var fused = Run(() => CrossAttentionOp.Apply(q, k, v, tm, nH, scale));
        var comp = Run(() => Composed(q, k, v, mask, nH, scale));
        Assert.IsLessThan(1e-10, WindowAttentionCpuTests.MaxDiff(fused.Y, comp.Y), "y");
        Assert.IsLessThan(1e-9, WindowAttentionCpuTests.MaxDiff(fused.Gq, comp.Gq), "dq");
        Assert.IsLessThan(1e-9, WindowAttentionCpuTests.MaxDiff(fused.Gk, comp.Gk), "dk");
        Assert.IsLessThan(1e-9, WindowAttentionCpuTests.MaxDiff(fused.Gv, comp.Gv), "dv");
        if (mask is not null)
        {
            // The mask matters (guards against a test that cannot fail): the unmasked op differs.
            using var y0 = CrossAttentionOp.Apply(q, k, v, null, nH, scale);
            Assert.IsGreaterThan(1e-3, WindowAttentionCpuTests.MaxDiff(y0.ToDoubleArray(), fused.Y), "mask made no difference");
        }
    }

    /// <summary>Probability dropout equals F.Dropout on the composed [B, nH, Lq, Lk] probabilities with the same seed and offset.</summary>
    [TestMethod]
    public void DropoutEqualsComposedDropout()
    {
        var rnd = new Random(77);
        int B = 2, Lq = 5, Lk = 9, nH = 2, d = 4, C = nH * d;
        const float p = 0.3f; const ulong seed = 1234, offset = 5000;
        using var q = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, B * Lq * C, 1.5), [B, Lq, C], DType.F64);
        using var k = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, B * Lk * C, 1.5), [B, Lk, C], DType.F64);
        using var v = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, B * Lk * C, 1.5), [B, Lk, C], DType.F64);
        using var w = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, B * Lq * C), [B, Lq, C], DType.F64);
        var mask = PaddingMask(B, Lk, rnd);
        using var tm = Cpu.FromDoubles(mask, [B, Lk], DType.F64);
        q.RequiresGrad = true; k.RequiresGrad = true; v.RequiresGrad = true;
        double[][] Run(Func<Tensor> f)
        {
            q.Grad = null; k.Grad = null; v.Grad = null;
            var y = f(); var yv = y.ToDoubleArray();
            using (var loss = F.Sum(F.Mul(y, w))) loss.Backward();
            return [yv, q.Grad!.ToDoubleArray(), k.Grad!.ToDoubleArray(), v.Grad!.ToDoubleArray()];
        }
        var fused = Run(() => CrossAttentionOp.Apply(q, k, v, tm, nH, 0.5f, p, seed, offset));
        var comp = Run(() =>
        {
            var s = F.Scale(F.MatMul(Fx.SplitHeads(q, nH), Fx.SplitHeads(k, nH), transB: true), 0.5f);
            var full = new double[B * nH * Lq * Lk];
            for (int e = 0; e < full.Length; e++) full[e] = mask[(e / (nH * Lq * Lk)) * Lk + e % Lk];
            s = F.Add(s, Cpu.FromDoubles(full, [B, nH, Lq, Lk], DType.F64));
            return Fx.MergeHeads(F.MatMul(F.Dropout(F.Softmax(s), p, seed, offset), Fx.SplitHeads(v, nH)));
        });
        string[] what = ["y", "dq", "dk", "dv"];
        for (int i = 0; i < 4; i++) Assert.IsLessThan(1e-10, WindowAttentionCpuTests.MaxDiff(fused[i], comp[i]), what[i]);
        using var y0 = CrossAttentionOp.Apply(q, k, v, tm, nH, 0.5f);
        Assert.IsGreaterThan(1e-3, WindowAttentionCpuTests.MaxDiff(y0.ToDoubleArray(), fused[0]), "dropout made no difference");
    }

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void GradientsMatchFiniteDifferences(bool masked)
    {
        var r = new Random(masked ? 3 : 4);
        int B = 2, Lq = 3, Lk = 5, nH = 2, d = 3, C = nH * d;
        using var q = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(r, B * Lq * C), [B, Lq, C], DType.F64);
        using var k = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(r, B * Lk * C), [B, Lk, C], DType.F64);
        using var v = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(r, B * Lk * C), [B, Lk, C], DType.F64);
        using var w = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(r, B * Lq * C), [B, Lq, C], DType.F64);
        using var m = masked ? Cpu.FromDoubles([0, 0, 0, -10000, -10000, 0, 0, 0, 0, -3], [B, Lk], DType.F64) : null;
        q.RequiresGrad = true; k.RequiresGrad = true; v.RequiresGrad = true;
        var rep = GradCheck.Check(x => F.Sum(F.Mul(CrossAttentionOp.Apply(x[0], x[1], x[2], m, nH, 0.7f), w)),
            [q, k, v], names: ["q", "k", "v"]);
        Assert.IsTrue(rep.Ok, rep.Text);
    }

    [TestMethod]
    public void BackwardAccumulatesAndSkipsNullGradients()
    {
        var r = new Random(5);
        var a = new CrossAttentionShape(1, 3, 4, 2, 2, 0.5f);
        using var q = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(r, 12), a.QShape, DType.F64);
        using var k = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(r, 16), a.KvShape, DType.F64);
        using var v = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(r, 16), a.KvShape, DType.F64);
        using var y = Cpu.Empty(a.OutShape, DType.F64);
        using var lse = Cpu.Empty(a.LseShape, DType.F64);
        using var dy = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(r, 12), a.OutShape, DType.F64);
        var op = new CpuCrossAttention();
        op.Forward(q, k, v, null, a, y, lse);
        using var dq1 = Cpu.Zeros(a.QShape, DType.F64); using var dk1 = Cpu.Zeros(a.KvShape, DType.F64); using var dv1 = Cpu.Zeros(a.KvShape, DType.F64);
        op.Backward(q, k, v, null, a, y, lse, dy, dq1, dk1, dv1);
        var pk = WindowAttentionCpuTests.Rand(r, 16);
        using var dk2 = Cpu.FromDoubles(pk, a.KvShape, DType.F64);
        op.Backward(q, k, v, null, a, y, lse, dy, null, dk2, null);
        var g1 = dk1.ToArray<double>(); var g2 = dk2.ToArray<double>();
        for (int i = 0; i < g1.Length; i++) Assert.AreEqual(pk[i] + g1[i], g2[i], 1e-12);
        Assert.IsGreaterThan(1e-3, dq1.ToArray<double>().Max(Math.Abs));
        Assert.IsGreaterThan(1e-3, dv1.ToArray<double>().Max(Math.Abs));
    }

    /// <summary>k and v the same tensor: its gradient is the sum of both roles (the op must not let one overwrite the other).</summary>
    [TestMethod]
    public void AliasedKeyAndValueAccumulateBoth()
    {
        var rnd = new Random(9);
        int B = 1, Lq = 4, Lk = 6, nH = 2, d = 3, C = nH * d;
        using var q = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, B * Lq * C), [B, Lq, C], DType.F64);
        using var kv = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, B * Lk * C), [B, Lk, C], DType.F64);
        using var w = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, B * Lq * C), [B, Lq, C], DType.F64);
        kv.RequiresGrad = true;
        double[] Grad(Func<Tensor> f)
        {
            kv.Grad = null;
            using (var loss = F.Sum(F.Mul(f(), w))) loss.Backward();
            return kv.Grad!.ToDoubleArray();
        }
        var fused = Grad(() => CrossAttentionOp.Apply(q, kv, kv, null, nH, 0.6f));
        var comp = Grad(() => Composed(q, kv, kv, null, nH, 0.6f));
        Assert.IsLessThan(1e-10, WindowAttentionCpuTests.MaxDiff(fused, comp));
    }

    [TestMethod]
    public void RejectsMismatchedShapes()
    {
        using var q = Cpu.Zeros([1, 3, 8], DType.F32);
        using var k = Cpu.Zeros([1, 4, 8], DType.F32);
        using var v = Cpu.Zeros([1, 5, 8], DType.F32);
        Assert.ThrowsExactly<ArgumentException>(() => CrossAttentionOp.Apply(q, k, v, null, 2));
        using var m = Cpu.Zeros([1, 5], DType.F32);
        Assert.ThrowsExactly<ArgumentException>(() => CrossAttentionOp.Apply(q, k, k, m, 2));
    }
}
