using FiberCuda.Models;

namespace FiberCuda.Tests.Model;

/// <summary>The model-FLOP count against the published and spec figures (fiber-coarse.md §7).</summary>
[TestClass]
public sealed class FiberFlopsTests
{
    [TestMethod]
    public void FiberB384MatchesTheSpecsCount()
    {
        var m = FiberFlops.Forward(FiberConfig.CoarseB(384), 40);
        // Swin-B at 384: 47.0 G multiply-accumulates (the published figure); the spec's fused totals at L = 40.
        Assert.AreEqual(47.1e9, m.Swin, 0.01 * 47.1e9, $"Swin {m.Swin:E3}");
        Assert.AreEqual(2.2e9, m.SwinFusion, 0.1 * 2.2e9, $"Swin fusion {m.SwinFusion:E3}");
        Assert.AreEqual(3.4e9, m.Text, 0.1 * 3.4e9, $"text {m.Text:E3}");
        Assert.AreEqual(2.7e9, m.TextFusion, 0.1 * 2.7e9, $"text fusion {m.TextFusion:E3}");
        Assert.AreEqual(55e9, m.Total, 0.03 * 55e9, $"total {m.Total:E3}");
    }

    [TestMethod]
    public void UnfusedPathsDropTheFusionAndAPretrainSampleIsSixPaths()
    {
        var c = FiberConfig.CoarseB(384);
        var f = FiberFlops.Forward(c, 40);
        var u = FiberFlops.Forward(c, 40, fused: false);
        Assert.AreEqual(0, u.SwinFusion);
        Assert.AreEqual(0, u.TextFusion);
        Assert.AreEqual(f.Swin, u.Swin);
        Assert.AreEqual(f.Text, u.Text);
        var s = FiberFlops.PretrainSample(c, 40, 0);
        Assert.AreEqual(4 * f.Total + u.Total, s.Total, 1e-6 * s.Total, "4 fused forwards + the two unfused towers (+ tiny ITM head)");
        var withMlm = FiberFlops.PretrainSample(c, 40, 6);
        Assert.AreEqual(6 * (768.0 * 768 + 768.0 * 50265), withMlm.Total - s.Total, 1, "MLM head on 6 masked tokens");
    }
}
