using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Data;
using FiberCuda.IO;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Optim;
using FiberCuda.Tensors;

namespace FiberCuda.Training;

/// <summary>What the trainer reports after each optimizer step (for progress displays).</summary>
public sealed record StepReport(long Step, long TotalSteps, int Epoch, double Loss, double Mlm, double Itc, double Itm,
    double Temperature, double Lr, double GradNorm, double SamplesPerSecond, TimeSpan Elapsed, TimeSpan Eta, bool Skipped);

/// <summary>How a <see cref="CoarseTrainer.Run"/> ended.</summary>
public sealed record TrainOutcome(long Step, bool Completed, bool Cancelled, string? LastCheckpoint, double SamplesPerSecond, long BadSteps);

/// <summary>Too many consecutive steps had a non-finite loss or gradient; the last good checkpoint is intact.</summary>
public sealed class TrainingDivergedException(string message) : Exception(message);

/// <summary>
/// Stage-1 pre-training (fiber-coarse.md §4): the model, heads, objectives, optimizer and schedule of one run folder,
/// with atomic checkpoints that hold everything a bit-exact continuation needs (parameters, AdamW moments, queues,
/// data position), JSONL metrics and a loss plot. On the CPU a resumed run reproduces the uninterrupted run's losses
/// bit for bit: data order, MLM masks, dropout and hard negatives are all functions of (seed, step).
/// </summary>
public sealed class CoarseTrainer : IDisposable
{
    public const string OptionsFile = "train.json";
    public const string MetricsFile = "metrics.jsonl";
    public const string PlotFile = "loss.png";

    readonly Action<string> _log;
    readonly float[] _baseLrs;
    int _epoch, _batchInEpoch;
    long _micro, _badTotal, _samples;

    public CoarseTrainer(string runDir, CoarseTrainOptions options, IBackend backend, Action<string>? log = null)
    {
        options.Validate();
        RunDir = Path.GetFullPath(runDir);
        Options = options;
        _log = log ?? (_ => { });
        var c = options.Config;
        Ctx = new NnContext(backend, options.DType, options.Seed);
        Model = new FiberCoarseModel(Ctx, c, options.TextDropout, options.DropPath);
        Heads = new CoarseHeads(Ctx, c);
        FiberInit.Apply(Model, c, (int)options.Seed, options.InitStd);
        FiberInit.Apply(Heads, c, (int)options.Seed + 1, options.InitStd);
        Heads.TieRankOutput();
        if (options.InitWeights is not null) LoadInitWeights(options.InitWeights);
        Parameters = Model.NamedParameters().Concat(Heads.NamedParameters()).ToList();
        Optimizer = new AdamW(FiberParamGroups.Build(Parameters, options.Lr, options.WeightDecay, options.CrossModalLrMult, options.HeadLrMult),
                              0.9f, options.Beta2, 1e-8f);
        _baseLrs = LrSchedule.BaseLrsOf(Optimizer);
        Schedule = new LrSchedule(options.Steps, options.Warmup);
        Objectives = new CoarseObjectives(Model, Heads, options.Objectives, options.Seed);
        Stats = new DataStats();
        Loader = CaptionDatasets.OpenLoader(options.Data, new LoaderOptions
        {
            BatchSize = options.BatchSize, ImageSize = c.ImageSize, MaxTextLength = c.MaxTextLen, Seed = options.Seed,
            Workers = options.Workers, DropLast = true, Mlm = options.Objectives.Mlm,
        }, options.TokenizerDir, Stats, options.ImageRoot);
        if (Loader.Tokenizer.VocabSize > c.VocabSize)
            throw new ArgumentException($"tokenizer {Loader.Tokenizer.Name} has {Loader.Tokenizer.VocabSize} ids; {c.Name} embeds {c.VocabSize}");
        if (Loader.BatchesPerEpoch == 0)
            throw new ArgumentException($"{options.Data}: {Loader.PairCount} image-text pairs, fewer than one batch of {options.BatchSize}");
        Store = new CheckpointStore(RunDir, options.KeepLast);
    }

    public string RunDir { get; }
    public CoarseTrainOptions Options { get; }
    public NnContext Ctx { get; }
    public FiberCoarseModel Model { get; }
    public CoarseHeads Heads { get; }
    public IReadOnlyList<(string Name, Tensor Tensor)> Parameters { get; }
    public AdamW Optimizer { get; }
    public LrSchedule Schedule { get; }
    public CoarseObjectives Objectives { get; }
    public CaptionLoader Loader { get; }
    public DataStats Stats { get; }
    public CheckpointStore Store { get; }
    /// <summary>Optimizer steps taken.</summary>
    public long Step { get; private set; }
    public string MetricsPath => Path.Combine(RunDir, MetricsFile);

    /// <summary>A new run in <paramref name="runDir"/> (which must not hold a checkpoint yet).</summary>
    public static CoarseTrainer Create(string runDir, CoarseTrainOptions options, IBackend backend, Action<string>? log = null)
    {
        Directory.CreateDirectory(runDir);
        var existing = new CheckpointStore(runDir).List();
        if (existing.Count > 0) throw new IOException($"{runDir} already holds checkpoints ({Path.GetFileName(existing[^1])}); use --resume to continue it, or another --out");
        AtomicFile.WriteAllText(Path.Combine(runDir, OptionsFile), options.ToJson());
        return new CoarseTrainer(runDir, options, backend, log);
    }

    /// <summary>Reopens <paramref name="runDir"/> from its options and newest readable checkpoint.</summary>
    public static CoarseTrainer Resume(string runDir, IBackend backend, Action<string>? log = null, Func<CoarseTrainOptions, CoarseTrainOptions>? amend = null)
    {
        var path = Path.Combine(runDir, OptionsFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"{runDir} is not a run folder: {OptionsFile} is missing", path);
        var o = CoarseTrainOptions.FromJson(File.ReadAllText(path), path);
        if (amend is not null) o = amend(o);
        var t = new CoarseTrainer(runDir, o, backend, log);
        t.RestoreLatest();
        return t;
    }

    /// <summary>
    /// The model and heads of a run folder at its newest readable checkpoint (or of one checkpoint file inside it), for
    /// evaluation: no optimizer, no data. Returns the checkpoint's step.
    /// </summary>
    public static (FiberCoarseModel Model, CoarseHeads Heads, long Step) LoadForEval(string runOrCheckpoint, IBackend backend, DType? dtype = null)
    {
        bool file = File.Exists(runOrCheckpoint);
        string runDir = file ? Path.GetDirectoryName(Path.GetDirectoryName(Path.GetFullPath(runOrCheckpoint)))! : runOrCheckpoint;
        var optPath = Path.Combine(runDir, OptionsFile);
        if (!File.Exists(optPath)) throw new FileNotFoundException($"{runDir} is not a run folder: {OptionsFile} is missing", optPath);
        var o = CoarseTrainOptions.FromJson(File.ReadAllText(optPath), optPath);
        var ctx = new NnContext(backend, dtype ?? o.DType, o.Seed);
        var model = new FiberCoarseModel(ctx, o.Config, o.TextDropout, o.DropPath);
        var heads = new CoarseHeads(ctx, o.Config);
        var skipped = new List<string>();
        using var ck = file ? CheckpointStore.Read(runOrCheckpoint) : new CheckpointStore(runDir).OpenLatestReadable(out skipped)
            ?? throw new FileNotFoundException($"{runDir} holds no readable checkpoint{(skipped.Count > 0 ? ": " + string.Join("; ", skipped) : "")}");
        var ps = model.NamedParameters().Concat(heads.NamedParameters()).Select(p => (p.Name, p.Tensor)).ToList();
        ck.Restore(ps, null, null);
        return (model, heads, ck.Step);
    }

    void LoadInitWeights(string path)
    {
        using var src = WeightFiles.Open(path);
        var r1 = Model.LoadBackbone(src, strict: false);
        var r2 = Heads.LoadFrom(src, strict: false, CoarseHeads.IsHeadKey);
        _log($"initialised from {path}: backbone missing {r1.Missing.Count}, heads missing {r2.Missing.Count}");
    }

    // ------------------------------------------------------------------ checkpoints

    sealed record TrainerState(long Step, int Epoch, int BatchInEpoch, long Micro, long Samples, long BadSteps, int QueuePtr, long QueueTotal, string Config);

    IReadOnlyList<(string, Tensor)> CheckpointParams => Parameters.Select(p => (p.Name, p.Tensor)).ToList();

    /// <summary>Writes a checkpoint of the current state (atomically); returns its path.</summary>
    public string SaveCheckpoint()
    {
        var q = Objectives.Queues;
        var st = new TrainerState(Step, _epoch, _batchInEpoch, _micro, _samples, _badTotal, q?.Ptr ?? 0, q?.Total ?? 0, Options.Config.ToJson(false));
        using var host = new TensorScope();
        var extra = QueueState(create: false);
        var path = Store.Save(Step, CheckpointParams, Optimizer, extra, JsonSerializer.Serialize(st));
        WritePlot();
        return path;
    }

    /// <summary>
    /// The queue state as tensors: the ITC feature queues themselves, and CPU tensors over copies of the host input
    /// queues (<paramref name="create"/>: zero tensors to restore into).
    /// </summary>
    Dictionary<string, Tensor> QueueState(bool create)
    {
        var d = new Dictionary<string, Tensor>();
        if (Objectives.Queues is not { } q) return d;
        d["itc.image_queue"] = q.Image;
        d["itc.text_queue"] = q.Text;
        var inp = Objectives.Inputs!;
        var cpu = Backend.Cpu;
        if (create)
        {
            d["itm.input_pixels"] = cpu.Empty([inp.Size, 3, inp.ImageSize, inp.ImageSize], DType.F32);
            d["itm.input_ids"] = cpu.Empty([inp.Size, inp.TextLength], DType.I64);
            d["itm.input_mask"] = cpu.Empty([inp.Size, inp.TextLength], DType.I64);
        }
        else
        {
            d["itm.input_pixels"] = Host(inp.Pixels, [inp.Size, 3, inp.ImageSize, inp.ImageSize], DType.F32);
            d["itm.input_ids"] = Host(inp.Ids, [inp.Size, inp.TextLength], DType.I64);
            d["itm.input_mask"] = Host(inp.Mask, [inp.Size, inp.TextLength], DType.I64);
        }
        return d;
    }

    static Tensor Host<T>(T[] data, int[] shape, DType dt) where T : unmanaged
    {
        var t = Backend.Cpu.Empty(shape, dt);
        Backend.Cpu.Upload(t, MemoryMarshal.AsBytes(data.AsSpan()));
        return t;
    }

    /// <summary>Restores the newest readable checkpoint of the run (false when there is none: a fresh start).</summary>
    public bool RestoreLatest()
    {
        using var ck = Store.OpenLatestReadable(out var skipped);
        foreach (var s in skipped) _log($"warning: skipped unreadable checkpoint: {s}");
        if (ck is null) return false;
        var st = JsonSerializer.Deserialize<TrainerState>(ck.TrainerJson) ?? throw new InvalidDataException($"{ck.Path}: no trainer state");
        var saved = FiberConfig.FromJson(st.Config);
        if (!saved.Equals(Options.Config)) throw new InvalidDataException($"{ck.Path} was written for config {saved.Name}, not {Options.Config.Name}");
        using var host = new TensorScope();
        var extra = QueueState(create: true);
        ck.Restore(CheckpointParams, Optimizer, extra);
        if (Objectives.Queues is { } q)
        {
            q.Ptr = st.QueuePtr; q.Total = st.QueueTotal;
            var inp = Objectives.Inputs!;
            extra["itm.input_pixels"].ToArray<float>().CopyTo(inp.Pixels, 0);
            extra["itm.input_ids"].ToArray<long>().CopyTo(inp.Ids, 0);
            extra["itm.input_mask"].ToArray<long>().CopyTo(inp.Mask, 0);
        }
        Step = st.Step; _epoch = st.Epoch; _batchInEpoch = st.BatchInEpoch; _micro = st.Micro; _samples = st.Samples; _badTotal = st.BadSteps;
        _log($"resumed {RunDir} at step {Step} (epoch {_epoch}, batch {_batchInEpoch}) from {Path.GetFileName(ck.Path)}");
        return true;
    }

    void WritePlot()
    {
        try
        {
            if (!File.Exists(MetricsPath)) return;
            var recs = MetricsLog.ReadAll(MetricsPath);
            if (recs.Count > 0) LossPlot.Write(Path.Combine(RunDir, PlotFile), recs, ["loss", "mlm", "itc", "itm"], title: $"{Options.Config.Name} stage 1");
        }
        catch (Exception e) { _log($"warning: loss plot not written: {e.Message}"); }
    }

    // ------------------------------------------------------------------ training

    IEnumerator<Batch>? _batches;

    Batch NextBatch()
    {
        while (true)
        {
            _batches ??= Loader.Epoch(_epoch, default, _batchInEpoch).GetEnumerator();
            if (_batches.MoveNext()) { _batchInEpoch++; return _batches.Current; }
            _batches.Dispose(); _batches = null;
            _epoch++; _batchInEpoch = 0;
        }
    }

    /// <summary>
    /// Trains until <see cref="CoarseTrainOptions.Steps"/> or <paramref name="stopAfter"/> more steps or cancellation
    /// (checked between steps: the step in flight finishes, then a checkpoint is written). Checkpoints every
    /// <see cref="CoarseTrainOptions.CheckpointEvery"/> steps and, unless <paramref name="finalCheckpoint"/> is false
    /// (benchmarks), at the end.
    /// </summary>
    public TrainOutcome Run(CancellationToken cancel = default, Action<StepReport>? onStep = null, long? stopAfter = null, bool finalCheckpoint = true)
    {
        var o = Options;
        long target = Math.Min(o.Steps, stopAfter is null ? long.MaxValue : Step + stopAfter.Value);
        using var metrics = MetricsLog.Open(MetricsPath, resumeFromStep: Step);
        Model.Train(); Heads.Train();
        var clock = Stopwatch.StartNew();
        long startStep = Step, startSamples = _samples;
        int consecutiveBad = 0;
        string? last = null;
        double sps = 0;
        try
        {
            while (Step < target && !cancel.IsCancellationRequested)
            {
                double lr = Schedule.Factor(Step);
                Schedule.Apply(Optimizer, _baseLrs, Step);
                double mlm = 0, itc = 0, itm = 0, temp = double.NaN;
                bool bad = false;
                int samples = 0;
                foreach (var (_, p) in Parameters) { p.Grad?.Dispose(); p.Grad = null; }
                for (int a = 0; a < o.Accumulate; a++)
                {
                    var batch = NextBatch();
                    using var scope = new TensorScope();
                    Ctx.NextStep((ulong)_micro);
                    var l = Objectives.Forward(batch, (ulong)_micro);
                    _micro++;
                    samples += batch.Size;
                    mlm += l.Mlm / o.Accumulate; itc += l.Itc / o.Accumulate; itm += l.Itm / o.Accumulate; temp = l.Temperature;
                    if (!l.Finite) { bad = true; continue; }
                    (o.Accumulate == 1 ? l.Total : F.Scale(l.Total, 1f / o.Accumulate)).Backward();
                    Objectives.Enqueue(batch, l);
                }
                var ps = Parameters.Select(p => p.Tensor).ToList();
                double gnorm = bad ? double.NaN : o.ClipNorm is { } clip ? GradClip.ClipGradNorm(ps, clip) : GradClip.GlobalNorm(ps);
                if (!double.IsFinite(gnorm)) bad = true;
                if (bad)
                {
                    consecutiveBad++; _badTotal++;
                    _log($"warning: step {Step + 1}: non-finite loss or gradient (mlm {mlm:g4}, itc {itc:g4}, itm {itm:g4}, grad norm {gnorm:g4}); step skipped ({consecutiveBad} in a row)");
                }
                else
                {
                    consecutiveBad = 0;
                    Optimizer.Step();
                }
                foreach (var (_, p) in Parameters) { p.Grad?.Dispose(); p.Grad = null; }
                Step++;
                _samples += samples;
                double secs = clock.Elapsed.TotalSeconds;
                sps = secs > 0 ? (_samples - startSamples) / secs : 0;
                var eta = TimeSpan.FromSeconds(Step > startStep ? secs / (Step - startStep) * (o.Steps - Step) : 0);
                var values = new Dictionary<string, double>
                {
                    ["epoch"] = _epoch, ["lr"] = o.Lr * lr, ["loss"] = mlm + itc + itm, ["mlm"] = mlm, ["itc"] = itc, ["itm"] = itm,
                    ["temp"] = temp, ["grad_norm"] = gnorm, ["samples_per_s"] = sps, ["skipped"] = bad ? 1 : 0,
                };
                metrics.Append(Step, values);
                onStep?.Invoke(new StepReport(Step, o.Steps, _epoch, mlm + itc + itm, mlm, itc, itm, temp, o.Lr * lr, gnorm, sps, clock.Elapsed, eta, bad));
                // No checkpoint after a bad step: the newest one stays the last good state.
                if (consecutiveBad >= o.MaxBadSteps)
                    throw new TrainingDivergedException($"{consecutiveBad} consecutive steps with a non-finite loss or gradient (last at step {Step}); " +
                        $"stopped. The last good checkpoint is {Store.List().LastOrDefault() ?? "(none)"}; lower the learning rate or enable --clip and resume.");
                if (Step % o.CheckpointEvery == 0 && Step < target && !bad) last = SaveCheckpoint();
            }
        }
        finally
        {
            _batches?.Dispose(); _batches = null;
        }
        // The step in flight has finished; a cancelled or completed run leaves a checkpoint of exactly where it stopped.
        if (finalCheckpoint && (Step > startStep || last is null)) last = SaveCheckpoint();
        bool done = Step >= o.Steps;
        return new TrainOutcome(Step, done, cancel.IsCancellationRequested && !done, last, sps, _badTotal);
    }

    public void Dispose()
    {
        _batches?.Dispose();
        Objectives.Dispose();
        Optimizer.Dispose();
    }
}
