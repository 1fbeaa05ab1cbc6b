using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;

namespace FiberCuda.Tests.Model;

/// <summary>
/// Structural properties of the fused model that hold for any weights (fiber-coarse.md §9): α = 0 gives the two
/// unfused towers, batch elements do not interact, text padding is invisible, the window follows the image size.
/// </summary>
[TestClass]
public sealed class FiberModelPropertyTests
{
    static ModelFixture Fx => ModelFixture.Instance;

    static void ZeroAlphas(Module m)
    {
        foreach (var (n, p) in m.NamedParameters())
            if (n.EndsWith("alpha_i2t") || n.EndsWith("alpha_t2i")) p.Backend.Fill(p, 0.0);
    }

    static double[] Rows(Tensor t, int b0, int n)
    {
        long per = t.Numel / t.Dim(0);
        return t.ToDoubleArray().Skip((int)(b0 * per)).Take((int)(n * per)).ToArray();
    }

    static void Close(double[] expected, double[] actual, double tol, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length, what + " length");
        double err = ModelFixture.Err(actual, expected, 1e-6);
        Assert.IsTrue(err <= tol, $"{what}: relative error {err:g3} > {tol:g3}");
    }

    [TestMethod]
    public void WithEveryAlphaZeroTheFusedPathIsTheTwoTowers()
    {
        var m = Fx.Model(DType.F32);
        var img = Fx.Tensor("input.image", Backend.Cpu, DType.F32);
        var text = Fx.Text();
        using var _ = Grad.NoGrad();

        // With the fixture's non-zero α the fusion really changes both towers...
        var fusedOn = m.Forward(img, text);
        var imgTower = m.Swin.Forward(img).ToDoubleArray();
        Assert.IsFalse(imgTower.SequenceEqual(fusedOn.ImageStates.ToDoubleArray()), "fusion has no effect on the image side");

        // ...and with every α = 0 it is exactly the unfused towers, without the final LayerNorms.
        ZeroAlphas(m);
        var o = m.Forward(img, text);
        CollectionAssert.AreEqual(imgTower, o.ImageStates.ToDoubleArray(), "image states");
        var masks = m.Text.Masks(text);
        var t = m.Text.Embeddings.Forward(text);
        int n = m.Config.TextLayers;
        for (int l = 0; l < n; l++) t = m.Text.Encoder.Layer[l].Forward(t, masks.For(m.Config.TextHeads, text.Length), lastNorm: l != n - 1);
        CollectionAssert.AreEqual(t.ToDoubleArray(), o.TextStates.ToDoubleArray(), "text states");

        // The text side then ignores the image entirely.
        var other = Backend.Cpu.FromDoubles(Check.Rand(5, (int)img.Numel), img.Shape);
        CollectionAssert.AreEqual(o.TextFeats.ToDoubleArray(), m.Forward(other, text).TextFeats.ToDoubleArray(), "text feats vs another image");
    }

    [TestMethod]
    public void BatchElementsAreIndependent()
    {
        var m = Fx.Model(DType.F32);
        var img = Fx.Tensor("input.image", Backend.Cpu, DType.F32);
        var text = Fx.Text();
        using var _ = Grad.NoGrad();
        var both = m.Forward(img, text);
        for (int b = 0; b < 2; b++)
        {
            var one = m.Forward(F.Slice(img, 0, b, 1), text.Rows(b, 1));
            Close(Rows(both.TextFeats, b, 1), one.TextFeats.ToDoubleArray(), 1e-5, $"text feats {b}");
            Close(Rows(both.ImageFeats, b, 1), one.ImageFeats.ToDoubleArray(), 1e-5, $"image feats {b}");
            Close(Rows(both.ClsFeats, b, 1), one.ClsFeats.ToDoubleArray(), 1e-5, $"cls feats {b}");
        }
        // The unfused paths too.
        var ti = m.TextOnly(text); var ii = m.ImageOnly(img);
        Close(Rows(ti, 1, 1), m.TextOnly(text.Rows(1, 1)).ToDoubleArray(), 1e-5, "itc text");
        Close(Rows(ii, 1, 1), m.ImageOnly(F.Slice(img, 0, 1, 1)).ToDoubleArray(), 1e-5, "itc image");
    }

    [TestMethod]
    public void TextPaddingDoesNotChangeRealTokens()
    {
        var m = Fx.Model(DType.F32);
        var img = F.Slice(Fx.Tensor("input.image", Backend.Cpu, DType.F32), 0, 1, 1);
        var row = Fx.Text().Rows(1, 1);                       // 5 real tokens, then 3 pads
        int real = row.Mask.Sum();
        Assert.AreEqual(5, real);
        using var _ = Grad.NoGrad();
        var baseOut = m.Forward(img, row);
        foreach (int len in new[] { real, 12 })
        {
            var ids = Enumerable.Repeat(1, len).ToArray(); var mask = new int[len];
            for (int i = 0; i < real; i++) { ids[i] = row.Ids[i]; mask[i] = 1; }
            var o = m.Forward(img, new TextBatch(ids, mask, 1, len));
            Close(baseOut.TextFeats.ToDoubleArray().Take(real * 16).ToArray(), o.TextFeats.ToDoubleArray().Take(real * 16).ToArray(), 1e-5, $"text feats, length {len}");
            Close(baseOut.ImageFeats.ToDoubleArray(), o.ImageFeats.ToDoubleArray(), 1e-5, $"image feats, length {len}");
            Close(baseOut.ClsFeats.ToDoubleArray(), o.ClsFeats.ToDoubleArray(), 1e-5, $"cls feats, length {len}");
            Close(m.TextOnly(row).ToDoubleArray(), m.TextOnly(new TextBatch(ids, mask, 1, len)).ToDoubleArray(), 1e-5, $"itc text, length {len}");
        }
    }

    [TestMethod]
    public void CaptionPathIsCausal()
    {
        var m = Fx.Model(DType.F32);
        var adapters = new CaptionAdapters(m.Ctx, ModelFixture.Config);
        FiberInit.Apply(adapters, ModelFixture.Config, 3);
        using var _ = Grad.NoGrad();
        var img = m.Swin.Forward(F.Slice(Fx.Tensor("input.image", Backend.Cpu, DType.F32), 0, 0, 1));
        var t = Fx.Text().Rows(0, 1);
        var a = m.ForwardCaption(img, t, adapters).ToDoubleArray();
        var ids = (int[])t.Ids.Clone(); ids[5] = ids[5] == 7 ? 8 : 7;     // change token 5
        var b = m.ForwardCaption(img, t with { Ids = ids }, adapters).ToDoubleArray();
        int h = m.Config.CrossHidden;
        CollectionAssert.AreEqual(a.Take(5 * h).ToArray(), b.Take(5 * h).ToArray(), "tokens before 5 do not see it");
        Assert.IsFalse(a.Skip(5 * h).SequenceEqual(b.Skip(5 * h)), "token 5 onwards do");
    }

    [TestMethod]
    public void PositionIdsFollowRoberta()
    {
        var t = new TextBatch([0, 7, 8, 2, 1, 1, 0, 5, 2, 1, 9, 1], [1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0], 2, 6);
        CollectionAssert.AreEqual(new[] { 2, 3, 4, 5, 1, 1, 2, 3, 4, 1, 5, 1 }, RobertaEmbeddings.PositionIds(t, 1));
    }

    [TestMethod]
    public void WindowFollowsTheImageSize()
    {
        Assert.ThrowsExactly<ArgumentException>(() => new FiberCoarseModel(NnContext.Cpu(), FiberConfig.Tiny() with { ImageSize = 96 }), "window must follow S");
        var c = FiberCoarseModel.AtImageSize(FiberConfig.Tiny(), 96);  // S = 96: window 3, grids 24/12/6/3
        Assert.AreEqual(FiberConfig.Tiny(FiberStage.Coarse, 96), c);
        var m = new FiberCoarseModel(NnContext.Cpu(), c);
        int[] expectWindow = [3, 3, 3, 3], expectShift = [1, 1, 1, 0];
        for (int s = 0; s < 4; s++)
        {
            var blk = m.Swin.Layers[s].Blocks[1];
            Assert.AreEqual(expectWindow[s], blk.Window, $"stage {s} window");
            Assert.AreEqual(expectShift[s], blk.Shift, $"stage {s} shift");
            CollectionAssert.AreEqual(new[] { 25, c.NumHeads[s] }, blk.Attn.Table.Shape, $"stage {s} table");
        }
        Assert.IsFalse(m.RecomputedBufferNames().Contains("vit_model.layers.3.blocks.1.attn_mask"), "the whole-map stage has no shift mask");
        Assert.IsTrue(m.RecomputedBufferNames().Contains("vit_model.layers.2.blocks.1.attn_mask"));
        m.Eval();
        using var _ = Grad.NoGrad();
        var o = m.Forward(Backend.Cpu.Zeros([1, 3, 96, 96], DType.F32), new TextBatch([0, 5, 2], [1, 1, 1], 1, 3));
        CollectionAssert.AreEqual(new[] { 1, 9, c.CrossHidden }, o.ImageFeats.Shape);
    }

    [TestMethod]
    public void ShiftMaskRegions()
    {
        // R = 4, w = 2, s = 1: row/col bands [0,2), [2,3), [3,4). Window (1,1) covers rows/cols 2..3: four regions.
        var m = SwinBlock.ShiftMask(4, 2, 1, 1);
        var win3 = m.Skip(3 * 16).Take(16).ToArray();           // window index 3 = (row 1, col 1)
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) Assert.AreEqual(i == j ? 0.0 : -100.0, win3[i * 4 + j], $"({i},{j})");
        Assert.IsTrue(m.Take(16).All(v => v == 0.0), "window (0,0) is one region");
        // Window (0,1): cols 2..3 split into bands 1 and 2; tokens 0,2 (col 2) vs 1,3 (col 3).
        var win1 = m.Skip(16).Take(16).ToArray();
        Assert.AreEqual(0.0, win1[0 * 4 + 2]); Assert.AreEqual(-100.0, win1[0 * 4 + 1]);
    }

    [TestMethod]
    public void RelativePositionIndexMatchesTheFormula()
    {
        var idx = WindowAttention.RelativePositionIndex(2);
        // tokens (0,0),(0,1),(1,0),(1,1); idx = (dh + 1)·3 + (dw + 1)
        CollectionAssert.AreEqual(new[] { 4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4 }, idx);
    }

    [TestMethod]
    public void DropoutIsActiveInTrainingAndReproducible()
    {
        var m = Fx.Model(DType.F32);
        var text = Fx.Text();
        using var _ = Grad.NoGrad();
        var eval = m.TextOnly(text).ToDoubleArray();
        m.Train();
        m.Ctx.NextStep(3); var a = m.TextOnly(text).ToDoubleArray();
        m.Ctx.NextStep(3); var b = m.TextOnly(text).ToDoubleArray();
        m.Ctx.NextStep(4); var c = m.TextOnly(text).ToDoubleArray();
        CollectionAssert.AreEqual(a, b, "same step, same masks");
        Assert.IsFalse(a.SequenceEqual(eval), "training differs from eval");
        Assert.IsFalse(a.SequenceEqual(c), "another step, other masks");
        m.Eval();
        CollectionAssert.AreEqual(eval, m.TextOnly(text).ToDoubleArray(), "eval again");
    }
}
