using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Models;

/// <summary>`patch_embed`: a p×p stride-p convolution (as reshape/permute + GEMM) and a LayerNorm.</summary>
public sealed class PatchEmbed : Module
{
    readonly int _p, _c;
    public PatchEmbed(NnContext ctx, int patch, int inChans, int dim) : base(ctx)
    {
        _p = patch; _c = inChans;
        Proj = Child("proj", new Conv2dPatch(ctx, inChans, dim, patch));
        Norm = Child("norm", new LayerNorm(ctx, dim, 1e-5f));
    }
    public Conv2dPatch Proj { get; }
    public LayerNorm Norm { get; }

    /// <summary>[B, 3, H, W] → [B, (H/p)·(W/p), C] (row-major grid); H and W must be multiples of p.</summary>
    public Tensor Forward(Tensor x) => Norm.Forward(Proj.Forward(x));

    /// <summary>
    /// The detection Swin's patch embedding: the image is zero-padded at the bottom and right to multiples of p
    /// first (PatchEmbed.forward's `F.pad`). Returns the tokens and the grid ⌈H/p⌉ × ⌈W/p⌉.
    /// </summary>
    public (Tensor Tokens, int Height, int Width) ForwardPadded(Tensor x)
    {
        int b = x.Dim(0), c = x.Dim(1), h = x.Dim(2), w = x.Dim(3);
        int hp = (h + _p - 1) / _p * _p, wp = (w + _p - 1) / _p * _p;
        if (wp > w) x = F.Concat([x, x.Backend.Zeros([b, c, h, wp - w], x.DType)], 3);
        if (hp > h) x = F.Concat([x, x.Backend.Zeros([b, c, hp - h, wp], x.DType)], 2);
        return (Forward(x), hp / _p, wp / _p);
    }

    /// <summary>Conv2d with kernel = stride = p, no padding (`weight` [C, Cin, p, p], `bias` [C]).</summary>
    public sealed class Conv2dPatch : Module
    {
        readonly int _p, _cin, _cout;
        public Conv2dPatch(NnContext ctx, int cin, int cout, int p) : base(ctx)
        {
            _p = p; _cin = cin; _cout = cout;
            Weight = Param("weight", cout, cin, p, p);
            Bias = Param("bias", cout);
        }
        public Tensor Weight { get; }
        public Tensor Bias { get; }

        public Tensor Forward(Tensor x)
        {
            int b = x.Dim(0), h = x.Dim(2), w = x.Dim(3);
            if (x.Dim(1) != _cin || h % _p != 0 || w % _p != 0) throw new ArgumentException($"patch embed: {x} is not [B,{_cin},k·{_p},k·{_p}]");
            int gh = h / _p, gw = w / _p;
            // [B, Cin, gh, p, gw, p] → [B, gh, gw, Cin, p, p]: each row is one patch in the weight's (c, kh, kw) order.
            var patches = F.Reshape(F.Permute(F.Reshape(x, b, _cin, gh, _p, gw, _p), 0, 2, 4, 1, 3, 5), b, gh * gw, _cin * _p * _p);
            return F.Linear(patches, F.Reshape(Weight, _cout, _cin * _p * _p), Bias);
        }
    }
}

/// <summary>`mlp`: fc1 → exact GELU → fc2.</summary>
public sealed class SwinMlp : Module
{
    public SwinMlp(NnContext ctx, int dim, int hidden) : base(ctx)
    {
        Fc1 = Child("fc1", new Linear(ctx, dim, hidden));
        Fc2 = Child("fc2", new Linear(ctx, hidden, dim));
    }
    public Linear Fc1 { get; }
    public Linear Fc2 { get; }
    public Tensor Forward(Tensor x) => Fc2.Forward(F.BiasGelu(F.Linear(x, Fc1.Weight), Fc1.Bias));
}

/// <summary>
/// `attn`: windowed multi-head self-attention with the learned relative-position table (index recomputed),
/// the optional −100 shift mask, and — in fused blocks — the image-to-text cross-attention parameters
/// (fiber-coarse.md §1.4, §3.2).
/// </summary>
public sealed class WindowAttention : Module
{
    readonly int _w, _n;
    readonly Tensor _relIndex;

    public WindowAttention(NnContext ctx, int dim, int window, int heads, bool fused, int textDim, bool queryNorm) : base(ctx)
    {
        Dim = dim; Heads = heads; _w = window; _n = window * window;
        Table = Param("relative_position_bias_table", (2 * window - 1) * (2 * window - 1), heads);
        if (fused) Alpha = Param("alpha_i2t", 1);
        RecomputedBuffer("relative_position_index");
        _relIndex = ctx.Constant($"swin.relative_position_index.w{window}", () => ctx.Backend.FromInts(RelativePositionIndex(window), [_n * _n]));
        Qkv = Child("qkv", new Linear(ctx, dim, 3 * dim));
        Proj = Child("proj", new Linear(ctx, dim, dim));
        if (fused)
        {
            QkvText = Child("qkv_text_i2t", new Linear(ctx, textDim, 2 * dim));
            QueryI2T = Child("qkv_i2t", new Linear(ctx, dim, dim));
            ProjI2T = Child("proj_i2t", new Linear(ctx, dim, dim));
            if (queryNorm) NormI2T = Child("norm_i2t_i", new LayerNorm(ctx, dim, 1e-5f));
        }
    }

    public int Dim { get; }
    public int Heads { get; }
    public Tensor Table { get; }
    public Tensor? Alpha { get; }
    public Linear Qkv { get; }
    public Linear Proj { get; }
    public Linear? QkvText { get; }
    public Linear? QueryI2T { get; }
    public Linear? ProjI2T { get; }
    public LayerNorm? NormI2T { get; }
    public bool Fused => Alpha is not null;

    /// <summary>idx(i, j) = (hᵢ − hⱼ + w − 1)·(2w − 1) + (wᵢ − wⱼ + w − 1), row-major tokens inside a window.</summary>
    public static int[] RelativePositionIndex(int w)
    {
        int n = w * w;
        var idx = new int[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                idx[i * n + j] = (i / w - j / w + w - 1) * (2 * w - 1) + (i % w - j % w + w - 1);
        return idx;
    }

    /// <summary>Self-attention of windows [B·nW, w², C]; <paramref name="shiftMask"/> is [nW·nH·w²·w²] (−100/0) or null.</summary>
    public Tensor Forward(Tensor x, int batch, Tensor? shiftMask)
    {
        int bw = x.Dim(0), c = Dim, dh = c / Heads;
        var qkv = Qkv.Forward(x);                                                   // [B·nW, N, 3C]
        var q = F.Scale(Fx.SplitHeads(F.Slice(qkv, 2, 0, c), Heads), 1f / MathF.Sqrt(dh));
        var k = Fx.SplitHeads(F.Slice(qkv, 2, c, c), Heads);
        var v = Fx.SplitHeads(F.Slice(qkv, 2, 2 * c, c), Heads);
        var s = F.MatMul(q, k, transB: true);                                      // [B·nW, nH, N, N]
        // bias[h, i, j] = table[idx(i, j), h], added to every window (AddBias broadcasts over rows).
        var bias = F.Reshape(F.Permute(F.Embedding(Table, _relIndex), 1, 0), Heads * _n * _n);
        s = F.AddBias(F.Reshape(s, bw, Heads * _n * _n), bias);
        if (shiftMask is not null) s = F.AddBias(F.Reshape(s, batch, (int)(s.Numel / batch)), shiftMask);
        var p = F.Softmax(F.Reshape(s, bw, Heads, _n, _n));
        return Proj.Forward(Fx.MergeHeads(F.MatMul(p, v)));
    }

    /// <summary>
    /// a + α·proj_i2t(softmax(q kₜᵀ + textmask) vₜ) with q = qkv_i2t(norm_i2t_i(a))·dh^-½ and kₜ, vₜ = qkv_text_i2t(text).
    /// Every step is per image token, so it runs on the un-windowed token order [B, R², C] (same result as the
    /// official per-window call, where every window of image b sees text b).
    /// </summary>
    public Tensor CrossForward(Tensor a, Tensor text, TextMasks masks)
    {
        int c = Dim, dh = c / Heads;
        var qin = NormI2T is null ? a : NormI2T.Forward(a);
        var kv = QkvText!.Forward(text);                                                       // [B, L, 2C]
        if (CrossAttentionOps.Supports(a.Backend, dh))
        {
            // One fused kernel (scores, per-key padding mask, softmax, ·v) and one for the gate + residual.
            var y = CrossAttentionOp.Apply(QueryI2T!.Forward(qin), F.Slice(kv, 2, 0, c), F.Slice(kv, 2, c, c), masks.KeyMask(), Heads, 1f / MathF.Sqrt(dh));
            return GatedResidualOp.Apply(a, ProjI2T!.Forward(y), Alpha!);
        }
        var q = F.Scale(Fx.SplitHeads(QueryI2T!.Forward(qin), Heads), 1f / MathF.Sqrt(dh));   // [B, nH, T, dh]
        var k = Fx.SplitHeads(F.Slice(kv, 2, 0, c), Heads);
        var v = Fx.SplitHeads(F.Slice(kv, 2, c, c), Heads);
        var p = F.Softmax(F.Add(F.MatMul(q, k, transB: true), masks.For(Heads, a.Dim(1))));    // [B, nH, T, L]
        var o = ProjI2T!.Forward(Fx.MergeHeads(F.MatMul(p, v)));
        return GatedResidualOp.Apply(a, o, Alpha!);
    }
}

/// <summary>One Swin block (fiber-coarse.md §1.4), optionally fused (§3.2).</summary>
public sealed class SwinBlock : Module
{
    public SwinBlock(NnContext ctx, FiberConfig c, int stage, int block, float dropPath) : base(ctx)
    {
        Stage = stage; Grid = c.StageGrid(stage); Window = c.StageWindow(stage); Shift = c.Shift(stage, block);
        PadsToWindow = c.Stage == FiberStage.Fine;
        Dim = c.StageDim(stage); Heads = c.NumHeads[stage];
        if (Shift > 0 && c.Stage == FiberStage.Coarse) RecomputedBuffer("attn_mask");
        Norm1 = Child("norm1", new LayerNorm(ctx, Dim, 1e-5f));
        Attn = Child("attn", new WindowAttention(ctx, Dim, Window, Heads, c.IsFusedBlock(stage, block), c.TextHidden, c.FusionQueryNorm));
        Norm2 = Child("norm2", new LayerNorm(ctx, Dim, 1e-5f));
        Mlp = Child("mlp", new SwinMlp(ctx, Dim, c.MlpRatio * Dim));
        Drop = Child("drop_path", new DropPath(ctx, dropPath));
        // The fused kernel does shift, partition, bias, mask and softmax in one pass; the composed path
        // (F ops, the mask expanded to full score tensors) serves the geometries it does not cover.
        FusedWindowKernel = WindowAttentionOps.Supports(ctx.Backend, Dim / Heads, Window);
    }

    public int Stage { get; }
    /// <summary>The coarse model's (square, fixed) token grid side; the fine model's grid is given per call.</summary>
    public int Grid { get; }
    /// <summary>Fine (detection) Swin: maps that are not multiples of the window are zero-padded after norm1 and cropped
    /// after the attention (fiber-fine.md §3.1); the coarse Swin clamps its window to the grid instead.</summary>
    public bool PadsToWindow { get; }
    /// <summary>Self-attention through <see cref="WindowAttentionOp"/> (one fused kernel) rather than composed F ops.</summary>
    public bool FusedWindowKernel { get; }
    public int Window { get; }
    public int Shift { get; }
    public int Dim { get; }
    public int Heads { get; }
    public LayerNorm Norm1 { get; }
    public WindowAttention Attn { get; }
    public LayerNorm Norm2 { get; }
    public SwinMlp Mlp { get; }
    public DropPath Drop { get; }

    /// <summary>
    /// The shifted-window mask [nW, w², w²] (0 within a region, −100 across), repeated over heads as
    /// [nW, heads, w², w²]: regions are [0, R−w), [R−w, R−s), [R−s, R) on rows × the same on columns.
    /// </summary>
    public static double[] ShiftMask(int r, int w, int s, int heads) => ShiftMask(r, r, w, s, heads);

    /// <summary><see cref="ShiftMask(int,int,int,int)"/> of an <paramref name="h"/>×<paramref name="wd"/> map (the padded
    /// size: BasicLayer.get_attention_mask labels the padded map).</summary>
    public static double[] ShiftMask(int h, int wd, int w, int s, int heads)
    {
        static int Band(int i, int r, int w, int s) => i < r - w ? 0 : i < r - s ? 1 : 2;
        int nh = h / w, nw = wd / w, n = w * w;
        var m = new double[(long)nh * nw * heads * n * n];
        long o = 0;
        for (int wr = 0; wr < nh; wr++)
            for (int wc = 0; wc < nw; wc++)
            {
                var label = new int[n];
                for (int t = 0; t < n; t++) label[t] = Band(wr * w + t / w, h, w, s) * 3 + Band(wc * w + t % w, wd, w, s);
                for (int hd = 0; hd < heads; hd++)
                    for (int i = 0; i < n; i++)
                        for (int j = 0; j < n; j++) m[o++] = label[i] == label[j] ? 0.0 : -100.0;
            }
        return m;
    }

    /// <summary>x [B, R², C] on the coarse model's fixed grid; text [B, L, Dt] with its mask provider for fused blocks, or null.</summary>
    public Tensor Forward(Tensor x, Tensor? text = null, TextMasks? masks = null) => Forward(x, Grid, Grid, text, masks);

    /// <summary>x [B, h·w, C] (row-major grid); text [B, L, Dt] with its mask provider for fused blocks, or null.</summary>
    public Tensor Forward(Tensor x, int height, int width, Tensor? text = null, TextMasks? masks = null)
    {
        int b = x.Dim(0), w = Window, c = Dim;
        if (x.Dim(1) != height * width || x.Dim(2) != c) throw new ArgumentException($"Swin block ({Stage}): {x} is not [B,{height}x{width},{c}]");
        int hp = height, wp = width;
        if (PadsToWindow) { hp = (height + w - 1) / w * w; wp = (width + w - 1) / w * w; }
        else if (height % w != 0 || width % w != 0) throw new ArgumentException($"Swin block ({Stage}): grid {height}x{width} is not a multiple of window {w}");
        // Padded tokens are zeros after norm1, so their q, k, v are the qkv bias, and they are attended to (official code).
        Tensor a;
        if (FusedWindowKernel)
        {
            // qkv stays in token order: the kernel rolls, partitions and reverses in its loads and stores, and takes the
            // padding tokens' q, k, v from the bias (no padded copy of the map).
            var qkv = Attn.Qkv.Forward(Norm1.Forward(x));
            a = Attn.Proj.Forward(WindowAttentionOp.Apply(qkv, Attn.Table, height, width, Heads, w, Shift, pad: Attn.Qkv.Bias));
        }
        else
        {
            int nh = hp / w, nw = wp / w;
            var h = F.Reshape(Fx.PadGrid(Norm1.Forward(x), height, width, hp, wp), b, hp, wp, c);
            if (Shift > 0) h = Fx.Roll(Fx.Roll(h, -Shift, 1), -Shift, 2);
            var win = F.Reshape(F.Permute(F.Reshape(h, b, nh, w, nw, w, c), 0, 1, 3, 2, 4, 5), b * nh * nw, w * w, c);
            a = Attn.Forward(win, b, Shift > 0 ? ShiftMaskTensor(hp, wp) : null);
            a = F.Reshape(F.Permute(F.Reshape(a, b, nh, nw, w, w, c), 0, 1, 3, 2, 4, 5), b, hp, wp, c);
            if (Shift > 0) a = Fx.Roll(Fx.Roll(a, Shift, 1), Shift, 2);
            a = Fx.CropGrid(F.Reshape(a, b, hp * wp, c), hp, wp, height, width);
        }
        if (text is not null)
        {
            if (!Attn.Fused) throw new InvalidOperationException($"Swin block of stage {Stage} is not a fusion block");
            // Per token, so running it on the cropped map equals the official per-window call followed by the crop.
            a = Attn.CrossForward(a, text, masks!);
        }
        var (sum, y) = F.LayerNormResidual(Drop.Forward(a), x, Norm2.Weight, Norm2.Bias, Norm2.Eps);
        return Drop.Forward(Mlp.Forward(y), sum);
    }

    /// <summary>The composed path's shift mask for an hp×wp (padded) map, shared by the blocks of a model.</summary>
    Tensor ShiftMaskTensor(int hp, int wp) =>
        Ctx.Constant($"swin.shift_mask.{hp}x{wp}.w{Window}.s{Shift}.h{Heads}", () => Ctx.Backend.FromDoubles(ShiftMask(hp, wp, Window, Shift, Heads),
            [(hp / Window) * (wp / Window) * Heads * Window * Window * Window * Window], Ctx.DType));
}

/// <summary>`downsample`: 2×2 neighbours concatenated in the order (even,even), (odd,even), (even,odd), (odd,odd)
/// (row, col), LayerNorm(4C), Linear(4C → 2C, no bias).</summary>
public sealed class PatchMerging : Module
{
    public PatchMerging(NnContext ctx, int dim) : base(ctx)
    {
        Reduction = Child("reduction", new Linear(ctx, 4 * dim, 2 * dim, bias: false));
        Norm = Child("norm", new LayerNorm(ctx, 4 * dim, 1e-5f));
    }
    public Linear Reduction { get; }
    public LayerNorm Norm { get; }

    public Tensor Forward(Tensor x, int grid) => Forward(x, grid, grid);

    /// <summary>x [B, h·w, C] → [B, (h/2)·(w/2), 2C]; h and w must be even (the official module asserts it).</summary>
    public Tensor Forward(Tensor x, int height, int width)
    {
        if (height % 2 != 0 || width % 2 != 0 || x.Dim(1) != height * width)
            throw new ArgumentException($"patch merging: {x} is not an even {height}x{width} grid (pad the image to a multiple of 32)");
        // One kernel gathers each 2×2 neighbourhood (channel block 2·col + row) and normalises it: no gathered copy.
        return Reduction.Forward(PatchMergeNormOp.Apply(x, height, width, Norm.Weight, Norm.Bias, Norm.Eps));
    }
}

public sealed class BasicLayer : Module
{
    public BasicLayer(NnContext ctx, FiberConfig c, int stage, Func<int, float> dropPathOfBlock) : base(ctx)
    {
        Stage = stage; Grid = c.StageGrid(stage);
        Blocks = Child("blocks", new ModuleList<SwinBlock>(ctx, Enumerable.Range(0, c.Depths[stage]).Select(k => new SwinBlock(ctx, c, stage, k, dropPathOfBlock(k)))));
        if (stage < c.NumStages - 1) Downsample = Child("downsample", new PatchMerging(ctx, c.StageDim(stage)));
    }
    public int Stage { get; }
    public int Grid { get; }
    public ModuleList<SwinBlock> Blocks { get; }
    public PatchMerging? Downsample { get; }
}

/// <summary>
/// The Swin image tower. Coarse (`vit_model`): no absolute position embedding, window S/32 clamped to each grid, one final
/// `norm` (fiber-coarse.md §1). Fine (`fusion_backbone.backbone.body`): window fixed and maps padded to it, per-stage output
/// norms `norm1`..`norm3` on each stage's pre-downsample output, `norm0` an Identity (fiber-fine.md §3.1).
/// </summary>
public sealed class SwinTransformer : Module
{
    readonly LayerNorm?[] _outNorms;

    public SwinTransformer(NnContext ctx, FiberConfig c, float dropPathRate = 0.1f) : base(ctx)
    {
        Config = c;
        PatchEmbed = Child("patch_embed", new PatchEmbed(ctx, c.PatchSize, 3, c.EmbedDim));
        int total = c.Depths.Sum();
        var first = new int[c.NumStages];
        for (int s = 1; s < c.NumStages; s++) first[s] = first[s - 1] + c.Depths[s - 1];
        // Stochastic depth rises linearly over all blocks: block k of N gets rate·k/(N−1).
        Layers = Child("layers", new ModuleList<BasicLayer>(ctx, Enumerable.Range(0, c.NumStages).Select(s =>
            new BasicLayer(ctx, c, s, k => total <= 1 ? 0f : (float)(dropPathRate * (first[s] + k) / (total - 1))))));
        _outNorms = new LayerNorm?[c.NumStages];
        if (c.Stage == FiberStage.Coarse) Norm = Child("norm", new LayerNorm(ctx, c.FinalDim, 1e-5f));
        else
            for (int s = 1; s < c.NumStages; s++) _outNorms[s] = Child($"norm{s}", new LayerNorm(ctx, c.StageDim(s), 1e-5f));
    }
    public FiberConfig Config { get; }
    public PatchEmbed PatchEmbed { get; }
    public ModuleList<BasicLayer> Layers { get; }
    /// <summary>The coarse tower's final LayerNorm (null in the fine tower).</summary>
    public LayerNorm? Norm { get; }

    /// <summary>Fine tower: the output norm of stage s applied to its pre-downsample output (stage 0: Identity).</summary>
    public Tensor OutNorm(int s, Tensor x)
    {
        if (Config.Stage != FiberStage.Fine) throw new InvalidOperationException("per-stage output norms exist in the fine Swin only");
        return _outNorms[s] is { } n ? n.Forward(x) : x;
    }

    /// <summary>The unfused fine image tower: every stage without text, each output through its output norm (C2..C5).</summary>
    public FeatureMap[] ForwardFeatures(Tensor image)
    {
        var (x, h, w) = PatchEmbed.ForwardPadded(image);
        var feats = new FeatureMap[Config.NumStages];
        for (int s = 0; s < Config.NumStages; s++)
        {
            var L = Layers[s];
            for (int k = 0; k < L.Blocks.Count; k++) x = L.Blocks[k].Forward(x, h, w);
            feats[s] = new FeatureMap(OutNorm(s, x), h, w);
            if (L.Downsample is not null) { x = L.Downsample.Forward(x, h, w); h /= 2; w /= 2; }
        }
        return feats;
    }

    /// <summary>The unfused coarse image tower: all stages, no text, without the final LayerNorm: [B, (S/32)², C₄].</summary>
    public Tensor Forward(Tensor image)
    {
        var x = PatchEmbed.Forward(image);
        for (int s = 0; s < Config.NumStages; s++)
        {
            var L = Layers[s];
            for (int k = 0; k < L.Blocks.Count; k++) x = L.Blocks[k].Forward(x);
            if (L.Downsample is not null) x = L.Downsample.Forward(x, L.Grid);
        }
        return x;
    }
}
