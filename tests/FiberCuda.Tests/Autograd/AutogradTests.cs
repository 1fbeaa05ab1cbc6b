using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;

namespace FiberCuda.Tests.Autograd;

[TestClass]
public sealed class AutogradEngineTests
{
    static IBackend Be => Backend.Cpu;
    static Tensor P(double[] v, params int[] s) { var t = Be.FromDoubles(v, s, DType.F64); t.RequiresGrad = true; return t; }

    [TestMethod]
    public void GradientsAccumulateAcrossBackwardCalls()
    {
        using var x = P([1, 2, 3], 3);
        F.Sum(F.Mul(x, x)).Backward();
        Check.Close([2, 4, 6], x.Grad!.ToDoubleArray(), 0, 1e-15, "first");
        F.Sum(F.Scale(x, 3)).Backward();
        Check.Close([5, 7, 9], x.Grad!.ToDoubleArray(), 0, 1e-15, "accumulated");
    }

    [TestMethod]
    public void FanOutSumsGradients()
    {
        using var x = P([0.5, -1.5], 2);
        var a = F.Scale(x, 2); // used three times
        var y = F.Add(F.Mul(a, a), F.Scale(a, -1));
        F.Sum(y).Backward();
        // d/dx Σ(4x² − 2x) = 8x − 2
        Check.Close([2, -14], x.Grad!.ToDoubleArray(), 0, 1e-14, "fan-out");
    }

    [TestMethod]
    public void NoGradRecordsNothing()
    {
        using var x = P([1, 2], 2);
        Tensor y;
        using (Grad.NoGrad())
        {
            y = F.Scale(x, 2);
            Assert.IsFalse(Grad.IsEnabled);
            using (Grad.EnableGrad()) Assert.IsTrue(Grad.IsEnabled);
            Assert.IsFalse(Grad.IsEnabled);
        }
        Assert.IsTrue(Grad.IsEnabled);
        Assert.IsNull(y.GradFn);
        Assert.IsFalse(y.RequiresGrad);
        var z = F.Scale(x, 2);
        Assert.IsNotNull(z.GradFn);
        Assert.AreEqual("scale", z.GradFn!.Op);
    }

    [TestMethod]
    public void InputsWithoutGradGetNone()
    {
        using var x = P([1, 2], 2);
        using var c = Be.FromDoubles([3, 4], [2], DType.F64);
        F.Sum(F.Mul(x, c)).Backward();
        Assert.IsNull(c.Grad);
        Check.Close([3, 4], x.Grad!.ToDoubleArray(), 0, 0, "x");
    }

    [TestMethod]
    public void SecondBackwardNeedsRetainGraph()
    {
        using var x = P([1, 2], 2);
        var loss = F.Sum(F.Mul(x, x));
        loss.Backward(retainGraph: true);
        loss.Backward();
        Check.Close([4, 8], x.Grad!.ToDoubleArray(), 0, 0, "twice");
        Assert.ThrowsExactly<InvalidOperationException>(() => loss.Backward());
    }

    [TestMethod]
    public void IntermediateGradientsAreFreed()
    {
        // Gradients of intermediates live in the engine's table only; after the pass the graph's owned tensors are released.
        using var x = P(Check.Rand(1, 12), 3, 4);
        using var g = P(Check.Rand(2, 4), 4); using var b = P(Check.Rand(3, 4), 4);
        var y = F.LayerNorm(x, g, b);
        var node = y.GradFn!;
        F.Sum(y).Backward();
        Assert.IsTrue(node.Released);
        Assert.AreEqual(0, node.Owned.Length);
        Assert.IsNull(y.Grad, "intermediates keep no .Grad");
    }

    [TestMethod]
    public void DeepChainsDoNotOverflowTheStack()
    {
        using var x = P([1.0], 1);
        var y = x;
        for (int i = 0; i < 20000; i++) y = F.Scale(y, 1f);
        F.Sum(y).Backward();
        Assert.AreEqual(1.0, x.Grad!.ToDoubleArray()[0]);
    }

    [TestMethod]
    public void CrossEntropyMeansOverKeptRows()
    {
        var logits = Check.Rand(4, 4 * 5, -2, 2);
        using var tl = P(logits, 4, 5);
        using var t = Be.FromInts([2, -100, 4, -100], [4]);
        var loss = F.CrossEntropy(tl, t);
        double e = 0;
        foreach (int r in new[] { 0, 2 })
        {
            double z = 0; for (int c = 0; c < 5; c++) z += Math.Exp(logits[r * 5 + c]);
            e += Math.Log(z) - logits[r * 5 + (r == 0 ? 2 : 4)];
        }
        Assert.AreEqual(e / 2, loss.ToDoubleArray()[0], 1e-14);
        loss.Backward();
        var gr = tl.Grad!.ToDoubleArray();
        for (int c = 0; c < 5; c++) { Assert.AreEqual(0, gr[5 + c]); Assert.AreEqual(0, gr[15 + c]); }
        double z0 = Enumerable.Range(0, 5).Sum(c => Math.Exp(logits[c]));
        Assert.AreEqual((Math.Exp(logits[2]) / z0 - 1) / 2, gr[2], 1e-15);
    }

    [TestMethod]
    public void DetachStopsGradients()
    {
        using var x = P([0.5, -2], 2);
        var d = F.Detach(F.Scale(x, 3f));
        Assert.IsNull(d.GradFn); Assert.IsFalse(d.RequiresGrad);
        F.Sum(F.Mul(x, d)).Backward();
        Check.Close([1.5, -6], x.Grad!.ToDoubleArray(), 0, 1e-15, "only the direct path");
    }

    [TestMethod]
    public void DropoutIsIdentityInEval()
    {
        using var x = P([1, 2, 3], 3);
        Assert.AreSame(x, F.Dropout(x, 0.5f, 1, 0, training: false));
        Assert.AreSame(x, F.Dropout(x, 0f, 1, 0));
    }

    [TestMethod]
    public void GradCheckReportsTheWorstElement()
    {
        // A deliberately wrong "gradient": detach one path so autograd misses a term, and check the report names it.
        using var x = P([0.3, -0.7, 1.1], 3);
        var report = GradCheck.Check(xs =>
        {
            Tensor detached;
            using (Grad.NoGrad()) detached = F.Scale(xs[0], 1f);
            return F.Sum(F.Mul(xs[0], detached)); // true gradient 2x, autograd sees x
        }, [x], names: ["x"]);
        Assert.IsFalse(report.Ok);
        Assert.AreEqual("x", report.WorstElement!.Input);
        Assert.AreEqual(2, report.WorstElement.Index); // |x| largest → largest miss
        StringAssert.Contains(report.Text, "x[2]");
    }
}
