using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Data;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;
using FiberCuda.Training;

namespace FiberCuda.Tests.Training;

/// <summary>Shared fixtures: the tiny coarse config with a queue of 6 (wraps after 1.5 batches of 4) and synthetic batches.</summary>
static class ObjectiveFixture
{
    public static FiberConfig Config => FiberConfig.Tiny() with { QueueSize = 6 };

    static readonly Lazy<Batch[]> Batches = new(() =>
    {
        var c = Config;
        var loader = CaptionDatasets.OpenLoader("synthetic:8:3:64", new LoaderOptions
        {
            BatchSize = 4, ImageSize = c.ImageSize, MaxTextLength = c.MaxTextLen, Workers = 1, Seed = 2, Shuffle = false, MlmProbability = 0.4,
        });
        return loader.Epoch(0).Take(2).Select(b => ToTinyVocab(b, c.VocabSize)).ToArray();
    });

    /// <summary>Two batches of 4 synthetic pairs with token ids folded into the tiny vocabulary.</summary>
    public static Batch Batch(int k) => Batches.Value[k];

    /// <summary>Keeps the special ids (0..3: &lt;s&gt;, pad, &lt;/s&gt;, unk) and folds the rest into [4, vocab).</summary>
    static Batch ToTinyVocab(Batch src, int vocab)
    {
        long Map(long id) => id < 4 ? id : 4 + id % (vocab - 4);
        var b = new Batch(src.Size, src.ImageSize, src.TextLength, mlm: true) { Index = src.Index, Epoch = src.Epoch };
        src.PixelValues.CopyTo(b.PixelValues, 0);
        src.AttentionMask.CopyTo(b.AttentionMask, 0);
        for (int i = 0; i < src.InputIds.Length; i++)
        {
            b.InputIds[i] = Map(src.InputIds[i]);
            b.MlmInputIds![i] = Map(src.MlmInputIds![i]);
            b.MlmLabels![i] = src.MlmLabels![i] < 0 ? src.MlmLabels[i] : Map(src.MlmLabels[i]);
        }
        return b;
    }

    public static (FiberCoarseModel Model, CoarseHeads Heads) Fresh(NnContext ctx, int seed = 1, double std = 0.02)
    {
        var c = Config;
        var m = new FiberCoarseModel(ctx, c, textDropout: 0f, dropPathRate: 0f);
        var h = new CoarseHeads(ctx, c);
        FiberInit.Apply(m, c, seed, std);
        FiberInit.Apply(h, c, seed + 1, std);
        h.TieRankOutput();
        return (m, h);
    }

    public static Dictionary<string, Tensor> Params(FiberCoarseModel m, CoarseHeads h) =>
        m.NamedParameters().Concat(h.NamedParameters()).ToDictionary(p => p.Name, p => p.Tensor);
}

[TestClass]
public sealed class CoarseObjectivesTests
{
    static Batch B0 => ObjectiveFixture.Batch(0);
    static Batch B1 => ObjectiveFixture.Batch(1);

    static bool AnyNonZero(Tensor t) => t.Grad is not null && t.Grad.ToDoubleArray().Any(v => v != 0 && double.IsFinite(v));

    [TestMethod]
    public void BatchFixtureIsUsable()
    {
        var c = ObjectiveFixture.Config;
        for (int k = 0; k < 2; k++)
        {
            var b = ObjectiveFixture.Batch(k);
            Assert.AreEqual(4, b.Size);
            Assert.IsTrue(b.InputIds.All(v => v >= 0 && v < c.VocabSize) && b.MlmInputIds!.All(v => v >= 0 && v < c.VocabSize));
            Assert.IsTrue(b.MlmLabels!.Count(v => v >= 0) > 0, "some masked positions");
        }
        CollectionAssert.AreNotEqual(B0.PixelValues, B1.PixelValues);
    }

    [TestMethod]
    public void ForwardLossesBackwardAndQueues()
    {
        var c = ObjectiveFixture.Config;
        var (m, h) = ObjectiveFixture.Fresh(NnContext.Cpu());
        using var obj = new CoarseObjectives(m, h, seed: 7);
        var q = obj.Queues!;
        var qImg0 = q.Image.ToFloatArray(); var qTxt0 = q.Text.ToFloatArray();

        var l = obj.Forward(B0, stream: 0);
        Assert.IsTrue(l.Finite, $"{l}");
        Assert.AreEqual(B0.MlmLabels!.Count(v => v != -100), l.MaskedTokens);
        Assert.AreEqual(l.Mlm + l.Itc + l.Itm, l.Total.ToDoubleArray()[0], 1e-5 * l.TotalValue, "Total = MLM + ITC + ITM");
        // Fresh heads (weights 0.02) give near-uniform predictions: MLM ≈ ln V, ITM ≈ ln 2.
        Assert.AreEqual(Math.Log(c.VocabSize), l.Mlm, 0.25, "MLM");
        Assert.AreEqual(Math.Log(2), l.Itm, 0.1, "ITM");
        Assert.IsTrue(l.Itc > 0, "ITC");
        Assert.AreEqual(0.07, l.Temperature, 1e-6);

        // Forward leaves the queues alone.
        Assert.AreEqual(0, q.Ptr); Assert.AreEqual(0L, q.Total);
        CollectionAssert.AreEqual(qImg0, q.Image.ToFloatArray());
        CollectionAssert.AreEqual(qTxt0, q.Text.ToFloatArray());
        Assert.IsTrue(obj.Inputs!.Pixels.All(v => v == 0) && obj.Inputs.Ids.All(v => v == 0));

        l.Total.Backward();
        var p = ObjectiveFixture.Params(m, h);
        foreach (var n in new[] { "temp", "itm_score.fc.weight", "itm_score.fc.bias", "mlm_score.decoder.weight", "mlm_score.bias",
                                  "mlm_score.transform.dense.weight", "cross_modal_image_transform_itc.weight", "cross_modal_text_pooler_itc.dense.weight",
                                  "cross_modal_text_transform.weight", "cross_modal_image_pooler.dense.weight", "vit_model.patch_embed.proj.weight",
                                  "text_transformer.embeddings.word_embeddings.weight" })
            Assert.IsTrue(AnyNonZero(p[n]), $"{n} got no gradient");
        Assert.IsFalse(AnyNonZero(p["rank_output.weight"]), "rank_output is not trained");

        // Enqueue: pointer and count advance by B, the slots hold the batch's features and raw (unmasked) inputs.
        obj.Enqueue(B0, l);
        Assert.AreEqual(4, q.Ptr); Assert.AreEqual(4L, q.Total);
        int d = c.CrossHidden;
        var img = q.Image.ToFloatArray(); var txt = q.Text.ToFloatArray();
        var fImg = l.ImageFeatures!.ToFloatArray(); var fTxt = l.TextFeatures!.ToFloatArray();
        CollectionAssert.AreEqual(fImg, img[..(4 * d)]);
        CollectionAssert.AreEqual(fTxt, txt[..(4 * d)]);
        CollectionAssert.AreEqual(qImg0[(4 * d)..], img[(4 * d)..], "unfilled slots keep their values");
        for (int i = 0; i < 4; i++) AssertSlot(obj.Inputs, i, B0, i);

        // A second step draws negatives from the filled slots too; its enqueue wraps: 4 + 4 over 6 slots.
        m.ZeroGrad(); h.ZeroGrad();
        var l2 = obj.Forward(B1, stream: 1);
        Assert.IsTrue(l2.Finite, $"{l2}");
        Assert.AreEqual(4, q.Ptr);
        obj.Enqueue(B1, l2);
        Assert.AreEqual(2, q.Ptr); Assert.AreEqual(8L, q.Total);
        AssertSlot(obj.Inputs, 4, B1, 0); AssertSlot(obj.Inputs, 5, B1, 1);
        AssertSlot(obj.Inputs, 0, B1, 2); AssertSlot(obj.Inputs, 1, B1, 3);
        AssertSlot(obj.Inputs, 2, B0, 2); AssertSlot(obj.Inputs, 3, B0, 3);
        var img2 = q.Image.ToFloatArray(); var f2 = l2.ImageFeatures!.ToFloatArray();
        CollectionAssert.AreEqual(f2[(2 * d)..], img2[..(2 * d)], "wrapped rows 2, 3 → slots 0, 1");
        CollectionAssert.AreEqual(f2[..(2 * d)], img2[(4 * d)..], "rows 0, 1 → slots 4, 5");
    }

    /// <summary>
    /// A batch the queues cannot take (more rows than slots; another text length than the input queue's) is refused
    /// before anything moves: features and raw inputs must stay slot-aligned, or a later hard negative pairs the
    /// features of one sample with the pixels of another.
    /// </summary>
    [TestMethod]
    public void EnqueueRefusesWhatDoesNotFitAndChangesNothing()
    {
        var c = ObjectiveFixture.Config with { QueueSize = 3 };
        var ctx = NnContext.Cpu();
        var m = new FiberCoarseModel(ctx, c, 0, 0);
        var h = new CoarseHeads(ctx, c);
        FiberInit.Apply(m, c, 1); FiberInit.Apply(h, c, 2);
        using var obj = new CoarseObjectives(m, h, new CoarseObjectiveOptions { Mlm = false, Itm = false }, seed: 1);
        using var _ = Grad.NoGrad();
        var q = obj.Queues!;

        // Shorter text rows than the model's MaxTextLen (the forward allows them; the input queue does not).
        var b = B0;
        var shortText = new Batch(3, b.ImageSize, b.TextLength - 2, mlm: false);
        b.PixelValues.AsSpan(0, shortText.PixelValues.Length).CopyTo(shortText.PixelValues);
        for (int r = 0; r < 3; r++) { b.Ids(r)[..shortText.TextLength].CopyTo(shortText.Ids(r)); b.Mask(r)[..shortText.TextLength].CopyTo(shortText.Mask(r)); }
        foreach (var bad in new[] { B0 /* 4 rows > 3 slots */, shortText })
        {
            var img0 = q.Image.ToFloatArray();
            var l = obj.Forward(bad, 0);
            Assert.ThrowsExactly<ArgumentException>(() => obj.Enqueue(bad, l), $"{bad.Size}×{bad.TextLength}");
            Assert.AreEqual(0, q.Ptr); Assert.AreEqual(0L, q.Total);
            CollectionAssert.AreEqual(img0, q.Image.ToFloatArray());
            Assert.IsTrue(obj.Inputs!.Ids.All(v => v == 0));
        }
    }

    // ------------------------------------------------------------------ ITC / ITM against host references (f64)

    static double Dot(double[] a, int i, double[] b, int j, int d)
    {
        double s = 0;
        for (int k = 0; k < d; k++) s += a[i * d + k] * b[j * d + k];
        return s;
    }

    /// <summary>Mean over rows of −log softmax(row)[target].</summary>
    static double MeanCe(double[][] rows, int[] target)
    {
        double sum = 0;
        for (int r = 0; r < rows.Length; r++)
        {
            double max = rows[r].Max(), lse = max + Math.Log(rows[r].Sum(v => Math.Exp(v - max)));
            sum += lse - rows[r][target[r]];
        }
        return sum / rows.Length;
    }

    /// <summary>
    /// The losses rebuilt from the unfused features, the queue contents and the fused model with the hard-negative
    /// pairs assembled by hand (queue slot j = row j of the batch enqueued before): official ITC over
    /// [batch ‖ whole queue] (random slots included), in-batch ITC, and ITM on [(i,i) (i,t⁻ᵢ) (v⁻ᵢ,i)] with the negatives
    /// drawn by <see cref="ItmNegatives.Sample"/> from softmax(sim / τ) over the batch and the filled slots.
    /// </summary>
    [TestMethod]
    public void ItcAndItmMatchHostReferences()
    {
        var c = ObjectiveFixture.Config;
        int bsz = 4, d = c.CrossHidden, len = c.MaxTextLen, ppi = 3 * c.ImageSize * c.ImageSize;
        var ctx = new NnContext(Backend.Cpu, DType.F64);
        var (m, h) = ObjectiveFixture.Fresh(ctx, seed: 5, std: 0.3);
        using var obj = new CoarseObjectives(m, h, new CoarseObjectiveOptions { Mlm = false }, seed: 9);
        using var inBatch = new CoarseObjectives(m, h, new CoarseObjectiveOptions { Mlm = false, Itm = false, ItcVariant = ItcVariant.InBatch }, seed: 9);
        using var _ = Grad.NoGrad();
        obj.Enqueue(B1, obj.Forward(B1, 0));
        var q = obj.Queues!;
        int filled = 4, cols = bsz + filled, qn = q.Size;

        var b = B0;
        var text = ModelInputs.Text(b.InputIds, b.AttentionMask, bsz, len);
        var img = m.ImageOnly(ModelInputs.Pixels(ctx, b.PixelValues, b.PixelShape)).ToDoubleArray();
        var txt = m.TextOnly(text).ToDoubleArray();
        var qI = q.Image.ToDoubleArray(); var qT = q.Text.ToDoubleArray();
        double tau = h.Temp!.ToDoubleArray()[0];
        var diag = Enumerable.Range(0, bsz).ToArray();

        // Official ITC: keys = [batch ‖ all Q slots].
        double[][] I2T(int n) => Enumerable.Range(0, bsz).Select(i => Enumerable.Range(0, bsz + n)
            .Select(j => (j < bsz ? Dot(img, i, txt, j, d) : Dot(img, i, qT, j - bsz, d)) / tau).ToArray()).ToArray();
        double[][] T2I(int n) => Enumerable.Range(0, bsz).Select(i => Enumerable.Range(0, bsz + n)
            .Select(j => (j < bsz ? Dot(txt, i, img, j, d) : Dot(txt, i, qI, j - bsz, d)) / tau).ToArray()).ToArray();
        double itcWant = 0.5 * (MeanCe(I2T(qn), diag) + MeanCe(T2I(qn), diag));
        double inBatchWant = 0.5 * (MeanCe(I2T(0), diag) + MeanCe(T2I(0), diag));

        // Streams whose draws include a queue slot make the check cover the raw-input queue.
        int streamsWithQueueNegatives = 0;
        for (ulong stream = 0; stream < 3; stream++)
        {
            var l = obj.Forward(b, stream);
            Assert.AreEqual(itcWant, l.Itc, 1e-9 * itcWant, "official ITC");

            var negText = ItmNegatives.Sample(I2T(filled).SelectMany(r => r).ToArray(), bsz, cols, cols, obj.Seed, DataRng.Hash(stream, 1));
            var negImage = ItmNegatives.Sample(T2I(filled).SelectMany(r => r).ToArray(), bsz, cols, cols, obj.Seed, DataRng.Hash(stream, 2));
            if (negText.Concat(negImage).Any(k => k >= bsz)) streamsWithQueueNegatives++;
            // Candidate k: batch row k, or the row k − B of the batch enqueued before (slots 0..3 ← B1 rows 0..3).
            float[] Pix(int k) => (k < bsz ? b.Pixels(k) : B1.Pixels(k - bsz)).ToArray();
            long[] Ids(int k) => (k < bsz ? b.Ids(k) : B1.Ids(k - bsz)).ToArray();
            long[] Msk(int k) => (k < bsz ? b.Mask(k) : B1.Mask(k - bsz)).ToArray();
            var imgRows = diag.Concat(diag).Concat(negImage).ToArray();
            var txtRows = diag.Concat(negText).Concat(diag).ToArray();
            var pix = imgRows.SelectMany(Pix).ToArray();
            var ids = txtRows.SelectMany(Ids).ToArray();
            var mask = txtRows.SelectMany(Msk).ToArray();
            var fused = m.Forward(ModelInputs.Pixels(ctx, pix, [3 * bsz, 3, c.ImageSize, c.ImageSize]), ModelInputs.Text(ids, mask, 3 * bsz, len));
            var logits = h.Itm!.Forward(fused.ClsFeats).ToDoubleArray();
            var rows = Enumerable.Range(0, 3 * bsz).Select(r => new[] { logits[2 * r], logits[2 * r + 1] }).ToArray();
            double itmWant = MeanCe(rows, Enumerable.Range(0, 3 * bsz).Select(r => r < bsz ? 1 : 0).ToArray());
            // F.CrossEntropy takes its mean with a float 1/count (IBackend.Scale's factor is a float): ~3e-8 relative even in f64.
            Assert.AreEqual(itmWant, l.Itm, 1e-7 * itmWant, $"ITM, stream {stream}: text⁻ {string.Join(",", negText)}, image⁻ {string.Join(",", negImage)}");
        }
        Assert.IsTrue(streamsWithQueueNegatives > 0, "no stream drew a queue negative");
        // The in-batch variant scales by a float 1/τ (F.Scale's factor), so ~1e-8 relative in f64.
        Assert.AreEqual(inBatchWant, inBatch.Forward(b, 0).Itc, 1e-7 * inBatchWant, "in-batch ITC");
        Assert.AreNotEqual(itcWant, inBatchWant, 1e-6, "the two variants differ");
    }

    static void AssertSlot(ItmInputQueue q, int slot, Batch b, int row)
    {
        CollectionAssert.AreEqual(b.Pixels(row).ToArray(), q.PixelsOf(slot).ToArray(), $"slot {slot} pixels");
        CollectionAssert.AreEqual(b.Ids(row).ToArray(), q.IdsOf(slot).ToArray(), $"slot {slot} ids (unmasked)");
        CollectionAssert.AreEqual(b.Mask(row).ToArray(), q.MaskOf(slot).ToArray(), $"slot {slot} mask");
    }

    [TestMethod]
    public void ForwardIsDeterministicAndStreamChoosesNegatives()
    {
        var (m, h) = ObjectiveFixture.Fresh(NnContext.Cpu(), seed: 2, std: 0.3);
        using var obj = new CoarseObjectives(m, h, new CoarseObjectiveOptions { Mlm = false, Itc = false }, seed: 5);
        using var _ = Grad.NoGrad();
        double a = obj.Forward(B0, 3).Itm, b = obj.Forward(B0, 3).Itm;
        Assert.AreEqual(a, b, "same stream, same loss");
        var others = Enumerable.Range(10, 6).Select(s => obj.Forward(B0, (ulong)s).Itm).ToList();
        Assert.IsTrue(others.Any(v => v != a), "other streams draw other negatives");
    }

    /// <summary>Queues start as seeded randn (official) or its rows L2-normalised (NormalizedQueueInit).</summary>
    [TestMethod]
    public void QueueInitialisation()
    {
        var c = FiberConfig.Tiny() with { QueueSize = 64 };
        var ctx = NnContext.Cpu();
        var m = new FiberCoarseModel(ctx, c, 0, 0);
        var h = new CoarseHeads(ctx, c);
        float[] Img(ulong seed, bool norm)
        {
            using var o = new CoarseObjectives(m, h, new CoarseObjectiveOptions { NormalizedQueueInit = norm }, seed);
            var txt = o.Queues!.Text.ToFloatArray();
            var img = o.Queues.Image.ToFloatArray();
            CollectionAssert.AreNotEqual(img, txt, "image and text queues are drawn apart");
            Assert.AreEqual(0, o.Queues.Ptr); Assert.AreEqual(0L, o.Queues.Total);
            return img;
        }
        var a = Img(1, false);
        CollectionAssert.AreEqual(a, Img(1, false), "seeded");
        CollectionAssert.AreNotEqual(a, Img(2, false));
        double mean = a.Average(v => (double)v), var = a.Average(v => (double)v * v) - mean * mean;
        Assert.AreEqual(0, mean, 0.1, "randn mean"); Assert.AreEqual(1, var, 0.15, "randn variance");
        var n = Img(1, true);
        int d = c.CrossHidden;
        for (int r = 0; r < c.QueueSize; r++)
        {
            double norm2 = 0, dot = 0, aa = 0;
            for (int k = 0; k < d; k++) { norm2 += n[r * d + k] * (double)n[r * d + k]; dot += n[r * d + k] * (double)a[r * d + k]; aa += a[r * d + k] * (double)a[r * d + k]; }
            Assert.AreEqual(1, norm2, 1e-5, $"row {r} unit norm");
            Assert.AreEqual(1, dot / Math.Sqrt(aa), 1e-5, $"row {r} is the randn row normalised");
        }
    }

    [TestMethod]
    public void OptionsNeedTheirHeads()
    {
        var c = ObjectiveFixture.Config with { Heads = ["mlm"] };
        var ctx = NnContext.Cpu();
        var m = new FiberCoarseModel(ctx, c, 0, 0);
        var h = new CoarseHeads(ctx, c);
        Assert.ThrowsExactly<ArgumentException>(() => new CoarseObjectives(m, h));
        using var mlmOnly = new CoarseObjectives(m, h, new CoarseObjectiveOptions { Itc = false, Itm = false });
        Assert.IsNull(mlmOnly.Queues);
        var noMlm = new Batch(B0.Size, B0.ImageSize, B0.TextLength, mlm: false);
        Assert.ThrowsExactly<ArgumentException>(() => mlmOnly.Forward(noMlm, 0));
    }

    // ------------------------------------------------------------------ gradient checks (f64)

    static GradCheck.Report CheckObjective(CoarseObjectiveOptions o, Func<FiberCoarseModel, CoarseHeads, (string, Tensor)[]> pick, Func<CoarseLosses, double>? part = null)
    {
        var ctx = new NnContext(Backend.Cpu, DType.F64);
        // Wider init than 0.02 so the fresh towers' features differ (not collapsed) and every gradient is sizeable.
        var (m, h) = ObjectiveFixture.Fresh(ctx, seed: 3, std: 0.3);
        using var obj = new CoarseObjectives(m, h, o, seed: 9);
        // Two ITM negatives from the queue as well as from the batch.
        using (Grad.NoGrad()) obj.Enqueue(B1, obj.Forward(B1, 0));
        var ps = pick(m, h);
        var rep = GradCheck.Check(_ => obj.Forward(B0, stream: 4).Total, ps.Select(p => p.Item2).ToArray(), h: 1e-6, atol: 1e-8, rtol: 1e-5,
            names: ps.Select(p => p.Item1).ToArray());
        // A check of all-zero gradients proves nothing: every checked input must matter.
        foreach (var (n, t) in ps)
            Assert.IsTrue(t.Grad is not null && t.Grad.ToDoubleArray().Max(Math.Abs) > 1e-5, $"{n}: gradient {t.Grad?.ToDoubleArray().Max(Math.Abs)}");
        return rep;
    }

    [TestMethod]
    public void InBatchItcGradCheck()
    {
        var rep = CheckObjective(new CoarseObjectiveOptions { Mlm = false, Itm = false, ItcVariant = ItcVariant.InBatch },
            (m, _) => [("text_pooler_itc.bias", m.TextPoolerItc.Dense.Bias!), ("image_transform_itc.bias", m.ImageTransformItc.Bias!)]);
        Assert.IsTrue(rep.Ok, rep.Text);
    }

    /// <summary>
    /// The official ITC detaches the in-batch keys, so only the temperature's gradient is the full derivative of the
    /// loss (the towers' is not, by design).
    /// </summary>
    [TestMethod]
    public void OfficialItcTemperatureGradCheck()
    {
        var rep = CheckObjective(new CoarseObjectiveOptions { Mlm = false, Itm = false }, (_, h) => [("temp", h.Temp!)]);
        Assert.IsTrue(rep.Ok, rep.Text);
        Assert.IsTrue(Math.Abs(rep.WorstElement!.Numeric) > 1e-3, $"temperature gradient {rep.WorstElement.Numeric}");
    }

    /// <summary>Guards the harness: the official ITC's tower gradient (keys detached) is not the loss's full derivative.</summary>
    [TestMethod]
    public void OfficialItcTowerGradientIsNotTheFullDerivative()
    {
        var rep = CheckObjective(new CoarseObjectiveOptions { Mlm = false, Itm = false }, (m, _) => [("text_pooler_itc.bias", m.TextPoolerItc.Dense.Bias!)]);
        Assert.IsFalse(rep.Ok, rep.Text);
    }

    [TestMethod]
    public void MlmGradCheck()
    {
        var rep = CheckObjective(new CoarseObjectiveOptions { Itc = false, Itm = false },
            (m, h) => [("mlm.dense.bias", h.Mlm!.Transform.Dense.Bias!), ("text_transform.bias", m.TextTransform.Bias!)]);
        Assert.IsTrue(rep.Ok, rep.Text);
    }

    /// <summary>The hard negatives depend only on the ITC features, not on the fused path or the ITM head: pure in those.</summary>
    [TestMethod]
    public void ItmGradCheck()
    {
        var rep = CheckObjective(new CoarseObjectiveOptions { Mlm = false, Itc = false },
            (m, h) => [("itm.fc.bias", h.Itm!.Fc.Bias!), ("text_transform.bias", m.TextTransform.Bias!)]);
        Assert.IsTrue(rep.Ok, rep.Text);
    }
}

[TestClass]
[TestCategory("Emulated")]
public sealed class CoarseObjectivesEmulatedTests
{
    [TestMethod]
    public void EmulatedGpuAgreesWithCpu()
    {
        var (cm, ch) = ObjectiveFixture.Fresh(NnContext.Cpu(), seed: 4, std: 0.1);
        var (gm, gh) = ObjectiveFixture.Fresh(new NnContext(TestDevices.Emulated), seed: 99);
        var sd = ObjectiveFixture.Params(cm, ch);
        gm.LoadStateDict(sd.Where(kv => FiberCoarseModel.IsBackboneKey(kv.Key)).ToDictionary());
        gh.LoadStateDict(sd.Where(kv => CoarseHeads.IsHeadKey(kv.Key)).ToDictionary());
        using var co = new CoarseObjectives(cm, ch, seed: 6);
        using var go = new CoarseObjectives(gm, gh, seed: 6);
        for (int step = 0; step < 2; step++)
        {
            var b = ObjectiveFixture.Batch(step);
            var lc = co.Forward(b, (ulong)step);
            var lg = go.Forward(b, (ulong)step);
            Assert.IsTrue(lg.Finite, $"{lg}");
            Assert.AreEqual(lc.Mlm, lg.Mlm, 1e-3 * Math.Max(1, lc.Mlm), $"step {step} MLM");
            Assert.AreEqual(lc.Itc, lg.Itc, 1e-3 * Math.Max(1, lc.Itc), $"step {step} ITC");
            Assert.AreEqual(lc.Itm, lg.Itm, 1e-3 * Math.Max(1, lc.Itm), $"step {step} ITM");
            if (step == 0)
            {
                lc.Total.Backward(); lg.Total.Backward();
                var gp = ObjectiveFixture.Params(gm, gh);
                foreach (var n in new[] { "temp", "itm_score.fc.weight", "mlm_score.transform.dense.bias", "cross_modal_text_pooler_itc.dense.bias" })
                {
                    var want = sd[n].Grad!.ToDoubleArray(); var got = gp[n].Grad!.ToDoubleArray();
                    double scale = Math.Max(1e-6, want.Max(Math.Abs));
                    for (int i = 0; i < want.Length; i++) Assert.AreEqual(want[i], got[i], 2e-3 * scale, $"{n}[{i}]");
                }
            }
            co.Enqueue(b, lc); go.Enqueue(b, lg);
            Assert.AreEqual(co.Queues!.Ptr, go.Queues!.Ptr);
            CollectionAssert.AreEqual(co.Inputs!.Ids, go.Inputs!.Ids);
        }
    }
}
