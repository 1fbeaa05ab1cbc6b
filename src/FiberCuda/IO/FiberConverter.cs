using System.Text.RegularExpressions;
using FiberCuda.Models;

namespace FiberCuda.IO;

/// <summary>What kind of checkpoint an input is (`fiber convert --from`).</summary>
public enum SourceKind { OfficialCoarse, OfficialFine, HfRoberta, Swin, Engine }

public sealed class ConvertOptions
{
    public required IReadOnlyList<string> Inputs { get; init; }
    /// <summary>"auto", one kind for every input, or one per input separated by commas.</summary>
    public string From { get; init; } = "auto";
    /// <summary>Target square input side of a coarse model; relative-position tables are resized to its window.</summary>
    public int? ImageSize { get; init; }
    /// <summary>A preset name or a config.json path; overrides inference from the checkpoint.</summary>
    public string? Config { get; init; }
    /// <summary>Composed init only: fused blocks/layers and heads to create.</summary>
    public int Fuse { get; init; } = 6;
    public string[] Heads { get; init; } = ["itc", "mlm", "itm"];
    public int Seed { get; init; } = 0;
    public bool AllowMissing { get; init; }
    public bool AllowUnexpected { get; init; }
}

public sealed class ConvertResult
{
    public required FiberConfig Config { get; init; }
    public List<KeyValuePair<string, HostTensor>> Tensors { get; } = [];
    public List<string> Dropped { get; } = [];
    public List<string> Missing { get; } = [];
    public List<string> Unexpected { get; } = [];
    public List<string> Resized { get; } = [];
    public List<string> Initialised { get; } = [];
    public List<string> Sources { get; } = [];
    public long Parameters => Tensors.Sum(t => t.Value.Numel);
}

/// <summary>Raised when the inputs do not fit the configuration (shapes, missing or unexpected names).</summary>
public sealed class ConvertMismatchException(string message) : WeightFormatException(message);

/// <summary>
/// Converts official FIBER checkpoints (or roberta-base + Swin-B towers) to the engine format. Engine names are
/// the official keys (see <see cref="FiberParameters"/>), so official inputs map by identity; HF RoBERTa keys get
/// `text_transformer.` and Swin release keys `vit_model.`. Queues and recomputable buffers are dropped
/// (fiber-coarse.md §6.2), tables resized when the image size changes (§1.5), and every shape is checked
/// against the catalog of the resulting config.
/// </summary>
public static class FiberConverter
{
    static readonly string[] Queues = ["image_queue", "text_queue", "image_input_queue", "text_input_queue", "text_input_mask_queue", "queue_ptr", "queue_total"];

    public static bool IsRecomputable(string n) =>
        n.EndsWith("relative_position_index", StringComparison.Ordinal) || n.EndsWith("attn_mask", StringComparison.Ordinal)
        || n.EndsWith("position_ids", StringComparison.Ordinal) || n.StartsWith("rpn.anchor_generator.", StringComparison.Ordinal);

    public static SourceKind ParseKind(string s) => s switch
    {
        "official-coarse" => SourceKind.OfficialCoarse,
        "official-fine" => SourceKind.OfficialFine,
        "hf-roberta" => SourceKind.HfRoberta,
        "swin" => SourceKind.Swin,
        _ => throw new ArgumentException($"unknown --from '{s}' (expected official-coarse, official-fine, hf-roberta, swin or auto)"),
    };

    public static SourceKind Detect(IWeightSource s)
    {
        var names = s.Tensors.Select(t => t.Name).ToList();
        if (s is SafeTensorsFile st && st.Metadata.TryGetValue("format", out var f) && f == EngineWeights.FormatName) return SourceKind.Engine;
        if (names.Any(n => n.StartsWith("vit_model.", StringComparison.Ordinal))) return SourceKind.OfficialCoarse;
        if (names.Any(n => n.StartsWith("fusion_backbone.", StringComparison.Ordinal))) return SourceKind.OfficialFine;
        if (names.Any(n => n.StartsWith("roberta.", StringComparison.Ordinal)) || names.Contains("embeddings.word_embeddings.weight")) return SourceKind.HfRoberta;
        if (names.Contains("patch_embed.proj.weight") && names.Any(n => n.StartsWith("layers.0.blocks.0.", StringComparison.Ordinal))) return SourceKind.Swin;
        throw new WeightFormatException($"{s.Path}: cannot tell what this checkpoint is (no vit_model., fusion_backbone., roberta. or Swin keys); pass --from");
    }

    // ------------------------------------------------------------------ config inference

    static long[] Shape(Dictionary<string, TensorInfo> m, string n) =>
        m.TryGetValue(n, out var t) ? t.Shape : throw new ConvertMismatchException($"cannot infer the model: '{n}' is missing");

    static int CountIndexed(IEnumerable<string> names, string prefix)
    {
        var rx = new Regex("^" + Regex.Escape(prefix) + @"(\d+)\.");
        int max = -1;
        foreach (var n in names) { var m = rx.Match(n); if (m.Success) max = Math.Max(max, int.Parse(m.Groups[1].Value)); }
        return max + 1;
    }

    static int TableSide(long rows)
    {
        int side = (int)Math.Round(Math.Sqrt(rows));
        if ((long)side * side != rows || side % 2 == 0) throw new ConvertMismatchException($"relative_position_bias_table with {rows} rows is not (2w−1)²");
        return side;
    }

    /// <summary>Swin tower hyper-parameters from names/shapes under <paramref name="p"/>.</summary>
    static (int Embed, int Patch, int[] Depths, int[] Heads, int Window, int Mlp) InferSwin(Dictionary<string, TensorInfo> m, string p)
    {
        var pe = Shape(m, p + "patch_embed.proj.weight");
        int stages = CountIndexed(m.Keys, p + "layers.");
        if (stages < 2) throw new ConvertMismatchException("cannot infer the model: fewer than two Swin stages");
        var depths = new int[stages]; var heads = new int[stages];
        for (int s = 0; s < stages; s++)
        {
            depths[s] = CountIndexed(m.Keys, $"{p}layers.{s}.blocks.");
            heads[s] = (int)Shape(m, $"{p}layers.{s}.blocks.0.attn.relative_position_bias_table")[1];
        }
        int side = TableSide(Shape(m, p + "layers.0.blocks.0.attn.relative_position_bias_table")[0]);
        int mlp = (int)(Shape(m, p + "layers.0.blocks.0.mlp.fc1.weight")[0] / pe[0]);
        return ((int)pe[0], (int)pe[2], depths, heads, (side + 1) / 2, mlp);
    }

    static (int Vocab, int Hidden, int Layers, int Inter, int MaxPos, int TypeVocab) InferText(Dictionary<string, TensorInfo> m, string p)
    {
        var we = Shape(m, p + "embeddings.word_embeddings.weight");
        return ((int)we[0], (int)we[1], CountIndexed(m.Keys, p + "encoder.layer."),
            (int)Shape(m, p + "encoder.layer.0.intermediate.dense.weight")[0],
            (int)Shape(m, p + "embeddings.position_embeddings.weight")[0],
            (int)Shape(m, p + "embeddings.token_type_embeddings.weight")[0]);
    }

    /// <summary>RoBERTa's head count is not visible in shapes: 64-wide heads (roberta-base) or, for tiny test models, 8-wide.</summary>
    static int TextHeadsFor(int hidden) => hidden % 64 == 0 ? hidden / 64 : Math.Max(1, hidden / 8);

    public static FiberConfig InferConfig(SourceKind kind, IWeightSource src)
    {
        var m = src.ByName();
        if (kind == SourceKind.OfficialCoarse)
        {
            var sw = InferSwin(m, "vit_model.");
            var tx = InferText(m, "text_transformer.");
            int fuse = m.Keys.Count(n => n.EndsWith(".attn.qkv_i2t.weight", StringComparison.Ordinal));
            var heads = new List<string>();
            if (m.ContainsKey("temp")) heads.Add("itc");
            if (m.ContainsKey("mlm_score.decoder.weight") && !m.Keys.Any(n => n.StartsWith("cross_modal_att_layers.", StringComparison.Ordinal))) heads.Add("mlm");
            if (m.ContainsKey("itm_score.fc.weight")) heads.Add("itm");
            if (m.ContainsKey("vqa_classifier.3.weight")) heads.Add("vqa");
            if (m.ContainsKey("nlvr2_classifier.0.weight")) heads.Add("nlvr2");
            if (m.Keys.Any(n => n.StartsWith("cross_modal_att_layers.", StringComparison.Ordinal))) heads.Add("caption");
            int image = sw.Window * sw.Patch << (sw.Depths.Length - 1);
            var c = new FiberConfig
            {
                Stage = FiberStage.Coarse, ImageSize = image, PatchSize = sw.Patch, EmbedDim = sw.Embed, Depths = sw.Depths,
                NumHeads = sw.Heads, WindowSize = sw.Window, MlpRatio = sw.Mlp,
                VocabSize = tx.Vocab, TextHidden = tx.Hidden, TextLayers = tx.Layers, TextHeads = TextHeadsFor(tx.Hidden),
                TextIntermediate = tx.Inter, MaxPositionEmbeddings = tx.MaxPos, TypeVocabSize = tx.TypeVocab,
                NumFuse = fuse, FusionQueryNorm = m.Keys.Any(n => n.EndsWith(".norm_i2t_i.weight", StringComparison.Ordinal)),
                Heads = heads.ToArray(),
                CrossHidden = (int)Shape(m, "cross_modal_text_transform.weight")[0],
                MaxTextLen = m.TryGetValue("text_input_queue", out var tq) ? (int)tq.Shape[1] : 40,
                QueueSize = m.TryGetValue("image_queue", out var iq) ? (int)iq.Shape[1] : 4096,
                VqaLabels = m.TryGetValue("vqa_classifier.3.weight", out var vq) ? (int)vq.Shape[0] : 3129,
            };
            return Named(c);
        }
        if (kind == SourceKind.OfficialFine)
        {
            const string P = "fusion_backbone.backbone.body.", T = "fusion_backbone.language_backbone.body.model.";
            var sw = InferSwin(m, P);
            var tx = InferText(m, T);
            var c = new FiberConfig
            {
                Stage = FiberStage.Fine, ImageSize = 800, PatchSize = sw.Patch, EmbedDim = sw.Embed, Depths = sw.Depths,
                NumHeads = sw.Heads, WindowSize = sw.Window, MlpRatio = sw.Mlp,
                VocabSize = tx.Vocab, TextHidden = tx.Hidden, TextLayers = tx.Layers, TextHeads = TextHeadsFor(tx.Hidden),
                TextIntermediate = tx.Inter, MaxPositionEmbeddings = tx.MaxPos, TypeVocabSize = tx.TypeVocab,
                NumFuse = m.Keys.Count(n => n.EndsWith(".attn.qkv_i2t.weight", StringComparison.Ordinal)),
                FusionQueryNorm = m.Keys.Any(n => n.EndsWith(".norm_i2t_i.weight", StringComparison.Ordinal)),
                Heads = [], MaxTextLen = 256,
                FpnChannels = (int)Shape(m, "fusion_backbone.backbone.fpn.fpn_inner2.weight")[0],
                DyHeadBlocks = CountIndexed(m.Keys, "rpn.head.dyhead_tower."),
                NumClasses = (int)Shape(m, "rpn.head.cls_logits.weight")[0],
                DotProductDim = (int)Shape(m, "rpn.head.dot_product_projection_text.weight")[0],
            };
            return Named(c);
        }
        throw new ArgumentException($"cannot infer a FIBER config from a {kind} checkpoint alone");
    }

    /// <summary>Gives an inferred config the name of the preset it equals in every shape, if any.</summary>
    static FiberConfig Named(FiberConfig c)
    {
        foreach (var n in FiberConfig.PresetNames)
        {
            var p = FiberConfig.Preset(n);
            if (p.Stage != c.Stage) continue;
            // Compare only what shapes determine: task heads, queue sizes and the other stage's fields are not the tower.
            var probe = c with
            {
                Name = p.Name, Heads = p.Heads, MaxTextLen = p.MaxTextLen, QueueSize = p.QueueSize, VqaLabels = p.VqaLabels,
            };
            probe = c.Stage == FiberStage.Coarse
                ? probe with { FpnChannels = p.FpnChannels, DyHeadBlocks = p.DyHeadBlocks, NumClasses = p.NumClasses, DotProductDim = p.DotProductDim }
                : probe with { ImageSize = p.ImageSize, CrossHidden = p.CrossHidden };
            if (probe.Equals(p)) return c with { Name = c.Stage == FiberStage.Coarse && !c.Heads.SequenceEqual(p.Heads) ? $"{p.Name}-{string.Join("-", c.Heads)}" : p.Name };
        }
        return c with { Name = c.Stage == FiberStage.Coarse ? $"fiber-coarse-{c.ImageSize}" : "fiber-fine" };
    }

    static FiberConfig LoadConfigOption(string s) =>
        File.Exists(s) ? FiberConfig.FromJson(File.ReadAllText(s)) : FiberConfig.Preset(s);

    // ------------------------------------------------------------------ conversion

    public static ConvertResult Convert(ConvertOptions o)
    {
        if (o.Inputs.Count == 0) throw new ArgumentException("no input files");
        var kindsText = o.From.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (kindsText.Length != 1 && kindsText.Length != o.Inputs.Count)
            throw new ArgumentException($"--from lists {kindsText.Length} kinds for {o.Inputs.Count} inputs");
        foreach (var k in kindsText) if (k != "auto") ParseKind(k);
        var sources = new List<(IWeightSource Src, SourceKind Kind)>();
        try
        {
            for (int i = 0; i < o.Inputs.Count; i++)
            {
                var src = WeightFiles.Open(o.Inputs[i]);
                sources.Add((src, SourceKind.OfficialCoarse));
                string k = kindsText.Length == 1 ? kindsText[0] : kindsText[i];
                sources[^1] = (src, k == "auto" ? Detect(src) : ParseKind(k));
            }
            return ConvertSources(o, sources);
        }
        finally { foreach (var (s, _) in sources) s.Dispose(); }
    }

    static ConvertResult ConvertSources(ConvertOptions o, List<(IWeightSource Src, SourceKind Kind)> sources)
    {
        var kinds = sources.Select(s => s.Kind).ToList();
        bool compose = kinds.All(k => k is SourceKind.HfRoberta or SourceKind.Swin);
        if (!compose && sources.Count != 1)
            throw new ArgumentException($"several inputs ({string.Join(", ", kinds)}) can only be composed from one hf-roberta and one swin checkpoint");
        if (compose && (kinds.Count(k => k == SourceKind.HfRoberta) != 1 || kinds.Count(k => k == SourceKind.Swin) != 1))
            throw new ArgumentException("a FIBER initialisation needs exactly one hf-roberta and one swin input");
        if (kinds[0] == SourceKind.Engine) throw new ArgumentException($"{sources[0].Src.Path} is already in the engine format");

        // Map every input tensor to its engine name (null = dropped by rule).
        var mapped = new Dictionary<string, (IWeightSource Src, TensorInfo Info)>();
        var dropped = new List<string>();
        foreach (var (src, kind) in sources)
            foreach (var t in src.Tensors)
            {
                string? n = MapName(kind, t.Name);
                if (n is null || Queues.Contains(n) || IsRecomputable(n)) { dropped.Add(t.Name); continue; }
                if (!mapped.TryAdd(n, (src, t))) throw new ConvertMismatchException($"two inputs both provide '{n}'");
            }

        FiberConfig cfg;
        if (o.Config is not null) cfg = LoadConfigOption(o.Config);
        else if (compose) cfg = ComposeConfig(o, sources);
        else cfg = InferConfig(kinds[0], sources[0].Src);
        if (o.ImageSize is int S)
        {
            if (cfg.Stage != FiberStage.Coarse) throw new ArgumentException("--image-size applies to coarse models only (the fine model pads its input to the window)");
            if (S % (cfg.PatchSize << (cfg.NumStages - 1)) != 0) throw new ArgumentException($"--image-size {S} is not a multiple of {cfg.PatchSize << (cfg.NumStages - 1)}");
            int w = S / (cfg.PatchSize << (cfg.NumStages - 1));
            cfg = cfg with { ImageSize = S, WindowSize = w, Name = Regex.Replace(cfg.Name, @"-\d+(?=$|-)", "-" + S, RegexOptions.None, TimeSpan.FromSeconds(1)) };
        }
        cfg.Validate();

        var result = new ConvertResult { Config = cfg };
        result.Dropped.AddRange(dropped);
        foreach (var (src, kind) in sources) result.Sources.Add($"{kind}: {src.Path}");
        var catalog = FiberParameters.Enumerate(cfg);
        var want = catalog.ToDictionary(p => p.Name);
        var rng = new Random(o.Seed);
        var mismatches = new List<string>();

        foreach (var p in catalog)
        {
            if (!p.Stored) continue;
            if (!mapped.TryGetValue(p.Name, out var m))
            {
                if (compose && p.Init != ParamInit.Pretrained)
                {
                    result.Tensors.Add(new(p.Name, FreshInit(p, rng)));
                    result.Initialised.Add(p.Name);
                }
                else result.Missing.Add(p.Name);
                continue;
            }
            var t = m.Src.Read(m.Info.Name);
            if (t.DType.IsFloat() && t.DType != WeightDType.F32) t = t.ConvertTo(WeightDType.F32);
            if (p.Name.EndsWith("relative_position_bias_table", StringComparison.Ordinal) && t.Shape.Length == 2
                && t.Shape[1] == p.Shape[1] && t.Shape[0] != p.Shape[0])
            {
                int newSide = TableSide(p.Shape[0]);
                int oldSide = TableSide(t.Shape[0]);
                var r = Bicubic.ResizeRelativePositionTable(t.ToFloats(), (int)t.Shape[0], (int)t.Shape[1], newSide);
                t = HostTensor.FromFloats(r, p.Shape[0], p.Shape[1]);
                result.Resized.Add($"{p.Name} {oldSide}x{oldSide} -> {newSide}x{newSide}");
            }
            if (!t.Shape.SequenceEqual(p.Shape.Select(d => (long)d)))
            {
                mismatches.Add($"{p.Name}: checkpoint {HostTensor.Fmt(t.Shape)} (in {m.Src.Path} as '{m.Info.Name}'), config {cfg.Name} wants [{string.Join(",", p.Shape)}]");
                continue;
            }
            result.Tensors.Add(new(p.Name, t));
        }
        foreach (var n in mapped.Keys)
            if (!want.ContainsKey(n)) result.Unexpected.Add(n);
            else if (!want[n].Stored) result.Dropped.Add(n);

        if (mismatches.Count > 0)
            throw new ConvertMismatchException($"{mismatches.Count} shape mismatch(es) against {cfg.Name}:\n  " + string.Join("\n  ", mismatches.Take(30))
                + (mismatches.Count > 30 ? $"\n  … and {mismatches.Count - 30} more" : ""));
        if (result.Missing.Count > 0 && !o.AllowMissing)
            throw new ConvertMismatchException($"{result.Missing.Count} parameter(s) of {cfg.Name} are not in {string.Join(" + ", sources.Select(s => s.Src.Path))} (use --allow-missing to write anyway): " + string.Join(", ", result.Missing.Take(20)));
        if (result.Unexpected.Count > 0 && !o.AllowUnexpected)
            throw new ConvertMismatchException($"{result.Unexpected.Count} tensor(s) of the input have no place in {cfg.Name} (use --allow-unexpected to drop them): "
                + string.Join(", ", result.Unexpected.Take(20).Select(n => $"{n} (in {mapped[n].Src.Path})")));
        return result;
    }

    static string? MapName(SourceKind kind, string n) => kind switch
    {
        SourceKind.OfficialCoarse or SourceKind.OfficialFine => n,
        SourceKind.HfRoberta => n.StartsWith("lm_head.", StringComparison.Ordinal) ? null
            : "text_transformer." + (n.StartsWith("roberta.", StringComparison.Ordinal) ? n["roberta.".Length..] : n),
        SourceKind.Swin => n.StartsWith("head.", StringComparison.Ordinal) ? null : "vit_model." + n,
        _ => n,
    };

    static FiberConfig ComposeConfig(ConvertOptions o, List<(IWeightSource Src, SourceKind Kind)> sources)
    {
        var swin = sources.First(s => s.Kind == SourceKind.Swin).Src.ByName();
        var text = sources.First(s => s.Kind == SourceKind.HfRoberta).Src.ByName();
        var sw = InferSwin(swin, "");
        var textMap = text.ToDictionary(kv => kv.Key.StartsWith("roberta.", StringComparison.Ordinal) ? kv.Key["roberta.".Length..] : kv.Key, kv => kv.Value);
        var tx = InferText(textMap, "");
        int image = sw.Window * sw.Patch << (sw.Depths.Length - 1);
        var c = new FiberConfig
        {
            Stage = FiberStage.Coarse, ImageSize = image, PatchSize = sw.Patch, EmbedDim = sw.Embed, Depths = sw.Depths,
            NumHeads = sw.Heads, WindowSize = sw.Window, MlpRatio = sw.Mlp,
            VocabSize = tx.Vocab, TextHidden = tx.Hidden, TextLayers = tx.Layers, TextHeads = TextHeadsFor(tx.Hidden),
            TextIntermediate = tx.Inter, MaxPositionEmbeddings = tx.MaxPos, TypeVocabSize = tx.TypeVocab,
            NumFuse = o.Fuse, FusionQueryNorm = true, Heads = o.Heads, CrossHidden = tx.Hidden,
        };
        return Named(c);
    }

    /// <summary>Fresh values for a parameter a composed init does not load (fusion layers, heads, cross-modal layers).</summary>
    static HostTensor FreshInit(ParamSpec p, Random rng)
    {
        var v = new float[p.Numel];
        switch (p.Init)
        {
            case ParamInit.Normal002:
                for (int i = 0; i < v.Length; i++) v[i] = (float)(0.02 * Gauss(rng));
                break;
            case ParamInit.TruncNormal002:
                // timm trunc_normal_(std=.02) truncates at ±2 absolute, i.e. ±100σ: a plain normal in practice.
                for (int i = 0; i < v.Length; i++) { double x; do x = 0.02 * Gauss(rng); while (Math.Abs(x) > 2); v[i] = (float)x; }
                break;
            case ParamInit.Ones: Array.Fill(v, 1f); break;
            case ParamInit.Temperature: Array.Fill(v, 0.07f); break;
            case ParamInit.Zeros: break;
            default: throw new InvalidOperationException($"{p.Name} has no fresh initialisation");
        }
        return HostTensor.FromFloats(v, p.Shape.Select(d => (long)d).ToArray());
    }

    static double Gauss(Random r)
    {
        double u1 = 1.0 - r.NextDouble(), u2 = r.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    // ------------------------------------------------------------------ output

    /// <summary>Writes `model.safetensors` and `config.json` (and `vocab.json`, `merges.txt` from <paramref name="tokenizerDir"/>).</summary>
    public static void Write(ConvertResult r, string outDir, string? tokenizerDir = null)
    {
        if (tokenizerDir is not null)
            foreach (var f in new[] { "vocab.json", "merges.txt" })
                if (!File.Exists(Path.Combine(tokenizerDir, f))) throw new FileNotFoundException($"{tokenizerDir}: no {f} (the RoBERTa tokenizer needs vocab.json and merges.txt)", Path.Combine(tokenizerDir, f));
        Directory.CreateDirectory(outDir);
        SafeTensorsFile.Write(Path.Combine(outDir, "model.safetensors"), r.Tensors, EngineWeights.Metadata(r.Config, string.Join("; ", r.Sources)));
        WriteAtomic(Path.Combine(outDir, "config.json"), r.Config.ToJson() + "\n");
        if (tokenizerDir is not null)
            foreach (var f in new[] { "vocab.json", "merges.txt" })
                File.Copy(Path.Combine(tokenizerDir, f), Path.Combine(outDir, f), overwrite: true);
    }

    static void WriteAtomic(string path, string text) => AtomicFile.WriteAllText(path, text);
}
