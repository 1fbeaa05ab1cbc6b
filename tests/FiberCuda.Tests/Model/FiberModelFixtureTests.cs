using System.Text;
using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Model;

/// <summary>
/// The C# tiny coarse FIBER against PyTorch (tools/fixtures/make_model_fixtures.py): outputs and every parameter
/// gradient of a scalar loss, for the unfused text tower (ITC text path), the unfused Swin tower (ITC image path)
/// and the fused lock-step forward. fp32 on the CPU backend with per-tensor tolerances; fp64 checks the same
/// maths tightly (the reference is fp64 rounded to fp32).
/// </summary>
[TestClass]
public sealed class FiberModelFixtureTests
{
    public TestContext TestContext { get; set; } = null!;
    static ModelFixture Fx => ModelFixture.Instance;

    // FIBER_MODEL_LOG=<file> appends every per-tensor error (to see the margins; the runner hides TestContext output).
    void Dump(StringBuilder log)
    {
        TestContext.WriteLine(log.ToString());
        if (Environment.GetEnvironmentVariable("FIBER_MODEL_LOG") is { Length: > 0 } f) File.AppendAllText(f, $"== {TestContext.TestName} {TestContext.TestDisplayName}\n{log}");
    }

    static double OutTol(DType dt) => dt == DType.F64 ? 1e-6 : 1e-4;
    static double GradTol(DType dt) => dt == DType.F64 ? 1e-5 : 1e-3;

    [TestMethod]
    public void ParameterNamesAreTheOfficialKeys()
    {
        var m = new FiberCoarseModel(NnContext.Cpu(), ModelFixture.Config);
        var mine = m.NamedParameters().Select(p => p.Name).ToHashSet();
        var torchParams = Fx.Names("param.").Where(FiberCoarseModel.IsBackboneKey).ToHashSet();
        var adapters = new CaptionAdapters(NnContext.Cpu(), ModelFixture.Config);
        CollectionAssert.AreEquivalent(Fx.Names("param.").Where(n => !FiberCoarseModel.IsBackboneKey(n)).ToList(),
            adapters.NamedParameters().Select(p => p.Name).ToList(), "caption adapters");
        CollectionAssert.AreEquivalent(torchParams.ToList(), mine.ToList(), "parameters vs torch named_parameters");
        foreach (var (n, p) in m.NamedParameters())
            CollectionAssert.AreEqual(Fx.T["param." + n].IntShape, p.Shape, n);
        var buffers = m.RecomputedBufferNames().ToHashSet();
        CollectionAssert.AreEquivalent(Fx.Names("buffer.").ToList(), buffers.ToList(), "recomputed buffers vs torch named_buffers");

        // The catalog (FiberParameters) agrees for the backbone subset: everything but the task heads and queues.
        static bool Backbone(string k) => (k.StartsWith("vit_model.") || k.StartsWith("text_transformer.") || k.StartsWith("cross_modal_")) && !k.StartsWith("cross_modal_att_layers.");
        var cat = FiberParameters.Enumerate(ModelFixture.Config).Where(p => Backbone(p.Name)).ToList();
        CollectionAssert.AreEquivalent(cat.Where(p => p.Stored).Select(p => p.Name).ToList(), mine.ToList(), "catalog parameters");
        CollectionAssert.AreEquivalent(cat.Where(p => !p.Stored).Select(p => p.Name).ToList(), buffers.ToList(), "catalog buffers");
    }

    [TestMethod]
    public void StrictLoadReportsMissingAndUnexpected()
    {
        var m = new FiberCoarseModel(NnContext.Cpu(), ModelFixture.Config);
        var sd = Fx.Names("param.").Where(FiberCoarseModel.IsBackboneKey).ToDictionary(n => n, n => Fx.Tensor("param." + n, Backend.Cpu, DType.F32));
        sd.Remove("vit_model.layers.2.blocks.1.attn.alpha_i2t");
        sd["vit_model.layers.9.blocks.0.norm1.weight"] = Backend.Cpu.Zeros([6], DType.F32);
        var e = Assert.ThrowsExactly<FiberCuda.IO.WeightLoadException>(() => m.LoadStateDict(sd));
        CollectionAssert.AreEqual(new[] { "vit_model.layers.2.blocks.1.attn.alpha_i2t" }, e.Report.Missing);
        CollectionAssert.AreEqual(new[] { "vit_model.layers.9.blocks.0.norm1.weight" }, e.Report.Unexpected);
        // Recomputed buffers in a state dict are accepted (and ignored).
        sd.Remove("vit_model.layers.9.blocks.0.norm1.weight");
        sd["vit_model.layers.2.blocks.1.attn.alpha_i2t"] = Backend.Cpu.Zeros([1], DType.F32);
        sd["vit_model.layers.0.blocks.1.attn_mask"] = Backend.Cpu.Zeros([64, 4, 4], DType.F32);
        Assert.IsTrue(m.LoadStateDict(sd).Ok);
        sd["text_transformer.pooler.dense.bias"] = Backend.Cpu.Zeros([3], DType.F32);
        Assert.ThrowsExactly<FiberCuda.IO.WeightLoadException>(() => m.LoadStateDict(sd, strict: false), "shape mismatch fails even non-strict");
    }

    [TestMethod]
    [DataRow(DType.F32)]
    [DataRow(DType.F64)]
    public void TextTowerMatchesTorch(DType dt)
    {
        var m = Fx.Model(dt);
        var text = Fx.Text();
        var log = new StringBuilder();
        var emb = m.Text.Embeddings.Forward(text);
        Fx.AssertOutput("tap.text.embed", emb, OutTol(dt), log);
        var hidden = m.Text.Forward(text);
        var itc = F.L2Normalize(m.TextPoolerItc.Forward(m.TextTransformItc.Forward(hidden)));
        Fx.AssertOutput("out.text.hidden", hidden, OutTol(dt), log);
        Fx.AssertOutput("out.text.itc", itc, OutTol(dt), log);
        Fx.Loss("text", new Dictionary<string, Tensor> { ["itc"] = itc, ["hidden"] = hidden }).Backward();
        Fx.AssertGrads("text", m, GradTol(dt), log);
        Dump(log);
    }

    [TestMethod]
    [DataRow(DType.F32)]
    [DataRow(DType.F64)]
    public void SwinTowerMatchesTorch(DType dt)
    {
        var m = Fx.Model(dt);
        var img = Fx.Tensor("input.image", Backend.Cpu, dt);
        var log = new StringBuilder();
        var c = ModelFixture.Config;
        var x = m.Swin.PatchEmbed.Forward(img);
        Fx.AssertOutput("tap.image.patch", x, OutTol(dt), log);
        for (int s = 0; s < c.NumStages; s++)
        {
            var L = m.Swin.Layers[s];
            for (int k = 0; k < L.Blocks.Count; k++) x = L.Blocks[k].Forward(x);
            Fx.AssertOutput($"tap.image.stage{s}", x, OutTol(dt), log);
            if (L.Downsample is not null) x = L.Downsample.Forward(x, L.Grid);
        }
        var V = m.ImageTransformItc.Forward(m.Swin.Norm!.Forward(x));
        var itc = F.L2Normalize(m.ImagePoolerItc.Forward(F.Reshape(Nn.Fx.MeanTokens(V), V.Dim(0), 1, V.Dim(2))));
        Fx.AssertOutput("out.image.hidden", x, OutTol(dt), log);
        Fx.AssertOutput("out.image.itc", itc, OutTol(dt), log);
        Fx.Loss("image", new Dictionary<string, Tensor> { ["itc"] = itc, ["hidden"] = x }).Backward();
        Fx.AssertGrads("image", m, GradTol(dt), log);
        Dump(log);
    }

    [TestMethod]
    [DataRow(DType.F32)]
    [DataRow(DType.F64)]
    public void FusedForwardMatchesTorch(DType dt)
    {
        var m = Fx.Model(dt);
        var img = Fx.Tensor("input.image", Backend.Cpu, dt);
        var log = new StringBuilder();
        var o = m.Forward(img, Fx.Text());
        Fx.AssertOutput("out.fused.text_feats", o.TextFeats, OutTol(dt), log);
        Fx.AssertOutput("out.fused.image_feats", o.ImageFeats, OutTol(dt), log);
        Fx.AssertOutput("out.fused.cls_feats", o.ClsFeats, OutTol(dt), log);
        Fx.Loss("fused", new Dictionary<string, Tensor> { ["text_feats"] = o.TextFeats, ["image_feats"] = o.ImageFeats, ["cls_feats"] = o.ClsFeats }).Backward();
        Fx.AssertGrads("fused", m, GradTol(dt), log);
        Dump(log);
    }

    [TestMethod]
    [DataRow(DType.F32)]
    [DataRow(DType.F64)]
    public void CaptionPathMatchesTorch(DType dt)
    {
        var m = Fx.Model(dt);
        var adapters = new CaptionAdapters(m.Ctx, ModelFixture.Config);
        adapters.LoadStateDict(Fx.Names("param.").Where(n => !FiberCoarseModel.IsBackboneKey(n)).ToDictionary(n => n, n => Fx.Tensor("param." + n, Backend.Cpu, dt)));
        var img = Fx.Tensor("input.image", Backend.Cpu, dt);
        var log = new StringBuilder();
        var feats = m.ForwardCaption(m.Swin.Forward(img), Fx.Text(), adapters);
        Fx.AssertOutput("out.caption.text_feats", feats, OutTol(dt), log);
        Fx.Loss("caption", new Dictionary<string, Tensor> { ["text_feats"] = feats }).Backward();
        Fx.AssertGrads("caption", m.NamedParameters().Concat(adapters.NamedParameters()), GradTol(dt), log);
        Dump(log);
    }

    [TestMethod]
    public void TheItcPathsAreTheModelsMethods()
    {
        var m = Fx.Model(DType.F64);
        Fx.AssertOutput("out.text.itc", m.TextOnly(Fx.Text()), 1e-6);
        Fx.AssertOutput("out.image.itc", m.ImageOnly(Fx.Tensor("input.image", Backend.Cpu, DType.F64)), 1e-6);
    }
}
