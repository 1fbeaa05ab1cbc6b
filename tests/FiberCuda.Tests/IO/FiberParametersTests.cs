using FiberCuda.Models;

namespace FiberCuda.Tests.IO;

[TestClass]
public sealed class FiberParametersTests
{
    static void AssertCatalogEquals(FiberConfig c, string keysJson)
    {
        var torch = Fixture.Keys(keysJson);
        var cat = FiberParameters.Enumerate(c);
        var mine = cat.ToDictionary(p => p.Name, p => p.Shape.Select(d => (long)d).ToArray());
        var missing = torch.Keys.Except(mine.Keys).ToList();
        var extra = mine.Keys.Except(torch.Keys).ToList();
        Assert.AreEqual(0, missing.Count + extra.Count, $"not in catalog: {string.Join(", ", missing.Take(10))}; not in torch: {string.Join(", ", extra.Take(10))}");
        foreach (var (n, s) in torch) CollectionAssert.AreEqual(s, mine[n], n);
        // Module-tree order is the state_dict order.
        CollectionAssert.AreEqual(torch.Keys.ToList(), cat.Select(p => p.Name).ToList(), "state_dict order");
    }

    [TestMethod] public void TinyCoarseMatchesTorchModuleTree() => AssertCatalogEquals(FiberConfig.Tiny(), "tiny_coarse_keys.json");
    [TestMethod] public void TinyFineV2MatchesTorchModuleTree() => AssertCatalogEquals(FiberConfig.Tiny(FiberStage.Fine, queryNorm: false), "tiny_fine_v2_keys.json");
    [TestMethod] public void TinyFineV3MatchesTorchModuleTree() => AssertCatalogEquals(FiberConfig.Tiny(FiberStage.Fine, queryNorm: true), "tiny_fine_v3_keys.json");

    [TestMethod]
    public void CoarseB384MatchesSpecKeyList()
    {
        // fiber-coarse.md §6.3: 722 keys (679 parameters, 43 buffers) for the pre-train heads.
        var c = FiberConfig.CoarseB(384);
        var cat = FiberParameters.Enumerate(c);
        Assert.AreEqual(722, cat.Count);
        Assert.AreEqual(43, cat.Count(p => p.Kind != ParamKind.Parameter));
        var m = cat.ToDictionary(p => p.Name, p => p.Shape);
        void S(string n, params int[] s) => CollectionAssert.AreEqual(s, m[n], n);
        S("temp");
        S("image_input_queue", 4096, 3, 384, 384);
        S("vit_model.patch_embed.proj.weight", 128, 3, 4, 4);
        S("vit_model.layers.2.blocks.13.attn.relative_position_bias_table", 529, 16);
        S("vit_model.layers.2.blocks.13.attn.relative_position_index", 144, 144);
        S("vit_model.layers.2.blocks.13.attn_mask", 4, 144, 144);
        S("vit_model.layers.2.blocks.15.attn.qkv_text_i2t.weight", 1024, 768);
        S("vit_model.layers.2.blocks.15.attn.qkv_i2t.weight", 512, 512);
        S("vit_model.layers.2.blocks.15.attn.alpha_i2t", 1);
        S("vit_model.layers.2.blocks.15.attn.norm_i2t_i.weight", 512);
        S("vit_model.layers.3.blocks.0.attn.qkv_text_i2t.weight", 2048, 768);
        S("vit_model.layers.3.blocks.1.mlp.fc1.weight", 4096, 1024);
        S("vit_model.layers.1.downsample.reduction.weight", 512, 1024);
        S("text_transformer.embeddings.word_embeddings.weight", 50265, 768);
        S("text_transformer.encoder.layer.6.crossattention_t2i.self.key.weight", 768, 512);
        S("text_transformer.encoder.layer.10.crossattention_t2i.self.value.weight", 768, 1024);
        S("text_transformer.encoder.layer.3.alpha_t2i", 1);
        S("itm_score.fc.weight", 2, 1536);
        S("rank_output.weight", 1, 1536);
        S("mlm_score.decoder.weight", 50265, 768);
        Assert.IsFalse(m.ContainsKey("vit_model.layers.3.blocks.1.attn_mask"), "stage 4 has no shift");
        Assert.IsFalse(m.ContainsKey("vit_model.layers.2.blocks.13.attn.qkv_i2t.weight"), "block 13 is not fused");
        Assert.IsFalse(m.ContainsKey("text_transformer.encoder.layer.5.crossattention_t2i.self.query.weight"));
        // §7: 281.9 M parameters for the pre-train model.
        Assert.AreEqual(281.9e6, FiberParameters.CountParameters(c), 0.05e6);
    }

    [TestMethod]
    public void CoarseB576Shapes()
    {
        var m = FiberParameters.ByName(FiberConfig.CoarseB(576, "vqa"));
        CollectionAssert.AreEqual(new[] { 1225, 4 }, m["vit_model.layers.0.blocks.0.attn.relative_position_bias_table"].Shape);
        CollectionAssert.AreEqual(new[] { 324, 324 }, m["vit_model.layers.3.blocks.1.attn.relative_position_index"].Shape);
        CollectionAssert.AreEqual(new[] { 64, 324, 324 }, m["vit_model.layers.0.blocks.1.attn_mask"].Shape);
        CollectionAssert.AreEqual(new[] { 4, 324, 324 }, m["vit_model.layers.2.blocks.17.attn_mask"].Shape);
        CollectionAssert.AreEqual(new[] { 3129, 1536 }, m["vqa_classifier.3.weight"].Shape);
        Assert.IsFalse(m.ContainsKey("temp"));
        Assert.IsFalse(m.ContainsKey("mlm_score.bias"));
    }

    [TestMethod]
    public void FineB()
    {
        var v2 = FiberParameters.ByName(FiberConfig.FineB(2));
        var v3 = FiberParameters.ByName(FiberConfig.FineB(3));
        const string B = "fusion_backbone.backbone.body.", T = "fusion_backbone.language_backbone.body.model.";
        Assert.IsFalse(v2.ContainsKey(B + "layers.2.blocks.14.attn.norm_i2t_i.weight"), "v2 has no norm_i2t_i");
        Assert.IsTrue(v3.ContainsKey(B + "layers.2.blocks.14.attn.norm_i2t_i.weight"));
        Assert.IsFalse(v2.ContainsKey(B + "norm0.weight"), "norm0 is Identity");
        CollectionAssert.AreEqual(new[] { 512 }, v2[B + "norm2.weight"].Shape);
        Assert.IsFalse(v2.ContainsKey(T + "encoder.layer.5.alpha_t2i"), "fine: alpha only in fused layers");
        Assert.IsFalse(v2.ContainsKey(T + "encoder.layer.6.crossattention_t2i.output.LayerNorm.weight"));
        Assert.IsFalse(v2.ContainsKey(T + "pooler.dense.weight"));
        CollectionAssert.AreEqual(new[] { 768, 1024 }, v2[T + "encoder.layer.11.crossattention_t2i.self.key.weight"].Shape);
        CollectionAssert.AreEqual(new[] { 27, 256, 3, 3 }, v2["rpn.head.dyhead_tower.5.offset.weight"].Shape);
        CollectionAssert.AreEqual(new[] { 1024, 64 }, v2["rpn.head.dyhead_tower.0.relu.fc.2.weight"].Shape);
        CollectionAssert.AreEqual(new[] { 256, 768 }, v2["rpn.head.dot_product_projection_text.weight"].Shape);
        CollectionAssert.AreEqual(new[] { 256, 1024, 1, 1 }, v2["fusion_backbone.backbone.fpn.fpn_inner4.weight"].Shape);
        // fiber-fine.md §11: about 252 M parameters (99.5 + 124.1 + 13.4 + 3.4 + 11.5 + 0.2).
        Assert.AreEqual(252.1e6, FiberParameters.CountParameters(FiberConfig.FineB(2)), 1.5e6);
    }

    [TestMethod]
    public void FusionPairingFollowsTheOfficialRule()
    {
        var c = FiberConfig.CoarseB();
        for (int b = 0; b < 18; b++) Assert.AreEqual(b >= 14, c.IsFusedBlock(2, b), $"2.{b}");
        Assert.IsTrue(c.IsFusedBlock(3, 0) && c.IsFusedBlock(3, 1));
        Assert.IsFalse(c.IsFusedBlock(1, 1));
        for (int l = 6; l < 12; l++) Assert.AreEqual(l < 10 ? 512 : 1024, c.TextCrossKvDim(l));
        for (int l = 0; l < 12; l++) Assert.AreEqual(l >= 6, c.IsFusedTextLayer(l));
    }

    [TestMethod]
    public void ConfigJsonRoundTrip()
    {
        foreach (var n in FiberConfig.PresetNames)
        {
            var c = FiberConfig.Preset(n);
            Assert.AreEqual(c, FiberConfig.FromJson(c.ToJson()), n);
        }
        StringAssert.Contains(FiberConfig.CoarseB().ToJson(), "\"num_heads\"");
    }
}
