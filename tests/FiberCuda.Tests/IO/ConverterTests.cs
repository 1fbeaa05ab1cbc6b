using System.Text.Json;
using FiberCuda.IO;
using FiberCuda.Models;

namespace FiberCuda.Tests.IO;

[TestClass]
public sealed class ConverterTests
{
    [TestMethod]
    public void OfficialCoarseIsIdentityMinusQueuesAndBuffers()
    {
        var r = FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("tiny_coarse.ckpt")] });
        var kept = JsonSerializer.Deserialize<string[]>(File.ReadAllText(Fixture.P("tiny_coarse_kept.json")))!;
        CollectionAssert.AreEquivalent(kept, r.Tensors.Select(t => t.Key).ToArray());
        Assert.AreEqual(0, r.Missing.Count + r.Unexpected.Count + r.Resized.Count + r.Initialised.Count);
        CollectionAssert.IsSubsetOf(new[] { "image_queue", "image_input_queue", "queue_ptr", "text_transformer.embeddings.position_ids" }, r.Dropped);
        Assert.AreEqual(FiberStage.Coarse, r.Config.Stage);
        Assert.AreEqual(64, r.Config.ImageSize);
        Assert.AreEqual(3, r.Config.NumFuse);
        // Values are the checkpoint's, and every shape is the catalog's.
        var cat = FiberParameters.ByName(r.Config);
        using var ck = TorchCheckpoint.Open(Fixture.P("tiny_coarse.ckpt"));
        foreach (var (n, t) in r.Tensors)
        {
            CollectionAssert.AreEqual(cat[n].Shape.Select(d => (long)d).ToArray(), t.Shape, n);
            CollectionAssert.AreEqual(ck.Read(n).Data, t.Data, n);
        }
        // rank_output is a view of itm_score.fc row 1.
        var fc = r.Tensors.First(t => t.Key == "itm_score.fc.weight").Value.ToFloats();
        var ro = r.Tensors.First(t => t.Key == "rank_output.weight").Value.ToFloats();
        CollectionAssert.AreEqual(fc[(fc.Length / 2)..], ro);
    }

    [TestMethod]
    public void WritesEngineFileThatLoadsStrictly()
    {
        var dir = Fixture.TempDir();
        var r = FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("tiny_coarse.ckpt")] });
        FiberConverter.Write(r, dir, Fixture.P("hf_roberta"));
        CollectionAssert.AreEquivalent(new[] { "config.json", "merges.txt", "model.safetensors", "vocab.json" }, Directory.GetFiles(dir).Select(Path.GetFileName).ToArray());
        using var f = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        var cfg = EngineWeights.ReadConfig(f);
        Assert.AreEqual(r.Config, cfg);
        Assert.AreEqual(r.Config, FiberConfig.FromJson(File.ReadAllText(Path.Combine(dir, "config.json"))));
        Assert.IsTrue(EngineWeights.Check(FiberParameters.Enumerate(cfg), f).Ok);
        Assert.AreEqual(SourceKind.Engine, FiberConverter.Detect(f));
        // Strict checking names what is wrong.
        var other = FiberConfig.Tiny() with { TextIntermediate = 24, Heads = ["itm"] };
        var rep = EngineWeights.Check(FiberParameters.Enumerate(other), f);
        Assert.IsTrue(rep.Mismatched.Any(m => m.StartsWith("text_transformer.encoder.layer.0.intermediate.dense.weight")));
        Assert.IsTrue(rep.Unexpected.Contains("temp"));
        Directory.Delete(dir, true);
    }

    [TestMethod]
    public void ImageSizeResizesTablesLikeTorchBicubic()
    {
        var r = FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("tiny_coarse.ckpt")], ImageSize = 96 });
        Assert.AreEqual(96, r.Config.ImageSize);
        Assert.AreEqual(3, r.Config.WindowSize);
        Assert.AreEqual(8, r.Resized.Count);
        using var torch = SafeTensorsFile.Open(Fixture.P("tiny_coarse_96_tables.safetensors"));
        foreach (var t in torch.Tensors)
        {
            var want = torch.Read(t.Name).ToFloats();
            var got = r.Tensors.First(x => x.Key == t.Name).Value;
            CollectionAssert.AreEqual(t.Shape, got.Shape, t.Name);
            var g = got.ToFloats();
            for (int i = 0; i < g.Length; i++) Assert.AreEqual(want[i], g[i], 1e-6f, $"{t.Name}[{i}]");
        }
    }

    [TestMethod]
    public void BicubicKeepsConstantsAndIdentity()
    {
        var c = Enumerable.Repeat(0.25f, 2 * 9).ToArray();
        CollectionAssert.AreEqual(Enumerable.Repeat(0.25f, 2 * 25).ToArray(), Bicubic.Resize(c, 2, 3, 3, 5, 5).Select(v => MathF.Round(v, 6)).ToArray());
        var x = Enumerable.Range(0, 18).Select(i => (float)Math.Sin(i)).ToArray();
        CollectionAssert.AreEqual(x, Bicubic.Resize(x, 2, 3, 3, 3, 3));
    }

    [TestMethod]
    public void OfficialFineStripsModuleAndDropsBuffers()
    {
        var r = FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("tiny_fine_v2.pth")], From = "official-fine" });
        Assert.AreEqual("fiber-tiny-fine-v2", r.Config.Name);
        Assert.IsFalse(r.Config.FusionQueryNorm);
        var torch = Fixture.Keys("tiny_fine_v2_keys.json");
        var stored = torch.Keys.Where(k => !FiberConverter.IsRecomputable(k)).ToArray();
        CollectionAssert.AreEquivalent(stored, r.Tensors.Select(t => t.Key).ToArray());
        Assert.IsTrue(r.Dropped.Contains("rpn.anchor_generator.cell_anchors.0"));
        Assert.ThrowsExactly<ArgumentException>(() => FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("tiny_fine_v2.pth")], ImageSize = 96 }));
    }

    [TestMethod]
    public void ComposesInitFromRobertaAndSwin()
    {
        foreach (var text in new[] { "hf_roberta", "hf_roberta_sharded/model.safetensors.index.json" })
        {
            var r = FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P(text), Fixture.P("swin_tiny_22k.pth")], Fuse = 3, Seed = 5 });
            var m = r.Tensors.ToDictionary(t => t.Key, t => t.Value);
            Assert.AreEqual(0, r.Missing.Count + r.Unexpected.Count);
            using var rob = WeightFiles.Open(Fixture.P("hf_roberta"));
            using var sw = TorchCheckpoint.Open(Fixture.P("swin_tiny_22k.pth"));
            CollectionAssert.AreEqual(rob.Read("roberta.encoder.layer.2.attention.self.query.weight").Data, m["text_transformer.encoder.layer.2.attention.self.query.weight"].Data);
            CollectionAssert.AreEqual(sw.Read("layers.3.blocks.1.mlp.fc2.weight").Data, m["vit_model.layers.3.blocks.1.mlp.fc2.weight"].Data);
            Assert.IsTrue(r.Dropped.Contains("head.weight") && r.Dropped.Contains("lm_head.bias"));
            // Fusion starts switched off: every alpha 0; fresh LayerNorms 1/0; weights small and non-zero; temp 0.07.
            foreach (var (n, t) in m.Where(kv => kv.Key.EndsWith("alpha_i2t") || kv.Key.EndsWith("alpha_t2i")))
                Assert.AreEqual(0f, t.ToFloats()[0], n);
            Assert.IsTrue(m["vit_model.layers.3.blocks.0.attn.norm_i2t_i.weight"].ToFloats().All(v => v == 1f));
            var q = m["text_transformer.encoder.layer.3.crossattention_t2i.self.query.weight"].ToFloats();
            double sd = Math.Sqrt(q.Average(v => (double)v * v));
            Assert.IsTrue(sd > 0.01 && sd < 0.04, $"std {sd}");
            Assert.AreEqual(0.07f, m["temp"].ToFloats()[0]);
            Assert.IsTrue(r.Initialised.Contains("text_transformer.pooler.dense.weight"));
            Assert.IsFalse(r.Initialised.Any(n => n.StartsWith("vit_model.layers.0.")), "stage 1 is all pretrained");
        }
    }

    [TestMethod]
    public void MismatchesAreNamed()
    {
        var dir = Fixture.TempDir();
        var cfgPath = Path.Combine(dir, "c.json");
        // Wrong FFN width: a shape mismatch naming the tensor, the file and the config.
        File.WriteAllText(cfgPath, (FiberConfig.Tiny() with { Name = "wrong", TextIntermediate = 24 }).ToJson());
        var e = Assert.ThrowsExactly<ConvertMismatchException>(() => FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("tiny_coarse.ckpt")], Config = cfgPath }));
        StringAssert.Contains(e.Message, "text_transformer.encoder.layer.0.intermediate.dense.weight: checkpoint [32,16]");
        StringAssert.Contains(e.Message, "tiny_coarse.ckpt");
        // More fused blocks than the checkpoint has: missing, by name.
        File.WriteAllText(cfgPath, (FiberConfig.Tiny() with { Name = "more-fusion", NumFuse = 4 }).ToJson());
        e = Assert.ThrowsExactly<ConvertMismatchException>(() => FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("tiny_coarse.ckpt")], Config = cfgPath }));
        StringAssert.Contains(e.Message, "vit_model.layers.2.blocks.0.attn.qkv_i2t.weight");
        // No heads: the head tensors are unexpected, by name; allowed with AllowUnexpected.
        File.WriteAllText(cfgPath, (FiberConfig.Tiny() with { Name = "no-heads", Heads = [] }).ToJson());
        e = Assert.ThrowsExactly<ConvertMismatchException>(() => FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("tiny_coarse.ckpt")], Config = cfgPath }));
        StringAssert.Contains(e.Message, "itm_score.fc.weight");
        var ok = FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("tiny_coarse.ckpt")], Config = cfgPath, AllowUnexpected = true });
        Assert.IsTrue(ok.Unexpected.Contains("temp"));
        Directory.Delete(dir, true);
    }

    [TestMethod]
    public void BadArguments()
    {
        Assert.ThrowsExactly<ArgumentException>(() => FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("tiny_coarse.ckpt")], From = "official-corse" }));
        Assert.ThrowsExactly<FileNotFoundException>(() => FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("nope.ckpt")] }));
        Assert.ThrowsExactly<ArgumentException>(() => FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("tiny_coarse.ckpt"), Fixture.P("swin_tiny_22k.pth")] }));
        Assert.ThrowsExactly<WeightFormatException>(() => FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("lightning.ckpt")] }));
    }
}
