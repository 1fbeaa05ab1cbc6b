using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.IO;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Model;

[TestClass]
public sealed class FiberModelLoadTests
{
    static string WeightsFixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "weights", name);

    /// <summary>An official-layout Lightning checkpoint → `fiber convert` → engine file → strict engine load → the model.</summary>
    [TestMethod]
    public void LoadsAConvertedOfficialCheckpoint()
    {
        var dir = Path.Combine(Path.GetTempPath(), "fibercuda-model-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var r = FiberConverter.Convert(new ConvertOptions { Inputs = [WeightsFixture("tiny_coarse.ckpt")] });
            FiberConverter.Write(r, dir);
            using var f = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
            var cfg = EngineWeights.ReadConfig(f);
            var sd = EngineWeights.Load(cfg, f, Backend.Cpu);
            var m = new FiberCoarseModel(NnContext.Cpu(), cfg);
            Assert.IsTrue(m.LoadBackbone(sd).Ok);
            Assert.IsTrue(sd.Keys.Any(k => !FiberCoarseModel.IsBackboneKey(k)), "the file also has heads");
            using var ck = TorchCheckpoint.Open(WeightsFixture("tiny_coarse.ckpt"));
            foreach (var (n, p) in m.NamedParameters())
                CollectionAssert.AreEqual(ck.Read(n).ToFloats(), p.ToFloatArray(), n);
            // The same straight from the file, reading only the backbone's tensors.
            var m2 = new FiberCoarseModel(NnContext.Cpu(DType.F64), cfg);
            Assert.IsTrue(m2.LoadBackbone(f).Ok);
            foreach (var ((n, p), (_, p2)) in m.NamedParameters().Zip(m2.NamedParameters()))
                CollectionAssert.AreEqual(p.ToDoubleArray(), p2.ToDoubleArray(), n);
            Assert.ThrowsExactly<WeightLoadException>(() => m2.LoadFrom(f), "strict without a filter: the heads are unexpected");
            m.Eval();
            using var _ = Grad.NoGrad();
            var o = m.Forward(Backend.Cpu.FromDoubles(Tests.Support.Check.Rand(3, 2 * 3 * 64 * 64), [2, 3, 64, 64]),
                new TextBatch([0, 5, 6, 2, 0, 7, 2, 1], [1, 1, 1, 1, 1, 1, 1, 0], 2, 4));
            Assert.IsTrue(o.ClsFeats.ToFloatArray().All(float.IsFinite));
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>FIBER-B at 384 px (bf16 to halve the ~0.5 GB): every backbone key and shape of the catalog, nothing else.</summary>
    [TestMethod]
    public void FiberBHasExactlyTheCatalogsBackbone()
    {
        var c = FiberConfig.CoarseB(384);
        var m = new FiberCoarseModel(NnContext.Cpu(DType.BF16), c);
        var mine = m.NamedParameters().Select(p => (p.Name, string.Join(",", p.Tensor.Shape))).ToHashSet();
        var cat = FiberParameters.Enumerate(c).Where(p => FiberCoarseModel.IsBackboneKey(p.Name)).ToList();
        var want = cat.Where(p => p.Stored).Select(p => (p.Name, string.Join(",", p.Shape))).ToHashSet();
        Assert.IsTrue(mine.SetEquals(want), $"model only: {string.Join("; ", mine.Except(want).Take(5))} | catalog only: {string.Join("; ", want.Except(mine).Take(5))}");
        Assert.IsTrue(m.RecomputedBufferNames().ToHashSet().SetEquals(cat.Where(p => !p.Stored).Select(p => p.Name)), "recomputed buffers");
        Assert.AreEqual(12, m.Swin.Layers[2].Blocks[15].Window);
        Assert.AreEqual(6, m.Swin.Layers[2].Blocks[15].Shift);
        Assert.AreEqual(0, m.Swin.Layers[3].Blocks[1].Shift, "stage 4: the window is the whole map");
        Assert.IsNotNull(m.Swin.Layers[2].Blocks[14].Attn.Alpha);
        Assert.IsNull(m.Swin.Layers[2].Blocks[13].Attn.Alpha);
        Assert.AreEqual(512, m.Text.Encoder.Layer[9].Cross!.Self.Key.InFeatures);
        Assert.AreEqual(1024, m.Text.Encoder.Layer[10].Cross!.Self.Key.InFeatures);
        foreach (var p in m.Parameters()) p.Dispose();
    }

    [TestMethod]
    public void OptimizerGroupsFollowTheOfficialStringRules()
    {
        Assert.AreEqual(FiberLrGroup.CrossModal, FiberParamGroups.GroupOf("vit_model.layers.2.blocks.15.attn.qkv_i2t.weight"));
        Assert.AreEqual(FiberLrGroup.CrossModal, FiberParamGroups.GroupOf("text_transformer.encoder.layer.3.alpha_t2i"));
        Assert.AreEqual(FiberLrGroup.CrossModal, FiberParamGroups.GroupOf("cross_modal_image_pooler.dense.bias"));
        Assert.AreEqual(FiberLrGroup.Head, FiberParamGroups.GroupOf("itm_score.fc.weight"));
        Assert.AreEqual(FiberLrGroup.Base, FiberParamGroups.GroupOf("text_transformer.encoder.layer.3.attention.self.query.weight"));
        Assert.IsTrue(FiberParamGroups.NoDecay("vit_model.layers.2.blocks.15.attn.relative_position_bias_table"));
        Assert.IsTrue(FiberParamGroups.NoDecay("vit_model.layers.0.downsample.norm.weight"));
        Assert.IsTrue(FiberParamGroups.NoDecay("text_transformer.embeddings.LayerNorm.weight"));
        Assert.IsFalse(FiberParamGroups.NoDecay("vit_model.layers.2.blocks.15.attn.norm_i2t_i.weight"));
        Assert.IsFalse(FiberParamGroups.NoDecay("vit_model.layers.3.blocks.0.attn.alpha_i2t"));

        var m = new FiberCoarseModel(NnContext.Cpu(), FiberConfig.Tiny());
        var groups = FiberParamGroups.Build(m, 1e-5f);
        Assert.AreEqual(m.Parameters().Count(), groups.Sum(g => g.Params.Count), "every parameter in exactly one group");
        Assert.AreEqual(m.Parameters().Count(), groups.SelectMany(g => g.Params).Distinct(ReferenceEqualityComparer.Instance).Count());
        var cross = groups.Single(g => g.Name == "cross_modal/decay");
        Assert.AreEqual(5e-5f, cross.Lr, 1e-12f);
        Assert.AreEqual(0f, groups.Single(g => g.Name == "base/no_decay").WeightDecay);
    }
}
