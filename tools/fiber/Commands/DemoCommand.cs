using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using FiberCuda.Data;
using FiberCuda.Eval;
using FiberCuda.IO;
using FiberCuda.Models;
using FiberCuda.Tensors;
using FiberCuda.Training;

namespace FiberCuda.Cli.Commands;

/// <summary>What `fiber demo` runs; tests fill it directly with small numbers.</summary>
public sealed record DemoOptions
{
    public string Out { get; init; } = "demo";
    public string Device { get; init; } = "auto";
    public long Steps { get; init; } = 200;
    public int BatchSize { get; init; } = 16;
    public float Lr { get; init; } = 5e-4f;
    public int TrainScenes { get; init; } = 6000;
    public int EvalScenes { get; init; } = 100;
    /// <summary>ITM re-ranking depth of the evaluations (0: ITC only).</summary>
    public int ItmTopK { get; init; } = 5;
    public ulong Seed { get; init; }
    public int Workers { get; init; } = Math.Max(1, Environment.ProcessorCount - 1);
    public int ImageSize { get; init; } = 64;
}

/// <summary>
/// `fiber demo`, the README's first command: no downloads, minutes on a CPU. It writes a held-out synthetic shapes set
/// to OUT/data, evaluates retrieval with the untrained demo model, pre-trains it with stage 1 (MLM + ITC + ITM with hard
/// negatives) on freshly rendered scenes, evaluates again, and writes OUT/metrics.json, OUT/run (the training run:
/// checkpoints, metrics.jsonl, loss.png). From scratch, three settings differ from the official recipe (which starts
/// from pretrained towers) and are recorded in metrics.json: in-batch ITC with gradients through both sides, no
/// dropout, and a wider initialisation (see <see cref="ItcVariant.InBatch"/>, <see cref="FiberInit"/>).
/// </summary>
public static class DemoCommand
{
    const string Marker = "demo.json";

    public static Command Create()
    {
        var d = new DemoOptions();
        var output = new Option<string>("--out", "-o") { Description = "output folder (a previous demo there is replaced)", DefaultValueFactory = _ => d.Out };
        var device = new Option<string>("--device") { Description = Devices.Help, DefaultValueFactory = _ => d.Device };
        device.AcceptOnlyFromAmong(Devices.Names);
        var steps = new Option<long>("--steps") { Description = "training steps", DefaultValueFactory = _ => d.Steps };
        var batch = new Option<int>("--batch-size", "-b") { Description = "batch size", DefaultValueFactory = _ => d.BatchSize };
        var eval = new Option<int>("--eval-images") { Description = "held-out images (one caption each)", DefaultValueFactory = _ => d.EvalScenes };
        var itmK = new Option<int>("--itm-k") { Description = "ITM re-ranking depth (0: ITC only)", DefaultValueFactory = _ => d.ItmTopK };
        var seed = new Option<ulong>("--seed") { Description = "seed", DefaultValueFactory = _ => d.Seed };
        var cmd = new Command("demo", "generate synthetic data, evaluate the untrained demo model, pre-train it (stage 1), evaluate again, write metrics.json");
        foreach (var o in new Option[] { output, device, steps, batch, eval, itmK, seed }) cmd.Options.Add(o);
        cmd.SetAction(pr => Run(d with
        {
            Out = pr.GetValue(output)!, Device = pr.GetValue(device)!, Steps = pr.GetValue(steps), BatchSize = pr.GetValue(batch),
            EvalScenes = pr.GetValue(eval), ItmTopK = pr.GetValue(itmK), Seed = pr.GetValue(seed),
        }));
        return cmd;
    }

    public static int Run(DemoOptions o, TextWriter? log = null) => ExitCodes.Run(() => Execute(o, log ?? Console.Out));

    static int Execute(DemoOptions o, TextWriter log)
    {
        var clock = Stopwatch.StartNew();
        if (o.Steps < 1 || o.EvalScenes < 2 || o.BatchSize < 2 || o.ItmTopK < 0) throw new ArgumentException("demo: steps ≥ 1, batch ≥ 2, eval images ≥ 2, itm-k ≥ 0");
        PrepareFolder(o.Out);
        string runDir = Path.Combine(o.Out, "run"), dataDir = Path.Combine(o.Out, "data");

        // One shape per scene, and where it is: the caption then describes the whole picture, which a model trained for
        // minutes can learn. Held-out captions are distinct, so a text never ties with another scene's identical text.
        var synth = new SyntheticOptions { ImageSize = o.ImageSize, MaxShapes = 1, SayWhere = true };
        var gen = new SyntheticShapes(o.Seed + 1_000_003, synth);
        var seen = new HashSet<string>();
        var picked = new List<int>();
        for (int i = 0; picked.Count < o.EvalScenes; i++)
        {
            if (i > 100 * o.EvalScenes) throw new ArgumentException($"--eval-images {o.EvalScenes}: not that many distinct synthetic captions");
            if (seen.Add(gen.Scene(i).Captions[0])) picked.Add(i);
        }
        var (_, heldOut) = gen.WriteDataset(dataDir, [], picked);
        log.WriteLine($"held-out set: {o.EvalScenes} synthetic scenes with distinct captions in {heldOut}");

        var config = FiberConfig.Demo(o.ImageSize);
        var options = new CoarseTrainOptions
        {
            Config = config, Data = $"synthetic:{o.TrainScenes}:{o.Seed + 1}:{o.ImageSize}:1:where",
            Steps = o.Steps, BatchSize = o.BatchSize, Lr = o.Lr, Warmup = 0.1, Seed = o.Seed, Workers = o.Workers,
            CheckpointEvery = (int)Math.Max(1, o.Steps / 2), KeepLast = 2,
            TextDropout = 0, DropPath = 0, InitStd = 0.1,
            Objectives = new CoarseObjectiveOptions { ItcVariant = ItcVariant.InBatch, NormalizedQueueInit = true },
        };
        var (be, owned, devName) = Devices.OpenBackend(o.Device, DType.F32);
        try
        {
            using var trainer = CoarseTrainer.Create(runDir, options, be, log.WriteLine);
            var stats = new DataStats();
            var set = RetrievalSet.Create(CaptionDatasets.Open(heldOut, stats), new RetrievalSetOptions { Workers = o.Workers, CacheImageSize = o.ImageSize }, stats);
            var evalOptions = new RetrievalEvalOptions { ItmTopK = o.ItmTopK == 0 ? null : o.ItmTopK };

            var before = RetrievalEvaluator.Run(trainer.Model, trainer.Heads, set, trainer.Loader.Tokenizer, evalOptions);
            EvalCommand.Print("untrained", before);

            log.WriteLine($"pre-training {config.Name} on {devName}: {o.Steps} steps of {o.BatchSize} (MLM + ITC + ITM with hard negatives)");
            var trainClock = Stopwatch.StartNew();
            var outcome = TrainProgress.Run(trainer);
            double trainSeconds = trainClock.Elapsed.TotalSeconds;

            var after = RetrievalEvaluator.Run(trainer.Model, trainer.Heads, set, trainer.Loader.Tokenizer, evalOptions);
            EvalCommand.Print($"after {outcome.Step} steps", after);

            var records = MetricsLog.ReadAll(trainer.MetricsPath);
            double MeanOf(IEnumerable<MetricsRecord> rs, string k) => rs.Where(r => r["skipped"] == 0).Select(r => r[k]).DefaultIfEmpty(double.NaN).Average();
            var first = records.Take(10).ToList();
            var lastRecs = records.Skip(Math.Max(0, records.Count - 10)).ToList();
            var metrics = new Dictionary<string, object?>
            {
                ["device"] = devName,
                ["config"] = config.Name,
                ["parameters"] = trainer.Parameters.Sum(p => p.Tensor.Numel),
                ["steps"] = outcome.Step,
                ["completed"] = outcome.Completed,
                ["batch_size"] = o.BatchSize,
                ["train_seconds"] = Math.Round(trainSeconds, 1),
                ["samples_per_s"] = Math.Round(outcome.SamplesPerSecond, 2),
                ["skipped_steps"] = outcome.BadSteps,
                ["loss_first10"] = new[] { "loss", "mlm", "itc", "itm" }.ToDictionary(k => k, k => MeanOf(first, k)),
                ["loss_last10"] = new[] { "loss", "mlm", "itc", "itm" }.ToDictionary(k => k, k => MeanOf(lastRecs, k)),
                ["eval_images"] = set.ImageCount,
                ["eval_texts"] = set.TextCount,
                ["chance_r1"] = 1.0 / set.ImageCount,
                ["recall_before"] = before.ToDictionary(),
                ["recall_after"] = after.ToDictionary(),
                ["itc_r1_after_over_chance"] = Math.Round(Math.Min(after.Itc.TrR1, after.Itc.IrR1) * set.ImageCount, 2),
                ["recipe_deviations"] = new Dictionary<string, object>
                {
                    ["itc"] = "in-batch symmetric (official: queue, detached keys)",
                    ["dropout"] = 0, ["drop_path"] = 0, ["init_std"] = options.InitStd, ["itc_queue_init"] = "normalised",
                },
                ["run_dir"] = Path.GetFullPath(runDir),
                ["loss_plot"] = Path.GetFullPath(Path.Combine(runDir, CoarseTrainer.PlotFile)),
                ["total_seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 1),
            };
            string metricsPath = Path.Combine(o.Out, "metrics.json");
            AtomicFile.WriteAllText(metricsPath, JsonSerializer.Serialize(metrics, new JsonSerializerOptions { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals }));
            File.Copy(Path.Combine(runDir, CoarseTrainer.PlotFile), Path.Combine(o.Out, CoarseTrainer.PlotFile), overwrite: true);
            log.WriteLine($"R@1 after training: text {100 * after.Itc.TrR1:F1}%, image {100 * after.Itc.IrR1:F1}% (chance {100.0 / set.ImageCount:F1}%); " +
                          $"{metricsPath}, {Path.Combine(o.Out, CoarseTrainer.PlotFile)}; total {clock.Elapsed.TotalSeconds:F0} s");
            return ExitCodes.Ok;
        }
        finally { if (owned) be.Dispose(); }
    }

    /// <summary>Creates OUT, or clears a previous demo there (recognised by its marker file); refuses any other non-empty folder.</summary>
    static void PrepareFolder(string outDir)
    {
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
        {
            if (!File.Exists(Path.Combine(outDir, Marker)))
                throw new IOException($"{outDir} exists and is not a demo folder; pass another --out");
            Directory.Delete(outDir, recursive: true);
        }
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, Marker), "{\"written_by\": \"fiber demo\"}\n");
    }
}
