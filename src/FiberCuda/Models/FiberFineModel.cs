using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Models;

/// <summary>A module that only names its children (the official `nn.Module()` containers such as `backbone`, `body`).</summary>
public sealed class ModuleScope(NnContext ctx) : Module(ctx)
{
    public T Add<T>(string name, T m) where T : Module => Child(name, m);
}

/// <summary>One image feature map of the fine backbone: [B, Height·Width, C] in row-major token order.</summary>
public sealed record FeatureMap(Tensor Tokens, int Height, int Width)
{
    public int Channels => Tokens.Dim(2);
    /// <summary>The official layout [B, C, H, W] (a copy).</summary>
    public Tensor ToNchw() => F.Permute(F.Reshape(Tokens, Tokens.Dim(0), Height, Width, Channels), 0, 3, 1, 2);
}

/// <summary>
/// Outputs of the fine fused backbone (fiber-fine.md §3.4): the stage outputs C2..C5 after their output norms (C2 is not
/// normalised: norm0 is an Identity), and the text side's `language_dict_features`: `hidden` (the last layer's output)
/// and `embedded` (hidden with pad rows zeroed).
/// </summary>
public sealed record FineBackboneOutput(FeatureMap[] Features, Tensor TextHidden, Tensor TextEmbedded);

/// <summary>
/// The fine-grained FIBER backbone (`fusion_backbone` of GeneralizedVLRCNN, FusionSwinTransformer v2/v3 with
/// roberta-fused-v2): the detection Swin (window fixed, maps padded to it, per-stage output norms) and RoBERTa whose top
/// layers exchange states with the top Swin blocks in lock-step. Root-level, so parameter names are the official keys
/// (`fusion_backbone.backbone.body.layers.2.blocks.15.attn.qkv_i2t.weight`). The FPN and the detection head are not
/// part of this module.
/// </summary>
public sealed class FiberFineModel : Module
{
    public const string SwinPrefix = "fusion_backbone.backbone.body.";
    public const string TextPrefix = "fusion_backbone.language_backbone.body.model.";

    /// <param name="dropPathRate">Stochastic depth of the Swin (DROP_PATH_RATE 0.4 in the fine configs, training only).</param>
    public FiberFineModel(NnContext ctx, FiberConfig c, float textDropout = 0.1f, float dropPathRate = 0.4f) : base(ctx)
    {
        c.Validate();
        if (c.Stage != FiberStage.Fine) throw new ArgumentException($"{c.Name} is not a fine config");
        Config = c;
        var fb = Child("fusion_backbone", new ModuleScope(ctx));
        Swin = fb.Add("backbone", new ModuleScope(ctx)).Add("body", new SwinTransformer(ctx, c, dropPathRate));
        Text = fb.Add("language_backbone", new ModuleScope(ctx)).Add("body", new ModuleScope(ctx)).Add("model", new RobertaModel(ctx, c, coarse: false, dropout: textDropout));
    }

    public FiberConfig Config { get; }
    public SwinTransformer Swin { get; }
    public RobertaModel Text { get; }

    /// <summary>Whether an official key belongs to this module (not the FPN, the detection head or the anchors).</summary>
    public static bool IsBackboneKey(string k) => k.StartsWith(SwinPrefix) || k.StartsWith(TextPrefix);

    /// <summary>Loads the backbone's keys of a full state dict; the FPN and head keys are left alone. Strict within the backbone.</summary>
    public IO.LoadReport LoadBackbone(IReadOnlyDictionary<string, Tensor> sd, bool strict = true) =>
        LoadStateDict(sd.Where(kv => IsBackboneKey(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value), strict);

    public IO.LoadReport LoadBackbone(IO.IWeightSource src, bool strict = true) => this.LoadFrom(src, strict, IsBackboneKey);

    /// <summary>
    /// The fused forward (FusionSwinTransformer.forward, generalised from FIBER-B's hard-wired 6/2/14 to the config's fusion
    /// rule): the unfused text layers; the image stages below the first fused block with their outputs; then at fused step
    /// k Swin block k and text layer (L − N + k) each read the other's state from before the step. Every text layer keeps
    /// its output LayerNorm (unlike the coarse model).
    /// </summary>
    /// <param name="image">[B, 3, H, W], already normalised (BGR·255 in the official pipeline) and zero-padded to a
    /// multiple of 32; other sizes are padded to the patch and must give even grids at every merging.</param>
    public FineBackboneOutput Forward(Tensor image, TextBatch text)
    {
        text.Validate();
        var c = Config;
        if (image.Rank != 4 || image.Dim(1) != 3) throw new ArgumentException($"fine backbone: image {image} is not [B,3,H,W]");
        if (image.Dim(0) != text.Batch) throw new ArgumentException($"{image.Dim(0)} images for {text.Batch} texts");
        var masks = Text.Masks(text);
        var selfMask = masks.For(c.TextHeads, text.Length);
        int firstText = c.TextLayers - c.NumFuse;

        var txt = Text.Embeddings.Forward(text);
        for (int l = 0; l < firstText; l++) txt = Text.Encoder.Layer[l].Forward(txt, selfMask);

        var (img, h, w) = Swin.PatchEmbed.ForwardPadded(image);
        var feats = new FeatureMap[c.NumStages];
        for (int s = 0; s < c.NumStages; s++)
        {
            var L = Swin.Layers[s];
            for (int b = 0; b < L.Blocks.Count; b++)
            {
                int step = c.FusedStep(s, b);
                // The official code runs the unfused text layers first and the lower image stages second; they do not
                // interact, so only the fused steps' order matters.
                if (step < 0) { img = L.Blocks[b].Forward(img, h, w); continue; }
                var newImg = L.Blocks[b].Forward(img, h, w, txt, masks);
                var newTxt = Text.Encoder.Layer[firstText + step].Forward(txt, selfMask, img);
                img = newImg; txt = newTxt;
            }
            feats[s] = new FeatureMap(Swin.OutNorm(s, img), h, w);
            if (L.Downsample is not null) { img = L.Downsample.Forward(img, h, w); h /= 2; w /= 2; }
        }
        return new FineBackboneOutput(feats, txt, MaskRows(txt, text));
    }

    /// <summary>hidden × mask: the pad rows zeroed (`get_aggregated_output`'s `embedded`).</summary>
    Tensor MaskRows(Tensor hidden, TextBatch text)
    {
        var m = new double[text.Batch * text.Length * hidden.Dim(2)];
        int d = hidden.Dim(2);
        for (int i = 0; i < text.Batch * text.Length; i++)
            if (text.Mask[i] != 0) Array.Fill(m, 1.0, i * d, d);
        return F.Mul(hidden, Ctx.Backend.FromDoubles(m, hidden.Shape, hidden.DType));
    }
}
