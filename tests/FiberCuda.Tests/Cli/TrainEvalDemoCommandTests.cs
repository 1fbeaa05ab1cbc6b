using System.CommandLine;
using System.Text.Json;
using FiberCuda.Cli.Commands;
using FiberCuda.Tests.Training;
using FiberCuda.Training;

namespace FiberCuda.Tests.Cli;

/// <summary>`fiber train coarse`, `fiber eval retrieval` and `fiber demo` through their command lines, on the CPU.</summary>
[TestClass]
[DoNotParallelize] // captures Console
public sealed class TrainEvalDemoCommandTests
{
    string _dir = null!;

    [TestInitialize]
    public void Setup() => Directory.CreateDirectory(_dir = Path.Combine(Path.GetTempPath(), "fiber-cli-" + Guid.NewGuid().ToString("N")[..8]));

    [TestCleanup]
    public void Cleanup() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    static (int Rc, string Out, string Err) Cli(params string[] args)
    {
        var root = new RootCommand();
        root.Subcommands.Add(TrainCommand.Create());
        root.Subcommands.Add(EvalCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        var (o, e) = (new StringWriter(), new StringWriter());
        var (so, se) = (Console.Out, Console.Error);
        Console.SetOut(o); Console.SetError(e);
        try { return (root.Parse(args).Invoke(), o.ToString(), e.ToString()); }
        finally { Console.SetOut(so); Console.SetError(se); }
    }

    [TestMethod]
    public void TrainResumeAndEvaluate()
    {
        string cfg = Path.Combine(_dir, "tiny.json"), run = Path.Combine(_dir, "run");
        File.WriteAllText(cfg, CoarseTrainerTests.Options(1).Config.ToJson());
        var (rc, o, e) = Cli("train", "coarse", "--config", cfg, "--data", "synthetic:48:3:64", "--out", run, "--steps", "2",
            "--batch-size", "4", "--device", "cpu", "--workers", "1", "--lr", "1e-3");
        Assert.AreEqual(0, rc, o + e);
        StringAssert.Contains(o, "done: 2 steps");
        StringAssert.Contains(o, "step 2/2");
        Assert.IsTrue(File.Exists(Path.Combine(run, CoarseTrainer.PlotFile)), "loss plot");
        Assert.AreEqual(2, MetricsLog.ReadAll(Path.Combine(run, CoarseTrainer.MetricsFile)).Count);

        (rc, o, e) = Cli("train", "coarse", "--resume", run, "--steps", "3", "--device", "cpu");
        Assert.AreEqual(0, rc, o + e);
        StringAssert.Contains(o, "resumed");
        Assert.AreEqual(3, MetricsLog.ReadAll(Path.Combine(run, CoarseTrainer.MetricsFile)).Count);

        string json = Path.Combine(_dir, "recall.json");
        (rc, o, e) = Cli("eval", "retrieval", "--run", run, "--data", "synthetic:6:5:64", "--device", "cpu", "--itm-k", "2", "--out", json);
        Assert.AreEqual(0, rc, o + e);
        StringAssert.Contains(o, "(step 3)");
        StringAssert.Contains(o, "ITM (top 2");
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var r = doc.RootElement.GetProperty("result");
        foreach (var k in new[] { "itc_tr_r1", "itc_ir_r10", "itm_tr_r1", "itm_ir_r5" })
            Assert.IsTrue(r.GetProperty(k).GetDouble() is >= 0 and <= 1, k);
        Assert.AreEqual(1.0, r.GetProperty("itc_ir_r10").GetDouble(), "6 images: every text finds its image in the top 10");
    }

    [TestMethod]
    public void UsageErrorsAreReported()
    {
        var (rc, _, e) = Cli("train", "coarse", "--data", "synthetic:8", "--out", Path.Combine(_dir, "x"), "--device", "cpu");
        Assert.AreEqual(ExitCodes.Usage, rc);
        StringAssert.Contains(e, "--config is required");
        (rc, _, e) = Cli("eval", "retrieval", "--data", "synthetic:8", "--device", "cpu");
        Assert.AreEqual(ExitCodes.Usage, rc);
        StringAssert.Contains(e, "--run");
        (rc, _, e) = Cli("train", "coarse", "--resume", Path.Combine(_dir, "nothing"), "--device", "cpu");
        Assert.AreEqual(ExitCodes.BadInput, rc);
        StringAssert.Contains(e, "train.json");
        (rc, _, e) = Cli("train", "coarse", "--config", "fiber-demo-coarse-64", "--data", "synthetic:8", "--out", Path.Combine(_dir, "y"),
            "--objectives", "mlm,foo", "--device", "cpu");
        Assert.AreEqual(ExitCodes.Usage, rc);
        StringAssert.Contains(e, "foo");
    }

    [TestMethod]
    public void DemoWritesMetricsAndPlotsAndReplacesOnlyItsOwnFolder()
    {
        string outDir = Path.Combine(_dir, "demo");
        var o = new DemoOptions { Out = outDir, Device = "cpu", Steps = 2, BatchSize = 4, TrainScenes = 32, EvalScenes = 6, ItmTopK = 2, Workers = 1 };
        var log = new StringWriter();
        Assert.AreEqual(0, DemoCommand.Run(o, log), log.ToString());
        using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "metrics.json"))))
        {
            var m = doc.RootElement;
            Assert.AreEqual("cpu", m.GetProperty("device").GetString());
            Assert.AreEqual(2, m.GetProperty("steps").GetInt32());
            Assert.AreEqual(6, m.GetProperty("eval_images").GetInt32());
            foreach (var when in new[] { "recall_before", "recall_after" })
                Assert.IsTrue(m.GetProperty(when).TryGetProperty("itc_tr_r1", out _), when);
            Assert.IsTrue(m.GetProperty("samples_per_s").GetDouble() > 0);
        }
        Assert.IsTrue(File.Exists(Path.Combine(outDir, CoarseTrainer.PlotFile)));
        Assert.AreEqual(6, File.ReadAllLines(Path.Combine(outDir, "data", "val.jsonl")).Length);
        Assert.AreEqual(0, DemoCommand.Run(o, log), "a second demo replaces the first");

        string other = Path.Combine(_dir, "mine");
        Directory.CreateDirectory(other);
        File.WriteAllText(Path.Combine(other, "keep.txt"), "user data");
        Assert.AreEqual(ExitCodes.BadInput, DemoCommand.Run(o with { Out = other }, log));
        Assert.IsTrue(File.Exists(Path.Combine(other, "keep.txt")), "a folder that is not a demo's is never deleted");
    }

    /// <summary>
    /// The README's main command as a new user runs it (all defaults, CPU): after pre-training, image→text and
    /// text→image R@1 on the 100 held-out pairs must each be at least 10× chance. About 4 minutes on 2 cores.
    /// </summary>
    [TestMethod]
    [TestCategory("Demo")]
    public void TheDefaultDemoLearnsRetrieval()
    {
        string outDir = Path.Combine(_dir, "demo-full");
        var log = new StringWriter();
        Assert.AreEqual(0, DemoCommand.Run(new DemoOptions { Out = outDir, Device = "cpu" }, log), log.ToString());
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "metrics.json")));
        var m = doc.RootElement;
        int n = m.GetProperty("eval_images").GetInt32();
        Assert.IsTrue(n >= 100);
        var after = m.GetProperty("recall_after");
        double tr = after.GetProperty("itc_tr_r1").GetDouble(), ir = after.GetProperty("itc_ir_r1").GetDouble();
        Console.WriteLine($"demo R@1 text {tr:P1} image {ir:P1} (chance {1.0 / n:P1}); {m.GetProperty("total_seconds").GetDouble()} s");
        Assert.IsTrue(tr >= 10.0 / n && ir >= 10.0 / n, $"R@1 text {tr:P1}, image {ir:P1}: below 10× chance\n{log}");
    }
}
