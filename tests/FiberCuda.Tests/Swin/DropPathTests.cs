using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Backends.Cpu;
using FiberCuda.Backends.Cuda;
using FiberCuda.Nn;
using FiberCuda.Ops;
using FiberCuda.Runtime;
using FiberCuda.Tensors;
using FiberCuda.Tests.Attention;
using FiberCuda.Tests.Support;

using static FiberCuda.Tests.Attention.KernelCheck;

namespace FiberCuda.Tests.Swin;

/// <summary>The DropPath op on the CPU against explicit loops over Philox draws, the mask-and-multiply composition the
/// module used before, and finite differences; the module's stream consumption.</summary>
[TestClass]
public sealed class DropPathCpuTests
{
    static CpuBackend Cpu => Backend.Cpu;
    static double[] Rand(Random r, long n, double s = 1) => WindowAttentionCpuTests.Rand(r, n, s);

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void MatchesExplicitLoopsValuesAndGradients(bool withResidual)
    {
        const int B = 16, per = 15;
        const float p = 0.4f;
        const ulong seed = 0x5eed, offset = 12345;
        var rnd = new Random(withResidual ? 1 : 2);
        var yv = Rand(rnd, B * per); var rv = Rand(rnd, B * per); var wv = Rand(rnd, B * per);
        using var y = Cpu.FromDoubles(yv, [B, 3, 5], DType.F64);
        using var r = Cpu.FromDoubles(rv, [B, 3, 5], DType.F64);
        using var w = Cpu.FromDoubles(wv, [B, 3, 5], DType.F64);
        y.RequiresGrad = true; r.RequiresGrad = true;
        var o = DropPathOp.Apply(y, p, seed, offset, withResidual ? r : null);
        var ov = o.ToDoubleArray();
        using (var loss = F.Sum(F.Mul(o, w))) loss.Backward();
        int kept = 0;
        for (int b = 0; b < B; b++)
        {
            bool keep = Philox.Uniform(seed, offset, b) >= p;
            kept += keep ? 1 : 0;
            double s = keep ? 1.0 / (1.0 - p) : 0.0;
            for (int e = b * per; e < (b + 1) * per; e++)
            {
                Assert.AreEqual((withResidual ? rv[e] : 0) + yv[e] * s, ov[e], 1e-14, $"out[{e}]");
                Assert.AreEqual(wv[e] * s, y.Grad!.ToDoubleArray()[e], 1e-14, $"dy[{e}]");
            }
        }
        Assert.IsTrue(kept > 0 && kept < B, $"{kept} of {B} kept: the draw does not exercise both cases");
        if (withResidual) CollectionAssert.AreEqual(wv, r.Grad!.ToDoubleArray());
        else Assert.IsNull(r.Grad);
    }

    [TestMethod]
    public void GradientsMatchFiniteDifferences()
    {
        var rnd = new Random(8);
        using var y = Cpu.FromDoubles(Rand(rnd, 6 * 4), [6, 4], DType.F64);
        using var r = Cpu.FromDoubles(Rand(rnd, 6 * 4), [6, 4], DType.F64);
        using var w = Cpu.FromDoubles(Rand(rnd, 6 * 4), [6, 4], DType.F64);
        y.RequiresGrad = true; r.RequiresGrad = true;
        var rep = GradCheck.Check(t => F.Sum(F.Mul(DropPathOp.Apply(t[0], 0.5f, 7, 3, t[1]), w)), [y, r], names: ["y", "residual"]);
        Assert.IsTrue(rep.Ok, rep.Text);
    }

    /// <summary>The mask-and-multiply Nn.DropPath used before the op (its decisions and rounding are the contract).</summary>
    static Tensor OldDropPath(Tensor x, float p, ulong seed, ulong off)
    {
        int b = x.Dim(0);
        long per = x.Numel / b;
        var m = new double[x.Numel];
        for (int i = 0; i < b; i++) Array.Fill(m, Philox.Uniform(seed, off, i) >= p ? 1.0 / (1.0 - p) : 0.0, (int)(i * per), (int)per);
        return F.Mul(x, x.Backend.FromDoubles(m, x.Shape, x.DType));
    }

    [TestMethod]
    [DataRow(DType.F32)]
    [DataRow(DType.BF16)]
    [DataRow(DType.F64)]
    public void ModuleMatchesTheOldMaskCompositionAndTakesOneOffsetPerSample(DType dt)
    {
        var ctx = new NnContext(Cpu, dt, seed: 99);
        var dp = new DropPath(ctx, 0.3f);
        const int B = 12;
        var rnd = new Random(4);
        using var x = Cpu.FromDoubles(Rand(rnd, B * 2 * 7), [B, 2, 7], dt);
        using var res = Cpu.FromDoubles(Rand(rnd, B * 2 * 7), [B, 2, 7], dt);
        ctx.Offset = 1000;
        var a = dp.Forward(x).ToDoubleArray();
        Assert.AreEqual(1000UL + B, ctx.Offset);
        var b = dp.Forward(x, res).ToDoubleArray();
        Assert.AreEqual(1000UL + 2 * B, ctx.Offset);
        var oldA = OldDropPath(x, 0.3f, 99, 1000).ToDoubleArray();
        CollectionAssert.AreEqual(oldA, a, "DropPath(x) changed its numbers");
        // The fused add rounds once; the composition rounded the product first.
        var oldB = F.Add(res, OldDropPath(x, 0.3f, 99, 1000 + B)).ToDoubleArray();
        double tol = dt == DType.BF16 ? 1.0 / 64 : dt == DType.F32 ? 1e-6 : 1e-15;
        Assert.IsLessThanOrEqualTo(tol * 4, WindowAttentionCpuTests.MaxDiff(oldB, b));
        dp.Eval();
        Assert.AreSame(x, dp.Forward(x));
        CollectionAssert.AreEqual(F.Add(res, x).ToDoubleArray(), dp.Forward(x, res).ToDoubleArray());
        Assert.AreEqual(1000UL + 2 * B, ctx.Offset, "eval mode must not take offsets");
    }

    [TestMethod]
    public void BadProbabilityOrMismatchedResidualThrows()
    {
        using var y = Cpu.Zeros([2, 3], DType.F32);
        using var r = Cpu.Zeros([2, 4], DType.F32);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => DropPathOp.Apply(y, 1.5f, 0, 0));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => DropPathOp.Apply(y, float.NaN, 0, 0));
        Assert.ThrowsExactly<ArgumentException>(() => DropPathOp.Apply(y, 0.1f, 0, 0, r));
    }
}

/// <summary>kernels/drop_path.cu against the CPU reference: the same per-sample decisions, 16-byte and scalar units,
/// several blocks per sample, `+=` into pre-filled gradients, null gradient buffers, p = 0 and 1.</summary>
public abstract class DropPathCudaTestBase
{
    protected abstract CudaBackend Gpu { get; }
    static CpuBackend Cpu => Backend.Cpu;

    [TestInitialize]
    public void RequireDevice() => _ = Gpu;

    [TestMethod]
    [DataRow(DType.F32, 6, 40, 0.5f, true)]       // 16-byte units
    [DataRow(DType.F32, 5, 21, 0.3f, false)]      // scalar
    [DataRow(DType.BF16, 7, 64, 0.5f, true)]
    [DataRow(DType.BF16, 4, 21, 0.4f, true)]      // scalar bf16
    [DataRow(DType.F32, 3, 9000, 0.5f, false)]    // several blocks and grid-stride steps per sample
    [DataRow(DType.BF16, 3, 16, 0f, true)]        // all kept
    [DataRow(DType.F32, 3, 16, 1f, true)]         // all dropped
    public void MatchesCpu(DType dt, int B, int per, float p, bool withResidual)
    {
        var rnd = new Random(B * 100 + per);
        const ulong seed = 0xabcdef1234UL;
        ulong offset = (ulong)per * 7919;
        int n = B * per;
        using var yc = Cpu.FromFloats(Rand(rnd, n, 1), [B, per], dt); using var rc = Cpu.FromFloats(Rand(rnd, n, 1), [B, per], dt);
        using var gc = Cpu.FromFloats(Rand(rnd, n, 1), [B, per], dt);
        using var dyc = Cpu.FromFloats(Rand(rnd, n, 0.1), [B, per], dt); using var drc = Cpu.FromFloats(Rand(rnd, n, 0.1), [B, per], dt);
        using var yg = Gpu.CopyFrom(yc); using var rg = Gpu.CopyFrom(rc); using var gg = Gpu.CopyFrom(gc);
        using var dyg = Gpu.CopyFrom(dyc); using var drg = Gpu.CopyFrom(drc);
        using var oc = Cpu.Empty([B, per], dt); using var og = Gpu.Empty([B, per], dt);
        DropPathOps.For(Cpu).Forward(yc, withResidual ? rc : null, p, seed, offset, oc);
        DropPathOps.For(Gpu).Forward(yg, withResidual ? rg : null, p, seed, offset, og);
        bool bf = dt == DType.BF16;
        Close(oc, og, bf ? 1.0 / 128 : 1e-6, "out");
        // The same samples are dropped: without a residual a dropped row is exactly zero on both.
        var s = DropPathOps.SampleScales(B, p, seed, offset, dt);
        if (!withResidual)
        {
            var ov = og.ToFloatArray();
            for (int b = 0; b < B; b++)
                Assert.AreEqual(s[b] == 0, ov.AsSpan(b * per, per).ToArray().All(v => v == 0f), $"sample {b}");
        }
        DropPathOps.For(Cpu).Backward(gc, p, seed, offset, dyc, withResidual ? drc : null);
        DropPathOps.For(Gpu).Backward(gg, p, seed, offset, dyg, withResidual ? drg : null);
        Close(dyc, dyg, bf ? 1.0 / 128 : 1e-6, "dy");
        Close(drc, drg, bf ? 1.0 / 128 : 1e-6, "dresidual");
    }

    [TestMethod]
    public void ResidualGradientAlone()
    {
        var rnd = new Random(12);
        using var gc = Cpu.FromFloats(Rand(rnd, 4 * 12, 1), [4, 12]); using var drc = Cpu.FromFloats(Rand(rnd, 4 * 12, 1), [4, 12]);
        using var gg = Gpu.CopyFrom(gc); using var drg = Gpu.CopyFrom(drc);
        DropPathOps.For(Cpu).Backward(gc, 0.5f, 1, 2, null, drc);
        DropPathOps.For(Gpu).Backward(gg, 0.5f, 1, 2, null, drg);
        Close(drc, drg, 1e-6, "dresidual");
    }

    [TestMethod]
    public void ModuleOnTheDeviceMatchesTheCpuModule()
    {
        const int B = 9;
        var rnd = new Random(6);
        var x = Rand(rnd, B * 3 * 8, 1); var r = Rand(rnd, B * 3 * 8, 1); var w = Rand(rnd, B * 3 * 8, 1);
        float[][] Run(IBackend be)
        {
            var ctx = new NnContext(be, DType.F32, seed: 31) { Offset = 77 };
            var dp = new DropPath(ctx, 0.45f);
            using var tx = be.FromFloats(x, [B, 3, 8]); using var tr = be.FromFloats(r, [B, 3, 8]); using var tw = be.FromFloats(w, [B, 3, 8]);
            tx.RequiresGrad = true; tr.RequiresGrad = true;
            var o = dp.Forward(tx, tr);
            var ov = o.ToFloatArray();
            using (var loss = F.Sum(F.Mul(o, tw))) loss.Backward();
            Assert.AreEqual(77UL + B, ctx.Offset);
            return [ov, tx.Grad!.ToFloatArray(), tr.Grad!.ToFloatArray()];
        }
        var c = Run(Cpu); var g = Run(Gpu);
        for (int i = 0; i < 3; i++)
            Assert.IsLessThan(1e-6 * Math.Max(1, c[i].Max(Math.Abs)), WindowAttentionCpuTests.MaxDiff(Array.ConvertAll(c[i], v => (double)v), Array.ConvertAll(g[i], v => (double)v)), $"output {i}");
    }
}

[TestClass]
[TestCategory("Emulated")]
public sealed class DropPathEmulatedTests : DropPathCudaTestBase
{
    static readonly Lazy<CudaBackend> Shared = new(() => new CudaBackend(new EmulatedDevice { Schedule = EmuSchedule.Random, ScheduleSeed = 13 }, ownsDevice: true));
    protected override CudaBackend Gpu => Shared.Value;
}

[TestClass]
[TestCategory("Gpu")]
public sealed class DropPathGpuTests : DropPathCudaTestBase
{
    protected override CudaBackend Gpu => TestDevices.Gpu;
}
