using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Optim;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;

namespace FiberCuda.Tests.Model;

[TestClass]
public sealed class FiberModelTrainingTests
{
    static (FiberCoarseModel M, Tensor Img, TextBatch Text) Fresh(int seed)
    {
        var c = FiberConfig.Tiny();
        var m = new FiberCoarseModel(NnContext.Cpu(), c);
        FiberInit.Apply(m, c, seed);
        var img = Backend.Cpu.FromDoubles(Check.Rand(11, 4 * 3 * 64 * 64), [4, 3, 64, 64]);
        var text = new TextBatch(
            [0, 5, 9, 2, 1, 1,  0, 7, 7, 8, 2, 1,  0, 12, 30, 31, 22, 2,  0, 4, 2, 1, 1, 1],
            [1, 1, 1, 1, 0, 0,  1, 1, 1, 1, 1, 0,  1, 1, 1, 1, 1, 1,  1, 1, 1, 0, 0, 0], 4, 6);
        return (m, img, text);
    }

    [TestMethod]
    public void FreshInitStartsAsTheTwoTowers()
    {
        var (m, img, text) = Fresh(1);
        foreach (var (n, p) in m.NamedParameters())
        {
            if (n.EndsWith("alpha_i2t") || n.EndsWith("alpha_t2i")) Assert.AreEqual(0f, p.ToFloatArray()[0], n);
            if (n.EndsWith("norm_i2t_i.weight")) Assert.IsTrue(p.ToFloatArray().All(v => v == 1f), n);
        }
        var w = m.Swin.Layers[2].Blocks[1].Attn.QkvText!.Weight.ToDoubleArray();
        double sd = Math.Sqrt(w.Select(x => x * x).Average());
        Assert.AreEqual(0.02, sd, 0.004, "trunc-normal 0.02");
        m.Eval();
        using var _ = Grad.NoGrad();
        var o = m.Forward(img, text);
        CollectionAssert.AreEqual(m.Swin.Forward(img).ToDoubleArray(), o.ImageStates.ToDoubleArray());
        var (m2, _, _) = Fresh(1);
        CollectionAssert.AreEqual(m.Text.Encoder.Layer[3].Output.Dense.Weight.ToFloatArray(), m2.Text.Encoder.Layer[3].Output.Dense.Weight.ToFloatArray(), "deterministic");
    }

    /// <summary>AdamW with the official groups fits a tiny matching task through the fused path; the gates open.</summary>
    [TestMethod]
    public void FusedModelTrainsWithOfficialGroups()
    {
        var (m, img, text) = Fresh(2);
        var head = new Linear(m.Ctx, 2 * m.Config.CrossHidden, 2);
        using (var hv = Backend.Cpu.FromDoubles(Check.Rand(4, 2 * 2 * m.Config.CrossHidden, -0.1, 0.1), head.Weight.Shape)) Backend.Cpu.Cast(hv, head.Weight);
        var groups = FiberParamGroups.Build(m, 2e-3f, crossModalMult: 5f);
        groups.Add(new ParamGroup(head.Parameters(), 1e-2f, 0f, "head"));
        using var opt = new AdamW(groups, 0.9f, 0.98f, 1e-8f);
        var labels = Backend.Cpu.FromInts([1, 0, 0, 1], [4]);
        m.Train();
        double first = 0, last = 0;
        for (int step = 0; step < 12; step++)
        {
            m.Ctx.NextStep((ulong)step);
            var loss = F.CrossEntropy(head.Forward(m.Forward(img, text).ClsFeats), labels);
            double l = loss.ToDoubleArray()[0];
            if (step == 0) first = l; last = l;
            loss.Backward();
            opt.Step();
            m.ZeroGrad(); head.ZeroGrad();
        }
        Assert.IsTrue(last < 0.5 * first, $"loss {first:g4} → {last:g4}");
        var alpha = m.Swin.Layers[3].Blocks[1].Attn.Alpha!.ToFloatArray()[0];
        var alphaT = m.Text.Encoder.Layer[3].Alpha!.ToFloatArray()[0];
        Assert.AreNotEqual(0f, alpha, "α_i2t got a gradient at 0");
        Assert.AreNotEqual(0f, alphaT, "α_t2i got a gradient at 0");
        Assert.AreEqual(0f, m.Text.Encoder.Layer[0].Alpha!.ToFloatArray()[0], "unfused layers' α stays (no gradient)");
    }
}
