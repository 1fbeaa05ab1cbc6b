using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Backends.Cpu;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Attention;

/// <summary>The CPU reference of the fused window attention against the plain step-by-step version, and its gradients against finite differences.</summary>
[TestClass]
public sealed class WindowAttentionCpuTests
{
    static CpuBackend Cpu => Backend.Cpu;

    internal static double[] Rand(Random r, long n, double scale = 1)
    {
        var a = new double[n];
        for (long i = 0; i < n; i++) a[i] = (r.NextDouble() * 2 - 1) * scale;
        return a;
    }

    [TestMethod]
    [DataRow(1, 7, 14, 14, 2, 32, 0)]
    [DataRow(1, 7, 14, 14, 2, 32, 3)]
    [DataRow(2, 4, 8, 12, 3, 8, 2)]     // non-square image (the padded fine-model case), batch 2
    [DataRow(1, 12, 24, 24, 1, 32, 6)]
    [DataRow(1, 18, 18, 36, 1, 32, 9)]
    [DataRow(1, 3, 9, 6, 2, 5, 1)]      // odd window, shift w/2 rounded down
    public void MatchesPlainReference(int B, int w, int H, int W, int nH, int d, int s)
    {
        var r = new Random(1000 * w + 10 * s + H);
        int C = nH * d;
        // Scores large enough that the softmax is far from uniform and the −100 mask matters.
        var qkv = Rand(r, (long)B * H * W * 3 * C, 1.5);
        var table = Rand(r, (2 * w - 1) * (2 * w - 1) * nH, 2);
        double scale = (float)(1 / Math.Sqrt(d)); // the op takes a float scale
        var (ye, lsee) = PlainWindowAttention.Run(qkv, table, B, H, W, nH, d, w, s, scale);

        var a = new WindowAttentionShape(B, H, W, nH, d, w, s, (float)scale);
        using var tq = Cpu.FromDoubles(qkv, a.QkvShape, DType.F64);
        using var tt = Cpu.FromDoubles(table, a.TableShape, DType.F64);
        using var y = Cpu.Empty(a.OutShape, DType.F64);
        using var lse = Cpu.Empty(a.LseShape, DType.F64);
        new CpuWindowAttention().Forward(tq, tt, a, y, lse);
        Near(ye, y.ToArray<double>(), 1e-12, "y");
        Near(lsee, lse.ToArray<double>(), 1e-12, "lse");

        // The mask really changes the result when shifted (guards against a test that cannot fail).
        if (s > 0)
        {
            var (y0, _) = PlainWindowAttention.Run(qkv, table, B, H, W, nH, d, w, 0, scale);
            Assert.IsTrue(MaxDiff(y0, ye) > 1e-3, "shift made no difference");
        }
    }

    internal static double MaxDiff(double[] a, double[] b) { double m = 0; for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs(a[i] - b[i])); return m; }

    static void Near(double[] e, double[] a, double tol, string what)
    {
        Assert.HasCount(e.Length, a);
        for (int i = 0; i < e.Length; i++)
            if (!(Math.Abs(e[i] - a[i]) <= tol * (1 + Math.Abs(e[i])))) Assert.Fail($"{what}[{i}]: expected {e[i]:R}, got {a[i]:R}");
    }

    [TestMethod]
    [DataRow(4, 4, 2, 1)]
    [DataRow(4, 6, 2, 0)]
    [DataRow(6, 6, 3, 1)]
    public void GradientsMatchFiniteDifferences(int H, int W, int w, int s)
    {
        var r = new Random(7 * H + W + s);
        int nH = 2, d = 3, C = nH * d;
        var a = new WindowAttentionShape(1, H, W, nH, d, w, s, 0.7f);
        using var qkv = Cpu.FromDoubles(Rand(r, (long)H * W * 3 * C), a.QkvShape, DType.F64);
        using var table = Cpu.FromDoubles(Rand(r, a.TableRows * nH), a.TableShape, DType.F64);
        using var weights = Cpu.FromDoubles(Rand(r, (long)H * W * C), a.OutShape, DType.F64);
        qkv.RequiresGrad = true; table.RequiresGrad = true;
        var rep = GradCheck.Check(x => F.Sum(F.Mul(WindowAttentionOp.Apply(x[0], x[1], H, W, nH, w, s, 0.7f), weights)),
            [qkv, table], names: ["qkv", "table"]);
        Assert.IsTrue(rep.Ok, rep.Text);
        Assert.IsTrue(table.Grad!.ToDoubleArray().Any(v => Math.Abs(v) > 1e-3), "table gradient is all zero");
    }

    [TestMethod]
    public void BackwardAccumulates()
    {
        var r = new Random(5);
        var a = new WindowAttentionShape(1, 4, 4, 1, 4, 2, 1, 0.5f);
        using var qkv = Cpu.FromDoubles(Rand(r, 4 * 4 * 12), a.QkvShape, DType.F64);
        using var table = Cpu.FromDoubles(Rand(r, 9), a.TableShape, DType.F64);
        using var y = Cpu.Empty(a.OutShape, DType.F64);
        using var lse = Cpu.Empty(a.LseShape, DType.F64);
        using var dy = Cpu.FromDoubles(Rand(r, 4 * 4 * 4), a.OutShape, DType.F64);
        var op = new CpuWindowAttention();
        op.Forward(qkv, table, a, y, lse);
        using var dq1 = Cpu.Zeros(a.QkvShape, DType.F64);
        using var dt1 = Cpu.Zeros(a.TableShape, DType.F64);
        op.Backward(qkv, table, a, y, lse, dy, dq1, dt1);
        var pre = Rand(r, 4 * 4 * 12); var pret = Rand(r, 9);
        using var dq2 = Cpu.FromDoubles(pre, a.QkvShape, DType.F64);
        using var dt2 = Cpu.FromDoubles(pret, a.TableShape, DType.F64);
        op.Backward(qkv, table, a, y, lse, dy, dq2, dt2);
        var g1 = dq1.ToArray<double>(); var g2 = dq2.ToArray<double>();
        for (int i = 0; i < g1.Length; i++) Assert.AreEqual(pre[i] + g1[i], g2[i], 1e-12);
        var t1 = dt1.ToArray<double>(); var t2 = dt2.ToArray<double>();
        for (int i = 0; i < t1.Length; i++) Assert.AreEqual(pret[i] + t1[i], t2[i], 1e-12);
    }

    /// <summary>
    /// Partial windows: a 5×10 map with window 4 (padded to 8×12) and a pad row for the padding tokens' q, k, v equals
    /// the plain reference run on the explicitly padded map, cropped; without a pad row the padding is zeros.
    /// </summary>
    [TestMethod]
    [DataRow(0)]
    [DataRow(2)]
    public void PartialWindowsAreThePlainReferenceOnThePaddedMap(int s)
    {
        const int B = 2, vh = 5, vw = 10, w = 4, nH = 2, d = 8, H = 8, W = 12, C = nH * d;
        var r = new Random(77 + s);
        var qkv = Rand(r, (long)B * vh * vw * 3 * C, 1.5);
        var pad = Rand(r, 3 * C, 1.5);
        var table = Rand(r, (2 * w - 1) * (2 * w - 1) * nH, 2);
        double scale = (float)(1 / Math.Sqrt(d));
        var a = WindowAttentionShape.ForMap(B, vh, vw, nH, d, w, s, (float)scale);
        Assert.IsTrue(a.Padded && a.Height == H && a.Width == W);
        foreach (var withPad in new[] { true, false })
        {
            var full = new double[(long)B * H * W * 3 * C];
            for (int b = 0; b < B; b++)
                for (int t = 0; t < H * W; t++)
                {
                    int yy = t / W, xx = t % W;
                    long dst = ((long)b * H * W + t) * 3 * C;
                    if (yy < vh && xx < vw) Array.Copy(qkv, ((long)b * vh * vw + yy * vw + xx) * 3 * C, full, dst, 3 * C);
                    else if (withPad) Array.Copy(pad, 0, full, dst, 3 * C);
                }
            var (ye, lsee) = PlainWindowAttention.Run(full, table, B, H, W, nH, d, w, s, scale);
            var stored = new double[(long)B * vh * vw * C];
            for (int b = 0; b < B; b++)
                for (int yy = 0; yy < vh; yy++)
                    Array.Copy(ye, ((long)b * H * W + yy * W) * C, stored, ((long)b * vh * vw + yy * vw) * C, (long)vw * C);

            using var tq = Cpu.FromDoubles(qkv, a.QkvShape, DType.F64);
            using var tt = Cpu.FromDoubles(table, a.TableShape, DType.F64);
            using var tp = Cpu.FromDoubles(pad, [3 * C], DType.F64);
            using var y = Cpu.Empty(a.OutShape, DType.F64);
            using var lse = Cpu.Empty(a.LseShape, DType.F64);
            new CpuWindowAttention().Forward(tq, tt, a, y, lse, withPad ? tp : null);
            Near(stored, y.ToArray<double>(), 1e-12, $"y (pad row {withPad})");
            Near(lsee, lse.ToArray<double>(), 1e-12, $"lse (pad row {withPad})");
        }
    }
}
