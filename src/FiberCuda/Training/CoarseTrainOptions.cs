using System.Text.Json;
using System.Text.Json.Serialization;
using FiberCuda.Models;
using FiberCuda.Tensors;

namespace FiberCuda.Training;

/// <summary>
/// Everything that defines a stage-1 run. Defaults are the official recipe (fiber-coarse.md §4.3) except the step
/// count and batch, which are the user's. Saved as <c>RUN/train.json</c>, so <c>--resume RUN</c> needs nothing else.
/// </summary>
public sealed record CoarseTrainOptions
{
    public FiberConfig Config { get; init; } = FiberConfig.CoarseB();
    /// <summary>Dataset specification (<see cref="Data.CaptionDatasets.Open"/>).</summary>
    public string Data { get; init; } = "";
    public string? ImageRoot { get; init; }
    /// <summary>Folder with RoBERTa's vocab.json + merges.txt; null: the GPT-2 fallback tokenizer.</summary>
    public string? TokenizerDir { get; init; }
    /// <summary>Engine safetensors to start from (backbone and any heads in it); null: fresh initialisation.</summary>
    public string? InitWeights { get; init; }
    /// <summary>Std of the fresh initialisation (0.02 official; larger helps tiny models trained from scratch, see <see cref="FiberInit"/>).</summary>
    public double InitStd { get; init; } = 0.02;

    public DType DType { get; init; } = DType.F32;
    public int BatchSize { get; init; } = 64;
    public int Accumulate { get; init; } = 1;
    /// <summary>Optimizer steps (each of <see cref="Accumulate"/> micro-batches).</summary>
    public long Steps { get; init; } = 100_000;
    /// <summary>Warm-up: a fraction of <see cref="Steps"/> when in (0,1), else a step count.</summary>
    public double Warmup { get; init; } = 0.1;
    public float Lr { get; init; } = 1e-5f;
    public float CrossModalLrMult { get; init; } = 5f;
    public float HeadLrMult { get; init; } = 5f;
    public float WeightDecay { get; init; } = 0.01f;
    public float Beta2 { get; init; } = 0.98f;
    /// <summary>Global gradient-norm clip; null: none (the official recipe does not clip).</summary>
    public double? ClipNorm { get; init; }
    public float TextDropout { get; init; } = 0.1f;
    public float DropPath { get; init; } = 0.1f;
    public CoarseObjectiveOptions Objectives { get; init; } = new();

    public ulong Seed { get; init; }
    public int Workers { get; init; } = Math.Max(1, Environment.ProcessorCount - 1);
    public int CheckpointEvery { get; init; } = 1000;
    public int KeepLast { get; init; } = 3;
    /// <summary>Consecutive optimizer steps with a non-finite loss or gradient after which the run stops.</summary>
    public int MaxBadSteps { get; init; } = 5;

    public static readonly JsonSerializerOptions Json = new(FiberConfig.JsonOptions) { WriteIndented = true };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public static CoarseTrainOptions FromJson(string json, string what = "train.json")
    {
        var o = JsonSerializer.Deserialize<CoarseTrainOptions>(json, Json) ?? throw new InvalidDataException($"{what}: empty");
        o.Validate();
        return o;
    }

    public void Validate()
    {
        void Need(bool ok, string what) { if (!ok) throw new ArgumentException($"training options: {what}"); }
        Config.Validate();
        Need(Config.Stage == FiberStage.Coarse, $"{Config.Name} is not a coarse config");
        Need(!string.IsNullOrWhiteSpace(Data), "no data");
        Need(BatchSize >= 2, "batch size must be at least 2 (ITM needs an in-batch negative)");
        Need(BatchSize <= Config.QueueSize, $"batch size {BatchSize} exceeds the ITC queue ({Config.QueueSize})");
        Need(Accumulate >= 1 && Steps >= 1 && Lr > 0 && Workers >= 1 && CheckpointEvery >= 1 && KeepLast >= 1 && MaxBadSteps >= 1, "non-positive count or rate");
        Need(DType is DType.F32 or DType.BF16, "dtype must be f32 or bf16");
        Need(Objectives.Mlm || Objectives.Itc || Objectives.Itm, "no objective enabled");
    }
}
