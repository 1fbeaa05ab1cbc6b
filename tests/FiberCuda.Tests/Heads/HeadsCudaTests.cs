using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Backends.Cuda;
using FiberCuda.Runtime;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;
using static FiberCuda.Tests.Heads.HeadReference;

using static FiberCuda.Tests.Heads.HeadRuns;
namespace FiberCuda.Tests.Heads;

/// <summary>
/// The CUDA head ops (itc.cu, mlm.cu + engine GEMM) against the CPU ops in fp64 (themselves checked
/// against the materialised references in <see cref="HeadsCpuTests"/>), on the emulated GPU and on a
/// real one.
/// </summary>
public abstract class HeadsCudaTestBase
{
    protected abstract IBackend Gpu { get; }
    static IBackend Cpu => Backend.Cpu;

    protected sealed record ItcOut(double Loss, double[]? GImg, double[]? GTxt, double GTemp);

    protected static ItcOut RunItc(IBackend be, Itc p, DType dt, bool gImg = true, bool gTxt = true, bool gTemp = true)
    {
        var st = dt == DType.F64 ? DType.F64 : DType.F32;
        using var img = be.FromDoubles(p.Img, [p.B, p.D], dt);
        using var txt = be.FromDoubles(p.Txt, [p.B, p.D], dt);
        using var ik = be.FromDoubles(p.ImgK, [p.B, p.D], dt);
        using var tk = be.FromDoubles(p.TxtK, [p.B, p.D], dt);
        using var iq = be.FromDoubles(p.ImgQueue, [p.Q, p.D], dt);
        using var tq = be.FromDoubles(p.TxtQueue, [p.Q, p.D], dt);
        using var temp = be.FromDoubles([p.Temp], [1], st);
        using var loss = be.Empty([1], st);
        using var gi = be.Empty([p.B, p.D], dt);
        using var gt = be.Empty([p.B, p.D], dt);
        using var gtemp = be.Empty([1], st);
        be.Heads().ItcForward(img, txt, ik, tk, iq, tq, temp, loss, gImg ? gi : null, gTxt ? gt : null, gTemp ? gtemp : null);
        return new ItcOut(loss.ToDoubleArray()[0], gImg ? gi.ToDoubleArray() : null, gTxt ? gt.ToDoubleArray() : null,
            gTemp ? gtemp.ToDoubleArray()[0] : double.NaN);
    }

    protected void ItcCase(int b, int d, int q, DType dt, double temp = 0.07)
    {
        _ = Gpu; // skips before the CPU reference work when there is no GPU
        var p = MakeItc(1000 + b + d * 3 + q * 7, b, d, q, temp);
        var r = RunItc(Cpu, p, DType.F64);
        var g = RunItc(Gpu, p, dt);
        double rt = dt == DType.BF16 ? 1e-2 : 1e-4;
        string what = $"ITC B={b} D={d} Q={q} {dt.Name()} on {Gpu.Name}";
        Assert.AreEqual(r.Loss, g.Loss, 1e-4 * Math.Abs(r.Loss) + 1e-5, what + ": loss");
        double scale = r.GImg!.Concat(r.GTxt!).Max(Math.Abs);
        Check.Close(r.GImg!, g.GImg!, rt * scale * 0.1, rt, what + ": dImg");
        Check.Close(r.GTxt!, g.GTxt!, rt * scale * 0.1, rt, what + ": dTxt");
        Assert.AreEqual(r.GTemp, g.GTemp, 1e-3 * Math.Abs(r.GTemp) + 1e-4, what + ": dTemp");
    }

    protected void ItcPartialGradients()
    {
        var p = MakeItc(77, 6, 20, 9);
        var all = RunItc(Gpu, p, DType.F32);
        var onlyTxt = RunItc(Gpu, p, DType.F32, gImg: false, gTemp: false);
        var none = RunItc(Gpu, p, DType.F32, false, false, false);
        Assert.AreEqual(all.Loss, onlyTxt.Loss, 0.0);
        Assert.AreEqual(all.Loss, none.Loss, 0.0);
        CollectionAssert.AreEqual(all.GTxt, onlyTxt.GTxt);
    }

    protected void ClampScaleAndQueue()
    {
        var be = Gpu; var ops = be.Heads();
        using var t = be.FromDoubles([double.NaN, -1, 0.5, 3, 0.0005], [5], DType.F32);
        ops.ClampInPlace(t, 0.001, 1);
        var v = t.ToDoubleArray();
        Assert.IsTrue(double.IsNaN(v[0]));
        CollectionAssert.AreEqual(new[] { (double)0.001f, 0.5, 1.0, (double)0.001f }, v[1..]);

        using var s = be.FromDoubles([-2.5], [1], DType.F32);
        using var x = be.FromDoubles([1, 2, 3, 4, 5, 6, 7], [7], DType.F32);
        using var y = be.FromDoubles([1, 1, 1, 1, 1, 1, 1], [7], DType.F32);
        ops.ScaleAccumulate(s, x, y);
        CollectionAssert.AreEqual(new[] { -1.5, -4, -6.5, -9, -11.5, -14, -16.5 }, y.ToDoubleArray());

        const int Q = 7, D = 5;
        var model = new double[Q * D];
        using var queue = be.FromDoubles(model, [Q, D], DType.BF16);
        int ptr = 0, step = 0;
        foreach (int b in new[] { 3, 3, 3, 7, 2 })
        {
            var f = Enumerable.Range(0, b * D).Select(i => (double)(++step)).ToArray();
            using var ft = be.FromDoubles(f, [b, D], DType.BF16);
            int next = ops.QueueEnqueue(queue, ft, ptr);
            for (int i = 0; i < b; i++) for (int k = 0; k < D; k++) model[((ptr + i) % Q) * D + k] = BFloat16.Round((float)f[i * D + k]);
            ptr = (ptr + b) % Q;
            Assert.AreEqual(ptr, next);
            CollectionAssert.AreEqual(model, queue.ToDoubleArray(), $"queue after a batch of {b}");
        }
    }

    protected void MlmCase(int n, int h, int v, int tile, bool bias, DType dt, DType labelType, DType? biasType = null)
    {
        _ = Gpu; // skips before the CPU reference work when there is no GPU
        var p = MakeMlm(n * 13 + v, n, h, v, bias);
        var dloss = Enumerable.Range(0, n).Select(i => 0.3 + 0.1 * i).ToArray();
        var r = RunMlm(Cpu, p, DType.F64, labelType, tile, dloss);
        var g = RunMlm(Gpu, p, dt, labelType, tile, dloss, biasType);
        string what = $"MLM N={n} H={h} V={v} tile={tile} {dt.Name()} on {Gpu.Name}";
        double rt = dt == DType.BF16 ? 2e-2 : 1e-4;
        Check.Close(r.Loss, g.Loss, rt * 0.1, rt, what + ": loss");
        Check.Close(r.Lse, g.Lse, rt * 0.1, rt, what + ": lse");
        double sh = r.DH!.Max(Math.Abs), sw = r.DW!.Max(Math.Abs);
        Check.Close(r.DH!, g.DH!, rt * sh * 0.1, rt, what + ": dHidden");
        Check.Close(r.DW!, g.DW!, rt * sw * 0.1, rt, what + ": dWeight");
        if (bias) Check.Close(r.DB!, g.DB!, rt * r.DB!.Max(Math.Abs) * 0.1, biasType == DType.F32 ? 1e-3 : rt, what + ": dBias");
    }

    protected void MlmBadLabelIsNaN()
    {
        var p = MakeMlm(2, 3, 4, 9, ignoreEvery: 0) with { Labels = [1, 9, -100] };
        var g = RunMlm(Gpu, p, DType.F32, DType.I32, 4, null);
        Assert.IsTrue(double.IsNaN(g.Loss[1]), "label outside [0,V) gives NaN on a GPU");
        Assert.AreEqual(0.0, g.Loss[2]);
        Assert.IsFalse(double.IsNaN(g.Loss[0]));
    }

    /// <summary>Both losses through autograd on the GPU vs the CPU in fp64 (f32 on the GPU).</summary>
    protected void AutogradBothLosses()
    {
        _ = Gpu;
        var pi = MakeItc(31, 5, 12, 6);
        var pm = MakeMlm(32, 6, 12, 29);
        (double[] ItcLoss, double[][] ItcGrads, double MlmLoss, double[][] MlmGrads) Run(IBackend be, DType dt)
        {
            var st = dt == DType.F64 ? DType.F64 : DType.F32;
            using var img = be.FromDoubles(pi.Img, [5, 12], dt); img.RequiresGrad = true;
            using var txt = be.FromDoubles(pi.Txt, [5, 12], dt); txt.RequiresGrad = true;
            using var temp = be.FromDoubles([2.0], [1], st); temp.RequiresGrad = true; // clamped to 1 in place
            using var iq = be.FromDoubles(pi.ImgQueue, [6, 12], dt);
            using var tq = be.FromDoubles(pi.TxtQueue, [6, 12], dt);
            using var itc = HeadOps.ItcLoss(img, txt, iq, tq, temp);
            using var seed = be.FromDoubles([0.5], [1], st);
            itc.Backward(seed);
            var ops = be.Heads(); int saved = ops.MlmTileColumns; ops.MlmTileColumns = 8;
            try
            {
                using var h = be.FromDoubles(pm.Hidden, [6, 12], dt); h.RequiresGrad = true;
                using var w = be.FromDoubles(pm.Weight, [29, 12], dt); w.RequiresGrad = true;
                using var b = be.FromDoubles(pm.Bias!, [29], dt); b.RequiresGrad = true;
                using var lab = be.FromInts(pm.Labels, [6], DType.I64);
                using var mlm = HeadOps.MlmLoss(h, w, b, lab);
                mlm.Backward();
                return ([itc.ToDoubleArray()[0], temp.ToDoubleArray()[0]],
                        [img.Grad!.ToDoubleArray(), txt.Grad!.ToDoubleArray(), temp.Grad!.ToDoubleArray()],
                        mlm.ToDoubleArray()[0],
                        [h.Grad!.ToDoubleArray(), w.Grad!.ToDoubleArray(), b.Grad!.ToDoubleArray()]);
            }
            finally { ops.MlmTileColumns = saved; }
        }
        var r = Run(Cpu, DType.F64);
        var g = Run(Gpu, DType.F32);
        Assert.AreEqual(1.0, g.ItcLoss[1], "temperature clamped in place on the GPU");
        Assert.AreEqual(r.ItcLoss[0], g.ItcLoss[0], 1e-5 * Math.Abs(r.ItcLoss[0]) + 1e-6, "itc loss");
        string[] n1 = ["img", "txt", "temp"], n2 = ["hidden", "weight", "bias"];
        for (int i = 0; i < 3; i++) Check.Close(r.ItcGrads[i], g.ItcGrads[i], 1e-6, 1e-4, "itc grad " + n1[i]);
        Assert.AreEqual(r.MlmLoss, g.MlmLoss, 1e-5 * Math.Abs(r.MlmLoss), "mlm loss");
        for (int i = 0; i < 3; i++) Check.Close(r.MlmGrads[i], g.MlmGrads[i], 1e-6, 1e-4, "mlm grad " + n2[i]);
    }
}

[TestClass]
[TestCategory("Emulated")]
public sealed class HeadsEmulatedTests : HeadsCudaTestBase
{
    protected override IBackend Gpu => TestDevices.Emulated;

    [TestMethod]
    [DataRow(5, 8, 7)]      // B not a multiple of the 4 rows per block
    [DataRow(1, 3, 0)]      // one pair, no queue
    [DataRow(3, 300, 70)]   // D > 256 (several columns per thread), B+Q > 64 (several key tiles)
    public void Itc_F32(int b, int d, int q) => ItcCase(b, d, q, DType.F32);

    [TestMethod]
    [DataRow(6, 40, 61)]
    public void Itc_Bf16(int b, int d, int q) => ItcCase(b, d, q, DType.BF16);

    [TestMethod] public void Itc_WidestFeatures() => ItcCase(2, 1024, 3, DType.F32);

    [TestMethod]
    public void Itc_TooWideFeaturesAreRejected()
    {
        var p = MakeItc(1, 2, 1025, 1);
        Assert.ThrowsExactly<ArgumentException>(() => RunItc(Gpu, p, DType.F32));
    }

    [TestMethod]
    public void Mlm_TilesBelowEightColumnsAreRoundedUp()
    {
        // Weight-tile pointers stay 16-byte aligned for cuBLASLt: a requested tile of 3 runs as 8.
        MlmCase(3, 5, 19, 3, true, DType.BF16, DType.I32);
    }

    [TestMethod]
    public void Mlm_NoRows()
    {
        var p = new Mlm(0, 4, 9, [], MakeMlm(2, 1, 4, 9).Weight, null, []);
        var g = RunMlm(Gpu, p, DType.F32, DType.I32, 8, []);
        Assert.AreEqual(0, g.Loss.Length);
        Assert.IsTrue(g.DW!.All(x => x == 0));
    }

    [TestMethod] public void Itc_HotTemperature() => ItcCase(4, 16, 30, DType.F32, temp: 0.001);
    [TestMethod] public void Itc_PartialGradients() => ItcPartialGradients();
    [TestMethod] public void ClampScaleAccumulateAndQueue() => ClampScaleAndQueue();

    [TestMethod]
    [DataRow(5, 12, 37, 16, true, "f32", "i32")]    // V not a multiple of the tile (16, 16, 5)
    [DataRow(4, 8, 21, 8192, false, "f32", "i64")]  // one tile, no bias
    [DataRow(7, 16, 40, 8, true, "bf16", "i32")]
    public void Mlm(int n, int h, int v, int tile, bool bias, string dt, string lt)
        => MlmCase(n, h, v, tile, bias, dt == "f32" ? DType.F32 : DType.BF16, lt == "i32" ? DType.I32 : DType.I64);

    [TestMethod] public void Mlm_Bf16WeightsF32Bias() => MlmCase(5, 8, 19, 8, true, DType.BF16, DType.I64, DType.F32);
    [TestMethod] public void Mlm_BadLabelIsNaN() => MlmBadLabelIsNaN();
    [TestMethod] public void Autograd() => AutogradBothLosses();
}

[TestClass]
[TestCategory("Gpu")]
public sealed class HeadsGpuTests : HeadsCudaTestBase
{
    protected override IBackend Gpu => TestDevices.Gpu;

    [TestMethod]
    [DataRow(5, 8, 7)]
    [DataRow(3, 300, 70)]
    [DataRow(64, 256, 4096)]  // FIBER sizes (D=256 variant)
    [DataRow(32, 768, 4096)]  // FIBER sizes (D=768)
    public void Itc_F32(int b, int d, int q) => ItcCase(b, d, q, DType.F32);

    [TestMethod] public void Itc_Bf16() => ItcCase(16, 768, 1000, DType.BF16);
    [TestMethod] public void ClampScaleAccumulateAndQueue() => ClampScaleAndQueue();

    [TestMethod]
    [DataRow(5, 12, 37, 16, true, "f32", "i32")]
    [DataRow(7, 16, 40, 8, true, "bf16", "i32")]
    [DataRow(48, 768, 50265, 8192, true, "f32", "i64")]   // FIBER's vocabulary (last tile 1113 columns)
    [DataRow(48, 768, 50265, 8192, true, "bf16", "i64")]
    public void Mlm(int n, int h, int v, int tile, bool bias, string dt, string lt)
        => MlmCase(n, h, v, tile, bias, dt == "f32" ? DType.F32 : DType.BF16, lt == "i32" ? DType.I32 : DType.I64);

    [TestMethod] public void Mlm_BadLabelIsNaN() => MlmBadLabelIsNaN();
    [TestMethod] public void Autograd() => AutogradBothLosses();
}
