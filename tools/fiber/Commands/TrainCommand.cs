using System.CommandLine;
using FiberCuda.Models;
using FiberCuda.Tensors;
using FiberCuda.Training;

namespace FiberCuda.Cli.Commands;

/// <summary>
/// `fiber train coarse`: stage-1 pre-training into a run folder (train.json, metrics.jsonl, loss.png, checkpoints/),
/// or `--resume RUN` to continue one. Ctrl-C finishes the step in flight, writes a checkpoint and exits 0; a second
/// Ctrl-C aborts at once (the previous checkpoint stays intact).
/// </summary>
public static class TrainCommand
{
    public static Command Create()
    {
        var train = new Command("train", "pre-train FIBER");
        train.Subcommands.Add(Coarse());
        return train;
    }

    static Command Coarse()
    {
        var d = new CoarseTrainOptions();
        var config = new Option<string?>("--config") { Description = "preset name (e.g. fiber-b-coarse-384, fiber-demo-coarse-64) or config.json" };
        var data = new Option<string?>("--data") { Description = "dataset: file.jsonl | coco/karpathy .json | shards-{000..031}.tar | folder of .tar | synthetic:N[:seed[:size[:maxShapes]]]; ';' joins several" };
        var output = new Option<string?>("--out", "-o") { Description = "new run folder" };
        var resume = new Option<string?>("--resume") { Description = "continue the run in this folder from its newest readable checkpoint" };
        var imageRoot = new Option<string?>("--image-root") { Description = "folder the manifest's image paths are relative to" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "folder with RoBERTa's vocab.json and merges.txt (default: the GPT-2 BPE fallback, demo only)" };
        var init = new Option<string?>("--init") { Description = "engine weights to start from (model.safetensors from `fiber convert`)" };
        var device = new Option<string>("--device") { Description = Devices.Help, DefaultValueFactory = _ => "auto" };
        device.AcceptOnlyFromAmong(Devices.Names);
        var dtype = new Option<string>("--dtype") { Description = "f32 | bf16 (bf16 activations and weights, fp32 master weights and statistics)", DefaultValueFactory = _ => "f32" };
        dtype.AcceptOnlyFromAmong("f32", "bf16");
        var steps = new Option<long?>("--steps") { Description = $"optimizer steps (default {d.Steps}; with --resume: a new total)" };
        var batch = new Option<int>("--batch-size", "-b") { Description = "micro-batch size", DefaultValueFactory = _ => d.BatchSize };
        var accum = new Option<int>("--accumulate") { Description = "micro-batches per optimizer step", DefaultValueFactory = _ => d.Accumulate };
        var lr = new Option<float>("--lr") { Description = "base learning rate (×5 for cross-modal parameters and heads)", DefaultValueFactory = _ => d.Lr };
        var warmup = new Option<double>("--warmup") { Description = "warm-up: fraction of the steps if < 1, else steps", DefaultValueFactory = _ => d.Warmup };
        var clip = new Option<double?>("--clip") { Description = "clip the global gradient norm to this value (off by default, as the official recipe)" };
        var seed = new Option<ulong>("--seed") { Description = "seed of the data order, masks, dropout and negatives", DefaultValueFactory = _ => 0 };
        var workers = new Option<int>("--workers") { Description = "image decoding threads", DefaultValueFactory = _ => d.Workers };
        var every = new Option<int>("--checkpoint-every") { Description = "steps between checkpoints", DefaultValueFactory = _ => d.CheckpointEvery };
        var keep = new Option<int>("--keep-last") { Description = "checkpoints to keep", DefaultValueFactory = _ => d.KeepLast };
        var objectives = new Option<string>("--objectives") { Description = "comma-separated subset of mlm,itc,itm", DefaultValueFactory = _ => "mlm,itc,itm" };
        var itc = new Option<string>("--itc") { Description = "official | in-batch (from-scratch aid: symmetric, both sides differentiated, no queue)", DefaultValueFactory = _ => "official" };
        itc.AcceptOnlyFromAmong("official", "in-batch");
        var shared = new Option<bool>("--shared-lower") { Description = "run the towers below the fusion once per image and text for all three objectives (faster; not the official recipe)" };
        var dropout = new Option<float>("--dropout") { Description = "text dropout", DefaultValueFactory = _ => d.TextDropout };
        var dropPath = new Option<float>("--drop-path") { Description = "Swin drop-path rate", DefaultValueFactory = _ => d.DropPath };
        var initStd = new Option<double>("--init-std") { Description = "std of fresh weights (0.02 official)", DefaultValueFactory = _ => d.InitStd };

        var cmd = new Command("coarse", "stage 1: MLM + ITC + ITM with hard negatives on image-text pairs");
        foreach (var o in new Option[] { config, data, output, resume, imageRoot, tokenizer, init, device, dtype, steps, batch, accum, lr, warmup, clip, seed,
                                         workers, every, keep, objectives, itc, shared, dropout, dropPath, initStd })
            cmd.Options.Add(o);
        cmd.SetAction(pr => ExitCodes.Run(() =>
        {
            string dev = pr.GetValue(device)!;
            if (pr.GetValue(resume) is { } run)
            {
                long? total = pr.GetValue(steps);
                return Execute(() => CoarseTrainer.Resume(run, Open(dev, ReadDType(run)), Console.Out.WriteLine,
                    o => total is null ? o : o with { Steps = total.Value }));
            }
            var cfg = pr.GetValue(config) ?? throw new ArgumentException("--config is required for a new run (or --resume RUN)");
            var outDir = pr.GetValue(output) ?? throw new ArgumentException("--out is required for a new run (or --resume RUN)");
            var objs = pr.GetValue(objectives)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            foreach (var x in objs) if (x is not ("mlm" or "itc" or "itm")) throw new ArgumentException($"--objectives: unknown '{x}' (mlm, itc, itm)");
            var options = new CoarseTrainOptions
            {
                Config = ConfigArg.Load(cfg),
                Data = pr.GetValue(data) ?? throw new ArgumentException("--data is required"),
                ImageRoot = pr.GetValue(imageRoot), TokenizerDir = pr.GetValue(tokenizer), InitWeights = pr.GetValue(init),
                DType = pr.GetValue(dtype) == "bf16" ? DType.BF16 : DType.F32,
                Steps = pr.GetValue(steps) ?? d.Steps, BatchSize = pr.GetValue(batch), Accumulate = pr.GetValue(accum),
                Lr = pr.GetValue(lr), Warmup = pr.GetValue(warmup), ClipNorm = pr.GetValue(clip), Seed = pr.GetValue(seed),
                Workers = pr.GetValue(workers), CheckpointEvery = pr.GetValue(every), KeepLast = pr.GetValue(keep),
                TextDropout = pr.GetValue(dropout), DropPath = pr.GetValue(dropPath), InitStd = pr.GetValue(initStd),
                Objectives = new CoarseObjectiveOptions
                {
                    Mlm = objs.Contains("mlm"), Itc = objs.Contains("itc"), Itm = objs.Contains("itm"),
                    ItcVariant = pr.GetValue(itc) == "in-batch" ? ItcVariant.InBatch : ItcVariant.Official,
                    SharedLower = pr.GetValue(shared),
                },
            };
            options.Validate();
            return Execute(() => CoarseTrainer.Create(outDir, options, Open(dev, options.DType), Console.Out.WriteLine));
        }));
        return cmd;
    }

    static DType ReadDType(string run)
    {
        var path = Path.Combine(run, CoarseTrainer.OptionsFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"{run} is not a run folder: {CoarseTrainer.OptionsFile} is missing", path);
        return CoarseTrainOptions.FromJson(File.ReadAllText(path), path).DType;
    }

    static Backends.IBackend Open(string device, DType dtype) => Devices.OpenBackend(device, dtype).Backend;

    static int Execute(Func<CoarseTrainer> make)
    {
        using var trainer = make();
        var outcome = TrainProgress.Run(trainer);
        Console.WriteLine(outcome.Cancelled
            ? $"stopped at step {outcome.Step}; checkpoint {outcome.LastCheckpoint}. Continue with: fiber train coarse --resume {trainer.RunDir}"
            : $"done: {outcome.Step} steps, {outcome.SamplesPerSecond:F1} samples/s; checkpoint {outcome.LastCheckpoint}; metrics {trainer.MetricsPath}");
        if (trainer.Stats.SkippedImages + trainer.Stats.BadManifestLines > 0) Console.WriteLine($"data: {trainer.Stats}");
        return ExitCodes.Ok;
    }
}

/// <summary>--config: a preset name or a config.json path.</summary>
public static class ConfigArg
{
    public static FiberConfig Load(string arg) =>
        System.IO.File.Exists(arg) ? File(arg)
        : arg.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? throw new FileNotFoundException($"{arg}: no such config file", arg)
        : FiberConfig.Preset(arg);

    public static FiberConfig File(string path)
    {
        try { return FiberConfig.FromJson(System.IO.File.ReadAllText(path)); }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidDataException or ArgumentException or NotSupportedException)
        { throw new IO.WeightFormatException($"{path}: not a valid FIBER config: {e.Message}", e); }
    }
}
