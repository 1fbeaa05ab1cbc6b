using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Optim;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;

namespace FiberCuda.Tests.Autograd;

[TestClass]
public sealed class OptimTests
{
    static IBackend Be => Backend.Cpu;

    /// <summary>AdamW written out per element from Loshchilov &amp; Hutter's algorithm, in double.</summary>
    static void ScalarAdamW(double[] w, double[] m, double[] v, double[] g, int t, double lr, double wd, double b1, double b2, double eps)
    {
        for (int i = 0; i < w.Length; i++)
        {
            m[i] = b1 * m[i] + (1 - b1) * g[i];
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
            double mh = m[i] / (1 - Math.Pow(b1, t)), vh = v[i] / (1 - Math.Pow(b2, t));
            w[i] = w[i] - lr * wd * w[i] - lr * mh / (Math.Sqrt(vh) + eps);
        }
    }

    [TestMethod]
    [DataRow(DType.F64)]
    [DataRow(DType.F32)]
    [DataRow(DType.BF16)]
    public void AdamWMatchesScalarReference(DType dt)
    {
        const int n = 37, steps = 5;
        var w0 = Check.Rand(1, n).Select(v => (double)BFloat16.Round((float)v)).ToArray();
        var w0b = Check.Rand(2, 5).Select(v => (double)BFloat16.Round((float)v)).ToArray();
        using var p = Be.FromDoubles(w0, [n], dt); using var pb = Be.FromDoubles(w0b, [5], dt);
        p.RequiresGrad = pb.RequiresGrad = true;
        using var opt = new AdamW([new ParamGroup([p], lr: 1e-2f, weightDecay: 0.1f), new ParamGroup([pb], lr: 5e-2f, weightDecay: 0f)], beta1: 0.9f, beta2: 0.98f, eps: 1e-6f);
        double[] w = (double[])w0.Clone(), m = new double[n], v = new double[n];
        double[] wb = (double[])w0b.Clone(), mb = new double[5], vb = new double[5];
        for (int t = 1; t <= steps; t++)
        {
            var g = Check.Rand(10 + t, n, -2, 2).Select(x => (double)BFloat16.Round((float)x)).ToArray();
            var gb = Check.Rand(20 + t, 5, -2, 2).Select(x => (double)BFloat16.Round((float)x)).ToArray();
            p.Grad?.Dispose(); p.Grad = Be.FromDoubles(g, [n], dt);
            pb.Grad?.Dispose(); pb.Grad = Be.FromDoubles(gb, [5], dt);
            opt.Step();
            ScalarAdamW(w, m, v, g, t, (double)1e-2f, (double)0.1f, (double)0.9f, (double)0.98f, (double)1e-6f);
            ScalarAdamW(wb, mb, vb, gb, t, (double)5e-2f, 0, (double)0.9f, (double)0.98f, (double)1e-6f);
        }
        Assert.AreEqual(steps, opt.StepCount);
        var st = opt.StateOf(p)!;
        double tol = dt == DType.F64 ? 1e-13 : 2e-6;
        if (dt == DType.BF16)
        {
            Assert.IsNotNull(st.Master, "bf16 params get fp32 master weights");
            Check.Close(w, st.Master!.ToDoubleArray(), tol, tol, "master");
            Check.Close(w.Select(x => (double)BFloat16.Round((float)x)).ToArray(), p.ToDoubleArray(), 1e-6, 1e-2, "param = rounded master");
            CollectionAssert.AreEqual(st.Master!.ToFloatArray().Select(BFloat16.Round).ToArray(), p.ToFloatArray(), "param is exactly the rounding of master");
        }
        else
        {
            Assert.IsNull(st.Master);
            Check.Close(w, p.ToDoubleArray(), tol, tol, "w");
        }
        Check.Close(m, st.M.ToDoubleArray(), tol, tol, "m");
        Check.Close(v, st.V.ToDoubleArray(), tol, tol, "v");
        Check.Close(wb, (opt.StateOf(pb)!.Master ?? pb).ToDoubleArray(), tol, tol, "second group");
    }

    [TestMethod]
    public void ClipGradNormScalesToMaxNorm()
    {
        using var a = Be.FromDoubles([3, 0, 4], [3], DType.F32); a.RequiresGrad = true;
        using var b = Be.FromDoubles([0, 12], [2], DType.F32); b.RequiresGrad = true;
        using var c = Be.FromDoubles([1], [1], DType.F32); c.RequiresGrad = true; // no grad: ignored
        a.Grad = Be.FromDoubles([3, 0, 4], [3], DType.F32);
        b.Grad = Be.FromDoubles([0, 12], [2], DType.BF16);
        double norm = GradClip.ClipGradNorm([a, b, c], 6.5);
        Assert.AreEqual(13, norm, 1e-6);
        double coef = 6.5 / (13 + 1e-6);
        Check.Close([3 * coef, 0, 4 * coef], a.Grad.ToDoubleArray(), 1e-6, 1e-6, "a");
        Check.Close([0, 12 * coef], b.Grad.ToDoubleArray(), 1e-6, 1e-2, "b (bf16)");
        Assert.AreEqual(6.5, GradClip.GlobalNorm([a, b]), 0.05);
        // under the limit: untouched
        double n2 = GradClip.ClipGradNorm([a], 100);
        Assert.AreEqual(5 * coef, n2, 1e-5);
        Check.Close([3 * coef, 0, 4 * coef], a.Grad.ToDoubleArray(), 1e-6, 1e-6, "a unchanged");
    }

    [TestMethod]
    public void ZeroGradAndSkipsParamsWithoutGrad()
    {
        using var a = Be.FromDoubles([1, 2], [2], DType.F32); a.RequiresGrad = true;
        using var b = Be.FromDoubles([5], [1], DType.F32); b.RequiresGrad = true;
        using var opt = new AdamW([a, b], lr: 0.1f, weightDecay: 0f);
        F.Sum(F.Mul(a, a)).Backward();
        opt.Step();
        Assert.IsNull(opt.StateOf(b));
        Assert.AreEqual(5f, b.ToFloatArray()[0]);
        // the first Adam step moves every coordinate by lr·sign(g) (|m̂/√v̂| = 1)
        Check.Close([0.9, 1.9], a.ToDoubleArray(), 1e-5, 1e-5, "first step");
        opt.ZeroGrad();
        CollectionAssert.AreEqual(new float[] { 0, 0 }, a.Grad!.ToFloatArray());
        opt.ZeroGrad(setToNull: true);
        Assert.IsNull(a.Grad);
    }
}
