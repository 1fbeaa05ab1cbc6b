using FiberCuda.Tests.Support;
using FiberCuda.Backends;
using FiberCuda.Backends.Cpu;
using FiberCuda.Backends.Cuda;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

using static FiberCuda.Tests.Attention.KernelCheck;

namespace FiberCuda.Tests.Attention;

/// <summary>
/// The tensor-core backward (window_attn_bwd_tc_bf16) against the CPU reference in fp64 and against the
/// fp32-math bf16 backward, all fed with the same bf16 inputs and the same saved y (bf16) and lse: the
/// reference's forward on the bf16 values, y rounded to bf16 as the kernels store it, lse as f32. Gradient
/// buffers (dqkv, dtable, dpad) are pre-filled so `+=` is checked; partial windows with a pad row check dpad.
///
/// Error budget (bf16 unit roundoff u = 2⁻⁸), per gradient kind g ∈ {dQ, dK, dV, dtable, dpad}:
///   * dV = Pᵀ·dO takes P rounded to bf16, dK = scale·dSᵀ·Q and dQ = scale·dS·K take dS rounded to bf16:
///     each term carries a relative error ≤ u, so |Δg| ≤ u·Σ|terms|. The rounding errors have random signs,
///     so for these random inputs the sum is far below u·Σ|terms|, which itself is a small multiple of
///     max|g| (a softmax row sums to 1; dS rows sum to 0): 4u·max|g| = max|g|/64 (the figure of the other
///     bf16 window-attention tests) bounds it with margin. dtable and dpad are sums of fp32 dS and of the
///     fp32 dK|dV accumulators, so they only inherit dK's and dV's error (and are compared the same way).
///   * the scores are exact bf16 products summed in fp32, exp2 and the fp32 sums add ~1e-6 relative;
///   * every stored gradient is rounded to bf16 once after the +=: u·|value| per element.
/// Hence |g_tc − g_ref| ≤ max|g_ref|/64 + u·|g_ref + prefill| per element. The fp32-math backward has only
/// the last term, so the two kernels may differ by the same bound plus its own rounding (2u·|value|).
/// The measured maxima (relative to max|g|) are printed for the report.
/// </summary>
public abstract class WindowAttentionTensorCoreBackwardTestBase
{
    protected abstract CudaBackend Gpu { get; }
    static CpuBackend Cpu => Backend.Cpu;

    [TestInitialize]
    public void RequireDevice() => _ = Gpu;

    const double U = 1.0 / 256;

    sealed record Grads(double[] Dqkv, double[] Dtable, double[] Dpad);

    /// <param name="vh">stored rows (&lt; the padded height for partial windows)</param>
    /// <param name="deterministic">run the TC backward twice and require identical bits</param>
    void Run(int w, int vh, int vw, int nH, int s, DType tdt, bool withPad, bool deterministic = false)
    {
        var r = new Random(w * 1000 + vh * 37 + vw * 7 + s + nH);
        var a = WindowAttentionShape.ForMap(1, vh, vw, nH, 32, w, s, (float)(1 / Math.Sqrt(32)));
        int C = a.Channels;
        float[] R(long n, double scale) => Array.ConvertAll(Rand(r, n, scale), BFloat16.Round);
        var qv = R(ShapeUtil.Numel(a.QkvShape), 1.5);
        var tv = Rand(r, ShapeUtil.Numel(a.TableShape), 2);
        if (tdt == DType.BF16) tv = Array.ConvertAll(tv, BFloat16.Round);
        var pv = withPad ? R(3 * C, 1.5) : null;
        var dyv = R(ShapeUtil.Numel(a.OutShape), 1);
        var dq0 = R(ShapeUtil.Numel(a.QkvShape), 0.1);
        var dt0 = Rand(r, ShapeUtil.Numel(a.TableShape), 0.1);
        if (tdt == DType.BF16) dt0 = Array.ConvertAll(dt0, BFloat16.Round);
        var dp0 = R(3 * C, 0.1);

        // Saved tensors: the fp64 forward on the bf16 values; y rounded to bf16 (as stored), lse to f32.
        double[] D(float[] v) => Array.ConvertAll(v, x => (double)x);
        using var q64 = Cpu.FromDoubles(D(qv), a.QkvShape, DType.F64);
        using var t64 = Cpu.FromDoubles(D(tv), a.TableShape, DType.F64);
        using var p64 = pv is null ? null : Cpu.FromDoubles(D(pv), [3 * C], DType.F64);
        using var y64 = Cpu.Empty(a.OutShape, DType.F64); using var l64 = Cpu.Empty(a.LseShape, DType.F64);
        var cpuOp = WindowAttentionOps.For(Cpu);
        cpuOp.Forward(q64, t64, a, y64, l64, p64);
        var yv = Array.ConvertAll(y64.ToDoubleArray(), x => BFloat16.Round((float)x));
        var lv = Array.ConvertAll(l64.ToDoubleArray(), x => (float)x);

        // fp64 reference backward from exactly those values.
        using var yr = Cpu.FromDoubles(D(yv), a.OutShape, DType.F64); using var lr = Cpu.FromDoubles(D(lv), a.LseShape, DType.F64);
        using var dyr = Cpu.FromDoubles(D(dyv), a.OutShape, DType.F64);
        using var dqr = Cpu.FromDoubles(D(dq0), a.QkvShape, DType.F64);
        using var dtr = Cpu.FromDoubles(D(dt0), a.TableShape, DType.F64);
        using var dpr = Cpu.FromDoubles(D(dp0), [3 * C], DType.F64);
        cpuOp.Backward(q64, t64, a, yr, lr, dyr, dqr, dtr, p64, dpr);
        var reference = new Grads(dqr.ToDoubleArray(), dtr.ToDoubleArray(), dpr.ToDoubleArray());

        using var qg = Gpu.FromFloats(qv, a.QkvShape, DType.BF16); using var tg = Gpu.FromFloats(tv, a.TableShape, tdt);
        using var pg = pv is null ? null : Gpu.FromFloats(pv, [3 * C], DType.BF16);
        using var yg = Gpu.FromFloats(yv, a.OutShape, DType.BF16); using var lg = Gpu.FromFloats(lv, a.LseShape, DType.F32);
        using var dyg = Gpu.FromFloats(dyv, a.OutShape, DType.BF16);
        Grads Backward(bool tc)
        {
            var op = new CudaWindowAttention(Gpu) { UseTensorCores = tc };
            Assert.AreEqual(tc, op.TensorCoreBackward(a, DType.BF16), "kernel choice");
            using var dq = Gpu.FromFloats(dq0, a.QkvShape, DType.BF16);
            using var dt = Gpu.FromFloats(dt0, a.TableShape, tdt);
            using var dp = Gpu.FromFloats(dp0, [3 * C], DType.BF16);
            op.Backward(qg, tg, a, yg, lg, dyg, dq, dt, pg, dp);
            return new Grads(dq.ToDoubleArray(), dt.ToDoubleArray(), dp.ToDoubleArray());
        }
        var gt = Backward(true);
        var gf = Backward(false);
        if (deterministic)
        {
            var again = Backward(true);
            CollectionAssert.AreEqual(gt.Dqkv, again.Dqkv, "dqkv bits differ between two runs");
            CollectionAssert.AreEqual(gt.Dtable, again.Dtable, "dtable bits differ between two runs");
            CollectionAssert.AreEqual(gt.Dpad, again.Dpad, "dpad bits differ between two runs");
        }

        string tag = $"w={w} stored {vh}x{vw} of {a.Height}x{a.Width} nH={nH} s={s} table {tdt.Name()} pad {(withPad ? "row" : "none")}";
        var report = new List<string>();
        // Gradient kinds: q, k, v slices of dqkv, the table, dpad's k|v part (its q part only keeps its pre-fill).
        void Check(string what, double[] e, double[] p0, double[] t, double[] f, Func<int, bool> sel)
        {
            double gmax = 0, eT = 0, eF = 0, eTF = 0;
            for (int i = 0; i < e.Length; i++) if (sel(i)) gmax = Math.Max(gmax, Math.Abs(e[i] - p0[i]));
            double tol = gmax / 64;
            for (int i = 0; i < e.Length; i++)
            {
                if (!sel(i)) continue;
                double dT = Math.Abs(t[i] - e[i]), dF = Math.Abs(f[i] - e[i]), dTF = Math.Abs(t[i] - f[i]);
                if (double.IsNaN(t[i])) dT = dTF = double.PositiveInfinity;
                eT = Math.Max(eT, dT); eF = Math.Max(eF, dF); eTF = Math.Max(eTF, dTF);
                Assert.IsLessThanOrEqualTo(tol + U * Math.Abs(e[i]) + 1e-6, dT, $"{what} TC vs fp64 {tag} at {i}: ref {e[i]}, TC {t[i]}");
                Assert.IsLessThanOrEqualTo(tol + 2 * U * Math.Abs(e[i]) + 1e-6, dTF, $"{what} TC vs fp32-math {tag} at {i}: {f[i]} vs TC {t[i]}");
            }
            report.Add($"{what} max|g| {gmax:g3}: TC {eT / gmax:g3}, fp32-math {eF / gmax:g3}, TC vs fp32-math {eTF / gmax:g3}");
        }
        double[] dq0d = D(dq0);
        for (int p = 0; p < 3; p++)
        {
            int part = p;
            Check("d" + "qkv"[p], reference.Dqkv, dq0d, gt.Dqkv, gf.Dqkv, i => (i % (3 * C)) / C == part);
        }
        Check("dtable", reference.Dtable, D(dt0), gt.Dtable, gf.Dtable, _ => true);
        // Without a pad row the padding tokens' q, k, v are zeros, but their k and v still get gradients.
        if (a.Padded) Check("dpad", reference.Dpad, D(dp0), gt.Dpad, gf.Dpad, i => i >= C);
        else CollectionAssert.AreEqual(D(dp0), gt.Dpad, "dpad must keep its pre-fill without padding tokens");
        Console.WriteLine($"{tag}: errors / max|g|: " + string.Join("; ", report));
    }

    [TestMethod]
    [DataRow(0)]
    [DataRow(3)]
    public void Window7(int s) => Run(7, 14, 7, 2, s, DType.F32, withPad: false, deterministic: s == 3);

    /// <summary>Partial windows: 12×5 stored of 14×7, with and without a pad row.</summary>
    [TestMethod]
    [DataRow(0, true)]
    [DataRow(3, true)]
    [DataRow(3, false)]
    public void Window7Partial(int s, bool withPad) => Run(7, 12, 5, 2, s, DType.BF16, withPad);

    [TestMethod]
    [DataRow(0)]
    [DataRow(6)]
    public void Window12(int s) => Run(12, 12, 24, 1, s, DType.BF16, withPad: false);

    [TestMethod]
    public void Window12PartialShifted() => Run(12, 20, 9, 1, 6, DType.F32, withPad: true);

    /// <summary>w = 18 (N = 324 → 336 rows): one head, one pair of windows, partial and shifted.</summary>
    [TestMethod]
    public void Window18PartialShifted() => Run(18, 18, 25, 1, 9, DType.F32, withPad: true);

    /// <summary>N = 16 (one exact tile), N = 25 (a half-used query chunk, padded rows) with partial windows.</summary>
    [TestMethod]
    [DataRow(4, 2)]
    [DataRow(5, 2)]
    public void SmallWindows(int w, int s) => Run(w, 2 * w - 1, w - 1, 2, s, DType.F32, withPad: true);
}

/// <summary>The TC backward's shared memory for the FIBER windows, from its layout (bf16 Q, K, V, dO rows of 40 for
/// N rounded up to 16; f32 lse, D, key info; the table; per warp a table copy, a [64] pad copy and a 16×68 tile).</summary>
[TestClass]
public sealed class WindowAttentionTensorCoreBackwardSharedMemoryTests
{
    [TestMethod]
    [DataRow(7, 64, 4)]
    [DataRow(12, 144, 5)]
    [DataRow(18, 336, 7)]
    public void FitsTheSm90OptInLimit(int w, int npad, int warps)
    {
        var a = new WindowAttentionShape(1, w, w, 1, 32, w, 0, 1);
        int t2 = (2 * w - 1) * (2 * w - 1);
        Assert.AreEqual(warps, CudaWindowAttention.TensorCoreWarps(a));
        Assert.AreEqual(4 * npad * 80 + 4 * (3 * npad + t2 + warps * (t2 + 64 + 16 * 68)), CudaWindowAttention.TensorCoreBackwardSharedBytes(a));
        Assert.IsLessThanOrEqualTo(227 * 1024, CudaWindowAttention.TensorCoreBackwardSharedBytes(a));
        Console.WriteLine($"w={w}: TC backward {CudaWindowAttention.TensorCoreBackwardSharedBytes(a)} B, fp32-math backward {CudaWindowAttention.BackwardSharedBytes(a)} B");
    }
}

[TestClass]
[TestCategory("Emulated")]
public sealed class WindowAttentionTensorCoreBackwardEmulatedTests : WindowAttentionTensorCoreBackwardTestBase
{
    // Own device; random resume order so a missing __syncwarp/__syncthreads shows up.
    static readonly Lazy<CudaBackend> Shared = new(() => new CudaBackend(new EmulatedDevice { Schedule = EmuSchedule.Random, ScheduleSeed = 11 }, ownsDevice: true));
    protected override CudaBackend Gpu => Shared.Value;
}

[TestClass]
[TestCategory("Gpu")]
public sealed class WindowAttentionTensorCoreBackwardGpuTests : WindowAttentionTensorCoreBackwardTestBase
{
    protected override CudaBackend Gpu => TestDevices.Gpu;
}
