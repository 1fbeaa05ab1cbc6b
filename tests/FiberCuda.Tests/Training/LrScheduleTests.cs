using FiberCuda.Backends;
using FiberCuda.Optim;
using FiberCuda.Tensors;
using FiberCuda.Training;

namespace FiberCuda.Tests.Training;

[TestClass]
public sealed class LrScheduleTests
{
    [TestMethod]
    public void FractionWarmupThenLinearDecay()
    {
        // total 100, warm-up 0.1 → W = 10; decay over 90 steps.
        var s = new LrSchedule(100, 0.1);
        Assert.AreEqual(10, s.WarmupSteps);
        Assert.AreEqual(0.0, s.Factor(0), "the first optimizer step runs at lr 0, as the official LambdaLR does");
        Assert.AreEqual(0.1, s.Factor(1), 1e-15);
        Assert.AreEqual(0.5, s.Factor(5), 1e-15);
        Assert.AreEqual(0.9, s.Factor(9), 1e-15);
        Assert.AreEqual(1.0, s.Factor(10), "peak at s = W");
        Assert.AreEqual(89.0 / 90, s.Factor(11), 1e-15);
        Assert.AreEqual(0.5, s.Factor(55), 1e-15);
        Assert.AreEqual(1.0 / 90, s.Factor(99), 1e-15);
        Assert.AreEqual(0.0, s.Factor(100), "zero at the end of the schedule");
        Assert.AreEqual(0.0, s.Factor(101));
        Assert.AreEqual(0.0, s.Factor(1_000_000));
    }

    [TestMethod]
    public void FractionIsTruncatedLikeFiberUtils()
    {
        var s = new LrSchedule(95, 0.1); // 9.5 → 9
        Assert.AreEqual(9, s.WarmupSteps);
        Assert.AreEqual(8.0 / 9, s.Factor(8), 1e-15);
        Assert.AreEqual(1.0, s.Factor(9));
        Assert.AreEqual(85.0 / 86, s.Factor(10), 1e-15);
        // The pre-training run: 100k steps, 10k warm-up.
        var pt = new LrSchedule(100_000, 0.1);
        Assert.AreEqual(10_000, pt.WarmupSteps);
        Assert.AreEqual(0.25, pt.Factor(2_500), 1e-15);
        Assert.AreEqual(0.5, pt.Factor(55_000), 1e-15);
    }

    [TestMethod]
    public void NoWarmupStartsAtFullLr()
    {
        var s = new LrSchedule(10, 0.0);
        Assert.AreEqual(0, s.WarmupSteps);
        Assert.AreEqual(1.0, s.Factor(0));
        Assert.AreEqual(0.9, s.Factor(1), 1e-15);
        Assert.AreEqual(0.5, s.Factor(5), 1e-15);
        Assert.AreEqual(0.0, s.Factor(10));
        Assert.AreEqual(0.0, s.Factor(11));
        Assert.AreEqual(0, new LrSchedule(10, 0L).WarmupSteps);
    }

    [TestMethod]
    public void WarmupInSteps()
    {
        var a = new LrSchedule(1000, 25.0);
        var b = new LrSchedule(1000, 25L);
        Assert.AreEqual(25, a.WarmupSteps);
        Assert.AreEqual(25, b.WarmupSteps);
        Assert.AreEqual(1, new LrSchedule(1000, 1.0).WarmupSteps, "1.0 is one step, not 100 %");
        Assert.AreEqual(12.0 / 25, a.Factor(12), 1e-15);
        Assert.AreEqual(475.0 / 975, b.Factor(525), 1e-15);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new LrSchedule(1000, 1.5));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new LrSchedule(1000, -0.1));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new LrSchedule(10, 0.1).Factor(-1));
    }

    [TestMethod]
    public void WarmupAsLongAsTheRun()
    {
        var s = new LrSchedule(10, 10L);
        Assert.AreEqual(0.9, s.Factor(9), 1e-15);
        Assert.AreEqual(0.0, s.Factor(10), "no decay steps: zero at the end, no division by zero");
        Assert.AreEqual(0.0, s.Factor(11));
    }

    [TestMethod]
    public void ApplySetsEachGroupsLr()
    {
        using var a = Backend.Cpu.FromDoubles([1, 2], [2], DType.F32);
        using var b = Backend.Cpu.FromDoubles([3], [1], DType.F32);
        using var opt = new AdamW([new ParamGroup([a], 1e-3f, 0.01f), new ParamGroup([b], 5e-3f, 0f)]);
        var baseLrs = LrSchedule.BaseLrsOf(opt);
        CollectionAssert.AreEqual(new[] { 1e-3f, 5e-3f }, baseLrs);
        var s = new LrSchedule(100, 0.1);
        s.Apply(opt, baseLrs, 5);
        Assert.AreEqual((float)(1e-3f * 0.5), opt.Groups[0].Lr);
        Assert.AreEqual((float)(5e-3f * 0.5), opt.Groups[1].Lr);
        s.Apply(opt, baseLrs, 55);
        Assert.AreEqual((float)(1e-3f * (1 - 45.0 / 90)), opt.Groups[0].Lr);
        s.Apply(opt, baseLrs, 100);
        Assert.AreEqual(0f, opt.Groups[1].Lr);
        Assert.ThrowsExactly<ArgumentException>(() => s.Apply(opt, [1e-3f], 0));
    }

    [TestMethod]
    public void FirstStepWithWarmupLeavesParametersUnchanged()
    {
        // LambdaLR semantics: optimizer step k uses factor(k); with W > 0 step 0 has lr 0, so AdamW (decay ∝ lr) changes nothing.
        using var p = Backend.Cpu.FromDoubles([0.5, -1.25, 2], [3], DType.F32);
        p.RequiresGrad = true;
        using var opt = new AdamW([p], lr: 1e-2f, weightDecay: 0.01f);
        var baseLrs = LrSchedule.BaseLrsOf(opt);
        var s = new LrSchedule(20, 0.25);
        var before = p.ToArray<float>();
        p.Grad = Backend.Cpu.FromDoubles([1, -1, 0.5], [3], DType.F32);
        s.Apply(opt, baseLrs, opt.StepCount);
        opt.Step();
        CollectionAssert.AreEqual(before, p.ToArray<float>());
        s.Apply(opt, baseLrs, opt.StepCount);
        Assert.AreEqual((float)(1e-2f * (1.0 / 5)), opt.Groups[0].Lr);
        opt.Step();
        CollectionAssert.AreNotEqual(before, p.ToArray<float>(), "the second step moves the parameters");
    }
}
