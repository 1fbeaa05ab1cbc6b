using FiberCuda.Autograd;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Models;

/// <summary>`cross_modal_*_pooler`: tanh(dense(x[:, 0])).</summary>
public sealed class Pooler : Module
{
    public Pooler(NnContext ctx, int dim) : base(ctx) { Dense = Child("dense", new Linear(ctx, dim, dim)); }
    public Linear Dense { get; }
    /// <summary>x [B, L, D] → [B, D] from token 0.</summary>
    public Tensor Forward(Tensor x) => Fx.Tanh(Dense.Forward(Fx.Token(x, 0)));
}

/// <summary>
/// `cross_modal_att_layers`: the caption path's per-layer Linear(C₄ → C₄/2) adapters (fiber-coarse.md §3.5), one slot
/// per text layer but the top two; only the fused layers whose cross-attention takes the second-to-last stage's
/// width use theirs. A root-level module, so its names are the official keys.
/// </summary>
public sealed class CaptionAdapters : Module
{
    public CaptionAdapters(NnContext ctx, FiberConfig c) : base(ctx)
    {
        Layers = Child("cross_modal_att_layers", new ModuleList<Linear>(ctx,
            Enumerable.Range(0, c.TextLayers - 2).Select(_ => new Linear(ctx, c.FinalDim, c.FinalDim / 2))));
    }
    public ModuleList<Linear> Layers { get; }
}

/// <summary>Outputs of the fused forward (fiber-coarse.md §3.4).</summary>
public sealed record FusedOutput(Tensor TextFeats, Tensor ImageFeats, Tensor ClsFeats, Tensor TextStates, Tensor ImageStates);

/// <summary>
/// The coarse FIBER backbone with its cross-modal transforms and poolers (the roots of the official
/// LightningModule's state_dict: `vit_model.`, `text_transformer.`, `cross_modal_*`); the task heads
/// (ITC temperature, MLM, ITM, VQA, NLVR2, caption adapters) are not part of this module.
/// </summary>
public sealed class FiberCoarseModel : Module
{
    public FiberCoarseModel(NnContext ctx, FiberConfig c, float textDropout = 0.1f, float dropPathRate = 0.1f) : base(ctx)
    {
        c.Validate();
        if (c.Stage != FiberStage.Coarse) throw new ArgumentException($"{c.Name} is not a coarse config");
        // swin_transformer.py: `window_size = int(img_size / 32)`, whatever the variant says (fiber-coarse.md §1.1).
        if (c.WindowSize != c.ImageSize / 32)
            throw new ArgumentException($"{c.Name}: the coarse Swin's window is image_size/32 = {c.ImageSize / 32}, not {c.WindowSize} (use FiberCoarseModel.AtImageSize)");
        Config = c;
        int h = c.CrossHidden;
        TextTransform = Child("cross_modal_text_transform", new Linear(ctx, c.TextHidden, h));
        ImageTransform = Child("cross_modal_image_transform", new Linear(ctx, c.FinalDim, h));
        TextTransformItc = Child("cross_modal_text_transform_itc", new Linear(ctx, c.TextHidden, h));
        ImageTransformItc = Child("cross_modal_image_transform_itc", new Linear(ctx, c.FinalDim, h));
        Swin = Child("vit_model", new SwinTransformer(ctx, c, dropPathRate));
        Text = Child("text_transformer", new RobertaModel(ctx, c, coarse: true, dropout: textDropout));
        ImagePooler = Child("cross_modal_image_pooler", new Pooler(ctx, h));
        TextPooler = Child("cross_modal_text_pooler", new Pooler(ctx, h));
        ImagePoolerItc = Child("cross_modal_image_pooler_itc", new Pooler(ctx, h));
        TextPoolerItc = Child("cross_modal_text_pooler_itc", new Pooler(ctx, h));
    }

    public FiberConfig Config { get; }

    /// <summary><paramref name="c"/> at another input size, with the window that size implies (S/32).</summary>
    public static FiberConfig AtImageSize(FiberConfig c, int imageSize) =>
        c with { ImageSize = imageSize, WindowSize = imageSize / 32, Name = c.Name.Replace(c.ImageSize.ToString(), imageSize.ToString()) };

    /// <summary>Whether an official key belongs to this module (not a task head, queue or caption adapter).</summary>
    public static bool IsBackboneKey(string k) =>
        (k.StartsWith("vit_model.") || k.StartsWith("text_transformer.") || k.StartsWith("cross_modal_")) && !k.StartsWith("cross_modal_att_layers.");

    /// <summary>Loads the backbone's keys of a full state dict (e.g. <see cref="IO.EngineWeights.Load"/>'s result); head keys
    /// are left to the heads. Strict within the backbone.</summary>
    public IO.LoadReport LoadBackbone(IReadOnlyDictionary<string, Tensor> sd, bool strict = true) =>
        LoadStateDict(sd.Where(kv => IsBackboneKey(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value), strict);

    /// <summary>Loads the backbone straight from a weight file (engine safetensors or an official checkpoint source).</summary>
    public IO.LoadReport LoadBackbone(IO.IWeightSource src, bool strict = true) => this.LoadFrom(src, strict, IsBackboneKey);

    public Linear TextTransform { get; }
    public Linear ImageTransform { get; }
    public Linear TextTransformItc { get; }
    public Linear ImageTransformItc { get; }
    public SwinTransformer Swin { get; }
    public RobertaModel Text { get; }
    public Pooler ImagePooler { get; }
    public Pooler TextPooler { get; }
    public Pooler ImagePoolerItc { get; }
    public Pooler TextPoolerItc { get; }

    /// <summary>
    /// The fused path (fiber-coarse.md §3): the towers run in lock-step; at fused step k Swin block k and text
    /// layer (L − N + k) each read the other's states from before the step. Neither fused output is normalised
    /// (no `vit_model.norm`; the last text layer skips its output LayerNorm).
    /// </summary>
    public FusedOutput Forward(Tensor image, TextBatch text)
    {
        text.Validate();
        if (image.Dim(0) != text.Batch) throw new ArgumentException($"{image.Dim(0)} images for {text.Batch} texts");
        var masks = Text.Masks(text);
        var txt = LowerText(text, masks);
        return ForwardFromLower(LowerImage(image), txt, masks);
    }

    /// <summary>Where the fused steps start: the first fused Swin block (s, b) and text layer.</summary>
    (int Stage, int Block, int TextLayer) FirstFused()
    {
        var c = Config;
        for (int s = 0; s < c.NumStages; s++)
            for (int b = 0; b < c.Depths[s]; b++)
                if (c.FusedStep(s, b) >= 0) return (s, b, c.TextLayers - c.NumFuse);
        throw new InvalidOperationException($"{c.Name} has no fused block");
    }

    /// <summary>
    /// The image tower below the fusion (patch embedding and every block before the first fused one), shared by the
    /// fused and the unfused image paths: [B, tokens, C] at the first fused block's stage.
    /// </summary>
    public Tensor LowerImage(Tensor image)
    {
        var (fs, fb, _) = FirstFused();
        var img = Swin.PatchEmbed.Forward(image);
        for (int s = 0; s <= fs; s++)
        {
            var L = Swin.Layers[s];
            for (int b = 0; b < (s == fs ? fb : L.Blocks.Count); b++) img = L.Blocks[b].Forward(img);
            if (s < fs && L.Downsample is not null) img = L.Downsample.Forward(img, L.Grid);
        }
        return img;
    }

    /// <summary>The text tower below the fusion (embeddings and the unfused layers), shared by both text paths.</summary>
    public Tensor LowerText(TextBatch text, TextMasks? masks = null)
    {
        masks ??= Text.Masks(text);
        var selfMask = masks.For(Config.TextHeads, text.Length);
        var txt = Text.Embeddings.Forward(text);
        for (int l = 0; l < FirstFused().TextLayer; l++) txt = Text.Encoder.Layer[l].Forward(txt, selfMask);
        return txt;
    }

    /// <summary>
    /// The fused path above <see cref="LowerImage"/> / <see cref="LowerText"/> (fiber-coarse.md §3): the towers run in
    /// lock-step; at fused step k Swin block k and text layer (L − N + k) each read the other's states from before the
    /// step. Neither fused output is normalised (no `vit_model.norm`; the last text layer skips its output LayerNorm).
    /// </summary>
    public FusedOutput ForwardFromLower(Tensor imageLower, Tensor textLower, TextMasks masks)
    {
        var c = Config;
        var (fs, fb, firstFused) = FirstFused();
        var selfMask = masks.For(c.TextHeads, masks.Text.Length);
        Tensor img = imageLower, txt = textLower;
        for (int s = fs; s < c.NumStages; s++)
        {
            var L = Swin.Layers[s];
            for (int b = s == fs ? fb : 0; b < L.Blocks.Count; b++)
            {
                int step = c.FusedStep(s, b);
                if (step < 0) { img = L.Blocks[b].Forward(img); continue; }
                int l = firstFused + step;
                var newImg = L.Blocks[b].Forward(img, txt, masks);
                var newTxt = Text.Encoder.Layer[l].Forward(txt, selfMask, img, lastNorm: l != c.TextLayers - 1);
                img = newImg; txt = newTxt;
            }
            if (L.Downsample is not null) img = L.Downsample.Forward(img, L.Grid);
        }

        var T = TextTransform.Forward(txt);
        var V = ImageTransform.Forward(img);
        var t = TextPooler.Forward(T);
        var v = ImagePooler.Forward(F.Reshape(Fx.MeanTokens(V), V.Dim(0), 1, V.Dim(2)));
        return new FusedOutput(T, V, F.Concat([t, v], 1), txt, img);
    }

    /// <summary>
    /// The caption path (fiber-coarse.md §3.5 `infer_caption`): one-way fusion from the final, unnormalised Swin
    /// features <paramref name="imageEmbeds"/> (<see cref="SwinTransformer.Forward"/>, computed once per image) into a
    /// causally masked text tower. Fused layers whose cross-attention width is the previous stage's read
    /// adapters[l](image), the others read the image directly; every layer keeps its output LayerNorm.
    /// Returns `text_feats` = cross_modal_text_transform(text) [B, L, H], the LM head's input.
    /// </summary>
    public Tensor ForwardCaption(Tensor imageEmbeds, TextBatch text, CaptionAdapters adapters)
    {
        var c = Config;
        text.Validate();
        var mask = Fx.CausalKeyMask(Ctx.Backend, text.Mask, text.Batch, text.Length, c.TextHeads, Ctx.DType);
        var t = Text.Embeddings.Forward(text);
        for (int l = 0; l < c.TextLayers; l++)
        {
            Tensor? kv = null;
            if (c.IsFusedTextLayer(l))
                kv = c.TextCrossKvDim(l) == c.FinalDim ? imageEmbeds : adapters.Layers[l].Forward(imageEmbeds);
            t = Text.Encoder.Layer[l].Forward(t, mask, kv);
        }
        return TextTransform.Forward(t);
    }

    /// <summary>ITC text embedding (§3.5 `text_only`): unfused tower → transform_itc → pooler_itc at token 0 → L2-normalised [B, H].</summary>
    public Tensor TextOnly(TextBatch text) =>
        F.L2Normalize(TextPoolerItc.Forward(TextTransformItc.Forward(Text.Forward(text))));

    /// <summary><see cref="TextOnly"/> from the shared lower tower's output (the upper layers run plain).</summary>
    public Tensor TextOnlyFromLower(Tensor textLower, TextMasks masks)
    {
        var selfMask = masks.For(Config.TextHeads, masks.Text.Length);
        var h = textLower;
        for (int l = FirstFused().TextLayer; l < Config.TextLayers; l++) h = Text.Encoder.Layer[l].Forward(h, selfMask);
        return F.L2Normalize(TextPoolerItc.Forward(TextTransformItc.Forward(h)));
    }

    /// <summary><see cref="ImageOnly"/> from the shared lower tower's output (the upper blocks run without cross-attention).</summary>
    public Tensor ImageOnlyFromLower(Tensor imageLower)
    {
        var (fs, fb, _) = FirstFused();
        var x = imageLower;
        for (int s = fs; s < Config.NumStages; s++)
        {
            var L = Swin.Layers[s];
            for (int b = s == fs ? fb : 0; b < L.Blocks.Count; b++) x = L.Blocks[b].Forward(x);
            if (L.Downsample is not null) x = L.Downsample.Forward(x, L.Grid);
        }
        var V = ImageTransformItc.Forward(Swin.Norm!.Forward(x));
        return F.L2Normalize(ImagePoolerItc.Forward(F.Reshape(Fx.MeanTokens(V), V.Dim(0), 1, V.Dim(2))));
    }

    /// <summary>ITC image embedding (§1.6): unfused tower → `vit_model.norm` → transform_itc → token mean → pooler_itc → L2-normalised [B, H].</summary>
    public Tensor ImageOnly(Tensor image)
    {
        var V = ImageTransformItc.Forward(Swin.Norm!.Forward(Swin.Forward(image)));
        return F.L2Normalize(ImagePoolerItc.Forward(F.Reshape(Fx.MeanTokens(V), V.Dim(0), 1, V.Dim(2))));
    }
}
