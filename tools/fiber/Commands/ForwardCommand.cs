using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Backends.Cuda;
using FiberCuda.IO;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Cli.Commands;

/// <summary>What `fiber forward` runs; the command line maps onto it one to one, and tests fill it directly.</summary>
public sealed record ForwardOptions
{
    public required string Weights { get; init; }
    public required string Input { get; init; }
    public required string Out { get; init; }
    /// <summary>Preset name or config.json; null: the weights' own config (metadata, else config.json beside them).</summary>
    public string? Config { get; init; }
    public string Device { get; init; } = "auto";
    public string DType { get; init; } = "f32";
    /// <summary>Images per forward call; 0 = the whole input at once.</summary>
    public int BatchSize { get; init; }
}

/// <summary>
/// `fiber forward`: a FIBER backbone on an input file (`pixel_values` [B,3,H,W] float, `input_ids` and
/// `attention_mask` [B,L] i64). Coarse configs write the fused path's `image_feats` [B,N,H], `text_feats` [B,L,H] and
/// `cls_feats` [B,2H] (fiber-coarse.md §3.4) and the unfused ITC embeddings `itc_image` / `itc_text` [B,H]
/// (§1.6, §3.5 `image_only` / `text_only`: the *_itc transforms and poolers, L2-normalised). Fine configs write the
/// fused backbone's stage outputs `c2`..`c5` [B,C,h,w] (after the output norms, the FPN's inputs) and the text side's
/// `hidden` and `embedded` [B,L,768] (`language_dict_features`, fiber-fine.md §3.4). Outputs are f32 whatever the
/// compute dtype, so a bf16 run compares directly with an f32 one or with PyTorch.
/// </summary>
public static class ForwardCommand
{
    public const string PixelValues = "pixel_values";
    public const string InputIds = "input_ids";
    public const string AttentionMask = "attention_mask";
    public static readonly string[] OutputNames = ["image_feats", "text_feats", "cls_feats", "itc_image", "itc_text"];
    public static readonly string[] FineOutputNames = ["c2", "c3", "c4", "c5", "hidden", "embedded"];

    public static Command Create()
    {
        var config = new Option<string?>("--config") { Description = "preset name or config.json (default: the config in the weights' metadata, else config.json beside them)" };
        var weights = new Option<string>("--weights", "-w") { Description = "engine weights (model.safetensors from `fiber convert`)", Required = true };
        var input = new Option<string>("--input", "-i") { Description = "safetensors with pixel_values [B,3,H,W] f32 (coarse: H = W = image size), input_ids and attention_mask [B,L] i64", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "output safetensors (written atomically)", Required = true };
        var device = new Option<string>("--device") { Description = "cpu | gpu | emu (emulated GPU) | auto (GPU if present, else CPU)", DefaultValueFactory = _ => "auto" };
        device.AcceptOnlyFromAmong("cpu", "gpu", "emu", "auto");
        var dtype = new Option<string>("--dtype") { Description = "compute dtype: f32 | bf16 (f64: CPU only, for reference runs)", DefaultValueFactory = _ => "f32" };
        dtype.AcceptOnlyFromAmong("f32", "bf16", "f64");
        var batch = new Option<int>("--batch-size") { Description = "images per forward call (0: all at once)", DefaultValueFactory = _ => 0 };

        var cmd = new Command("forward", "run a FIBER backbone (coarse or fine) on an input file and write its features (to check the port against PyTorch)");
        foreach (var o in new Option[] { config, weights, input, output, device, dtype, batch }) cmd.Options.Add(o);
        cmd.SetAction(pr => Run(new ForwardOptions
        {
            Config = pr.GetValue(config), Weights = pr.GetValue(weights)!, Input = pr.GetValue(input)!, Out = pr.GetValue(output)!,
            Device = pr.GetValue(device)!, DType = pr.GetValue(dtype)!, BatchSize = pr.GetValue(batch),
        }));
        return cmd;
    }

    /// <summary>The whole command, errors mapped to <see cref="ExitCodes"/>; progress goes to <paramref name="log"/> (stdout by default).</summary>
    public static int Run(ForwardOptions o, TextWriter? log = null) => ExitCodes.Run(() => Execute(o, log ?? Console.Out));

    static int Execute(ForwardOptions o, TextWriter log)
    {
        var dtype = o.DType switch
        {
            "f32" => DType.F32, "bf16" => DType.BF16, "f64" => DType.F64,
            _ => throw new ArgumentException($"--dtype must be f32 or bf16 (or f64 on the CPU), not '{o.DType}'"),
        };
        if (o.Device is not ("cpu" or "gpu" or "emu" or "auto")) throw new ArgumentException($"--device must be cpu, gpu, emu or auto, not '{o.Device}'");
        if (o.BatchSize < 0) throw new ArgumentException("--batch-size must be 0 (all at once) or positive");

        // Everything that can be checked on the host is checked before a device is opened or a weight is read.
        using var src = WeightFiles.Open(o.Weights);
        var cfg = ResolveConfig(o.Config, o.Weights, src);
        bool fine = cfg.Stage == FiberStage.Fine;
        if (!fine && cfg.WindowSize != cfg.ImageSize / 32)
            throw new InputMismatchException($"{cfg.Name}: the coarse Swin's window is image_size/32 = {cfg.ImageSize / 32}, not {cfg.WindowSize}");
        Inputs inp;
        using (var f = SafeTensorsFile.Open(o.Input)) inp = ReadInputs(f, cfg, log);
        var names = fine ? FineOutputNames : OutputNames;

        var (be, owned, devName) = Devices.OpenBackend(o.Device, dtype);
        try
        {
            var sw = Stopwatch.StartNew();
            var ctx = new NnContext(be, dtype);
            Module model = fine ? new FiberFineModel(ctx, cfg) : new FiberCoarseModel(ctx, cfg);
            try { if (model is FiberFineModel fm) fm.LoadBackbone(src); else ((FiberCoarseModel)model).LoadBackbone(src); }
            catch (WeightLoadException e) { throw new WeightLoadException($"{o.Weights}: does not fit {cfg.Name}: {e.Report}", e.Report); }
            model.Eval();
            double loadS = sw.Elapsed.TotalSeconds;

            int B = inp.Text.Batch, H = inp.Height, W = inp.Width, chunk = o.BatchSize == 0 ? B : Math.Min(o.BatchSize, B);
            int perImage = 3 * H * W;
            var outs = names.ToDictionary(n => n, _ => new List<float>());
            var shapes = new Dictionary<string, long[]>();
            sw.Restart();
            for (int b0 = 0; b0 < B; b0 += chunk)
            {
                int n = Math.Min(chunk, B - b0);
                var text = inp.Text.Rows(b0, n);
                // One scope per chunk hands its activations back to the allocator before the next one.
                using var scope = new TensorScope();
                using var _ = Grad.NoGrad();
                var img = be.FromDoubles(inp.Pixels[(b0 * perImage)..((b0 + n) * perImage)], [n, 3, H, W], dtype);
                (string Name, Tensor T)[] results;
                if (model is FiberFineModel fm)
                {
                    var o2 = fm.Forward(img, text);
                    results = [.. o2.Features.Select((m, s) => ($"c{s + 2}", m.ToNchw())), ("hidden", o2.TextHidden), ("embedded", o2.TextEmbedded)];
                }
                else
                {
                    var cm = (FiberCoarseModel)model;
                    var fused = cm.Forward(img, text);
                    results =
                    [
                        ("image_feats", fused.ImageFeats), ("text_feats", fused.TextFeats), ("cls_feats", fused.ClsFeats),
                        ("itc_image", cm.ImageOnly(img)), ("itc_text", cm.TextOnly(text)),
                    ];
                }
                foreach (var (name, t) in results)
                {
                    outs[name].AddRange(t.ToFloatArray());
                    shapes[name] = [B, .. t.Shape.Skip(1).Select(d => (long)d)];
                }
            }
            double runS = sw.Elapsed.TotalSeconds;

            var tensors = names.Select(n => KeyValuePair.Create(n, HostTensor.FromFloats(outs[n].ToArray(), shapes[n]))).ToList();
            var meta = new Dictionary<string, string>
            {
                ["format"] = "fibercuda-forward",
                ["config"] = cfg.ToJson(indented: false),
                ["device"] = devName,
                ["dtype"] = o.DType,
                ["weights"] = Path.GetFileName(o.Weights),
                ["input"] = Path.GetFileName(o.Input),
            };
            SafeTensorsFile.Write(o.Out, tensors, meta);

            log.WriteLine($"config  {cfg.Name}");
            log.WriteLine($"device  {devName}, {o.DType}");
            log.WriteLine($"input   {B} images {H}x{W}, text [{B},{inp.Text.Length}]{(chunk < B ? $", {chunk} per call" : "")}");
            log.WriteLine($"time    load {loadS:F2} s, forward {runS:F2} s");
            foreach (var (n, t) in tensors) log.WriteLine($"output  {n,-12} f32{HostTensor.Fmt(t.Shape)}");
            log.WriteLine($"wrote   {o.Out}");
            return ExitCodes.Ok;
        }
        finally { if (owned) be.Dispose(); }
    }

    // ------------------------------------------------------------------ config

    /// <summary>Fields that decide nothing in the backbone's forward (head sizes, the fine model's detection head, the name).</summary>
    static readonly HashSet<string> IgnoredConfigFields =
        ["name", "heads", "queue_size", "vqa_labels", "max_text_len", "fpn_channels", "dy_head_blocks", "num_classes", "dot_product_dim"];

    static FiberConfig ResolveConfig(string? arg, string weightsPath, IWeightSource src)
    {
        FiberConfig? own = null;
        string? ownFrom = null;
        if (src is SafeTensorsFile st && st.Metadata.ContainsKey("config"))
        {
            own = EngineWeights.ReadConfig(st);
            ownFrom = $"{weightsPath} (metadata)";
        }
        else
        {
            string beside = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(weightsPath))!, "config.json");
            if (File.Exists(beside)) { own = ConfigArg.File(beside); ownFrom = beside; }
        }
        FiberConfig? asked = arg is null ? null : ConfigArg.Load(arg);
        if (asked is not null && own is not null)
        {
            var diff = ConfigDiff(asked, own);
            if (diff.Count > 0)
                throw new InputMismatchException($"--config {asked.Name} does not match the config of {ownFrom} ({own.Name}): {string.Join(", ", diff)}");
        }
        return asked ?? own ?? throw new ArgumentException(
            $"{weightsPath} carries no config (no __metadata__ config, no config.json beside it): pass --config PRESET|config.json");
    }

    /// <summary>"field (asked vs file)" for every field that shapes the forward and differs.</summary>
    static List<string> ConfigDiff(FiberConfig asked, FiberConfig own)
    {
        var a = JsonNode.Parse(asked.ToJson(false))!.AsObject();
        var b = JsonNode.Parse(own.ToJson(false))!.AsObject();
        var diff = new List<string>();
        foreach (var key in a.Select(kv => kv.Key).Union(b.Select(kv => kv.Key)))
        {
            if (IgnoredConfigFields.Contains(key)) continue;
            string va = a[key]?.ToJsonString() ?? "null", vb = b[key]?.ToJsonString() ?? "null";
            if (va != vb) diff.Add($"{key} {va} vs {vb}");
        }
        return diff;
    }

    // ------------------------------------------------------------------ inputs

    sealed record Inputs(double[] Pixels, int Height, int Width, TextBatch Text);

    static readonly WeightDType[] FloatTypes = [WeightDType.F32, WeightDType.BF16, WeightDType.F16, WeightDType.F64];
    static readonly WeightDType[] IndexTypes = [WeightDType.I64, WeightDType.I32];

    static Inputs ReadInputs(SafeTensorsFile f, FiberConfig c, TextWriter log)
    {
        var have = f.Tensors.ToDictionary(t => t.Name);
        var missing = new[] { PixelValues, InputIds, AttentionMask }.Where(n => !have.ContainsKey(n)).ToList();
        if (missing.Count > 0)
            throw new InputMismatchException($"{f.Path}: missing input tensor{(missing.Count > 1 ? "s" : "")} {string.Join(", ", missing.Select(m => $"'{m}'"))}" +
                $" (the file has: {(have.Count == 0 ? "nothing" : string.Join(", ", have.Keys.Take(10)))}{(have.Count > 10 ? ", …" : "")})");
        var extra = have.Keys.Where(n => n is not (PixelValues or InputIds or AttentionMask)).ToList();
        if (extra.Count > 0) log.WriteLine($"ignored {string.Join(", ", extra.Take(10))}{(extra.Count > 10 ? ", …" : "")} (not model inputs)");

        TensorInfo pv = have[PixelValues], ids = have[InputIds], mask = have[AttentionMask];
        string Where(string s) => $"{f.Path}: {s}";
        if (!FloatTypes.Contains(pv.DType)) throw new InputMismatchException(Where($"{PixelValues} is {pv.DType.Lower()}; it must be a float tensor (f32)"));
        foreach (var t in new[] { ids, mask })
            if (!IndexTypes.Contains(t.DType)) throw new InputMismatchException(Where($"{t.Name} is {t.DType.Lower()}; it must be i64 (or i32)"));
        int S = c.ImageSize;
        if (c.Stage == FiberStage.Coarse)
        {
            if (pv.Shape.Length != 4 || pv.Shape[1] != 3 || pv.Shape[2] != S || pv.Shape[3] != S || pv.Shape[0] < 1)
                throw new InputMismatchException(Where($"{PixelValues} is {HostTensor.Fmt(pv.Shape)}; {c.Name} takes [B,3,{S},{S}] with B ≥ 1"));
        }
        else
        {
            // The fine Swin pads to the patch itself, but every patch merging needs an even grid (the official module asserts).
            int unit = c.PatchSize << (c.NumStages - 1);
            if (pv.Shape.Length != 4 || pv.Shape[1] != 3 || pv.Shape[0] < 1 || pv.Shape[2] < 1 || pv.Shape[3] < 1)
                throw new InputMismatchException(Where($"{PixelValues} is {HostTensor.Fmt(pv.Shape)}; {c.Name} takes [B,3,H,W] with B ≥ 1"));
            long gh = (pv.Shape[2] + c.PatchSize - 1) / c.PatchSize * c.PatchSize, gw = (pv.Shape[3] + c.PatchSize - 1) / c.PatchSize * c.PatchSize;
            if (gh % unit != 0 || gw % unit != 0)
                throw new InputMismatchException(Where($"{PixelValues} is {HostTensor.Fmt(pv.Shape)}; pad the images to a multiple of {unit} (the official pipeline zero-pads after normalisation)"));
        }
        if (ids.Shape.Length != 2 || ids.Shape[1] < 1)
            throw new InputMismatchException(Where($"{InputIds} is {HostTensor.Fmt(ids.Shape)}; it must be [B,L] with L ≥ 1"));
        if (!mask.Shape.SequenceEqual(ids.Shape))
            throw new InputMismatchException(Where($"{AttentionMask} is {HostTensor.Fmt(mask.Shape)} but {InputIds} is {HostTensor.Fmt(ids.Shape)}"));
        if (ids.Shape[0] != pv.Shape[0])
            throw new InputMismatchException(Where($"{pv.Shape[0]} images but {ids.Shape[0]} texts"));
        // RoBERTa numbers the non-pad tokens from pad_id + 1, so at most max_position_embeddings − pad_id − 1 of them fit.
        int maxLen = c.MaxPositionEmbeddings - c.PadTokenId - 1;
        if (ids.Shape[1] > maxLen)
            throw new InputMismatchException(Where($"texts of {ids.Shape[1]} tokens; {c.Name} takes at most {maxLen}"));
        if (pv.Numel > Array.MaxLength) throw new InputMismatchException(Where($"{PixelValues} is too large to read at once; split the input"));

        int B = (int)ids.Shape[0], L = (int)ids.Shape[1];
        var idv = f.Read(InputIds).ToDoubles();
        var mv = f.Read(AttentionMask).ToDoubles();
        var idArr = new int[idv.Length];
        var mArr = new int[mv.Length];
        for (int i = 0; i < idv.Length; i++)
        {
            if (idv[i] < 0 || idv[i] >= c.VocabSize)
                throw new InputMismatchException(Where($"{InputIds}[{i / L},{i % L}] = {idv[i]} is outside the vocabulary [0, {c.VocabSize})"));
            if (mv[i] is not (0 or 1))
                throw new InputMismatchException(Where($"{AttentionMask}[{i / L},{i % L}] = {mv[i]}; the mask holds 0 and 1 only"));
            idArr[i] = (int)idv[i];
            mArr[i] = (int)mv[i];
        }
        var pix = f.Read(PixelValues).ToDoubles();
        if (pix.Any(x => !double.IsFinite(x))) throw new InputMismatchException(Where($"{PixelValues} holds NaN or infinite values"));
        return new Inputs(pix, (int)pv.Shape[2], (int)pv.Shape[3], new TextBatch(idArr, mArr, B, L));
    }
}
