using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cpu;

/// <summary>
/// The C# reference of <see cref="IWindowAttentionOps"/>: the same fused formulation as
/// kernels/window_attention.cu (shift and partition by index arithmetic, lse saved, P recomputed in the
/// backward), in fp64 for every input dtype; results are rounded to the output dtypes.
/// </summary>
public sealed class CpuWindowAttention : IWindowAttentionOps
{
    /// <summary>Original token (within the image) of token i of window (wr, wc): undoes the roll by −s.</summary>
    internal static int Token(in WindowAttentionShape a, int wr, int wc, int i)
    {
        int w = a.Window;
        int y = (wr * w + i / w + a.Shift) % a.Height, x = (wc * w + i % w + a.Shift) % a.Width;
        return y * a.Width + x;
    }

    /// <summary>Region label of token i of window (wr, wc) in the shifted image (official attn_mask slices).</summary>
    internal static int Label(in WindowAttentionShape a, int wr, int wc, int i)
    {
        if (a.Shift == 0) return 0;
        int w = a.Window, s = a.Shift;
        int Y = wr * w + i / w, X = wc * w + i % w;
        int ry = Y < a.Height - w ? 0 : Y < a.Height - s ? 1 : 2;
        int rx = X < a.Width - w ? 0 : X < a.Width - s ? 1 : 2;
        return ry * 3 + rx;
    }

    internal static int Rel(int i, int j, int w) => (i / w - j / w + w - 1) * (2 * w - 1) + (i % w - j % w + w - 1);

    static double[] Read(Tensor t) { var v = new double[t.Numel]; HostIO.Read<double>(t, 0, v); return v; }
    static void Write(Tensor t, double[] v) => HostIO.Write<double>(t, 0, v);

    static void Host(Tensor t, string what)
    {
        if (t.Backend is not CpuBackend) throw new ArgumentException($"window attention (CPU): {what} {t} is not a CPU tensor");
    }

    /// <summary>Scores of window (b, wr, wc), head h, row i into s[0..N).</summary>
    static void Scores(in WindowAttentionShape a, double[] qkv, double[] table, int b, int wr, int wc, int h, int i, int[] tok, int[] lab, double[] s)
    {
        int N = a.N, C = a.Channels, d = a.HeadDim;
        long qo = ((long)(b * a.Tokens + tok[i]) * 3 + 0) * C + h * d;
        for (int j = 0; j < N; j++)
        {
            long ko = ((long)(b * a.Tokens + tok[j]) * 3 + 1) * C + h * d;
            double acc = 0;
            for (int c = 0; c < d; c++) acc += qkv[qo + c] * qkv[ko + c];
            double v = a.Scale * acc + table[(long)Rel(i, j, a.Window) * a.Heads + h];
            if (lab[i] != lab[j]) v += -100.0;
            s[j] = v;
        }
    }

    static void Geometry(in WindowAttentionShape a, int wr, int wc, int[] tok, int[] lab)
    {
        for (int i = 0; i < a.N; i++) { tok[i] = Token(a, wr, wc, i); lab[i] = Label(a, wr, wc, i); }
    }

    public void Forward(Tensor qkv, Tensor table, in WindowAttentionShape a, Tensor y, Tensor lse)
    {
        a.Check(qkv, table, y, lse);
        Host(qkv, "qkv"); Host(table, "table"); Host(y, "y"); Host(lse, "lse");
        var q = Read(qkv); var tb = Read(table);
        var yo = new double[y.Numel]; var lo = new double[lse.Numel];
        int N = a.N, C = a.Channels, d = a.HeadDim, nWw = a.Width / a.Window, nWh = a.Height / a.Window;
        var tok = new int[N]; var lab = new int[N]; var s = new double[N];
        for (int b = 0; b < a.Batch; b++)
            for (int wr = 0; wr < nWh; wr++)
                for (int wc = 0; wc < nWw; wc++)
                {
                    Geometry(a, wr, wc, tok, lab);
                    int win = (b * nWh + wr) * nWw + wc;
                    for (int h = 0; h < a.Heads; h++)
                        for (int i = 0; i < N; i++)
                        {
                            Scores(a, q, tb, b, wr, wc, h, i, tok, lab, s);
                            double mx = double.NegativeInfinity;
                            for (int j = 0; j < N; j++) mx = Math.Max(mx, s[j]);
                            double sum = 0;
                            for (int j = 0; j < N; j++) { s[j] = Math.Exp(s[j] - mx); sum += s[j]; }
                            long yo0 = (long)(b * a.Tokens + tok[i]) * C + h * d;
                            for (int c = 0; c < d; c++)
                            {
                                double o = 0;
                                for (int j = 0; j < N; j++) o += s[j] * q[((long)(b * a.Tokens + tok[j]) * 3 + 2) * C + h * d + c];
                                yo[yo0 + c] = o / sum;
                            }
                            lo[((long)win * a.Heads + h) * N + i] = mx + Math.Log(sum);
                        }
                }
        Write(y, yo); Write(lse, lo);
    }

    public void Backward(Tensor qkv, Tensor table, in WindowAttentionShape a, Tensor y, Tensor lse, Tensor dy, Tensor dqkv, Tensor? dtable)
    {
        a.Check(qkv, table, y, lse);
        Host(qkv, "qkv"); Host(table, "table"); Host(y, "y"); Host(lse, "lse"); Host(dy, "dy"); Host(dqkv, "dqkv");
        if (dy.Numel != y.Numel) throw new ArgumentException($"window attention: dy {dy} does not match y {y}");
        if (dqkv.Numel != qkv.Numel) throw new ArgumentException($"window attention: dqkv {dqkv} does not match qkv {qkv}");
        if (dtable is not null) { Host(dtable, "dtable"); if (dtable.Numel != table.Numel) throw new ArgumentException($"window attention: dtable {dtable} does not match table {table}"); }
        var q = Read(qkv); var tb = Read(table); var yo = Read(y); var lo = Read(lse); var g = Read(dy);
        var dq = Read(dqkv); var dt = dtable is null ? null : Read(dtable);
        int N = a.N, C = a.Channels, d = a.HeadDim, nWw = a.Width / a.Window, nWh = a.Height / a.Window;
        var tok = new int[N]; var lab = new int[N]; var s = new double[N];
        for (int b = 0; b < a.Batch; b++)
            for (int wr = 0; wr < nWh; wr++)
                for (int wc = 0; wc < nWw; wc++)
                {
                    Geometry(a, wr, wc, tok, lab);
                    int win = (b * nWh + wr) * nWw + wc;
                    for (int h = 0; h < a.Heads; h++)
                        for (int i = 0; i < N; i++)
                        {
                            Scores(a, q, tb, b, wr, wc, h, i, tok, lab, s);
                            double L = lo[((long)win * a.Heads + h) * N + i];
                            long oi = (long)(b * a.Tokens + tok[i]) * C + h * d;
                            double Di = 0;
                            for (int c = 0; c < d; c++) Di += g[oi + c] * yo[oi + c];
                            long qi = ((long)(b * a.Tokens + tok[i]) * 3 + 0) * C + h * d;
                            for (int j = 0; j < N; j++)
                            {
                                long kj = ((long)(b * a.Tokens + tok[j]) * 3 + 1) * C + h * d;
                                long vj = kj + C;
                                double p = Math.Exp(s[j] - L);
                                double dp = 0;
                                for (int c = 0; c < d; c++) dp += g[oi + c] * q[vj + c];
                                double ds = p * (dp - Di);
                                for (int c = 0; c < d; c++)
                                {
                                    dq[qi + c] += a.Scale * ds * q[kj + c];
                                    dq[kj + c] += a.Scale * ds * q[qi + c];
                                    dq[vj + c] += p * g[oi + c];
                                }
                                if (dt is not null) dt[(long)Rel(i, j, a.Window) * a.Heads + h] += ds;
                            }
                        }
                }
        Write(dqkv, dq);
        if (dtable is not null) Write(dtable, dt!);
    }
}
