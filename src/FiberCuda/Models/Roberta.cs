using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Models;

/// <summary>
/// A tokenised text batch: ids and the 0/1 attention mask, both [Batch, Length] row-major on the host
/// (position ids and additive masks are derived on the host).
/// </summary>
public sealed record TextBatch(int[] Ids, int[] Mask, int Batch, int Length)
{
    public void Validate()
    {
        if (Ids.Length != Batch * Length || Mask.Length != Batch * Length)
            throw new ArgumentException($"text batch: {Ids.Length} ids / {Mask.Length} mask values for [{Batch},{Length}]");
    }

    /// <summary>The rows b0..b0+n−1.</summary>
    public TextBatch Rows(int b0, int n) =>
        new(Ids[(b0 * Length)..((b0 + n) * Length)], Mask[(b0 * Length)..((b0 + n) * Length)], n, Length);
}

/// <summary>
/// The additive masks of one text batch, built once per forward and shared by every layer:
/// self-attention [B, heads, L, L] and, for the fused Swin blocks, [B, nH, tokens, L] per block shape.
/// Values (1 − m)·(−10000): transformers 4.6's extended attention mask (fiber-coarse.md §2).
/// </summary>
public sealed class TextMasks(TextBatch text, IBackend be, DType dtype)
{
    readonly Dictionary<(int Heads, int Rows), Tensor> _cache = [];
    public TextBatch Text { get; } = text;

    public Tensor For(int heads, int rows)
    {
        if (!_cache.TryGetValue((heads, rows), out var t))
            _cache[(heads, rows)] = t = Fx.ExpandKeyMask(be, Text.Mask, Text.Batch, Text.Length, heads, rows, dtype);
        return t;
    }

    Tensor? _key;

    /// <summary>The per-key form [B, L] of the same values, for the fused cross-attention op (it broadcasts over heads and rows).</summary>
    public Tensor KeyMask() => _key ??= Fx.ExpandKeyMask(be, Text.Mask, Text.Batch, Text.Length, 1, 1, dtype).Reshape(Text.Batch, Text.Length);
}

/// <summary>word + token type (0) + RoBERTa positions → LayerNorm (eps 1e-5) → dropout.</summary>
public sealed class RobertaEmbeddings : Module
{
    readonly FiberConfig _c;
    public RobertaEmbeddings(NnContext ctx, FiberConfig c, float dropout) : base(ctx)
    {
        _c = c;
        RecomputedBuffer("position_ids");
        // HF RoBERTa gives both padding_idx = pad id: the pad row never receives a gradient.
        Word = Child("word_embeddings", new Embedding(ctx, c.VocabSize, c.TextHidden, c.PadTokenId));
        Position = Child("position_embeddings", new Embedding(ctx, c.MaxPositionEmbeddings, c.TextHidden, c.PadTokenId));
        TokenType = Child("token_type_embeddings", new Embedding(ctx, c.TypeVocabSize, c.TextHidden));
        Norm = Child("LayerNorm", new LayerNorm(ctx, c.TextHidden, 1e-5f));
        Drop = Child("dropout", new Dropout(ctx, dropout));
    }
    public Embedding Word { get; }
    public Embedding Position { get; }
    public Embedding TokenType { get; }
    public LayerNorm Norm { get; }
    public Dropout Drop { get; }

    /// <summary>
    /// RoBERTa position ids: padding_idx + running count of non-pad tokens for non-pad tokens, padding_idx for
    /// pad tokens (`create_position_ids_from_input_ids`; pad = the pad token id, not the attention mask).
    /// </summary>
    public static int[] PositionIds(TextBatch t, int pad)
    {
        var p = new int[t.Ids.Length];
        for (int b = 0; b < t.Batch; b++)
        {
            int run = 0;
            for (int i = 0; i < t.Length; i++)
            {
                int k = b * t.Length + i;
                if (t.Ids[k] != pad) { run++; p[k] = pad + run; } else p[k] = pad;
            }
        }
        return p;
    }

    public Tensor Forward(TextBatch t)
    {
        var be = Ctx.Backend;
        var pos = PositionIds(t, _c.PadTokenId);
        if (pos.Max() >= _c.MaxPositionEmbeddings) throw new ArgumentException($"text of {t.Length} tokens exceeds {_c.MaxPositionEmbeddings - _c.PadTokenId - 1} positions");
        var types = be.Zeros([t.Batch, t.Length], DType.I32);
        // HF order: (word + token_type) + position (fiber-coarse.md §10).
        var e = F.Add(F.Add(Word.Forward(t.Ids, [t.Batch, t.Length]), TokenType.Forward(types)), Position.Forward(pos, [t.Batch, t.Length]));
        return Drop.Forward(Norm.Forward(e));
    }
}

/// <summary>`attention.self` / `crossattention_t2i.self`: query, key, value projections and scaled dot-product attention.</summary>
public sealed class RobertaSelfAttention : Module
{
    public RobertaSelfAttention(NnContext ctx, int hidden, int kvDim, int heads, float dropout) : base(ctx)
    {
        Heads = heads;
        Query = Child("query", new Linear(ctx, hidden, hidden));
        Key = Child("key", new Linear(ctx, kvDim, hidden));
        Value = Child("value", new Linear(ctx, kvDim, hidden));
        Drop = Child("dropout", new Dropout(ctx, dropout));
    }
    public int Heads { get; }
    public Linear Query { get; }
    public Linear Key { get; }
    public Linear Value { get; }
    public Dropout Drop { get; }

    /// <summary>Context [B, Lq, D] of queries from <paramref name="hq"/> over keys/values from <paramref name="hkv"/>; mask [B, H, Lq, Lk] additive or null.</summary>
    public Tensor Forward(Tensor hq, Tensor hkv, Tensor? mask)
    {
        int dh = Query.Weight.Dim(0) / Heads;
        // Unmasked (the text→image cross-attention): one fused op. Its probability dropout takes the same
        // offsets from the context's stream as Drop.Forward on the [B, H, Lq, Lk] tensor would, so both paths
        // drop the same elements.
        if (mask is null && CrossAttentionOps.Supports(hq.Backend, dh))
        {
            float dropP = Drop.Training ? Drop.P : 0f;
            ulong offset = dropP > 0f ? Ctx.TakeOffset((long)hq.Dim(0) * Heads * hq.Dim(1) * hkv.Dim(1)) : 0;
            return CrossAttentionOp.Apply(Query.Forward(hq), Key.Forward(hkv), Value.Forward(hkv), null, Heads, 1f / MathF.Sqrt(dh), dropP, Ctx.Seed, offset);
        }
        var q = Fx.SplitHeads(Query.Forward(hq), Heads);
        var k = Fx.SplitHeads(Key.Forward(hkv), Heads);
        var v = Fx.SplitHeads(Value.Forward(hkv), Heads);
        var s = F.Scale(F.MatMul(q, k, transB: true), 1f / MathF.Sqrt(dh));
        if (mask is not null) s = F.Add(s, mask);
        var p = Drop.Forward(F.Softmax(s));
        return Fx.MergeHeads(F.MatMul(p, v));
    }
}

/// <summary>`attention.output` / `crossattention_t2i.output`: dense + dropout. FIBER moved the residual + LayerNorm
/// into the layer, so `LayerNorm` is applied there (and never for the cross-attention one, which the fine model's
/// roberta-fused-v2 replaces by an Identity: no parameters).</summary>
public sealed class RobertaSelfOutput : Module
{
    readonly LayerNorm? _norm;

    public RobertaSelfOutput(NnContext ctx, int hidden, float dropout, bool norm = true) : base(ctx)
    {
        Dense = Child("dense", new Linear(ctx, hidden, hidden));
        if (norm) _norm = Child("LayerNorm", new LayerNorm(ctx, hidden, 1e-5f));
        Drop = Child("dropout", new Dropout(ctx, dropout));
    }
    public Linear Dense { get; }
    public LayerNorm Norm => _norm ?? throw new InvalidOperationException("this attention output has no LayerNorm (an Identity in the official module)");
    public Dropout Drop { get; }
    public Tensor Forward(Tensor x) => Drop.Forward(Dense.Forward(x));
}

public sealed class RobertaAttention : Module
{
    public RobertaAttention(NnContext ctx, int hidden, int kvDim, int heads, float dropout, bool outputNorm = true) : base(ctx)
    {
        Self = Child("self", new RobertaSelfAttention(ctx, hidden, kvDim, heads, dropout));
        Output = Child("output", new RobertaSelfOutput(ctx, hidden, dropout, outputNorm));
    }
    public RobertaSelfAttention Self { get; }
    public RobertaSelfOutput Output { get; }
}

/// <summary>Module holding one Linear named `dense` (RoBERTa `intermediate`, FIBER poolers).</summary>
public sealed class DenseHolder : Module
{
    public DenseHolder(NnContext ctx, int inF, int outF) : base(ctx) { Dense = Child("dense", new Linear(ctx, inF, outF)); }
    public Linear Dense { get; }
}

/// <summary>`output`: dense (FFN down-projection), dropout, LayerNorm.</summary>
public sealed class RobertaOutput : Module
{
    public RobertaOutput(NnContext ctx, int inter, int hidden, float dropout) : base(ctx)
    {
        Dense = Child("dense", new Linear(ctx, inter, hidden));
        Norm = Child("LayerNorm", new LayerNorm(ctx, hidden, 1e-5f));
        Drop = Child("dropout", new Dropout(ctx, dropout));
    }
    public Linear Dense { get; }
    public LayerNorm Norm { get; }
    public Dropout Drop { get; }
}

/// <summary>
/// FIBER's modified RoBERTa layer (fiber-coarse.md §2): s = Drop(Wₒ·MHA(h)); for fused layers with image
/// states I, s += α_t2i·Drop(Wₒ′·MHA(q = s, k/v = I, no mask)) (the query is the pre-residual s);
/// a = LN(s + h); f = Drop(W₂·GELU(W₁a)) + a; out = LN(f) unless <c>lastNorm</c> is false.
/// </summary>
public sealed class RobertaLayer : Module
{
    public RobertaLayer(NnContext ctx, FiberConfig c, int index, bool coarse, float dropout) : base(ctx)
    {
        Index = index;
        bool fused = c.IsFusedTextLayer(index);
        if (coarse || fused) Alpha = Param("alpha_t2i", 1);
        Attention = Child("attention", new RobertaAttention(ctx, c.TextHidden, c.TextHidden, c.TextHeads, dropout));
        if (fused) Cross = Child("crossattention_t2i", new RobertaAttention(ctx, c.TextHidden, c.TextCrossKvDim(index), c.TextHeads, dropout, outputNorm: coarse));
        Intermediate = Child("intermediate", new DenseHolder(ctx, c.TextHidden, c.TextIntermediate));
        Output = Child("output", new RobertaOutput(ctx, c.TextIntermediate, c.TextHidden, dropout));
    }
    public int Index { get; }
    public Tensor? Alpha { get; }
    public RobertaAttention Attention { get; }
    public RobertaAttention? Cross { get; }
    public DenseHolder Intermediate { get; }
    public RobertaOutput Output { get; }

    /// <param name="h">[B, L, D]</param>
    /// <param name="selfMask">additive [B, heads, L, L]</param>
    /// <param name="image">image states [B, N, Din] (raw Swin tokens) to cross-attend to, or null (plain layer)</param>
    public Tensor Forward(Tensor h, Tensor? selfMask, Tensor? image = null, bool lastNorm = true)
    {
        var s = Attention.Output.Forward(Attention.Self.Forward(h, h, selfMask));
        if (image is not null)
        {
            if (Cross is null) throw new InvalidOperationException($"text layer {Index} is not a fusion layer");
            var c = Cross.Output.Forward(Cross.Self.Forward(s, image, null));
            s = GatedResidualOp.Apply(s, c, Alpha!);
        }
        var a = Attention.Output.Norm.Forward(s, h);
        var i = F.BiasGelu(F.Linear(a, Intermediate.Dense.Weight), Intermediate.Dense.Bias);
        var f = Output.Drop.Forward(Output.Dense.Forward(i));
        return lastNorm ? Output.Norm.Forward(f, a) : F.Add(f, a);
    }
}

public sealed class RobertaEncoder : Module
{
    public RobertaEncoder(NnContext ctx, FiberConfig c, bool coarse, float dropout) : base(ctx)
    {
        Layer = Child("layer", new ModuleList<RobertaLayer>(ctx, Enumerable.Range(0, c.TextLayers).Select(l => new RobertaLayer(ctx, c, l, coarse, dropout))));
    }
    public ModuleList<RobertaLayer> Layer { get; }
}

/// <summary>`text_transformer`: embeddings, encoder.layer.*, and (coarse) the unused `pooler`.</summary>
public sealed class RobertaModel : Module
{
    public RobertaModel(NnContext ctx, FiberConfig c, bool coarse = true, float dropout = 0.1f) : base(ctx)
    {
        Config = c;
        Embeddings = Child("embeddings", new RobertaEmbeddings(ctx, c, dropout));
        Encoder = Child("encoder", new RobertaEncoder(ctx, c, coarse, dropout));
        if (coarse) Pooler = Child("pooler", new DenseHolder(ctx, c.TextHidden, c.TextHidden));
    }
    public FiberConfig Config { get; }
    public RobertaEmbeddings Embeddings { get; }
    public RobertaEncoder Encoder { get; }
    public DenseHolder? Pooler { get; }

    public TextMasks Masks(TextBatch t) => new(t, Ctx.Backend, Ctx.DType);

    /// <summary>The unfused text tower (every layer plain, every output LayerNorm applied): [B, L, D].</summary>
    public Tensor Forward(TextBatch t)
    {
        t.Validate();
        var masks = Masks(t);
        var h = Embeddings.Forward(t);
        for (int l = 0; l < Config.TextLayers; l++)
            h = Encoder.Layer[l].Forward(h, masks.For(Config.TextHeads, t.Length));
        return h;
    }
}
