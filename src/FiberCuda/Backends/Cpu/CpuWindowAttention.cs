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

    /// <summary>
    /// Rows [B, ValidHeight·ValidWidth, width] placed into the padded map [B, Height·Width, width], padding rows filled
    /// from <paramref name="fill"/> (null: zeros): the reference runs its unpadded algorithm on the result.
    /// </summary>
    static double[] PadRows(in WindowAttentionShape a, double[] rows, int width, double[]? fill)
    {
        if (!a.Padded) return rows;
        int H = a.Height, W = a.Width, vh = a.ValidHeight, vw = a.ValidWidth;
        var o = new double[(long)a.Batch * H * W * width];
        for (int b = 0; b < a.Batch; b++)
            for (int yy = 0; yy < H; yy++)
                for (int xx = 0; xx < W; xx++)
                {
                    long dst = ((long)(b * H + yy) * W + xx) * width;
                    if (yy < vh && xx < vw) Array.Copy(rows, ((long)(b * vh + yy) * vw + xx) * width, o, dst, width);
                    else if (fill is not null) Array.Copy(fill, 0, o, dst, width);
                }
        return o;
    }

    /// <summary>The stored rows of a padded map into <paramref name="rows"/>; the padding rows summed into <paramref name="padSum"/> when given.</summary>
    static void CropRows(in WindowAttentionShape a, double[] map, int width, double[] rows, double[]? padSum)
    {
        int H = a.Height, W = a.Width, vh = a.ValidHeight, vw = a.ValidWidth;
        for (int b = 0; b < a.Batch; b++)
            for (int yy = 0; yy < H; yy++)
                for (int xx = 0; xx < W; xx++)
                {
                    long src = ((long)(b * H + yy) * W + xx) * width;
                    if (yy < vh && xx < vw) Array.Copy(map, src, rows, ((long)(b * vh + yy) * vw + xx) * width, width);
                    else if (padSum is not null) for (int c = 0; c < width; c++) padSum[c] += map[src + c];
                }
    }

    public void Forward(Tensor qkv, Tensor table, in WindowAttentionShape shape, Tensor y, Tensor lse, Tensor? pad = null)
    {
        shape.Check(qkv, table, y, lse); shape.CheckPad(qkv, pad, null);
        Host(qkv, "qkv"); Host(table, "table"); Host(y, "y"); Host(lse, "lse");
        if (pad is not null) Host(pad, "pad");
        // Partial windows: the same algorithm on the padded map, then the stored rows of y.
        var a = shape with { ValidHeight = shape.Height, ValidWidth = shape.Width };
        var q = PadRows(shape, Read(qkv), 3 * a.Channels, pad is null ? null : Read(pad)); var tb = Read(table);
        var yo = new double[(long)a.Batch * a.Tokens * a.Channels]; var lo = new double[lse.Numel];
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
        if (shape.Padded) { var stored = new double[y.Numel]; CropRows(shape, yo, C, stored, null); yo = stored; }
        Write(y, yo); Write(lse, lo);
    }

    public void Backward(Tensor qkv, Tensor table, in WindowAttentionShape shape, Tensor y, Tensor lse, Tensor dy, Tensor dqkv, Tensor? dtable,
                         Tensor? pad = null, Tensor? dpad = null)
    {
        shape.Check(qkv, table, y, lse); shape.CheckPad(qkv, pad, dpad);
        Host(qkv, "qkv"); Host(table, "table"); Host(y, "y"); Host(lse, "lse"); Host(dy, "dy"); Host(dqkv, "dqkv");
        if (pad is not null) Host(pad, "pad");
        if (dpad is not null) Host(dpad, "dpad");
        if (dy.Numel != y.Numel) throw new ArgumentException($"window attention: dy {dy} does not match y {y}");
        if (dqkv.Numel != qkv.Numel) throw new ArgumentException($"window attention: dqkv {dqkv} does not match qkv {qkv}");
        if (dtable is not null) { Host(dtable, "dtable"); if (dtable.Numel != table.Numel) throw new ArgumentException($"window attention: dtable {dtable} does not match table {table}"); }
        // Partial windows: run on the padded map (padding rows of y and dy are 0: nothing flows from them).
        var a = shape with { ValidHeight = shape.Height, ValidWidth = shape.Width };
        int C3 = 3 * a.Channels;
        var q = PadRows(shape, Read(qkv), C3, pad is null ? null : Read(pad)); var tb = Read(table);
        var yo = PadRows(shape, Read(y), a.Channels, null); var lo = Read(lse); var g = PadRows(shape, Read(dy), a.Channels, null);
        var dq = new double[q.Length]; var dt = dtable is null ? null : Read(dtable);
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
        // dqkv += the stored rows; dpad += the padding rows' sum.
        var stored = new double[dqkv.Numel];
        var padSum = dpad is null ? null : new double[C3];
        if (shape.Padded) CropRows(shape, dq, C3, stored, padSum); else stored = dq;
        var acc = Read(dqkv);
        for (long i = 0; i < acc.Length; i++) acc[i] += stored[i];
        Write(dqkv, acc);
        if (dpad is not null) { var pd = Read(dpad); for (int c = 0; c < C3; c++) pd[c] += padSum![c]; Write(dpad, pd); }
        if (dtable is not null) Write(dtable, dt!);
    }
}
