using System.Runtime.InteropServices;
using FiberCuda.Tests.Support;
using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Backends.Cpu;
using FiberCuda.Backends.Cuda;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

using static FiberCuda.Tests.Attention.KernelCheck;

namespace FiberCuda.Tests.Attention;

/// <summary>
/// The tensor-core forward (window_attn_fwd_tc_bf16) against the CPU reference in fp64 on the same
/// bf16 input values, and against the fp32-math forward; then the (shared) backward fed with its y and lse.
///
/// Error budget of each y element (bf16 unit roundoff u = 2⁻⁸; every y row is a convex combination of v rows):
///   * P is rounded to bf16 before P·V (relative error ≤ u per weight) while the row sum l is the fp32 sum
///     of the unrounded weights, so |Δy| ≤ u·Σ p_j·|v_j| / l ≤ u·max|v|;
///   * y is stored in bf16: ≤ u·|y|;
///   * scores come from exact bf16 products summed in fp32 (as in the fp32-math kernel); exp2 and the fp32
///     accumulations add ~1e-6 relative.
/// Hence |y_tc − y_ref| ≤ u·(|y_ref| + max|v|) + 1e-5 per element; the fp32-math kernel has only the
/// u·|y| term, so the two kernels differ by at most u·(2|y| + max|v|) (+ slack). lse involves no bf16
/// rounding after the scores: 1e-5·max|lse|, as the fp32-math kernel's test. The measured figures are
/// printed (Console) for the report.
/// </summary>
public abstract class WindowAttentionTensorCoreTestBase
{
    protected abstract CudaBackend Gpu { get; }
    static CpuBackend Cpu => Backend.Cpu;

    [TestInitialize]
    public void RequireDevice() => _ = Gpu;

    static double MaxAbs(double[] v) => v.Max(Math.Abs);

    static (double Max, double Rms) Diff(double[] e, double[] a)
    {
        Assert.HasCount(e.Length, a);
        double max = 0, ss = 0;
        for (int i = 0; i < e.Length; i++)
        {
            double d = double.IsNaN(a[i]) ? double.PositiveInfinity : Math.Abs(e[i] - a[i]);
            max = Math.Max(max, d); ss += d * d;
        }
        return (max, Math.Sqrt(ss / e.Length));
    }

    void Forward(int B, int w, int H, int W, int nH, int s, DType tdt)
    {
        var r = new Random(w * 100 + s * 10 + H + nH);
        var a = new WindowAttentionShape(B, H, W, nH, 32, w, s, (float)(1 / Math.Sqrt(32)));
        using var qb = Cpu.FromFloats(Rand(r, ShapeUtil.Numel(a.QkvShape), 1.5), a.QkvShape, DType.BF16);
        using var tb = Cpu.FromFloats(Rand(r, ShapeUtil.Numel(a.TableShape), 2), a.TableShape, tdt);
        var qv = qb.ToDoubleArray();
        // Reference: fp64 on exactly the bf16 values the kernels see.
        using var q64 = Cpu.FromDoubles(qv, a.QkvShape, DType.F64);
        using var t64 = Cpu.FromDoubles(tb.ToDoubleArray(), a.TableShape, DType.F64);
        using var y64 = Cpu.Empty(a.OutShape, DType.F64); using var l64 = Cpu.Empty(a.LseShape, DType.F64);
        WindowAttentionOps.For(Cpu).Forward(q64, t64, a, y64, l64);

        using var qg = Gpu.CopyFrom(qb); using var tg = Gpu.CopyFrom(tb);
        using var yt = Gpu.Empty(a.OutShape, DType.BF16); using var lt = Gpu.Empty(a.LseShape, DType.F32);
        using var yf = Gpu.Empty(a.OutShape, DType.BF16); using var lf = Gpu.Empty(a.LseShape, DType.F32);
        new CudaWindowAttention(Gpu) { UseTensorCores = true }.Forward(qg, tg, a, yt, lt);
        new CudaWindowAttention(Gpu) { UseTensorCores = false }.Forward(qg, tg, a, yf, lf);

        int C = a.Channels;
        double vmax = 0;
        for (long e = 0; e < qv.Length; e++) if ((e % (3 * C)) / C == 2) vmax = Math.Max(vmax, Math.Abs(qv[e]));
        double[] ye = y64.ToDoubleArray(), ya = yt.ToDoubleArray(), yb = yf.ToDoubleArray();
        double[] le = l64.ToDoubleArray(), la = lt.ToDoubleArray(), lb = lf.ToDoubleArray();
        var dTc = Diff(ye, ya); var dF = Diff(ye, yb); var dTF = Diff(yb, ya);
        var lTc = Diff(le, la); var lF = Diff(le, lb);
        double lmax = MaxAbs(le);
        string tag = $"w={w} B={B} {H}x{W} nH={nH} s={s} table {tdt.Name()}";
        Console.WriteLine($"{tag}: max|v| {vmax:g4}, max|y| {MaxAbs(ye):g4}; y vs fp64: TC max {dTc.Max:g3} ({dTc.Max / vmax:g3}·max|v|) rms {dTc.Rms:g3}, " +
                          $"fp32-math max {dF.Max:g3} ({dF.Max / vmax:g3}·max|v|) rms {dF.Rms:g3}; TC vs fp32-math max {dTF.Max:g3}; " +
                          $"lse vs fp64 (max|lse| {lmax:g4}): TC max {lTc.Max:g3}, fp32-math max {lF.Max:g3}");
        const double u = 1.0 / 256; // bf16 unit roundoff
        for (int i = 0; i < ye.Length; i++)
        {
            Assert.IsLessThanOrEqualTo(u * (Math.Abs(ye[i]) + vmax) + 1e-5, Math.Abs(ya[i] - ye[i]), $"y TC vs fp64 {tag} at {i}: ref {ye[i]}, TC {ya[i]}");
            Assert.IsLessThanOrEqualTo(u * (2.01 * Math.Abs(yb[i]) + vmax) + 1e-5, Math.Abs(ya[i] - yb[i]), $"y TC vs fp32-math {tag} at {i}: {yb[i]} vs TC {ya[i]}");
        }
        Assert.IsLessThanOrEqualTo(1e-5 * lmax, lTc.Max, "lse TC vs fp64 " + tag);
        Assert.IsLessThanOrEqualTo(1e-5 * lmax, Diff(lb, la).Max, "lse TC vs fp32-math " + tag);
    }

    [TestMethod]
    [DataRow(0)]
    [DataRow(3)]
    public void Window7(int s) => Forward(2, 7, 14, 7, 2, s, DType.F32);

    [TestMethod]
    [DataRow(0)]
    [DataRow(6)]
    public void Window12(int s) => Forward(1, 12, 12, 24, 1, s, DType.BF16);

    [TestMethod]
    public void Window18Shifted() => Forward(1, 18, 18, 36, 1, 9, DType.F32);

    /// <summary>Small and odd windows (N = 16: one exact m-tile; N = 25, 81: padded rows and a partial key chunk).</summary>
    [TestMethod]
    [DataRow(4, 2)]
    [DataRow(5, 2)]
    [DataRow(9, 4)]
    public void SmallWindows(int w, int s) => Forward(1, w, 2 * w, w, 2, s, DType.F32);

    /// <summary>A tensor 2 bytes into another tensor's buffer (tensors are otherwise always allocation-aligned).</summary>
    sealed class OffsetStorage(Storage inner, long offset, long bytes) : Storage(inner.Backend, bytes)
    {
        public override nint Address => inner.Address + (nint)offset;
        protected override void Release() { }
    }

    /// <summary>qkv and y not 16-byte aligned: the scalar load and store paths give the same bits as the vector ones.</summary>
    [TestMethod]
    public void UnalignedBuffersGiveTheSameBits()
    {
        var r = new Random(5);
        var a = new WindowAttentionShape(1, 10, 5, 2, 32, 5, 2, (float)(1 / Math.Sqrt(32)));
        long nq = ShapeUtil.Numel(a.QkvShape), ny = ShapeUtil.Numel(a.OutShape);
        using var qb = Cpu.FromFloats(Rand(r, nq, 1.5), a.QkvShape, DType.BF16);
        using var tg = Gpu.FromFloats(Rand(r, ShapeUtil.Numel(a.TableShape), 2), a.TableShape);
        using var qg = Gpu.CopyFrom(qb);
        using var qraw = Gpu.Empty([(int)nq + 8], DType.BF16); using var yraw = Gpu.Empty([(int)ny + 8], DType.BF16);
        var qu = new Tensor(new OffsetStorage(qraw.Storage, 2, nq * 2), a.QkvShape, DType.BF16);
        var yu = new Tensor(new OffsetStorage(yraw.Storage, 2, ny * 2), a.OutShape, DType.BF16);
        Gpu.Upload(qu, MemoryMarshal.AsBytes(qb.ToArray<ushort>().AsSpan()));
        using var y = Gpu.Empty(a.OutShape, DType.BF16);
        using var l = Gpu.Empty(a.LseShape, DType.F32); using var lu = Gpu.Empty(a.LseShape, DType.F32);
        var op = new CudaWindowAttention(Gpu) { UseTensorCores = true };
        op.Forward(qg, tg, a, y, l);
        op.Forward(qu, tg, a, yu, lu);
        CollectionAssert.AreEqual(y.ToArray<ushort>(), yu.ToArray<ushort>(), "y");
        CollectionAssert.AreEqual(l.ToFloatArray(), lu.ToFloatArray(), "lse");
        CollectionAssert.AreEqual(qb.ToArray<ushort>(), qu.ToArray<ushort>(), "qkv untouched");
    }

    /// <summary>
    /// The autograd op in bf16 with the tensor-core forward: the backward, fed with its y and lse, gives the
    /// fp64 reference's gradients. Budget (relative to the largest gradient): dqkv is stored in bf16 (2⁻⁸ per
    /// value); y enters through D_i = Σ_c dO_ic·y_ic, whose error |dO|·32·2⁻⁸·max|v| shifts every dS_ij of
    /// row i; and P is recomputed from the stored lse in fp32. 1/64 of max|grad| (as the fp32-math bf16
    /// tests) covers this with margin; the figures for the TC and the fp32-math forward are printed.
    /// </summary>
    [TestMethod]
    [DataRow(7, 14, 7, 3)]
    [DataRow(4, 8, 4, 2)]
    public void AutogradBf16WithTensorCoreForward(int w, int H, int W, int s)
    {
        var r = new Random(17 + w);
        int nH = 2, C = nH * 32, T2 = (2 * w - 1) * (2 * w - 1);
        var q = Rand(r, H * W * 3 * C, 1.5); var t = Rand(r, T2 * nH, 2); var m = Rand(r, H * W * C, 1);
        double[] Grads(IBackend be, DType dt, out double[] tgrad)
        {
            using var qkv = be.FromFloats(q, [1, H * W, 3 * C], dt); using var table = be.FromFloats(t, [T2, nH], dt == DType.BF16 ? DType.F32 : dt);
            using var wts = be.FromFloats(m, [1, H * W, C], dt);
            qkv.RequiresGrad = true; table.RequiresGrad = true;
            using (var loss = F.Sum(F.Mul(WindowAttentionOp.Apply(qkv, table, H, W, nH, w, s), wts))) loss.Backward();
            tgrad = table.Grad!.ToDoubleArray();
            return qkv.Grad!.ToDoubleArray();
        }
        // fp64 reference on the bf16-rounded inputs.
        q = Array.ConvertAll(q, BFloat16.Round); m = Array.ConvertAll(m, BFloat16.Round); // the table stays f32 on both sides
        var ge = Grads(Cpu, DType.F64, out var te);
        var op = (CudaWindowAttention)WindowAttentionOps.For(Gpu);
        bool was = op.UseTensorCores;
        try
        {
            op.UseTensorCores = true;
            var gt = Grads(Gpu, DType.BF16, out var tt);
            op.UseTensorCores = false;
            var gf = Grads(Gpu, DType.BF16, out var tf);
            double gmax = MaxAbs(ge), tmax = MaxAbs(te);
            var (dqT, dqF, dtT, dtF) = (Diff(ge, gt), Diff(ge, gf), Diff(te, tt), Diff(te, tf));
            string tag = $"w={w} {H}x{W} s={s}";
            Console.WriteLine($"{tag} bf16 autograd: dqkv max|ref| {gmax:g4}: TC fwd err {dqT.Max:g3} ({dqT.Max / gmax:g3} rel), fp32-math fwd err {dqF.Max:g3} ({dqF.Max / gmax:g3}); " +
                              $"dtable max|ref| {tmax:g4}: TC {dtT.Max:g3} ({dtT.Max / tmax:g3}), fp32-math {dtF.Max:g3} ({dtF.Max / tmax:g3})");
            Assert.IsLessThanOrEqualTo(gmax / 64, dqT.Max, "dqkv " + tag);
            Assert.IsLessThanOrEqualTo(tmax / 64, dtT.Max, "dtable " + tag);
        }
        finally { op.UseTensorCores = was; }
    }
}

[TestClass]
[TestCategory("Emulated")]
public sealed class WindowAttentionTensorCoreEmulatedTests : WindowAttentionTensorCoreTestBase
{
    // Own device, so flipping UseTensorCores on its shared op cannot race with other classes; random
    // resume order so a missing __syncwarp/__syncthreads shows up.
    static readonly Lazy<CudaBackend> Shared = new(() => new CudaBackend(new EmulatedDevice { Schedule = EmuSchedule.Random, ScheduleSeed = 5 }, ownsDevice: true));
    protected override CudaBackend Gpu => Shared.Value;
}

[TestClass]
[TestCategory("Gpu")]
public sealed class WindowAttentionTensorCoreGpuTests : WindowAttentionTensorCoreTestBase
{
    protected override CudaBackend Gpu => TestDevices.Gpu;
}
