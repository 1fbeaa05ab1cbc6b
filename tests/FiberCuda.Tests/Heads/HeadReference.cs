using FiberCuda.Tensors;

namespace FiberCuda.Tests.Heads;

/// <summary>
/// Plain fp64 references for the head losses, written the way the official PyTorch code reads: the
/// similarity / logits matrices are materialised whole, log-softmax per row, then the mean. Gradients
/// come from central finite differences of these functions, so nothing here shares the ops' formulas.
/// </summary>
public static class HeadReference
{
    /// <summary>Problem data for ITC: queries, in-batch keys, queues ([Q,D] rows), temperature.</summary>
    public sealed record Itc(int B, int D, int Q, double[] Img, double[] Txt, double[] ImgK, double[] TxtK, double[] ImgQueue, double[] TxtQueue, double Temp);

    /// <summary>Values on the bf16 grid (so f64, f32 and bf16 runs see the same inputs).</summary>
    public static double[] Grid(double[] v) => Array.ConvertAll(v, x => (double)BFloat16.Round((float)x));

    public static double[] RandN(Random r, int n, double scale = 1)
    {
        var v = new double[n];
        for (int i = 0; i < n; i++) v[i] = scale * Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble());
        return v;
    }

    public static double[] RowNormalise(double[] v, int d)
    {
        var o = (double[])v.Clone();
        for (int i = 0; i < v.Length / d; i++)
        {
            double s = 0; for (int k = 0; k < d; k++) s += v[i * d + k] * v[i * d + k];
            s = Math.Sqrt(s);
            for (int k = 0; k < d; k++) o[i * d + k] = v[i * d + k] / s;
        }
        return o;
    }

    /// <summary>L2-normalised features, keys = the same features (the official detach), unnormalised randn queues.</summary>
    public static Itc MakeItc(int seed, int b, int d, int q, double temp = 0.07, double queueScale = 1)
    {
        var r = new Random(seed);
        var img = Grid(RowNormalise(RandN(r, b * d), d));
        var txt = Grid(RowNormalise(RandN(r, b * d), d));
        var iq = Grid(RandN(r, q * d, queueScale));
        var tq = Grid(RandN(r, q * d, queueScale));
        return new Itc(b, d, q, img, txt, img, txt, iq, tq, temp);
    }

    static double Dot(double[] a, int ia, double[] b, int ib, int d)
    {
        double s = 0; for (int k = 0; k < d; k++) s += a[ia + k] * b[ib + k];
        return s;
    }

    /// <summary>loss_itc = (loss_i2t + loss_t2i)/2 with sim = q·[keysᵀ ‖ queueᵀ]/temp and diagonal targets.</summary>
    public static double ItcLoss(Itc p) => ItcLoss(p.B, p.D, p.Q, p.Img, p.Txt, p.ImgK, p.TxtK, p.ImgQueue, p.TxtQueue, p.Temp);

    public static double ItcLoss(int b, int d, int q, double[] img, double[] txt, double[] imgK, double[] txtK, double[] iq, double[] tq, double temp)
    {
        int n = b + q;
        double Direction(double[] query, double[] keys, double[] queue)
        {
            var sim = new double[b, n];
            for (int i = 0; i < b; i++)
                for (int j = 0; j < n; j++)
                    sim[i, j] = (j < b ? Dot(query, i * d, keys, j * d, d) : Dot(query, i * d, queue, (j - b) * d, d)) / temp;
            double total = 0;
            for (int i = 0; i < b; i++)
            {
                double mx = double.NegativeInfinity;
                for (int j = 0; j < n; j++) mx = Math.Max(mx, sim[i, j]);
                double s = 0; for (int j = 0; j < n; j++) s += Math.Exp(sim[i, j] - mx);
                double logSoftmaxDiag = sim[i, i] - mx - Math.Log(s);
                total += -logSoftmaxDiag; // -Σ_j log_softmax · onehot
            }
            return total / b;
        }
        return (Direction(img, txtK, tq) + Direction(txt, imgK, iq)) / 2.0;
    }

    /// <summary>Central differences of <paramref name="f"/> at every element of <paramref name="x"/> (restored afterwards).</summary>
    public static double[] NumericGrad(double[] x, Func<double> f, double h = 1e-6)
    {
        var g = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double o = x[i];
            x[i] = o + h; double fp = f();
            x[i] = o - h; double fm = f();
            x[i] = o;
            g[i] = (fp - fm) / (2 * h);
        }
        return g;
    }

    /// <summary>∂loss/∂img, ∂loss/∂txt (queries only; keys fixed = detached) and ∂loss/∂temp by finite differences.</summary>
    public static (double[] GImg, double[] GTxt, double GTemp) ItcGrads(Itc p)
    {
        var img = (double[])p.Img.Clone(); var txt = (double[])p.Txt.Clone();
        var imgK = (double[])p.ImgK.Clone(); var txtK = (double[])p.TxtK.Clone();
        var temp = new[] { p.Temp };
        double F() => ItcLoss(p.B, p.D, p.Q, img, txt, imgK, txtK, p.ImgQueue, p.TxtQueue, temp[0]);
        var gi = NumericGrad(img, F);
        var gt = NumericGrad(txt, F);
        var gtemp = NumericGrad(temp, F, 1e-7)[0];
        return (gi, gt, gtemp);
    }

    // -------------------------------------------------------------------------- MLM

    public sealed record Mlm(int N, int H, int V, double[] Hidden, double[] Weight, double[]? Bias, int[] Labels);

    public static Mlm MakeMlm(int seed, int n, int h, int v, bool bias = true, int ignoreEvery = 3, double wScale = 0.5)
    {
        var r = new Random(seed);
        var hidden = Grid(RandN(r, n * h));
        var w = Grid(RandN(r, v * h, wScale));
        var b = bias ? Grid(RandN(r, v, 0.5)) : null;
        var lab = new int[n];
        for (int i = 0; i < n; i++) lab[i] = ignoreEvery > 0 && i % ignoreEvery == ignoreEvery - 1 ? -100 : r.Next(v);
        return new Mlm(n, h, v, hidden, w, b, lab);
    }

    /// <summary>Per-row CE of the full logits matrix (hidden·Wᵀ + b), 0 for label −100; and the mean over kept rows.</summary>
    public static (double[] RowLoss, double[] Lse, double Mean) MlmLoss(Mlm p) => MlmLoss(p.N, p.H, p.V, p.Hidden, p.Weight, p.Bias, p.Labels);

    public static (double[] RowLoss, double[] Lse, double Mean) MlmLoss(int n, int h, int v, double[] hidden, double[] w, double[]? bias, int[] labels)
    {
        var logits = new double[n, v];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < v; j++)
                logits[i, j] = Dot(hidden, i * h, w, j * h, h) + (bias?[j] ?? 0);
        var row = new double[n]; var lse = new double[n];
        double sum = 0; int kept = 0;
        for (int i = 0; i < n; i++)
        {
            double mx = double.NegativeInfinity;
            for (int j = 0; j < v; j++) mx = Math.Max(mx, logits[i, j]);
            double s = 0; for (int j = 0; j < v; j++) s += Math.Exp(logits[i, j] - mx);
            lse[i] = mx + Math.Log(s);
            if (labels[i] == -100) continue;
            row[i] = lse[i] - logits[i, labels[i]];
            sum += row[i]; kept++;
        }
        return (row, lse, kept == 0 ? 0 : sum / kept);
    }
}
