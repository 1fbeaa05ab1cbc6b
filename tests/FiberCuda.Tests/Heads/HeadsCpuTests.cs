using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;
using static FiberCuda.Tests.Heads.HeadReference;

using static FiberCuda.Tests.Heads.HeadRuns;
namespace FiberCuda.Tests.Heads;

/// <summary>The CPU head ops against the plain fp64 references (materialised logits) and finite differences.</summary>
[TestClass]
public sealed class HeadsCpuTests
{
    static IBackend Cpu => Backend.Cpu;

    static Tensor T(double[] v, int[] shape, DType dt) => Cpu.FromDoubles(v, shape, dt);

    sealed record ItcOut(double Loss, double[] GImg, double[] GTxt, double GTemp);

    static ItcOut RunItc(IBackend be, Itc p, DType dt, bool grads = true)
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
        be.Heads().ItcForward(img, txt, ik, tk, iq, tq, temp, loss, grads ? gi : null, grads ? gt : null, grads ? gtemp : null);
        return grads
            ? new ItcOut(loss.ToDoubleArray()[0], gi.ToDoubleArray(), gt.ToDoubleArray(), gtemp.ToDoubleArray()[0])
            : new ItcOut(loss.ToDoubleArray()[0], [], [], double.NaN);
    }

    [TestMethod]
    [DataRow(5, 8, 7)]
    [DataRow(1, 3, 0)]   // one pair, empty queue: loss is exactly 0
    [DataRow(6, 16, 3)]
    [DataRow(2, 4, 9)]
    public void Itc_F64_MatchesReferenceAndFiniteDifferences(int b, int d, int q)
    {
        var p = MakeItc(100 + b * 31 + d + q, b, d, q);
        var got = RunItc(Cpu, p, DType.F64);
        Assert.AreEqual(ItcLoss(p), got.Loss, 1e-12 * Math.Max(1, Math.Abs(got.Loss)), "loss");
        var (gi, gt, gtemp) = ItcGrads(p);
        Check.Close(gi, got.GImg, 1e-6, 1e-5, "dImg");
        Check.Close(gt, got.GTxt, 1e-6, 1e-5, "dTxt");
        Assert.AreEqual(gtemp, got.GTemp, 1e-5 * Math.Max(1, Math.Abs(gtemp)), "dTemp");
    }

    [TestMethod]
    public void Itc_F32AndBf16_CloseToF64()
    {
        var p = MakeItc(7, 5, 24, 11);
        var r = RunItc(Cpu, p, DType.F64);
        foreach (var (dt, tol) in new[] { (DType.F32, 2e-5), (DType.BF16, 2e-2) })
        {
            var got = RunItc(Cpu, p, dt);
            Assert.AreEqual(r.Loss, got.Loss, 1e-5 * Math.Abs(r.Loss) + 1e-6, $"{dt} loss");
            Check.Close(r.GImg, got.GImg, tol * 0.1, tol, $"{dt} dImg");
            Check.Close(r.GTxt, got.GTxt, tol * 0.1, tol, $"{dt} dTxt");
            Assert.AreEqual(r.GTemp, got.GTemp, 1e-4 * Math.Abs(r.GTemp) + 1e-5, $"{dt} dTemp");
        }
    }

    [TestMethod]
    public void Itc_InBatchKeysAreDetached()
    {
        // A key change moves the loss but is not in the features' gradient: the op differentiates
        // through the queries only, like sim_i2t = image_feat @ text_feat_all(detached) / temp.
        var p = MakeItc(11, 4, 6, 5);
        var q = p with { ImgK = Grid(RowNormalise(RandN(new Random(3), 4 * 6), 6)) };
        var a = RunItc(Cpu, p, DType.F64);
        var b = RunItc(Cpu, q, DType.F64);
        Assert.AreNotEqual(a.Loss, b.Loss, "keys take part in the loss");
        Check.Close(ItcGrads(q).GImg, b.GImg, 1e-6, 1e-5, "dImg with other keys");
    }

    [TestMethod]
    public void Itc_Autograd_GradCheckWithSeparateKeys()
    {
        var p = MakeItc(21, 3, 5, 4, temp: 0.2);
        using var img = T(p.Img, [3, 5], DType.F64); img.RequiresGrad = true;
        using var txt = T(p.Txt, [3, 5], DType.F64); txt.RequiresGrad = true;
        using var temp = T([p.Temp], [1], DType.F64); temp.RequiresGrad = true;
        using var ik = T(p.ImgK, [3, 5], DType.F64);
        using var tk = T(p.TxtK, [3, 5], DType.F64);
        using var iq = T(p.ImgQueue, [4, 5], DType.F64);
        using var tq = T(p.TxtQueue, [4, 5], DType.F64);
        var rep = GradCheck.Check(x => HeadOps.ItcLoss(x[0], x[1], iq, tq, x[2], clampTemp: false, imgKeys: ik, txtKeys: tk),
            [img, txt, temp], names: ["img", "txt", "temp"]);
        Assert.IsTrue(rep.Ok, rep.Text);
    }

    [TestMethod]
    public void Itc_Autograd_DefaultKeysAreTheDetachedFeatures()
    {
        var p = MakeItc(5, 4, 8, 6);
        using var img = T(p.Img, [4, 8], DType.F64); img.RequiresGrad = true;
        using var txt = T(p.Txt, [4, 8], DType.F64); txt.RequiresGrad = true;
        using var temp = T([p.Temp], [1], DType.F64); temp.RequiresGrad = true;
        using var iq = T(p.ImgQueue, [6, 8], DType.F64);
        using var tq = T(p.TxtQueue, [6, 8], DType.F64);
        using var loss = HeadOps.ItcLoss(img, txt, iq, tq, temp);
        // Upstream gradient 3: the saved unit gradients are scaled.
        using var seed = T([3.0], [1], DType.F64);
        loss.Backward(seed);
        var (gi, gt, gtemp) = ItcGrads(p);
        Assert.AreEqual(ItcLoss(p), loss.ToDoubleArray()[0], 1e-12);
        Check.Close(gi.Select(x => 3 * x).ToArray(), img.Grad!.ToDoubleArray(), 3e-6, 1e-5, "img.grad");
        Check.Close(gt.Select(x => 3 * x).ToArray(), txt.Grad!.ToDoubleArray(), 3e-6, 1e-5, "txt.grad");
        Assert.AreEqual(3 * gtemp, temp.Grad!.ToDoubleArray()[0], 3e-5 * Math.Max(1, Math.Abs(gtemp)), "temp.grad");
    }

    [TestMethod]
    [DataRow(5.0, 1.0)]
    [DataRow(1e-5, 0.001)]
    [DataRow(-2.0, 0.001)]
    [DataRow(0.07, 0.07)]
    public void Itc_TemperatureIsClampedInPlaceBeforeTheStep(double start, double clamped)
    {
        var p = MakeItc(9, 3, 6, 4);
        using var img = T(p.Img, [3, 6], DType.F64); img.RequiresGrad = true;
        using var txt = T(p.Txt, [3, 6], DType.F64);
        using var temp = T([start], [1], DType.F64); temp.RequiresGrad = true;
        using var iq = T(p.ImgQueue, [4, 6], DType.F64);
        using var tq = T(p.TxtQueue, [4, 6], DType.F64);
        using var loss = HeadOps.ItcLoss(img, txt, iq, tq, temp);
        Assert.AreEqual(clamped, temp.ToDoubleArray()[0], 0, "the parameter itself is clamped (torch clamp_ under no_grad)");
        var atClamp = p with { Temp = clamped };
        Assert.AreEqual(ItcLoss(atClamp), loss.ToDoubleArray()[0], 1e-9 * Math.Max(1, Math.Abs(loss.ToDoubleArray()[0])));
        loss.Backward();
        // The clamp is outside the graph: the temperature gets the plain ∂loss/∂τ at the clamped value, not 0.
        double g = ItcGrads(atClamp).GTemp;
        Assert.AreEqual(g, temp.Grad!.ToDoubleArray()[0], 1e-5 * Math.Max(1, Math.Abs(g)));
        Assert.AreNotEqual(0.0, g);
        Assert.IsNull(txt.Grad, "txt did not require grad");
    }

    [TestMethod]
    public void ClampInPlace_KeepsNaNAndClampsEveryElement()
    {
        foreach (var dt in new[] { DType.F32, DType.F64, DType.BF16 })
        {
            using var t = T([double.NaN, -1, 0.5, 3, 0.001], [5], dt);
            Cpu.Heads().ClampInPlace(t, 0.001, 1);
            var v = t.ToDoubleArray();
            Assert.IsTrue(double.IsNaN(v[0]), dt.Name());
            Assert.AreEqual((double)(float)0.001, v[1], dt == DType.BF16 ? 1e-5 : 1e-9);
            Assert.AreEqual(0.5, v[2]); Assert.AreEqual(1.0, v[3]);
        }
    }

    [TestMethod]
    public void Queue_WrapsAroundLikeTheOfficialRingBuffer()
    {
        const int Q = 5, D = 3;
        var model = new double[Q * D]; // the official [D,Q] buffer, kept here as rows
        using var queue = T(model, [Q, D], DType.F32);
        using var queue2 = T(model, [Q, D], DType.F32);
        using var queues = new ItcQueues(queue, queue2);
        int ptr = 0; long total = 0; int step = 0;
        foreach (int b in new[] { 2, 2, 3, 5, 1, 4 })
        {
            var feats = Enumerable.Range(0, b * D).Select(i => (double)(100 * ++step + i)).ToArray();
            using var ft = T(feats, [b, D], DType.F32);
            queues.Enqueue(ft, ft);
            for (int i = 0; i < b; i++)
                for (int k = 0; k < D; k++) model[((ptr + i) % Q) * D + k] = feats[i * D + k];
            ptr = (ptr + b) % Q; total += b;
            Assert.AreEqual(ptr, queues.Ptr, $"pointer after {step} enqueues");
            Assert.AreEqual(total, queues.Total);
            CollectionAssert.AreEqual(model, queue.ToDoubleArray(), $"image queue after batch of {b}");
            CollectionAssert.AreEqual(model, queue2.ToDoubleArray(), $"text queue after batch of {b}");
        }
        using var tooMany = T(new double[6 * D], [6, D], DType.F32);
        Assert.ThrowsExactly<ArgumentException>(() => Cpu.Heads().QueueEnqueue(queue, tooMany, 0));
    }

    // ------------------------------------------------------------------ MLM

    [TestMethod]
    [DataRow(5, 6, 37, 16, true)]
    [DataRow(5, 6, 37, 1, false)]
    [DataRow(7, 3, 50, 7, true)]
    [DataRow(4, 8, 20, 8192, true)]
    [DataRow(1, 2, 3, 2, true)]
    public void Mlm_F64_MatchesMaterialisedLogits(int n, int h, int v, int tile, bool bias)
    {
        var p = MakeMlm(n * 7 + v, n, h, v, bias);
        var (row, lse, _) = MlmLoss(p);
        foreach (var lt in new[] { DType.I32, DType.I64 })
        {
            var got = RunMlm(Cpu, p, DType.F64, lt, tile);
            Check.Close(row, got.Loss, 1e-12, 1e-12, $"loss {lt.Name()}");
            Check.Close(lse, got.Lse, 1e-12, 1e-12, $"lse {lt.Name()}");
        }
    }

    [TestMethod]
    public void Mlm_F64_GradientsMatchFiniteDifferencesOfTheReference()
    {
        var p = MakeMlm(3, 5, 4, 23);
        var dloss = new[] { 0.7, -1.3, 2.0, 0.4, 1.1 }; // per-row upstream (row 2 is ignored: gets nothing)
        var got = RunMlm(Cpu, p, DType.F64, DType.I64, 8, dloss);
        var hid = (double[])p.Hidden.Clone(); var w = (double[])p.Weight.Clone(); var b = (double[])p.Bias!.Clone();
        double F()
        {
            var r = MlmLoss(p.N, p.H, p.V, hid, w, b, p.Labels).RowLoss;
            double s = 0; for (int i = 0; i < r.Length; i++) s += dloss[i] * r[i];
            return s;
        }
        Check.Close(NumericGrad(hid, F), got.DH!, 1e-6, 1e-5, "dHidden");
        Check.Close(NumericGrad(w, F), got.DW!, 1e-6, 1e-5, "dWeight");
        Check.Close(NumericGrad(b, F), got.DB!, 1e-6, 1e-5, "dBias");
    }

    [TestMethod]
    public void Mlm_Autograd_GradCheck()
    {
        var p = MakeMlm(17, 6, 4, 19);
        using var h = T(p.Hidden, [6, 4], DType.F64); h.RequiresGrad = true;
        using var w = T(p.Weight, [19, 4], DType.F64); w.RequiresGrad = true;
        using var b = T(p.Bias!, [19], DType.F64); b.RequiresGrad = true;
        using var lab = Cpu.FromInts(p.Labels, [6], DType.I32);
        var ops = Cpu.Heads(); int saved = ops.MlmTileColumns; ops.MlmTileColumns = 5;
        try
        {
            var rep = GradCheck.Check(x => HeadOps.MlmLoss(x[0], x[1], x[2], lab), [h, w, b], names: ["hidden", "weight", "bias"]);
            Assert.IsTrue(rep.Ok, rep.Text);
            using var y = HeadOps.MlmLoss(h, w, b, lab);
            Assert.AreEqual(MlmLoss(p).Mean, y.ToDoubleArray()[0], 1e-12);
        }
        finally { ops.MlmTileColumns = saved; }
    }

    [TestMethod]
    public void Mlm_TileSizeDoesNotChangeTheResult()
    {
        var p = MakeMlm(5, 6, 5, 41);
        var dloss = Enumerable.Range(0, 6).Select(i => 0.5 + i * 0.25).ToArray();
        var a = RunMlm(Cpu, p, DType.F64, DType.I32, 41, dloss);
        foreach (int tile in new[] { 1, 4, 13, 40, 100 })
        {
            var b = RunMlm(Cpu, p, DType.F64, DType.I32, tile, dloss);
            Check.Close(a.Loss, b.Loss, 1e-13, 1e-12, $"loss tile {tile}");
            Check.Close(a.DH!, b.DH!, 1e-13, 1e-12, $"dH tile {tile}");
            Check.Close(a.DW!, b.DW!, 1e-13, 1e-12, $"dW tile {tile}");
            Check.Close(a.DB!, b.DB!, 1e-13, 1e-12, $"dB tile {tile}");
        }
    }

    [TestMethod]
    public void Mlm_IgnoredRowsGetNothingAndAllIgnoredGivesZero()
    {
        var p = MakeMlm(8, 4, 3, 11, ignoreEvery: 1); // every label −100
        var got = RunMlm(Cpu, p, DType.F64, DType.I32, 4, [1.0, 1.0, 1.0, 1.0]);
        CollectionAssert.AreEqual(new double[4], got.Loss);
        Assert.IsTrue(got.DH!.All(x => x == 0) && got.DW!.All(x => x == 0) && got.DB!.All(x => x == 0));
        using var h = T(p.Hidden, [4, 3], DType.F64); h.RequiresGrad = true;
        using var w = T(p.Weight, [11, 3], DType.F64); w.RequiresGrad = true;
        using var lab = Cpu.FromInts(p.Labels, [4]);
        using var y = HeadOps.MlmLoss(h, w, null, lab);
        Assert.AreEqual(0.0, y.ToDoubleArray()[0]);
        y.Backward();
        Assert.IsTrue(h.Grad is null || h.Grad.ToDoubleArray().All(x => x == 0));
    }

    [TestMethod]
    public void Mlm_LabelOutOfRangeThrowsOnTheCpu()
    {
        var p = MakeMlm(1, 2, 3, 5, ignoreEvery: 0) with { Labels = [1, 5] };
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => RunMlm(Cpu, p, DType.F64, DType.I32, 4));
    }

    [TestMethod]
    public void Mlm_F32AndBf16_CloseToF64()
    {
        var p = MakeMlm(12, 9, 16, 45);
        var dloss = Enumerable.Range(0, 9).Select(i => 1.0 / 6).ToArray();
        var r = RunMlm(Cpu, p, DType.F64, DType.I32, 16, dloss);
        var f = RunMlm(Cpu, p, DType.F32, DType.I32, 16, dloss);
        Check.Close(r.Loss, f.Loss, 1e-5, 1e-5, "f32 loss");
        Check.Close(r.DH!, f.DH!, 1e-6, 1e-4, "f32 dH");
        Check.Close(r.DW!, f.DW!, 1e-6, 1e-4, "f32 dW");
        Check.Close(r.DB!, f.DB!, 1e-6, 1e-4, "f32 dB");
        var bf = RunMlm(Cpu, p, DType.BF16, DType.I32, 16, dloss, biasType: DType.F32);
        Check.Close(r.Loss, bf.Loss, 1e-3, 1e-3, "bf16 loss");
        Check.Close(r.DH!, bf.DH!, 2e-3, 2e-2, "bf16 dH");
        Check.Close(r.DW!, bf.DW!, 2e-3, 2e-2, "bf16 dW");
        Check.Close(r.DB!, bf.DB!, 1e-4, 1e-3, "bf16 dB (f32 bias)");
    }

    [TestMethod]
    public void Mlm_GatheredMaskedPositionsEqualCrossEntropyOverAllPositions()
    {
        // The official code scores every text position and ignores the unmasked ones; gathering the
        // masked rows first must give the same loss and the same gradient on the text features.
        const int B = 2, L = 5, H = 4, V = 13;
        var r = new Random(4);
        var feats = Grid(RandN(r, B * L * H));
        var w = Grid(RandN(r, V * H, 0.5));
        var bias = Grid(RandN(r, V, 0.5));
        int[] labels = [-100, 3, -100, -100, 12, 0, -100, -100, 7, -100];
        var (pos, lab) = HeadOps.MaskedPositions(labels);
        CollectionAssert.AreEqual(new[] { 1, 4, 5, 8 }, pos);

        using var x1 = T(feats, [B, L, H], DType.F64); x1.RequiresGrad = true;
        using var w1 = T(w, [V, H], DType.F64); w1.RequiresGrad = true;
        using var b1 = T(bias, [V], DType.F64); b1.RequiresGrad = true;
        using var idx = Cpu.FromInts(pos, [pos.Length]);
        using var labT = Cpu.FromInts(lab, [lab.Length], DType.I64);
        using var gathered = HeadOps.GatherRows(x1, idx);
        using var loss1 = HeadOps.MlmLoss(gathered, w1, b1, labT);
        loss1.Backward();

        using var x2 = T(feats, [B, L, H], DType.F64); x2.RequiresGrad = true;
        using var w2 = T(w, [V, H], DType.F64); w2.RequiresGrad = true;
        using var b2 = T(bias, [V], DType.F64); b2.RequiresGrad = true;
        using var allLab = Cpu.FromInts(labels, [B, L]);
        using var logits = F.Linear(x2, w2, b2);
        using var loss2 = F.CrossEntropy(logits, allLab);
        loss2.Backward();

        Assert.AreEqual(loss2.ToDoubleArray()[0], loss1.ToDoubleArray()[0], 1e-12);
        Check.Close(x2.Grad!.ToDoubleArray(), x1.Grad!.ToDoubleArray(), 1e-12, 1e-10, "text feats grad");
        Check.Close(w2.Grad!.ToDoubleArray(), w1.Grad!.ToDoubleArray(), 1e-12, 1e-10, "decoder grad");
        Check.Close(b2.Grad!.ToDoubleArray(), b1.Grad!.ToDoubleArray(), 1e-12, 1e-10, "bias grad");
    }
}
