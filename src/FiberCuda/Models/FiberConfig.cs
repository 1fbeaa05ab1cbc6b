using System.Text.Json;
using System.Text.Json.Serialization;

namespace FiberCuda.Models;

/// <summary>Which official code base a configuration (and its parameter names) follows.</summary>
public enum FiberStage { Coarse, Fine }

/// <summary>
/// The shape-determining hyper-parameters of a FIBER model. Presets follow the spec:
/// coarse FIBER-B = fiber-coarse.md §1.1 (Swin-B), §2 (roberta-base), §3.1 (6 fused blocks/layers), §4.1/§5 (heads);
/// fine FIBER-B = fiber-fine.md §1 and §3 (v2 / v3 fusion), §4–§6 (FPN, DyHead, grounding head).
/// Serialised as the `config.json` of a converted model and inside the safetensors `__metadata__`.
/// </summary>
public sealed record FiberConfig
{
    public string Name { get; init; } = "custom";
    public FiberStage Stage { get; init; } = FiberStage.Coarse;

    // ---- image tower (Swin) ----
    /// <summary>Coarse: the square input side S; the window is S/32 (fiber-coarse.md §1.1, "set from the input size").
    /// Fine: the nominal short side only (inputs vary; the map is padded to the window).</summary>
    public int ImageSize { get; init; } = 384;
    public int PatchSize { get; init; } = 4;
    public int EmbedDim { get; init; } = 128;
    public int[] Depths { get; init; } = [2, 2, 18, 2];
    public int[] NumHeads { get; init; } = [4, 8, 16, 32];
    public int WindowSize { get; init; } = 12;
    public int MlpRatio { get; init; } = 4;

    // ---- text tower (RoBERTa) ----
    public int VocabSize { get; init; } = 50265;
    public int TextHidden { get; init; } = 768;
    public int TextLayers { get; init; } = 12;
    public int TextHeads { get; init; } = 12;
    public int TextIntermediate { get; init; } = 3072;
    public int MaxPositionEmbeddings { get; init; } = 514;
    public int TypeVocabSize { get; init; } = 1;
    public int PadTokenId { get; init; } = 1;

    // ---- fusion ----
    /// <summary>Number of fused Swin blocks (top blocks of stages 3–4) = number of fused text layers (top layers).</summary>
    public int NumFuse { get; init; } = 6;
    /// <summary>`norm_i2t_i` before the i2t query: coarse and fine v3 yes, fine v2 no (fiber-fine.md §3.2).</summary>
    public bool FusionQueryNorm { get; init; } = true;

    // ---- coarse heads (fiber-coarse.md §4.1, §5, §6.2) ----
    /// <summary>Subset of "itc", "mlm", "itm", "vqa", "nlvr2", "caption".</summary>
    public string[] Heads { get; init; } = ["itc", "mlm", "itm"];
    /// <summary>Width of the cross-modal space (`hidden_size` in config.py), 768.</summary>
    public int CrossHidden { get; init; } = 768;
    public int MaxTextLen { get; init; } = 40;
    public int QueueSize { get; init; } = 4096;
    public int VqaLabels { get; init; } = 3129;

    // ---- fine detection head (fiber-fine.md §4–§6) ----
    public int FpnChannels { get; init; } = 256;
    public int DyHeadBlocks { get; init; } = 6;
    public int NumClasses { get; init; } = 80;
    public int DotProductDim { get; init; } = 256;

    // ---------------- derived ----------------
    [JsonIgnore] public int NumStages => Depths.Length;
    public int StageDim(int s) => EmbedDim << s;
    [JsonIgnore] public int FinalDim => StageDim(NumStages - 1);
    /// <summary>Token-grid side of stage s (coarse: square input).</summary>
    public int StageGrid(int s) => ImageSize / PatchSize >> s;

    /// <summary>Window actually used by stage s. The coarse Swin clamps it to the grid (swin_transformer.py,
    /// `if min(input_resolution) <= window_size: window = min(...)`); the fine Swin pads instead.</summary>
    public int StageWindow(int s) => Stage == FiberStage.Coarse ? Math.Min(WindowSize, StageGrid(s)) : WindowSize;

    /// <summary>Shift of block b of stage s: window/2 on odd blocks, none where the window covers the grid (coarse).</summary>
    public int Shift(int s, int b)
    {
        if (b % 2 == 0) return 0;
        if (Stage == FiberStage.Coarse && StageGrid(s) <= WindowSize) return 0;
        return StageWindow(s) / 2;
    }

    /// <summary>
    /// Whether Swin block (s, b) is fused. The official rule is hard-wired to depths (2,2,18,2) (fiber-coarse.md §10:
    /// "stage-3 index ≥ 20−N, all of stage 4"); generalised as "the top NumFuse blocks of the last two stages",
    /// which is that rule for FIBER-B.
    /// </summary>
    public bool IsFusedBlock(int s, int b) => FusedStep(s, b) >= 0;

    /// <summary>Fusion step k (0-based) of Swin block (s,b), or −1. Steps are counted over the last two stages.</summary>
    public int FusedStep(int s, int b)
    {
        int last = NumStages - 1, prev = NumStages - 2;
        int flat;
        if (s == last) flat = Depths[prev] + b;
        else if (s == prev) flat = b;
        else return -1;
        int first = Depths[prev] + Depths[last] - NumFuse;
        return flat >= first ? flat - first : -1;
    }

    /// <summary>Whether text layer l is fused: the top NumFuse layers (roberta.py: `layer_index >= 12 - NUM_FUSE_BLOCK`).</summary>
    public bool IsFusedTextLayer(int l) => l >= TextLayers - NumFuse;

    /// <summary>
    /// Width of the image states text layer l cross-attends to: the width of the Swin stage of its partner block.
    /// roberta.py hard-codes `DIM_IMG/2` for layers &lt; 10 and `DIM_IMG` for 10, 11 (fiber-coarse.md §2);
    /// for FIBER-B that is exactly "the partner's stage width".
    /// </summary>
    public int TextCrossKvDim(int l)
    {
        int k = l - (TextLayers - NumFuse);
        if (k < 0) throw new ArgumentOutOfRangeException(nameof(l), "layer is not fused");
        int last = NumStages - 1, prev = NumStages - 2;
        int first = Depths[prev] + Depths[last] - NumFuse;
        return first + k < Depths[prev] ? StageDim(prev) : StageDim(last);
    }

    public bool HasHead(string h) => Array.IndexOf(Heads, h) >= 0;

    public void Validate()
    {
        void Need(bool ok, string what) { if (!ok) throw new ArgumentException($"config {Name}: {what}"); }
        Need(Depths.Length == NumHeads.Length && Depths.Length >= 2, "depths and num_heads must have the same length ≥ 2");
        for (int s = 0; s < NumStages; s++) Need(StageDim(s) % NumHeads[s] == 0, $"stage {s} width {StageDim(s)} not divisible by {NumHeads[s]} heads");
        Need(TextHidden % TextHeads == 0, "text hidden not divisible by heads");
        Need(NumFuse >= 1 && NumFuse <= Depths[^1] + Depths[^2] && NumFuse <= TextLayers, "num_fuse out of range");
        Need(NumFuse > Depths[^1], "num_fuse must reach into the second-to-last stage (the text side pairs with both)");
        Need(WindowSize >= 1, "window");
        if (Stage == FiberStage.Coarse)
        {
            Need(ImageSize % (PatchSize << (NumStages - 1)) == 0, "image size must be a multiple of patch·2^(stages−1)");
            Need(StageGrid(NumStages - 1) > 0, "image too small");
            for (int s = 0; s < NumStages; s++) Need(StageGrid(s) % StageWindow(s) == 0, $"stage {s} grid {StageGrid(s)} not a multiple of window {StageWindow(s)}");
        }
        foreach (var h in Heads) Need(h is "itc" or "mlm" or "itm" or "vqa" or "nlvr2" or "caption", $"unknown head '{h}'");
    }

    // ---------------- presets ----------------

    /// <summary>Coarse FIBER-B at S (384 for pre-training, ITM, NLVR2; 576 for VQA, ITC retrieval, captioning):
    /// window S/32 (fiber-coarse.md §1.1–1.2).</summary>
    public static FiberConfig CoarseB(int imageSize = 384, params string[] heads) => new()
    {
        Name = $"fiber-b-coarse-{imageSize}", Stage = FiberStage.Coarse, ImageSize = imageSize, WindowSize = imageSize / 32,
        Heads = heads.Length == 0 ? ["itc", "mlm", "itm"] : heads,
    };

    /// <summary>Fine FIBER-B (fiber-fine.md §1, §3): window 12 fixed, v2 = no `norm_i2t_i`, v3 = with it.</summary>
    public static FiberConfig FineB(int version = 2) => new()
    {
        Name = $"fiber-b-fine-v{version}", Stage = FiberStage.Fine, ImageSize = 800, WindowSize = 12,
        FusionQueryNorm = version switch { 2 => false, 3 => true, _ => throw new ArgumentOutOfRangeException(nameof(version), "fine fusion versions are 2 and 3") },
        Heads = [], MaxTextLen = 256,
    };

    /// <summary>
    /// A tiny model of the same structure for tests and fixtures: shifted windows in stages 1–3, three patch mergings,
    /// fusion on the top 3 Swin blocks (stage 3 block 1 + stage 4 blocks 0, 1) and the top 3 of 4 text layers, so the
    /// text side pairs with two different image widths (like layers 6–9 vs 10–11 of FIBER-B).
    /// </summary>
    /// <param name="window">Fine only: the fixed window (default 2; 3 makes every stage of a 64×96 input pad partial windows).</param>
    public static FiberConfig Tiny(FiberStage stage = FiberStage.Coarse, int imageSize = 64, bool queryNorm = true, int? window = null) => new()
    {
        Name = stage == FiberStage.Coarse ? $"fiber-tiny-coarse-{imageSize}" : (queryNorm ? "fiber-tiny-fine-v3" : "fiber-tiny-fine-v2") + (window is { } w && w != 2 ? $"-w{w}" : ""),
        Stage = stage, ImageSize = imageSize, PatchSize = 4, EmbedDim = 6, Depths = [2, 2, 2, 2], NumHeads = [1, 2, 2, 4],
        WindowSize = stage == FiberStage.Coarse ? (window is null ? imageSize / 32 : throw new ArgumentException("the coarse window is image_size/32"))
                                                : window ?? 2, MlpRatio = 2,
        VocabSize = 40, TextHidden = 16, TextLayers = 4, TextHeads = 2, TextIntermediate = 32, MaxPositionEmbeddings = 20,
        NumFuse = 3, FusionQueryNorm = stage == FiberStage.Coarse || queryNorm,
        Heads = stage == FiberStage.Coarse ? ["itc", "mlm", "itm", "vqa", "nlvr2", "caption"] : [],
        CrossHidden = 16, MaxTextLen = 8, QueueSize = 2, VqaLabels = 5,
        FpnChannels = 8, DyHeadBlocks = 2, NumClasses = 3, DotProductDim = 8,
    };

    /// <summary>
    /// The demo model: the tiny structure (shifted windows, three mergings, fusion on the top 3 blocks of both towers)
    /// wide enough to learn the synthetic shapes data in minutes on a CPU, with the full 50265-token vocabulary so the
    /// RoBERTa (or GPT-2 fallback) tokenizer fits, and only the stage-1 heads.
    /// </summary>
    public static FiberConfig Demo(int imageSize = 64) => new()
    {
        Name = $"fiber-demo-coarse-{imageSize}", Stage = FiberStage.Coarse, ImageSize = imageSize, PatchSize = 4, EmbedDim = 16,
        Depths = [2, 2, 2, 2], NumHeads = [1, 2, 4, 8], WindowSize = imageSize / 32, MlpRatio = 2,
        TextHidden = 64, TextLayers = 4, TextHeads = 2, TextIntermediate = 128, MaxPositionEmbeddings = 42,
        NumFuse = 3, Heads = ["itc", "mlm", "itm"], CrossHidden = 64, MaxTextLen = 24, QueueSize = 256,
    };

    public static FiberConfig Preset(string name) => name switch
    {
        "fiber-b-coarse-384" => CoarseB(384),
        "fiber-b-coarse-576" => CoarseB(576),
        "fiber-b-fine-v2" => FineB(2),
        "fiber-b-fine-v3" => FineB(3),
        "fiber-demo-coarse-64" => Demo(),
        "fiber-tiny-coarse-64" => Tiny(),
        "fiber-tiny-coarse-96" => Tiny(FiberStage.Coarse, 96),
        "fiber-tiny-fine-v2" => Tiny(FiberStage.Fine, queryNorm: false),
        "fiber-tiny-fine-v3" => Tiny(FiberStage.Fine, queryNorm: true),
        _ => throw new ArgumentException($"unknown config preset '{name}' (known: {string.Join(", ", PresetNames)})"),
    };

    public static readonly string[] PresetNames =
        ["fiber-b-coarse-384", "fiber-b-coarse-576", "fiber-b-fine-v2", "fiber-b-fine-v3",
         "fiber-demo-coarse-64", "fiber-tiny-coarse-64", "fiber-tiny-coarse-96", "fiber-tiny-fine-v2", "fiber-tiny-fine-v3"];

    // ---------------- JSON ----------------
    public static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    public string ToJson(bool indented = true) =>
        JsonSerializer.Serialize(this, indented ? JsonOptions : new JsonSerializerOptions(JsonOptions) { WriteIndented = false });

    public static FiberConfig FromJson(string json)
    {
        var c = JsonSerializer.Deserialize<FiberConfig>(json, JsonOptions) ?? throw new InvalidDataException("empty config");
        c.Validate();
        return c;
    }

    public bool Equals(FiberConfig? o) => o is not null && ToJson(false) == o.ToJson(false);
    public override int GetHashCode() => ToJson(false).GetHashCode();
}
