using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;

namespace FiberCuda.Tests.Model;

/// <summary>The composed helpers of Nn.Fx against hand math and fp64 finite differences.</summary>
[TestClass]
public sealed class FxTests
{
    static Tensor Leaf(double[] v, int[] shape) { var t = Backend.Cpu.FromDoubles(v, shape, DType.F64); t.RequiresGrad = true; return t; }

    [TestMethod]
    public void TanhValuesAndGradient()
    {
        var v = Check.Rand(1, 12, -3, 3);
        using (Grad.NoGrad())
            Check.Close(v.Select(Math.Tanh).ToArray(), Nn.Fx.Tanh(Backend.Cpu.FromDoubles(v, [3, 4], DType.F64)).ToDoubleArray(), 1e-15, 1e-14, "tanh");
        var x = Leaf(v, [3, 4]);
        var w = Backend.Cpu.FromDoubles(Check.Rand(2, 12), [3, 4], DType.F64);
        var r = GradCheck.Check(i => F.Sum(F.Mul(Nn.Fx.Tanh(i[0]), w)), [x]);
        Assert.IsTrue(r.Ok, r.Text);
    }

    [TestMethod]
    public void ScaleByAScalarParameter()
    {
        var x = Leaf(Check.Rand(3, 10), [2, 5]);
        var a = Leaf([0.7], [1]);
        var w = Backend.Cpu.FromDoubles(Check.Rand(4, 10), [2, 5], DType.F64);
        using (Grad.NoGrad())
            Check.Close(x.ToDoubleArray().Select(e => 0.7 * e).ToArray(), Nn.Fx.ScaleBy(x, a).ToDoubleArray(), 0, 1e-15, "values");
        var r = GradCheck.Check(i => F.Sum(F.Mul(Nn.Fx.ScaleBy(i[0], i[1]), w)), [x, a]);
        Assert.IsTrue(r.Ok, r.Text);
    }

    [TestMethod]
    public void RollIsTorchRoll()
    {
        // torch.roll([0..4], 2) = [3, 4, 0, 1, 2]; roll by −2 = [2, 3, 4, 0, 1]
        using var _ = Grad.NoGrad();
        var x = Backend.Cpu.FromDoubles([0, 1, 2, 3, 4], [1, 5], DType.F64);
        CollectionAssert.AreEqual(new double[] { 3, 4, 0, 1, 2 }, Nn.Fx.Roll(x, 2, 1).ToDoubleArray());
        CollectionAssert.AreEqual(new double[] { 2, 3, 4, 0, 1 }, Nn.Fx.Roll(x, -2, 1).ToDoubleArray());
        CollectionAssert.AreEqual(new double[] { 0, 1, 2, 3, 4 }, Nn.Fx.Roll(x, 5, 1).ToDoubleArray());
    }

    [TestMethod]
    public void MeanTokensAndTokenSlice()
    {
        var v = Check.Rand(5, 2 * 3 * 4);
        using var _ = Grad.NoGrad();
        var x = Backend.Cpu.FromDoubles(v, [2, 3, 4], DType.F64);
        var mean = Nn.Fx.MeanTokens(x).ToDoubleArray();
        var tok = Nn.Fx.Token(x, 2).ToDoubleArray();
        for (int b = 0; b < 2; b++)
            for (int d = 0; d < 4; d++)
            {
                Assert.AreEqual((v[b * 12 + d] + v[b * 12 + 4 + d] + v[b * 12 + 8 + d]) / 3, mean[b * 4 + d], 1e-15);
                Assert.AreEqual(v[b * 12 + 8 + d], tok[b * 4 + d]);
            }
    }
}
