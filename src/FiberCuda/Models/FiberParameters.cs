namespace FiberCuda.Models;

/// <summary>What a catalog entry is, which decides what loading and conversion do with it.</summary>
public enum ParamKind
{
    /// <summary>A trained parameter: must be in a weight file.</summary>
    Parameter,
    /// <summary>A buffer the engine rebuilds from the config (`relative_position_index`, `attn_mask`, `position_ids`,
    /// anchors): never stored in engine files, dropped on conversion.</summary>
    Recomputed,
    /// <summary>Training state of the ITC/ITM queues (fiber-coarse.md §6.2): never stored, dropped on conversion.</summary>
    Queue,
}

/// <summary>How a parameter starts when it is not loaded (fresh fusion layers and heads of a composed init).</summary>
public enum ParamInit
{
    /// <summary>Comes from a pretrained tower (Swin, RoBERTa) or is recomputed; no fresh init defined.</summary>
    Pretrained,
    /// <summary>normal(0, 0.02): HF `_init_weights` / `objectives.init_weights` for Linear and Embedding.</summary>
    Normal002,
    /// <summary>trunc_normal(0, 0.02, ±2): timm `_init_vit_weights` for Swin Linear layers and the relative table.</summary>
    TruncNormal002,
    Zeros,
    Ones,
    /// <summary>ITC temperature 0.07 (fiber-coarse.md §4.1).</summary>
    Temperature,
}

/// <summary>One parameter or buffer: the official PyTorch key, its shape and element type ("f32"/"i64").</summary>
public sealed record ParamSpec(string Name, int[] Shape, ParamKind Kind, ParamInit Init, string DType = "f32")
{
    public long Numel { get { long n = 1; foreach (var d in Shape) n *= d; return n; } }
    public bool Stored => Kind == ParamKind.Parameter;
    public override string ToString() => $"{Name} {DType}[{string.Join(",", Shape)}] {Kind}";
}

/// <summary>
/// The full list of parameters and buffers of a <see cref="FiberConfig"/>, named exactly like the official PyTorch
/// state_dict keys, in module-tree order (own parameters, own buffers, then children, as `nn.Module.state_dict`).
/// Coarse names follow fiber-coarse.md §6.3 (checked against `coarse_grained/fiber/modules/{fiber_module,swin_transformer,
/// roberta,heads}.py`); fine names follow fiber-fine.md §11 (checked against `fusion_swin_transformer_v{2,3}.py`,
/// `roberta_fused_model_v2.py`, `rpn/vldyhead.py`).
/// </summary>
public static class FiberParameters
{
    public static IReadOnlyList<ParamSpec> Enumerate(FiberConfig c)
    {
        c.Validate();
        var b = new Builder();
        if (c.Stage == FiberStage.Coarse) Coarse(c, b); else Fine(c, b);
        return b.List;
    }

    public static Dictionary<string, ParamSpec> ByName(FiberConfig c) => Enumerate(c).ToDictionary(p => p.Name);

    /// <summary>Number of trained parameters (elements).</summary>
    public static long CountParameters(FiberConfig c) => Enumerate(c).Where(p => p.Stored).Sum(p => p.Numel);

    sealed class Builder
    {
        public readonly List<ParamSpec> List = [];
        public void P(string n, ParamInit init, params int[] shape) => List.Add(new(n, shape, ParamKind.Parameter, init));
        public void Buf(string n, string dtype, params int[] shape) => List.Add(new(n, shape, ParamKind.Recomputed, ParamInit.Pretrained, dtype));
        public void Q(string n, string dtype, params int[] shape) => List.Add(new(n, shape, ParamKind.Queue, ParamInit.Pretrained, dtype));

        public void Linear(string n, int inF, int outF, ParamInit w, bool bias = true)
        {
            P(n + ".weight", w, outF, inF);
            if (bias) P(n + ".bias", w == ParamInit.Pretrained ? ParamInit.Pretrained : ParamInit.Zeros, outF);
        }

        public void LayerNorm(string n, int d, bool fresh)
        {
            P(n + ".weight", fresh ? ParamInit.Ones : ParamInit.Pretrained, d);
            P(n + ".bias", fresh ? ParamInit.Zeros : ParamInit.Pretrained, d);
        }

        public void Conv(string n, int inC, int outC, int k, ParamInit w, ParamInit bias = ParamInit.Zeros)
        {
            P(n + ".weight", w, outC, inC, k, k);
            P(n + ".bias", bias, outC);
        }
    }

    const ParamInit Pre = ParamInit.Pretrained;

    // ------------------------------------------------------------------ coarse
    // Root order (fiber_module.py FIBERTransformerSS.__init__): own params/buffers (temp, queues), then children in
    // assignment order: 4 cross-modal transforms, vit_model, text_transformer, poolers, mlm_score, itm_score,
    // rank_output, cross_modal_att_layers, vqa_classifier, nlvr2_classifier.
    static void Coarse(FiberConfig c, Builder b)
    {
        int h = c.CrossHidden, dT = c.TextHidden, dI = c.FinalDim;
        var N = ParamInit.Normal002;
        if (c.HasHead("itc"))
        {
            b.P("temp", ParamInit.Temperature); // 0-dim scalar
            b.Q("image_queue", "f32", h, c.QueueSize);
            b.Q("text_queue", "f32", h, c.QueueSize);
            b.Q("image_input_queue", "f32", c.QueueSize, 3, c.ImageSize, c.ImageSize);
            b.Q("text_input_queue", "i64", c.QueueSize, c.MaxTextLen);
            b.Q("text_input_mask_queue", "i64", c.QueueSize, c.MaxTextLen);
            b.Q("queue_ptr", "i64", 1);
            b.Q("queue_total", "i64", 1);
        }
        b.Linear("cross_modal_text_transform", dT, h, N);
        b.Linear("cross_modal_image_transform", dI, h, N);
        b.Linear("cross_modal_text_transform_itc", dT, h, N);
        b.Linear("cross_modal_image_transform_itc", dI, h, N);

        Swin(c, b, "vit_model.");
        Roberta(c, b, "text_transformer.", coarse: true);

        // heads.Pooler = dense + tanh; itc_pooler is True in every task config.
        foreach (var p in new[] { "cross_modal_image_pooler", "cross_modal_text_pooler", "cross_modal_image_pooler_itc", "cross_modal_text_pooler_itc" })
            b.Linear(p + ".dense", h, h, N);

        if (c.HasHead("mlm") || c.HasHead("caption"))
        {
            // heads.MLMHead: own `bias` first, then BertPredictionHeadTransform (dense, LayerNorm eps 1e-12), decoder (no bias).
            b.P("mlm_score.bias", ParamInit.Zeros, c.VocabSize);
            b.Linear("mlm_score.transform.dense", h, h, N);
            b.LayerNorm("mlm_score.transform.LayerNorm", h, fresh: true);
            b.Linear("mlm_score.decoder", h, c.VocabSize, N, bias: false);
        }
        if (c.HasHead("itm"))
        {
            b.Linear("itm_score.fc", 2 * h, 2, N);
            // rank_output is built as Linear(h→1) but its .data is then replaced by a view of itm_score.fc row 1
            // (fiber_module.py; fiber-coarse.md §10), so the stored weight is [1, 2h] like the spec's [1,1536].
            b.Linear("rank_output", 2 * h, 1, N);
        }
        if (c.HasHead("caption"))
            for (int i = 0; i < c.TextLayers - 2; i++) // "the bottom layers will not be used": 10 entries, 0..5 unused
                b.Linear($"cross_modal_att_layers.{i}", dI, dI / 2, N);
        if (c.HasHead("vqa"))
        {
            b.Linear("vqa_classifier.0", 2 * h, 2 * h, N);
            b.LayerNorm("vqa_classifier.1", 2 * h, fresh: true);
            b.Linear("vqa_classifier.3", 2 * h, c.VqaLabels, N);
        }
        if (c.HasHead("nlvr2"))
        {
            b.Linear("nlvr2_classifier.0", 4 * h, 2 * h, N);
            b.LayerNorm("nlvr2_classifier.1", 2 * h, fresh: true);
            b.Linear("nlvr2_classifier.3", 2 * h, 2, N);
        }
    }

    // ------------------------------------------------------------------ Swin (both stages)
    // fiber-coarse.md §1.3–1.4, §3.2, §6.3; fiber-fine.md §3.1–3.2, §11. Block order: norm1, attn (table, index buffer,
    // qkv, proj, [alpha_i2t, qkv_text_i2t, qkv_i2t, proj_i2t, norm_i2t_i]), norm2, mlp.fc1/fc2; the block's own
    // attn_mask buffer comes first (coarse only; the fine Swin builds its mask in forward and registers none).
    static void Swin(FiberConfig c, Builder b, string pre)
    {
        var T = ParamInit.TruncNormal002;
        b.Conv(pre + "patch_embed.proj", 3, c.EmbedDim, c.PatchSize, Pre, Pre);
        b.LayerNorm(pre + "patch_embed.norm", c.EmbedDim, fresh: false);
        for (int s = 0; s < c.NumStages; s++)
        {
            int C = c.StageDim(s), nH = c.NumHeads[s], w = c.StageWindow(s);
            for (int k = 0; k < c.Depths[s]; k++)
            {
                string p = $"{pre}layers.{s}.blocks.{k}.";
                bool fused = c.IsFusedBlock(s, k);
                if (c.Stage == FiberStage.Coarse && c.Shift(s, k) > 0)
                {
                    // The block's own buffer precedes its children in state_dict order.
                    int nW = (c.StageGrid(s) / w) * (c.StageGrid(s) / w);
                    b.Buf(p + "attn_mask", "f32", nW, w * w, w * w);
                }
                b.LayerNorm(p + "norm1", C, fresh: false);
                b.P(p + "attn.relative_position_bias_table", Pre, (2 * w - 1) * (2 * w - 1), nH);
                if (fused) b.P(p + "attn.alpha_i2t", ParamInit.Zeros, 1);
                b.Buf(p + "attn.relative_position_index", "i64", w * w, w * w);
                b.Linear(p + "attn.qkv", C, 3 * C, Pre);
                b.Linear(p + "attn.proj", C, C, Pre);
                if (fused)
                {
                    // Fusion layers are new: timm `_init_vit_weights` (trunc-normal 0.02, bias 0; LN 1/0), α = 0.
                    b.Linear(p + "attn.qkv_text_i2t", c.TextHidden, 2 * C, T);
                    b.Linear(p + "attn.qkv_i2t", C, C, T);
                    b.Linear(p + "attn.proj_i2t", C, C, T);
                    if (c.FusionQueryNorm) b.LayerNorm(p + "attn.norm_i2t_i", C, fresh: true);
                }
                b.LayerNorm(p + "norm2", C, fresh: false);
                b.Linear(p + "mlp.fc1", C, c.MlpRatio * C, Pre);
                b.Linear(p + "mlp.fc2", c.MlpRatio * C, C, Pre);
            }
            if (s < c.NumStages - 1)
            {
                // PatchMerging registers `reduction` (no bias) before `norm`.
                b.P($"{pre}layers.{s}.downsample.reduction.weight", Pre, 2 * C, 4 * C);
                b.LayerNorm($"{pre}layers.{s}.downsample.norm", 4 * C, fresh: false);
            }
        }
        if (c.Stage == FiberStage.Coarse)
            b.LayerNorm(pre + "norm", c.FinalDim, fresh: false);
        else
            for (int s = 1; s < c.NumStages; s++) // norm0 is Identity in the RETINANET arch (fiber-fine.md §3.1)
                b.LayerNorm($"{pre}norm{s}", c.StageDim(s), fresh: false);
    }

    // ------------------------------------------------------------------ RoBERTa (both stages)
    // fiber-coarse.md §2, §6.3 (coarse: alpha_t2i in all layers, crossattention output.LayerNorm present but unused,
    // pooler present); fiber-fine.md §3.3, §11 (fine: alpha_t2i only in fused layers, cross output LN is Identity, no pooler).
    static void Roberta(FiberConfig c, Builder b, string pre, bool coarse)
    {
        int d = c.TextHidden;
        var N = ParamInit.Normal002;
        b.Buf(pre + "embeddings.position_ids", "i64", 1, c.MaxPositionEmbeddings); // own buffer before children
        b.P(pre + "embeddings.word_embeddings.weight", Pre, c.VocabSize, d);
        b.P(pre + "embeddings.position_embeddings.weight", Pre, c.MaxPositionEmbeddings, d);
        b.P(pre + "embeddings.token_type_embeddings.weight", Pre, c.TypeVocabSize, d);
        b.LayerNorm(pre + "embeddings.LayerNorm", d, fresh: false);
        for (int l = 0; l < c.TextLayers; l++)
        {
            string p = $"{pre}encoder.layer.{l}.";
            bool fused = c.IsFusedTextLayer(l);
            // Coarse RobertaLayer assigns alpha_t2i last but it is the layer's only own parameter, so it comes first.
            if (coarse || fused) b.P(p + "alpha_t2i", ParamInit.Zeros, 1);
            b.Linear(p + "attention.self.query", d, d, Pre);
            b.Linear(p + "attention.self.key", d, d, Pre);
            b.Linear(p + "attention.self.value", d, d, Pre);
            b.Linear(p + "attention.output.dense", d, d, Pre);
            b.LayerNorm(p + "attention.output.LayerNorm", d, fresh: false);
            if (fused)
            {
                int kv = c.TextCrossKvDim(l);
                b.Linear(p + "crossattention_t2i.self.query", d, d, N);
                b.Linear(p + "crossattention_t2i.self.key", kv, d, N);
                b.Linear(p + "crossattention_t2i.self.value", kv, d, N);
                b.Linear(p + "crossattention_t2i.output.dense", d, d, N);
                if (coarse) b.LayerNorm(p + "crossattention_t2i.output.LayerNorm", d, fresh: true);
            }
            b.Linear(p + "intermediate.dense", d, c.TextIntermediate, Pre);
            b.Linear(p + "output.dense", c.TextIntermediate, d, Pre);
            b.LayerNorm(p + "output.LayerNorm", d, fresh: false);
        }
        // roberta-base checkpoints carry no pooler, so HF initialises it (normal 0.02) even in the coarse model.
        if (coarse) b.Linear(pre + "pooler.dense", d, d, N);
    }

    // ------------------------------------------------------------------ fine
    // GeneralizedVLRCNN: fusion_backbone (FusionSwinTransformer: backbone = Sequential(body, fpn), language_backbone =
    // Sequential(body) with body.model = RobertaModel without pooler), then rpn (VLDyHead + anchor generator).
    static void Fine(FiberConfig c, Builder b)
    {
        Swin(c, b, "fusion_backbone.backbone.body.");
        // fpn.py: lateral 1×1 for C3..C5 (stages 1..3), output 3×3, P6 from P5 and P7 from ReLU(P6) (fiber-fine.md §4).
        int F = c.FpnChannels;
        var U = ParamInit.Normal002; // the FPN and head use kaiming/normal inits; fresh layers are never composed here
        for (int s = 1; s < c.NumStages; s++)
        {
            b.Conv($"fusion_backbone.backbone.fpn.fpn_inner{s + 1}", c.StageDim(s), F, 1, U);
            b.Conv($"fusion_backbone.backbone.fpn.fpn_layer{s + 1}", F, F, 3, U);
        }
        b.Conv("fusion_backbone.backbone.fpn.top_blocks.p6", F, F, 3, U);
        b.Conv("fusion_backbone.backbone.fpn.top_blocks.p7", F, F, 3, U);
        Roberta(c, b, "fusion_backbone.language_backbone.body.model.", coarse: false);

        // VLDyHead (fiber-fine.md §5–§6, rpn/vldyhead.py): own params log_scale, bias_lang, bias0 first.
        string h = "rpn.head.";
        b.P(h + "log_scale", ParamInit.Zeros, 1);
        b.P(h + "bias_lang", ParamInit.Zeros, c.TextHidden);
        b.P(h + "bias0", ParamInit.Zeros, 1);
        for (int k = 0; k < c.DyHeadBlocks; k++)
        {
            string t = $"{h}dyhead_tower.{k}.";
            for (int i = 0; i < 3; i++)
            {
                b.Conv($"{t}DyConv.{i}.conv", F, F, 3, U);  // ModulatedDeformConv (weight, bias)
                b.LayerNorm($"{t}DyConv.{i}.bn", F, fresh: true); // GroupNorm(16): weight, bias
            }
            b.Conv(t + "AttnConv.1", F, 1, 1, U);
            int sq = F / 4; // DYReLU reduction 4, K2 with bias: 4 outputs per channel
            b.Linear(t + "relu.fc.0", F, sq, U);
            b.Linear(t + "relu.fc.2", sq, 4 * F, U);
            b.Conv(t + "offset", F, 27, 3, ParamInit.Zeros);
        }
        b.Conv(h + "cls_logits", F, c.NumClasses, 1, U);
        b.Conv(h + "bbox_pred", F, 4, 1, U);
        b.Conv(h + "centerness", F, 1, 1, U);
        b.Linear(h + "dot_product_projection_text", c.TextHidden, c.DotProductDim, U);
        for (int l = 0; l < 5; l++) b.P($"{h}scales.{l}.scale", ParamInit.Ones, 1);
        for (int l = 0; l < 5; l++) b.Buf($"rpn.anchor_generator.cell_anchors.{l}", "f32", 1, 4);
    }

    /// <summary>Fusion parameters (both towers), for a converter that composes an init from unimodal towers.</summary>
    public static bool IsFusionParameter(string name) =>
        name.Contains(".crossattention_t2i.") || name.EndsWith(".alpha_t2i") || name.Contains("_i2t");
}
