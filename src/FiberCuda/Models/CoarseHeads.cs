using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Models;

/// <summary>`mlm_score.transform`: dense → exact GELU → LayerNorm (eps 1e-12: the locally built RobertaConfig keeps BERT's default).</summary>
public sealed class MlmTransform : Module
{
    public MlmTransform(NnContext ctx, int h) : base(ctx)
    {
        Dense = Child("dense", new Linear(ctx, h, h));
        Norm = Child("LayerNorm", new LayerNorm(ctx, h, 1e-12f));
    }
    public Linear Dense { get; }
    public LayerNorm Norm { get; }
    public Tensor Forward(Tensor x) => Norm.Forward(F.BiasGelu(F.Linear(x, Dense.Weight), Dense.Bias));
}

/// <summary>
/// `mlm_score` (heads.MLMHead): own `bias` [V] first, then the transform, then `decoder` (no bias), not tied to the word
/// embeddings (fiber-coarse.md §4.1). The loss never materialises vocabulary logits for unmasked positions.
/// </summary>
public sealed class MlmHead : Module
{
    public MlmHead(NnContext ctx, int h, int vocab) : base(ctx)
    {
        Bias = Param("bias", vocab);
        Transform = Child("transform", new MlmTransform(ctx, h));
        Decoder = Child("decoder", new Linear(ctx, h, vocab, bias: false));
    }
    public Tensor Bias { get; }
    public MlmTransform Transform { get; }
    public Linear Decoder { get; }

    /// <summary>
    /// Mean cross-entropy over the positions of <paramref name="labels"/> (host, [B·L], −100 = no loss) of
    /// <paramref name="textFeats"/> [B, L, H]: only those rows go through the transform and the fused decoder + CE.
    /// Returns [1]; 0 (still on the graph) when nothing is masked.
    /// </summary>
    public Tensor Loss(Tensor textFeats, ReadOnlySpan<int> labels)
    {
        var (pos, lab) = HeadOps.MaskedPositions(labels);
        var be = textFeats.Backend;
        if (pos.Length == 0) return F.Scale(F.Sum(F.Slice(F.Reshape(textFeats, -1), 0, 0, 1)), 0f);
        // Saved for backward: freed with the step's TensorScope, not here.
        var idx = be.FromInts(pos, [pos.Length]);
        var y = be.FromInts(lab, [lab.Length]);
        var hidden = Transform.Forward(HeadOps.GatherRows(textFeats, idx));
        return HeadOps.MlmLoss(hidden, Decoder.Weight, Bias, y, keptRows: lab.Length);
    }

    /// <summary>Full vocabulary logits of <paramref name="x"/> [..., H] (inference, e.g. fill-mask or captioning).</summary>
    public Tensor Logits(Tensor x) => F.Linear(Transform.Forward(x), Decoder.Weight, Bias);
}

/// <summary>`itm_score` (heads.ITMHead): fc Linear(2H → 2) on `cls_feats`; class 1 = match.</summary>
public sealed class ItmHead : Module
{
    public ItmHead(NnContext ctx, int h) : base(ctx) { Fc = Child("fc", new Linear(ctx, 2 * h, 2)); }
    public Linear Fc { get; }
    public Tensor Forward(Tensor clsFeats) => Fc.Forward(clsFeats);
}

/// <summary>
/// The coarse pre-training heads as a root-level module, so their names are the official state_dict keys (`temp`,
/// `mlm_score.*`, `itm_score.fc.*`, `rank_output.*`) next to <see cref="FiberCoarseModel"/>'s. The ITC transforms and
/// poolers belong to the backbone (they are `cross_modal_*`). Which heads exist follows <see cref="FiberConfig.Heads"/>.
/// </summary>
public sealed class CoarseHeads : Module
{
    public CoarseHeads(NnContext ctx, FiberConfig c) : base(ctx)
    {
        int h = c.CrossHidden;
        // A 0-dim parameter like the official `nn.Parameter(torch.ones([]) * 0.07)`; f32 in a bf16 model too (mixed
        // precision keeps scalars and statistics in f32, and the ITC kernel reads it as f32).
        if (c.HasHead("itc")) Temp = Param("temp", ctx.DType == Tensors.DType.BF16 ? Tensors.DType.F32 : ctx.DType);
        if (c.HasHead("mlm") || c.HasHead("caption")) Mlm = Child("mlm_score", new MlmHead(ctx, h, c.VocabSize));
        if (c.HasHead("itm"))
        {
            Itm = Child("itm_score", new ItmHead(ctx, h));
            RankOutput = Child("rank_output", new Linear(ctx, 2 * h, 1));
        }
    }

    public Tensor? Temp { get; }
    public MlmHead? Mlm { get; }
    public ItmHead? Itm { get; }
    /// <summary>Retrieval score head; the official model builds it as a view of itm_score.fc row 1 and never trains it.</summary>
    public Linear? RankOutput { get; }

    /// <summary>Official key filter for these heads (the rest of a full state dict belongs to the backbone or is ignored).</summary>
    public static bool IsHeadKey(string k) =>
        k == "temp" || k.StartsWith("mlm_score.") || k.StartsWith("itm_score.") || k.StartsWith("rank_output.");

    /// <summary>rank_output ← itm_score.fc row 1 (what the official constructor's view sharing amounts to after a fresh init).</summary>
    public void TieRankOutput()
    {
        if (Itm is null || RankOutput is null) return;
        var be = Ctx.Backend;
        // weight [2, 2H] row 1 → [1, 2H]; bias [2] element 1 → [1]
        be.CopySlice(Itm.Fc.Weight, 0, 1, RankOutput.Weight, 0, 1, accumulate: false);
        be.CopySlice(Itm.Fc.Bias!, 0, 1, RankOutput.Bias!, 0, 1, accumulate: false);
    }
}
