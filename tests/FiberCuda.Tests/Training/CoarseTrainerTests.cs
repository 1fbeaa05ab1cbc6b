using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Models;
using FiberCuda.Training;

namespace FiberCuda.Tests.Training;

/// <summary>The stage-1 trainer on the CPU: bit-exact resume, NaN handling, clean cancellation, unreadable checkpoints.</summary>
[TestClass]
public sealed class CoarseTrainerTests
{
    /// <summary>The tiny structure with the tokenizer's 50265-id vocabulary and a small queue, so a step takes milliseconds.</summary>
    internal static CoarseTrainOptions Options(long steps, int checkpointEvery = 100) => new()
    {
        Config = FiberConfig.Tiny() with { Name = "fiber-tiny-train", VocabSize = 50265, QueueSize = 8, Heads = ["itc", "mlm", "itm"] },
        Data = "synthetic:48:3:64", Steps = steps, BatchSize = 4, Lr = 1e-3f, Warmup = 0.25, Seed = 11, Workers = 2,
        CheckpointEvery = checkpointEvery, KeepLast = 3,
    };

    static string NewDir() => Path.Combine(Path.GetTempPath(), "fiber-train-" + Guid.NewGuid().ToString("N")[..8]);

    static List<double[]> Losses(string run) =>
        MetricsLog.ReadAll(Path.Combine(run, CoarseTrainer.MetricsFile)).Select(r => new[] { r["mlm"], r["itc"], r["itm"], r["grad_norm"] }).ToList();

    [TestMethod]
    public void ResumeReproducesTheLossSequenceBitForBit()
    {
        string a = NewDir(), b = NewDir();
        try
        {
            using (var t = CoarseTrainer.Create(a, Options(6), Backend.Cpu)) Assert.IsTrue(t.Run().Completed);
            using (var t = CoarseTrainer.Create(b, Options(6, checkpointEvery: 2), Backend.Cpu))
            {
                var o = t.Run(stopAfter: 3);
                Assert.AreEqual(3, o.Step);
                Assert.IsFalse(o.Completed);
            }
            using (var t = CoarseTrainer.Resume(b, Backend.Cpu))
            {
                Assert.AreEqual(3, t.Step, "resumed at the checkpoint written when the first part stopped");
                Assert.IsTrue(t.Run().Completed);
            }
            var la = Losses(a); var lb = Losses(b);
            Assert.AreEqual(6, la.Count); Assert.AreEqual(6, lb.Count, "a resumed run's metrics have one line per step");
            for (int s = 0; s < 6; s++) CollectionAssert.AreEqual(la[s], lb[s], $"step {s + 1}: losses and gradient norm");
            Assert.IsTrue(la.Select(x => x[0]).Distinct().Count() > 1, "the losses change from step to step");
            // The final weights agree too.
            var (ma, ha, _) = CoarseTrainer.LoadForEval(a, Backend.Cpu);
            var (mb, hb, _) = CoarseTrainer.LoadForEval(b, Backend.Cpu);
            var pb = mb.NamedParameters().Concat(hb.NamedParameters()).ToDictionary(p => p.Name, p => p.Tensor);
            foreach (var (n, p) in ma.NamedParameters().Concat(ha.NamedParameters()))
                CollectionAssert.AreEqual(p.ToFloatArray(), pb[n].ToFloatArray(), n);
        }
        finally { Cleanup(a, b); }
    }

    [TestMethod]
    public void NonFiniteStepsAreSkippedThenStopTheRunLeavingTheLastGoodCheckpoint()
    {
        string dir = NewDir();
        try
        {
            var o = Options(20, checkpointEvery: 2) with { MaxBadSteps = 3 };
            using var t = CoarseTrainer.Create(dir, o, Backend.Cpu);
            Assert.AreEqual(2, t.Run(stopAfter: 2).Step);
            var poisoned = t.Model.ImageTransformItc.Weight;
            var other = t.Model.Text.Encoder.Layer[0].Output.Dense.Weight;
            var otherBefore = other.ToFloatArray();
            long ptr = t.Objectives.Queues!.Total;
            Backend.Cpu.Fill(poisoned, double.NaN);
            var ex = Assert.ThrowsExactly<TrainingDivergedException>(() => t.Run());
            StringAssert.Contains(ex.Message, "3 consecutive");
            Assert.AreEqual(5, t.Step, "two good steps, then three skipped ones");
            CollectionAssert.AreEqual(otherBefore, other.ToFloatArray(), "a skipped step changes no parameter");
            Assert.AreEqual(ptr, t.Objectives.Queues.Total, "a skipped step enqueues nothing");
            var recs = MetricsLog.ReadAll(Path.Combine(dir, CoarseTrainer.MetricsFile));
            CollectionAssert.AreEqual(new double[] { 0, 0, 1, 1, 1 }, recs.Select(r => r["skipped"]).ToArray());
            // Only good states were checkpointed: the newest readable is step 2, and it holds no NaN.
            using var ck = t.Store.OpenLatestReadable(out var skipped);
            Assert.AreEqual(2, ck!.Step);
            Assert.AreEqual(0, skipped.Count);
            Assert.IsFalse(ck.ReadHost("model/cross_modal_image_transform_itc.weight").ToDoubles().Any(double.IsNaN));
        }
        finally { Cleanup(dir); }
    }

    [TestMethod]
    public void CancellationFinishesTheStepWritesACheckpointAndResumes()
    {
        string dir = NewDir();
        try
        {
            using var cts = new CancellationTokenSource();
            TrainOutcome o;
            using (var t = CoarseTrainer.Create(dir, Options(10), Backend.Cpu))
                o = t.Run(cts.Token, r => { if (r.Step == 2) cts.Cancel(); });
            Assert.IsTrue(o.Cancelled);
            Assert.AreEqual(2, o.Step);
            Assert.AreEqual(2, CheckpointStore.StepOf(o.LastCheckpoint!));
            using var again = CoarseTrainer.Resume(dir, Backend.Cpu);
            Assert.AreEqual(2, again.Step);
        }
        finally { Cleanup(dir); }
    }

    [TestMethod]
    public void ATornNewestCheckpointIsSkippedOnResume()
    {
        string dir = NewDir();
        try
        {
            using (var t = CoarseTrainer.Create(dir, Options(4, checkpointEvery: 2), Backend.Cpu)) t.Run(stopAfter: 2);
            var store = new CheckpointStore(dir);
            var good = store.List().Single();
            // A write killed half-way through (what a crash without the temp-file protocol would leave).
            var bytes = File.ReadAllBytes(good);
            File.WriteAllBytes(store.PathOf(3), bytes[..(bytes.Length / 2)]);
            var log = new List<string>();
            using var r = CoarseTrainer.Resume(dir, Backend.Cpu, log.Add);
            Assert.AreEqual(2, r.Step);
            Assert.IsTrue(log.Any(l => l.Contains("step-00000003")), string.Join("\n", log));
        }
        finally { Cleanup(dir); }
    }

    /// <summary>bf16 mixed precision: bf16 weights and activations, fp32 master weights; the first step's losses match f32's.</summary>
    [TestMethod]
    public void Bf16TrainingTracksF32()
    {
        string a = NewDir(), b = NewDir();
        try
        {
            // Normalised queues: the official randn ones give ITC logits of ±|q|/0.07, where bf16 rounding moves the loss by units.
            var o = Options(2) with { Objectives = new CoarseObjectiveOptions { NormalizedQueueInit = true } };
            using (var t = CoarseTrainer.Create(a, o, Backend.Cpu)) t.Run();
            using (var t = CoarseTrainer.Create(b, o with { DType = Tensors.DType.BF16 }, Backend.Cpu))
            {
                t.Run();
                Assert.IsTrue(t.Parameters.All(p => p.Tensor.DType == (p.Name == "temp" ? Tensors.DType.F32 : Tensors.DType.BF16)), "bf16 weights, f32 temperature");
                var st = t.Optimizer.StateOf(t.Model.TextTransform.Weight)!;
                Assert.IsNotNull(st.Master, "fp32 master weights");
                Assert.AreEqual(Tensors.DType.F32, st.Master!.DType);
            }
            var (la, lb) = (Losses(a), Losses(b));
            // MLM and ITM agree to bf16 precision. The fresh towers' ITC features are nearly collapsed (cosine ≈ 0.99),
            // so the ITC loss rests on differences of ~1% between features, the size of bf16's rounding: looser there.
            foreach (var (k, tol) in new[] { (0, 0.01), (1, 0.2), (2, 0.01) })
                Assert.AreEqual(la[0][k], lb[0][k], tol * Math.Max(1, la[0][k]), $"step 1 loss {k}: f32 {la[0][k]} vs bf16 {lb[0][k]}");
            Assert.IsTrue(lb.All(r => r.All(double.IsFinite)));
        }
        finally { Cleanup(a, b); }
    }

    /// <summary>The whole bf16 training step on the CUDA backend (emulated GPU): kernels, fp32 temperature and master weights.</summary>
    [TestMethod]
    [TestCategory("Emulated")]
    public void Bf16StepOnTheEmulatedGpuTracksTheCpu()
    {
        string a = NewDir(), b = NewDir();
        try
        {
            var o = Options(1) with { Objectives = new CoarseObjectiveOptions { NormalizedQueueInit = true } };
            using (var t = CoarseTrainer.Create(a, o, Backend.Cpu)) t.Run();
            using (var t = CoarseTrainer.Create(b, o with { DType = Tensors.DType.BF16 }, Support.TestDevices.Emulated)) t.Run();
            var (la, lb) = (Losses(a), Losses(b));
            foreach (var (k, tol) in new[] { (0, 0.01), (1, 0.2), (2, 0.01) })
                Assert.AreEqual(la[0][k], lb[0][k], tol * Math.Max(1, la[0][k]), $"loss {k}: CPU f32 {la[0][k]} vs emulated bf16 {lb[0][k]}");
            Assert.IsTrue(double.IsFinite(lb[0][3]), "gradient norm");
        }
        finally { Cleanup(a, b); }
    }

    [TestMethod]
    public void ANewRunRefusesAFolderWithCheckpoints()
    {
        string dir = NewDir();
        try
        {
            using (var t = CoarseTrainer.Create(dir, Options(1), Backend.Cpu)) t.Run();
            var ex = Assert.ThrowsExactly<IOException>(() => CoarseTrainer.Create(dir, Options(1), Backend.Cpu));
            StringAssert.Contains(ex.Message, "--resume");
        }
        finally { Cleanup(dir); }
    }

    static void Cleanup(params string[] dirs)
    {
        foreach (var d in dirs) try { Directory.Delete(d, true); } catch (IOException) { }
    }
}

/// <summary>The shared-lower-tower option computes the same objectives (without dropout) from one lower pass.</summary>
[TestClass]
public sealed class SharedLowerTests
{
    [TestMethod]
    public void SharedLowerGivesTheSameLossesAndGradients()
    {
        var o = CoarseTrainerTests.Options(1) with { TextDropout = 0, DropPath = 0 };
        var c = o.Config;
        var loader = FiberCuda.Data.CaptionDatasets.OpenLoader(o.Data, new FiberCuda.Data.LoaderOptions { BatchSize = 4, ImageSize = c.ImageSize, MaxTextLength = c.MaxTextLen, Seed = 1, Workers = 1 });
        var batches = loader.Epoch(0).Take(3).ToList();
        var results = new List<(double[] Losses, Dictionary<string, float[]> Grads)>();
        foreach (bool shared in new[] { false, true })
        {
            var ctx = new FiberCuda.Nn.NnContext(Backend.Cpu);
            var m = new FiberCoarseModel(ctx, c, 0, 0);
            var h = new CoarseHeads(ctx, c);
            FiberInit.Apply(m, c, 3); FiberInit.Apply(h, c, 4);
            using var obj = new CoarseObjectives(m, h, new CoarseObjectiveOptions { SharedLower = shared }, 5);
            var losses = new List<double>();
            // Two steps fill the queues so the third can draw hard negatives from them (their lower pass is separate).
            CoarseLosses l = null!;
            for (int k = 0; k < 3; k++)
            {
                m.ZeroGrad(); h.ZeroGrad();
                l = obj.Forward(batches[k], (ulong)k);
                l.Total.Backward();
                losses.AddRange([l.Mlm, l.Itc, l.Itm]);
                obj.Enqueue(batches[k], l);
            }
            Assert.IsTrue(obj.Queues!.Total > 0);
            results.Add((losses.ToArray(), m.NamedParameters().Concat(h.NamedParameters()).Where(p => p.Tensor.Grad is not null)
                .ToDictionary(p => p.Name, p => p.Tensor.Grad!.ToFloatArray())));
        }
        var (a, b) = (results[0], results[1]);
        for (int i = 0; i < a.Losses.Length; i++) Assert.AreEqual(a.Losses[i], b.Losses[i], 1e-5 * Math.Max(1, Math.Abs(a.Losses[i])), $"loss {i}");
        CollectionAssert.AreEquivalent(a.Grads.Keys.ToList(), b.Grads.Keys.ToList());
        foreach (var (n, g) in a.Grads)
        {
            var g2 = b.Grads[n];
            double scale = Math.Max(1e-3, g.Max(x => Math.Abs(x)));
            for (int i = 0; i < g.Length; i++) Assert.AreEqual(g[i], g2[i], 2e-4 * scale, $"{n}[{i}]");
        }
    }
}
