using FiberCuda.Backends;
using FiberCuda.Ops;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;

namespace FiberCuda.Tests.Cpu;

/// <summary>
/// CPU ops (f64, and f32 where noted) against scalar references written here from the definitions,
/// independent of the backend's code paths.
/// </summary>
[TestClass]
public sealed class CpuReferenceTests
{
    static IBackend Be => Backend.Cpu;
    static Tensor T(double[] v, int[] s, DType dt = DType.F64) => Be.FromDoubles(v, s, dt);

    [TestMethod]
    public void GemmMatchesTripleLoop()
    {
        foreach (var dt in new[] { DType.F64, DType.F32 })
            foreach (var (ta, tb) in new[] { (false, false), (true, false), (false, true), (true, true) })
            {
                int M = 5, N = 7, K = 9, batch = 3;
                var a = Check.Rand(1, batch * M * K); var b = Check.Rand(2, batch * K * N); var c = Check.Rand(3, batch * M * N); var bias = Check.Rand(4, N);
                using var ta_ = T(a, [batch, M * K], dt); using var tb_ = T(b, [batch, K * N], dt); using var tc = T(c, [batch, M * N], dt);
                using var tbias = T(bias, [N], dt);
                Be.Gemm(new GemmArgs(ta_, tb_, tc, M, N, K, ta, tb, 1.5f, 0.25f, tbias, batch, M * K, K * N, M * N));
                var exp = new double[batch * M * N];
                for (int q = 0; q < batch; q++)
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < N; j++)
                        {
                            double s = 0;
                            for (int k = 0; k < K; k++)
                                s += a[q * M * K + (ta ? k * M + i : i * K + k)] * b[q * K * N + (tb ? j * K + k : k * N + j)];
                            exp[q * M * N + i * N + j] = 1.5 * s + 0.25 * c[q * M * N + i * N + j] + bias[j];
                        }
                Check.Close(exp, tc.ToDoubleArray(), dt == DType.F64 ? 1e-12 : 1e-5, dt == DType.F64 ? 1e-12 : 1e-5, $"gemm {dt} ta={ta} tb={tb}");
            }
    }

    [TestMethod]
    public void LayerNormMatchesDefinition()
    {
        int rows = 4, C = 13;
        var x = Check.Rand(5, rows * C, -2, 3); var res = Check.Rand(6, rows * C); var g = Check.Rand(7, C); var bt = Check.Rand(8, C);
        using var tx = T(x, [rows, C]); using var tr = T(res, [rows, C]); using var tg = T(g, [C]); using var tb = T(bt, [C]);
        using var y = Be.Empty([rows, C], DType.F64); using var s = Be.Empty([rows, C], DType.F64);
        using var mean = Be.Empty([rows], DType.F64); using var rstd = Be.Empty([rows], DType.F64);
        Be.LayerNorm(tx, tr, tg, tb, 1e-5f, y, s, mean, rstd);
        var ey = new double[rows * C]; var es = new double[rows * C]; var em = new double[rows]; var er = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double mu = 0; for (int c = 0; c < C; c++) { es[r * C + c] = x[r * C + c] + res[r * C + c]; mu += es[r * C + c]; }
            mu /= C;
            double var = 0; for (int c = 0; c < C; c++) var += (es[r * C + c] - mu) * (es[r * C + c] - mu);
            var /= C;
            double rs = 1 / Math.Sqrt(var + (double)1e-5f);
            em[r] = mu; er[r] = rs;
            for (int c = 0; c < C; c++) ey[r * C + c] = (es[r * C + c] - mu) * rs * g[c] + bt[c];
        }
        Check.Close(es, s.ToDoubleArray(), 1e-14, 1e-14, "sum");
        Check.Close(ey, y.ToDoubleArray(), 1e-12, 1e-12, "y");
        Check.Close(em, mean.ToDoubleArray(), 1e-14, 1e-14, "mean");
        Check.Close(er, rstd.ToDoubleArray(), 1e-12, 1e-12, "rstd");
    }

    [TestMethod]
    public void SoftmaxCrossEntropyL2MatchDefinitions()
    {
        int rows = 5, C = 11;
        var x = Check.Rand(9, rows * C, -5, 5);
        using var tx = T(x, [rows, C]);
        using var y = Be.Empty([rows, C], DType.F64);
        Be.Softmax(tx, 0.7f, y);
        var ey = new double[rows * C];
        for (int r = 0; r < rows; r++)
        {
            double z = 0; for (int c = 0; c < C; c++) z += Math.Exp((double)0.7f * x[r * C + c]);
            for (int c = 0; c < C; c++) ey[r * C + c] = Math.Exp((double)0.7f * x[r * C + c]) / z;
        }
        Check.Close(ey, y.ToDoubleArray(), 1e-15, 1e-12, "softmax");

        var targets = new[] { 3, -100, 0, 10, -100 };
        using var tt = Be.FromInts(targets, [rows]);
        using var loss = Be.Empty([rows], DType.F64); using var lse = Be.Empty([rows], DType.F64);
        Be.CrossEntropy(tx, tt, -100, loss, lse);
        var el = new double[rows]; var elog = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double z = 0; for (int c = 0; c < C; c++) z += Math.Exp(x[r * C + c]);
            elog[r] = Math.Log(z);
            el[r] = targets[r] == -100 ? 0 : Math.Log(z) - x[r * C + targets[r]];
        }
        Check.Close(elog, lse.ToDoubleArray(), 1e-13, 1e-13, "lse");
        Check.Close(el, loss.ToDoubleArray(), 1e-13, 1e-13, "loss");

        // backward: dlogits += dloss·(softmax − onehot), nothing for ignored rows
        var dloss = Check.Rand(10, rows); var d0 = Check.Rand(11, rows * C);
        using var tdl = T(dloss, [rows]); using var tdx = T(d0, [rows, C]);
        Be.CrossEntropyBackward(tx, tt, -100, lse, tdl, tdx);
        var ed = (double[])d0.Clone();
        for (int r = 0; r < rows; r++)
        {
            if (targets[r] == -100) continue;
            for (int c = 0; c < C; c++) ed[r * C + c] += dloss[r] * (Math.Exp(x[r * C + c] - elog[r]) - (c == targets[r] ? 1 : 0));
        }
        Check.Close(ed, tdx.ToDoubleArray(), 1e-14, 1e-12, "dlogits");

        using var yn = Be.Empty([rows, C], DType.F64); using var nrm = Be.Empty([rows], DType.F64);
        Be.L2Normalize(tx, 1e-12f, yn, nrm);
        var en = new double[rows * C]; var enr = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double s = 0; for (int c = 0; c < C; c++) s += x[r * C + c] * x[r * C + c];
            enr[r] = Math.Sqrt(s);
            for (int c = 0; c < C; c++) en[r * C + c] = x[r * C + c] / enr[r];
        }
        Check.Close(en, yn.ToDoubleArray(), 1e-15, 1e-13, "l2 y");
        Check.Close(enr, nrm.ToDoubleArray(), 1e-15, 1e-13, "l2 norm");
    }

    [TestMethod]
    public void CrossEntropyRejectsOutOfRangeTargets()
    {
        using var logits = T(new double[6], [2, 3]); using var t = Be.FromInts([1, 3], [2]);
        using var loss = Be.Empty([2], DType.F64); using var lse = Be.Empty([2], DType.F64);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Be.CrossEntropy(logits, t, -100, loss, lse));
    }

    [TestMethod]
    public void SoftmaxOfMaskedEntries()
    {
        using var x = Be.FromFloats([0f, float.NegativeInfinity, 1f, float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity], [2, 3]);
        using var y = Be.Empty([2, 3], DType.F32);
        Be.Softmax(x, 1f, y);
        var v = y.ToFloatArray();
        double z = 1 + Math.E;
        Check.Close([1 / z, 0, Math.E / z, 0, 0, 0], Array.ConvertAll(v, f => (double)f), 1e-7, 1e-6, "masked softmax");
    }

    [TestMethod]
    public void GeluAndErfMatchIndependentSeries()
    {
        // erf by its all-positive series erf(x) = 2/√π·e^{−x²}·Σ 2ⁿx^{2n+1}/(1·3·…·(2n+1)): no cancellation up to |x| ≈ 4.
        static double ErfSeries(double x)
        {
            double term = x, sum = x;
            for (int n = 1; n < 400; n++) { term *= 2 * x * x / (2 * n + 1); sum += term; if (term < 1e-18 * sum) break; }
            return 2 / Math.Sqrt(Math.PI) * Math.Exp(-x * x) * sum;
        }
        double worst = 0;
        for (double x = 0; x <= 4; x += 1.0 / 64 + 1e-9)
        {
            double e = ErfSeries(x), a = SpecialMath.Erf(x);
            worst = Math.Max(worst, Math.Abs(a - e) / Math.Max(e, 1e-300));
            Assert.AreEqual(-a, SpecialMath.Erf(-x), 0, "odd");
        }
        Assert.IsTrue(worst < 2e-15, $"erf relative error {worst:g3}");
        Assert.AreEqual(0.8427007929497149, SpecialMath.Erf(1.0), 2e-16); // erf(1), a tabulated constant
        // erfc far in the tail against the asymptotic series e^{−x²}/(x√π)·(1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸) − 945/(32x¹⁰))
        foreach (double x in new[] { 8.0, 12.0, 20.0 })
        {
            double x2 = x * x;
            double asym = Math.Exp(-x2) / (x * Math.Sqrt(Math.PI)) * (1 - 1 / (2 * x2) + 3 / (4 * x2 * x2) - 15 / (8 * x2 * x2 * x2) + 105 / (16 * x2 * x2 * x2 * x2) - 945 / (32 * Math.Pow(x2, 5)));
            Assert.AreEqual(1, SpecialMath.Erfc(x) / asym, 1e-8, $"erfc({x})");
        }

        var xs = Enumerable.Range(0, 97).Select(i => -6 + i * 0.125).ToArray();
        using var tx = T(xs, [xs.Length]); using var y = Be.Empty([xs.Length], DType.F64);
        Be.BiasGelu(tx, null, y);
        var exp = xs.Select(x => 0.5 * x * (1 + (x >= 0 ? ErfSeries(x / Math.Sqrt(2)) : -ErfSeries(-x / Math.Sqrt(2))))).ToArray();
        // 1 − erf cancels in this reference for x ≪ 0 (absolute error ~1e-15); the backend uses erfc there.
        Check.Close(exp, y.ToDoubleArray(), 1e-14, 1e-12, "gelu");
        // gelu' against central differences of the series GELU
        using var dy = T(Enumerable.Repeat(1.0, xs.Length).ToArray(), [xs.Length]); using var dx = Be.Zeros([xs.Length], DType.F64);
        Be.BiasGeluBackward(tx, null, dy, dx, null);
        const double h = 1e-5;
        var fd = xs.Select(x =>
        {
            double G(double u) => 0.5 * u * (1 + (u >= 0 ? ErfSeries(u / Math.Sqrt(2)) : -ErfSeries(-u / Math.Sqrt(2))));
            return (G(x + h) - G(x - h)) / (2 * h);
        }).ToArray();
        Check.Close(fd, dx.ToDoubleArray(), 1e-9, 1e-8, "gelu'");
    }

    [TestMethod]
    public void EmbeddingWithRepeatedIds()
    {
        int V = 5, D = 3;
        var w = Check.Rand(12, V * D); var ids = new[] { 2, 2, 0, 4, 2, 0 };
        using var tw = T(w, [V, D]); using var ti = Be.FromInts(ids, [2, 3]);
        using var y = Be.Empty([2, 3, D], DType.F64);
        Be.Embedding(tw, ti, y);
        var ey = ids.SelectMany(id => w.Skip(id * D).Take(D)).ToArray();
        Check.Close(ey, y.ToDoubleArray(), 0, 0, "embedding");
        var dy = Check.Rand(13, ids.Length * D); var dw0 = Check.Rand(14, V * D);
        using var tdy = T(dy, [ids.Length, D]); using var tdw = T(dw0, [V, D]);
        Be.EmbeddingBackward(tdy, ti, tdw);
        var edw = (double[])dw0.Clone();
        for (int i = 0; i < ids.Length; i++) for (int d = 0; d < D; d++) edw[ids[i] * D + d] += dy[i * D + d];
        Check.Close(edw, tdw.ToDoubleArray(), 1e-15, 1e-15, "dweight");
        using var bad = Be.FromInts([5], [1]); using var y1 = Be.Empty([1, D], DType.F64);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Be.Embedding(tw, bad, y1));
    }

    [TestMethod]
    public void PermuteAndCopySliceWithAccumulate()
    {
        int[] shape = [2, 3, 4, 5]; int[] perm = [3, 0, 2, 1];
        var x = Check.Rand(15, 120); var y0 = Check.Rand(16, 120);
        foreach (var dt in new[] { DType.F64, DType.F32, DType.BF16 })
            foreach (bool acc in new[] { false, true })
            {
                using var tx = T(x, shape, dt); using var ty = T(y0, [5, 2, 4, 3], dt);
                Be.Permute(tx, perm, ty, acc);
                var xr = tx.ToDoubleArray(); var yr = T(y0, [120], dt).ToDoubleArray();
                var e = new double[120];
                for (int a = 0; a < 2; a++) for (int b = 0; b < 3; b++) for (int c = 0; c < 4; c++) for (int d = 0; d < 5; d++)
                {
                    int yi = ((d * 2 + a) * 4 + c) * 3 + b;
                    e[yi] = xr[((a * 3 + b) * 4 + c) * 5 + d] + (acc ? yr[yi] : 0);
                }
                double tol = dt == DType.BF16 ? 1e-2 : dt == DType.F32 ? 1e-6 : 0;
                Check.Close(e, ty.ToDoubleArray(), tol, tol, $"permute {dt} acc={acc}");
            }

        var sx = Check.Rand(17, 2 * 5 * 3); var sy = Check.Rand(18, 2 * 7 * 3);
        foreach (bool acc in new[] { false, true })
        {
            using var tx = T(sx, [2, 5, 3]); using var ty = T(sy, [2, 7, 3]);
            Be.CopySlice(tx, 1, 1, ty, 3, 4, acc);
            var e = (double[])sy.Clone();
            for (int o = 0; o < 2; o++) for (int k = 0; k < 4; k++) for (int i = 0; i < 3; i++)
                e[(o * 7 + 3 + k) * 3 + i] = (acc ? sy[(o * 7 + 3 + k) * 3 + i] : 0) + sx[(o * 5 + 1 + k) * 3 + i];
            Check.Close(e, ty.ToDoubleArray(), 1e-15, 0, $"copyslice acc={acc}");
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Be.CopySlice(tx, 1, 2, ty, 0, 4, acc));
        }
    }

    [TestMethod]
    public void ReductionsAndElementwise()
    {
        var x = Check.Rand(19, 6 * 9); var b = Check.Rand(20, 9); var z = Check.Rand(21, 6 * 9);
        using var tx = T(x, [6, 9]); using var tb = T(b, [9]); using var tz = T(z, [6, 9]);
        using var y = Be.Empty([6, 9], DType.F64);
        Be.AddBias(tx, tb, y); Check.Close(x.Select((v, i) => v + b[i % 9]).ToArray(), y.ToDoubleArray(), 0, 1e-16, "addbias");
        Be.Add(tx, tz, y); Check.Close(x.Zip(z, (p, q) => p + q).ToArray(), y.ToDoubleArray(), 0, 1e-16, "add");
        Be.Mul(tx, tz, y); Check.Close(x.Zip(z, (p, q) => p * q).ToArray(), y.ToDoubleArray(), 0, 1e-16, "mul");
        Be.Scale(tx, 0.3f, y); Check.Close(x.Select(v => v * (double)0.3f).ToArray(), y.ToDoubleArray(), 0, 1e-16, "scale");
        Be.Axpy(2f, tz, y); Check.Close(x.Zip(z, (p, q) => p * (double)0.3f + 2 * q).ToArray(), y.ToDoubleArray(), 1e-16, 1e-15, "axpy");
        using var rows = Be.Empty([6], DType.F64); Be.SumLastDim(tx, rows);
        Check.Close(Enumerable.Range(0, 6).Select(r => x.Skip(r * 9).Take(9).Sum()).ToArray(), rows.ToDoubleArray(), 1e-15, 1e-14, "sumlastdim");
        using var cols = T(b, [9]); Be.SumRows(tx, cols, accumulate: true);
        Check.Close(Enumerable.Range(0, 9).Select(c => b[c] + Enumerable.Range(0, 6).Sum(r => x[r * 9 + c])).ToArray(), cols.ToDoubleArray(), 1e-15, 1e-14, "sumrows");
        using var all = Be.Empty([1], DType.F32); Be.SumAll(tx, all);
        Assert.AreEqual(x.Sum(), all.ToDoubleArray()[0], 1e-6);
        using var ss = Be.Empty([1], DType.F32); Be.SumOfSquares([tx, tb], ss);
        Assert.AreEqual(x.Sum(v => v * v) + b.Sum(v => v * v), ss.ToDoubleArray()[0], 1e-5);
        using var f = Be.Empty([3], DType.BF16); Be.Fill(f, 1.0 / 3);
        Assert.AreEqual(BFloat16.Round(1f / 3), f.ToFloatArray()[2]);
        using var cx = Be.Empty([6, 9], DType.BF16); Be.Cast(tx, cx);
        Check.Close(x.Select(v => (double)BFloat16.Round((float)v)).ToArray(), cx.ToDoubleArray(), 0, 0, "cast bf16");
    }

    [TestMethod]
    public void Bf16OutputsAreRoundedOnce()
    {
        // Gemm in bf16: fp32 accumulation then one rounding.
        var a = Check.Rand(22, 4 * 33).Select(v => (double)BFloat16.Round((float)v)).ToArray();
        var b = Check.Rand(23, 33 * 3).Select(v => (double)BFloat16.Round((float)v)).ToArray();
        using var ta = T(a, [4, 33], DType.BF16); using var tb = T(b, [33, 3], DType.BF16); using var tc = Be.Empty([4, 3], DType.BF16);
        Be.Gemm(new GemmArgs(ta, tb, tc, 4, 3, 33));
        var e = new double[12];
        for (int i = 0; i < 4; i++) for (int j = 0; j < 3; j++) { double s = 0; for (int k = 0; k < 33; k++) s += a[i * 33 + k] * b[k * 3 + j]; e[i * 3 + j] = BFloat16.Round((float)s); }
        var got = tc.ToDoubleArray();
        for (int i = 0; i < 12; i++) Assert.IsTrue(Math.Abs(got[i] - e[i]) <= Math.Abs(e[i]) * (1.0 / 128) + 1e-6, $"gemm bf16 [{i}] {got[i]} vs {e[i]}");
    }
}

[TestClass]
public sealed class SpecialMathTests
{
    [TestMethod]
    public void FloatGeluIsCorrectlyRoundedDoubleGelu()
    {
        // The float path drops the Chebyshev tail; it must still agree with the double GELU to float precision.
        for (int i = -80000; i <= 80000; i++)
        {
            float x = i * 1e-4f;
            float a = Ops.SpecialMath.GeluF(x), e = (float)Ops.SpecialMath.Gelu(x);
            float ga = Ops.SpecialMath.GeluGradF(x), ge = (float)Ops.SpecialMath.GeluGrad(x);
            Assert.AreEqual(e, a, Math.Abs(e) * 2.5e-7 + 1e-30, $"gelu({x})");
            Assert.AreEqual(ge, ga, Math.Abs(ge) * 2.5e-7 + 1e-30, $"gelu'({x})");
        }
    }

    [TestMethod]
    public void SpanGeluMatchesScalar()
    {
        var xs = Enumerable.Range(0, 4099).Select(i => (i - 2049) * 0.0047f).Concat([0f, -0f, 0.49f, -0.51f, 30f, -30f, float.NaN]).ToArray();
        var y = new float[xs.Length]; var dy = new float[xs.Length];
        Ops.SpecialMath.GeluF(xs, y); Ops.SpecialMath.GeluF(xs, dy, grad: true);
        for (int i = 0; i < xs.Length; i++)
        {
            float e = Ops.SpecialMath.GeluF(xs[i]), ge = Ops.SpecialMath.GeluGradF(xs[i]);
            if (float.IsNaN(xs[i])) { Assert.IsTrue(float.IsNaN(y[i]) && float.IsNaN(dy[i])); continue; }
            Assert.AreEqual(e, y[i], Math.Abs(e) * 1.2e-7 + 1e-38, $"gelu({xs[i]})");
            Assert.AreEqual(ge, dy[i], Math.Abs(ge) * 1.2e-7 + 1e-38, $"gelu'({xs[i]})");
        }
    }
}

[TestClass]
public sealed class CpuDeterminismTests
{
    [TestMethod]
    public void ParallelReductionsAreBitwiseRepeatable()
    {
        // Large enough to take the multi-threaded paths; cross-row reductions use fixed blocks, so repeated runs agree bit for bit.
        var be = Backends.Backend.Cpu;
        int rows = 1000, c = 96;
        using var x = be.FromDoubles(Support.Check.Rand(1, rows * c), [rows, c], Tensors.DType.F32);
        using var dy = be.FromDoubles(Support.Check.Rand(2, rows * c), [rows, c], Tensors.DType.F32);
        using var g = be.FromDoubles(Support.Check.Rand(3, c), [c], Tensors.DType.F32);
        using var b = be.FromDoubles(Support.Check.Rand(4, c), [c], Tensors.DType.F32);
        float[]? first = null;
        for (int rep = 0; rep < 3; rep++)
        {
            using var y = be.Empty([rows, c], Tensors.DType.F32); using var mean = be.Empty([rows], Tensors.DType.F32); using var rstd = be.Empty([rows], Tensors.DType.F32);
            be.LayerNorm(x, null, g, b, 1e-5f, y, null, mean, rstd);
            using var dx = be.Zeros([rows, c], Tensors.DType.F32); using var dg = be.Zeros([c], Tensors.DType.F32); using var db = be.Zeros([c], Tensors.DType.F32);
            be.LayerNormBackward(x, g, mean, rstd, dy, dx, dg, db);
            using var ss = be.Empty([1], Tensors.DType.F32); be.SumOfSquares([x, dy], ss);
            using var sr = be.Zeros([c], Tensors.DType.F32); be.SumRows(dy, sr, accumulate: true);
            using var dbias = be.Zeros([c], Tensors.DType.F32); using var dx2 = be.Zeros([rows, c], Tensors.DType.F32);
            be.BiasGeluBackward(x, b, dy, dx2, dbias);
            var all = dx.ToFloatArray().Concat(dg.ToFloatArray()).Concat(db.ToFloatArray()).Concat(ss.ToFloatArray())
                .Concat(sr.ToFloatArray()).Concat(dbias.ToFloatArray()).Concat(dx2.ToFloatArray()).ToArray();
            if (first is null) first = all;
            else CollectionAssert.AreEqual(first, all, $"repeat {rep}");
        }
    }
}

[TestClass]
public sealed class CpuParallelPathTests
{
    // Sizes past the parallel threshold, odd widths: the row-range split must not drop or double any row.
    [TestMethod]
    public void LargeRowOpsMatchScalarReferences()
    {
        var be = Backends.Backend.Cpu;
        int rows = 301, c = 257;
        var x = Support.Check.Rand(31, rows * c, -3, 3);
        using var tx = be.FromDoubles(x, [rows, c], Tensors.DType.F32);
        var xf = tx.ToDoubleArray(); // the f32 values
        using var y = be.Empty([rows, c], Tensors.DType.F32);
        be.Softmax(tx, 1f, y);
        var sm = new double[rows * c];
        for (int r = 0; r < rows; r++)
        {
            double m = double.NegativeInfinity; for (int j = 0; j < c; j++) m = Math.Max(m, xf[r * c + j]);
            double z = 0; for (int j = 0; j < c; j++) z += Math.Exp(xf[r * c + j] - m);
            for (int j = 0; j < c; j++) sm[r * c + j] = Math.Exp(xf[r * c + j] - m) / z;
        }
        Support.Check.Close(sm, y.ToDoubleArray(), 1e-8, 1e-5, "softmax");

        using var g = be.Empty([c], Tensors.DType.F32); be.Fill(g, 1); using var b = be.Zeros([c], Tensors.DType.F32);
        using var mean = be.Empty([rows], Tensors.DType.F32); using var rstd = be.Empty([rows], Tensors.DType.F32);
        be.LayerNorm(tx, null, g, b, 1e-5f, y, null, mean, rstd);
        var ln = new double[rows * c];
        for (int r = 0; r < rows; r++)
        {
            double mu = 0; for (int j = 0; j < c; j++) mu += xf[r * c + j]; mu /= c;
            double v = 0; for (int j = 0; j < c; j++) v += (xf[r * c + j] - mu) * (xf[r * c + j] - mu); v /= c;
            for (int j = 0; j < c; j++) ln[r * c + j] = (xf[r * c + j] - mu) / Math.Sqrt(v + 1e-5);
        }
        Support.Check.Close(ln, y.ToDoubleArray(), 1e-5, 1e-5, "layernorm");

        using var cols = be.Zeros([c], Tensors.DType.F32); be.SumRows(tx, cols, accumulate: false);
        var cs = new double[c]; for (int r = 0; r < rows; r++) for (int j = 0; j < c; j++) cs[j] += xf[r * c + j];
        Support.Check.Close(cs, cols.ToDoubleArray(), 1e-5, 1e-6, "sumrows");

        // GEMM with every path: M not a multiple of 4, N past one column block, K odd
        int M = 7, N = 600, K = 33;
        var a = Support.Check.Rand(32, M * K); var bb = Support.Check.Rand(33, N * K);
        using var ta = be.FromDoubles(a, [M, K], Tensors.DType.F32); using var tb = be.FromDoubles(bb, [N, K], Tensors.DType.F32);
        using var tc = be.Empty([M, N], Tensors.DType.F32);
        be.Gemm(new GemmArgs(ta, tb, tc, M, N, K, TransB: true));
        var af = ta.ToDoubleArray(); var bf = tb.ToDoubleArray();
        var e = new double[M * N];
        for (int i = 0; i < M; i++) for (int j = 0; j < N; j++) { double s = 0; for (int k = 0; k < K; k++) s += af[i * K + k] * bf[j * K + k]; e[i * N + j] = s; }
        Support.Check.Close(e, tc.ToDoubleArray(), 1e-5, 1e-5, "gemm");
    }
}

[TestClass]
public sealed class HostConversionTests
{
    [TestMethod]
    public unsafe void VectorBf16ConversionsMatchScalar()
    {
        // Random bit patterns (NaNs, infinities, subnormals, ties) plus the special values, at a length with a tail.
        var rng = new Random(3);
        int n = 100_003;
        var f = new float[n];
        for (int i = 0; i < n; i++) f[i] = BitConverter.Int32BitsToSingle(rng.Next() ^ (rng.Next(2) << 31));
        float[] special = [0f, -0f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, float.Epsilon, 1f + MathF.Pow(2, -8), 1f + 3 * MathF.Pow(2, -8), float.MaxValue, BitConverter.Int32BitsToSingle(0x7fffffff), BitConverter.Int32BitsToSingle(0x7f7fffff)];
        special.CopyTo(f, 0);
        var h = new ushort[n]; var back = new float[n];
        fixed (float* fp = f) fixed (ushort* hp = h) fixed (float* bp = back)
        {
            Backends.Cpu.HostIO.FloatToBf16(fp, hp, n);
            Backends.Cpu.HostIO.Bf16ToFloat(hp, bp, n);
        }
        for (int i = 0; i < n; i++)
        {
            Assert.AreEqual(Tensors.BFloat16.FromFloat(f[i]), h[i], $"[{i}] {BitConverter.SingleToUInt32Bits(f[i]):x8}");
            Assert.AreEqual(BitConverter.SingleToUInt32Bits(Tensors.BFloat16.ToFloat(h[i])), BitConverter.SingleToUInt32Bits(back[i]), $"back [{i}]");
        }
    }
}
