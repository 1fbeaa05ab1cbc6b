using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Backends.Cpu;
using FiberCuda.Backends.Cuda;
using FiberCuda.Runtime;
using FiberCuda.Tensors;
using FiberCuda.Tests.Attention;
using FiberCuda.Tests.Support;

using static FiberCuda.Tests.Attention.KernelCheck;

namespace FiberCuda.Tests.Swin;

/// <summary>
/// The fused PatchMerging gather + LayerNorm(4C) on the CPU against the composition the model used
/// (reshape/permute + F.LayerNorm, in fp64), an explicit gather written from the official x0..x3 slices, and finite differences.
/// </summary>
[TestClass]
public sealed class PatchMergeNormCpuTests
{
    static CpuBackend Cpu => Backend.Cpu;
    static double[] Rand(Random r, long n, double s = 1) => WindowAttentionCpuTests.Rand(r, n, s);

    /// <summary>PatchMerging's old composition: channel block 2·(column parity) + (row parity), then LayerNorm.</summary>
    internal static Tensor Composed(Tensor x, int h, int w, Tensor g, Tensor b, float eps)
    {
        int n = x.Dim(0), c = x.Dim(2);
        var m = F.Reshape(F.Permute(F.Reshape(x, n, h / 2, 2, w / 2, 2, c), 0, 1, 3, 4, 2, 5), n, h / 2 * (w / 2), 4 * c);
        return F.LayerNorm(m, g, b, eps);
    }

    [TestMethod]
    [DataRow(2, 4, 6, 5)]   // H ≠ W, odd C, batch 2
    [DataRow(1, 6, 2, 8)]
    [DataRow(3, 2, 2, 33)]
    public void EqualsComposedLayerNormValuesAndGradients(int B, int H, int W, int C)
    {
        var rnd = new Random(100 * H + W + C);
        int rows = H / 2 * (W / 2);
        using var x = Cpu.FromDoubles(Rand(rnd, (long)B * H * W * C, 2), [B, H * W, C], DType.F64);
        using var g = Cpu.FromDoubles(Rand(rnd, 4 * C), [4 * C], DType.F64);
        using var bt = Cpu.FromDoubles(Rand(rnd, 4 * C), [4 * C], DType.F64);
        using var lw = Cpu.FromDoubles(Rand(rnd, (long)B * rows * 4 * C), [B, rows, 4 * C], DType.F64);
        x.RequiresGrad = true; g.RequiresGrad = true; bt.RequiresGrad = true;
        double[][] Run(Func<Tensor> f)
        {
            x.Grad = null; g.Grad = null; bt.Grad = null;
            var y = f();
            CollectionAssert.AreEqual(new[] { B, rows, 4 * C }, y.Shape);
            var yv = y.ToDoubleArray();
            using (var loss = F.Sum(F.Mul(y, lw))) loss.Backward();
            return [yv, x.Grad!.ToDoubleArray(), g.Grad!.ToDoubleArray(), bt.Grad!.ToDoubleArray()];
        }
        var fused = Run(() => PatchMergeNormOp.Apply(x, H, W, g, bt, 1e-5f));
        var comp = Run(() => Composed(x, H, W, g, bt, 1e-5f));
        string[] what = ["y", "dx", "dweight", "dbias"];
        for (int i = 0; i < 4; i++)
        {
            double scale = Math.Max(1, comp[i].Max(Math.Abs));
            Assert.IsLessThan(1e-12 * scale, WindowAttentionCpuTests.MaxDiff(fused[i], comp[i]), what[i]);
            Assert.IsGreaterThan(1e-3, comp[i].Max(Math.Abs), $"{what[i]} is zero");
        }
    }

    [TestMethod]
    public void GathersTheOfficialQuarterOrder()
    {
        // x0 = x[:, 0::2, 0::2], x1 = x[:, 1::2, 0::2], x2 = x[:, 0::2, 1::2], x3 = x[:, 1::2, 1::2] (rows, columns),
        // concatenated on channels, then LayerNorm with weight 1, bias 0: written out element by element.
        const int B = 2, H = 4, W = 6, C = 3;
        var rnd = new Random(5);
        var xv = Rand(rnd, B * H * W * C);
        using var x = Cpu.FromDoubles(xv, [B, H * W, C], DType.F64);
        using var g = Cpu.FromDoubles(Enumerable.Repeat(1.0, 4 * C).ToArray(), [4 * C], DType.F64);
        using var bt = Cpu.Zeros([4 * C], DType.F64);
        using var y = PatchMergeNormOp.Apply(x, H, W, g, bt, 1e-5f);
        var yv = y.ToDoubleArray();
        (int dy, int dx)[] quarter = [(0, 0), (1, 0), (0, 1), (1, 1)];
        for (int b = 0; b < B; b++)
            for (int i = 0; i < H / 2; i++)
                for (int j = 0; j < W / 2; j++)
                {
                    var v = new double[4 * C];
                    for (int q = 0; q < 4; q++)
                        for (int c = 0; c < C; c++)
                            v[q * C + c] = xv[((long)b * H * W + (2 * i + quarter[q].dy) * W + 2 * j + quarter[q].dx) * C + c];
                    double m = v.Average(), var = v.Select(a => (a - m) * (a - m)).Average(), rs = 1 / Math.Sqrt(var + 1e-5f);
                    int r = (b * (H / 2) + i) * (W / 2) + j;
                    for (int e = 0; e < 4 * C; e++)
                        Assert.AreEqual((v[e] - m) * rs, yv[r * 4 * C + e], 1e-12, $"b {b} token ({i},{j}) element {e}");
                }
    }

    [TestMethod]
    public void GradientsMatchFiniteDifferences()
    {
        const int B = 2, H = 2, W = 4, C = 3;
        var rnd = new Random(9);
        using var x = Cpu.FromDoubles(Rand(rnd, B * H * W * C), [B, H * W, C], DType.F64);
        using var g = Cpu.FromDoubles(Rand(rnd, 4 * C), [4 * C], DType.F64);
        using var bt = Cpu.FromDoubles(Rand(rnd, 4 * C), [4 * C], DType.F64);
        using var lw = Cpu.FromDoubles(Rand(rnd, B * 2 * 4 * C), [B, 2, 4 * C], DType.F64);
        x.RequiresGrad = true; g.RequiresGrad = true; bt.RequiresGrad = true;
        var rep = GradCheck.Check(t => F.Sum(F.Mul(PatchMergeNormOp.Apply(t[0], H, W, t[1], t[2], 1e-5f), lw)), [x, g, bt], names: ["x", "weight", "bias"]);
        Assert.IsTrue(rep.Ok, rep.Text);
    }

    [TestMethod]
    [DataRow(3, 4)]
    [DataRow(4, 5)]
    [DataRow(0, 4)]
    public void OddOrEmptyGridThrows(int H, int W)
    {
        using var x = Cpu.Zeros([1, Math.Max(1, H * W), 4], DType.F32);
        using var g = Cpu.Zeros([16], DType.F32);
        var e = Assert.ThrowsExactly<ArgumentException>(() => PatchMergeNormOp.Apply(x, H, W, g, g));
        Assert.Contains("even", e.Message);
    }

    [TestMethod]
    public void WrongTokenCountOrWeightThrows()
    {
        using var x = Cpu.Zeros([1, 12, 4], DType.F32);
        using var g = Cpu.Zeros([16], DType.F32);
        using var g2 = Cpu.Zeros([12], DType.F32);
        Assert.ThrowsExactly<ArgumentException>(() => PatchMergeNormOp.Apply(x, 4, 4, g, g));   // 12 tokens ≠ 4·4
        Assert.ThrowsExactly<ArgumentException>(() => PatchMergeNormOp.Apply(x, 2, 6, g2, g2)); // weight not 4C
    }
}

/// <summary>kernels/patch_merge_norm.cu against the CPU reference: f32/bf16 activations with f32/bf16 weights,
/// 16-byte and scalar units, several rows per block and one row over several warps, `+=` into pre-filled gradients.</summary>
public abstract class PatchMergeNormCudaTestBase
{
    protected abstract CudaBackend Gpu { get; }
    static CpuBackend Cpu => Backend.Cpu;

    [TestInitialize]
    public void RequireDevice() => _ = Gpu;

    [TestMethod]
    [DataRow(DType.F32, DType.F32, 2, 4, 6, 8)]      // 16-byte units, 8 rows per block
    [DataRow(DType.F32, DType.F32, 1, 6, 4, 5)]      // C odd: scalar units
    [DataRow(DType.F32, DType.BF16, 3, 2, 8, 36)]
    [DataRow(DType.BF16, DType.BF16, 2, 4, 4, 16)]
    [DataRow(DType.BF16, DType.F32, 1, 2, 6, 12)]    // 12 % 8 ≠ 0: scalar bf16
    [DataRow(DType.BF16, DType.F32, 2, 8, 10, 24)]   // 40 rows, the last block part empty
    [DataRow(DType.F32, DType.F32, 2, 16, 12, 8)]    // 96 rows: more than the emulator's 8 blocks × 8 rows (grid stride)
    [DataRow(DType.F32, DType.F32, 1, 2, 4, 600)]    // 4C = 2400: one row per 320-thread block
    [DataRow(DType.BF16, DType.BF16, 1, 2, 4, 256)]  // FIBER-B stage-2 width (4C = 1024): 2 rows of 128 threads per block
    [DataRow(DType.F32, DType.F32, 1, 4, 2, 512)]    // FIBER-B stage-3 width (4C = 2048): one row per 256-thread block
    [DataRow(DType.BF16, DType.BF16, 1, 4, 2, 131)]  // 4C = 524 scalar, 128-thread groups
    public void MatchesCpu(DType dt, DType wdt, int B, int H, int W, int C)
    {
        var rnd = new Random(B * 1000 + H * 100 + W * 10 + C);
        int rows = B * (H / 2) * (W / 2), C4 = 4 * C;
        int[] xs = [B, H * W, C], ys = [B, H / 2 * (W / 2), C4];
        // An offset mean so the variance is not trivially centred.
        var xh = Array.ConvertAll(Rand(rnd, (long)B * H * W * C, 1), v => v + 0.5f);
        using var xc = Cpu.FromFloats(xh, xs, dt); using var gc = Cpu.FromFloats(Rand(rnd, C4, 1), [C4], wdt);
        using var bc = Cpu.FromFloats(Rand(rnd, C4, 1), [C4], wdt); using var dyc = Cpu.FromFloats(Rand(rnd, (long)rows * C4, 1), ys, dt);
        using var dxc = Cpu.FromFloats(Rand(rnd, xh.Length, 0.1), xs, dt);
        using var dgc = Cpu.FromFloats(Rand(rnd, C4, 0.1), [C4], wdt); using var dbc = Cpu.FromFloats(Rand(rnd, C4, 0.1), [C4], wdt);
        using var xg = Gpu.CopyFrom(xc); using var gg = Gpu.CopyFrom(gc); using var bg = Gpu.CopyFrom(bc); using var dyg = Gpu.CopyFrom(dyc);
        using var dxg = Gpu.CopyFrom(dxc); using var dgg = Gpu.CopyFrom(dgc); using var dbg = Gpu.CopyFrom(dbc);
        using var yc = Cpu.Empty(ys, dt); using var yg = Gpu.Empty(ys, dt);
        using var mc = Cpu.Empty([rows], DType.F32); using var mg = Gpu.Empty([rows], DType.F32);
        using var rc = Cpu.Empty([rows], DType.F32); using var rg = Gpu.Empty([rows], DType.F32);
        PatchMergeNormOps.For(Cpu).Forward(xc, H, W, gc, bc, 1e-5f, yc, mc, rc);
        PatchMergeNormOps.For(Gpu).Forward(xg, H, W, gg, bg, 1e-5f, yg, mg, rg);
        bool bf = dt == DType.BF16;
        Close(yc, yg, bf ? 1.0 / 64 : 1e-5, "y");
        Close(mc, mg, 1e-5, "mean");
        Close(rc, rg, 1e-5, "rstd");
        // Both backwards from the CPU's saved statistics, so they differ only by their own arithmetic.
        using var mg2 = Gpu.CopyFrom(mc); using var rg2 = Gpu.CopyFrom(rc);
        PatchMergeNormOps.For(Cpu).Backward(xc, H, W, gc, mc, rc, dyc, dxc, dgc, dbc);
        PatchMergeNormOps.For(Gpu).Backward(xg, H, W, gg, mg2, rg2, dyg, dxg, dgg, dbg);
        Close(dxc, dxg, bf ? 1.0 / 64 : 1e-5, "dx");
        Close(dgc, dgg, wdt == DType.BF16 || bf ? 1.0 / 64 : 1e-5, "dweight");
        Close(dbc, dbg, wdt == DType.BF16 || bf ? 1.0 / 64 : 1e-5, "dbias");
    }

    [TestMethod]
    public void WeightGradientsAloneAndDxAlone()
    {
        const int B = 2, H = 4, W = 4, C = 8;
        var rnd = new Random(77);
        int rows = B * 4, C4 = 4 * C;
        using var xc = Cpu.FromFloats(Rand(rnd, B * H * W * C, 1), [B, H * W, C]); using var gc = Cpu.FromFloats(Rand(rnd, C4, 1), [C4]);
        using var bc = Cpu.FromFloats(Rand(rnd, C4, 1), [C4]); using var dyc = Cpu.FromFloats(Rand(rnd, rows * C4, 1), [B, 4, C4]);
        using var mc = Cpu.Empty([rows], DType.F32); using var rc = Cpu.Empty([rows], DType.F32); using var yc = Cpu.Empty([B, 4, C4], DType.F32);
        PatchMergeNormOps.For(Cpu).Forward(xc, H, W, gc, bc, 1e-5f, yc, mc, rc);
        using var dbc = Cpu.Zeros([C4], DType.F32); using var dxc = Cpu.Zeros([B, H * W, C], DType.F32);
        PatchMergeNormOps.For(Cpu).Backward(xc, H, W, gc, mc, rc, dyc, dxc, null, dbc);
        using var xg = Gpu.CopyFrom(xc); using var gg = Gpu.CopyFrom(gc); using var mg = Gpu.CopyFrom(mc); using var rg = Gpu.CopyFrom(rc);
        using var dyg = Gpu.CopyFrom(dyc);
        using var dbg = Gpu.Zeros([C4], DType.F32); using var dxg = Gpu.Zeros([B, H * W, C], DType.F32);
        PatchMergeNormOps.For(Gpu).Backward(xg, H, W, gg, mg, rg, dyg, null, null, dbg);
        PatchMergeNormOps.For(Gpu).Backward(xg, H, W, gg, mg, rg, dyg, dxg, null, null);
        Close(dbc, dbg, 1e-5, "dbias");
        Close(dxc, dxg, 1e-5, "dx");
    }

    [TestMethod]
    public void AutogradOpMatchesCpu()
    {
        const int B = 2, H = 6, W = 4, C = 12;
        var rnd = new Random(3);
        var x = Rand(rnd, B * H * W * C, 1); var g = Rand(rnd, 4 * C, 1); var b = Rand(rnd, 4 * C, 1); var w = Rand(rnd, B * 6 * 4 * C, 1);
        float[][] Run(IBackend be)
        {
            using var tx = be.FromFloats(x, [B, H * W, C]); using var tg = be.FromFloats(g, [4 * C]); using var tb = be.FromFloats(b, [4 * C]);
            using var tw = be.FromFloats(w, [B, 6, 4 * C]);
            tx.RequiresGrad = true; tg.RequiresGrad = true; tb.RequiresGrad = true;
            var y = PatchMergeNormOp.Apply(tx, H, W, tg, tb);
            var yv = y.ToFloatArray();
            using (var loss = F.Sum(F.Mul(y, tw))) loss.Backward();
            return [yv, tx.Grad!.ToFloatArray(), tg.Grad!.ToFloatArray(), tb.Grad!.ToFloatArray()];
        }
        var c = Run(Cpu); var gpu = Run(Gpu);
        for (int i = 0; i < 4; i++)
            Assert.IsLessThan(1e-4 * Math.Max(1, c[i].Max(Math.Abs)), WindowAttentionCpuTests.MaxDiff(Array.ConvertAll(c[i], v => (double)v), Array.ConvertAll(gpu[i], v => (double)v)), $"output {i}");
    }

    [TestMethod]
    public void OddGridThrowsOnTheDevice()
    {
        using var x = Gpu.Zeros([1, 15, 4], DType.F32);
        using var g = Gpu.Zeros([16], DType.F32);
        Assert.ThrowsExactly<ArgumentException>(() => PatchMergeNormOp.Apply(x, 3, 5, g, g));
    }
}

[TestClass]
[TestCategory("Emulated")]
public sealed class PatchMergeNormEmulatedTests : PatchMergeNormCudaTestBase
{
    static readonly Lazy<CudaBackend> Shared = new(() => new CudaBackend(new EmulatedDevice { Schedule = EmuSchedule.Random, ScheduleSeed = 11 }, ownsDevice: true));
    protected override CudaBackend Gpu => Shared.Value;
}

[TestClass]
[TestCategory("Gpu")]
public sealed class PatchMergeNormGpuTests : PatchMergeNormCudaTestBase
{
    protected override CudaBackend Gpu => TestDevices.Gpu;
}
