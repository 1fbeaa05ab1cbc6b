using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cpu;

/// <summary>
/// The C# reference of <see cref="IPatchMergeNormOps"/>: plain loops in fp64 for every dtype (the statistics too),
/// rounded once to each output's dtype. The backward reads the saved mean/rstd (as the kernels do).
/// </summary>
public sealed class CpuPatchMergeNorm : IPatchMergeNormOps
{
    static double[] Read(Tensor t) { var v = new double[t.Numel]; HostIO.Read<double>(t, 0, v); return v; }
    static void Write(Tensor t, double[] v) => HostIO.Write<double>(t, 0, v);

    static void Host(Tensor? t, string what)
    {
        if (t is not null && t.Backend is not CpuBackend) throw new ArgumentException($"patch merge norm (CPU): {what} {t} is not a CPU tensor");
    }

    /// <summary>Index in x of element e = q·C + c of output row r (the gather of the forward, the scatter of the backward).</summary>
    static long Source(long r, int e, int height, int width, int c)
    {
        int wo = width / 2;
        long per = (long)(height / 2) * wo;
        long b = r / per;
        int t = (int)(r - b * per), i = t / wo, j = t % wo, q = e / c, ch = e % c;
        long tok = (long)(2 * i + (q & 1)) * width + 2 * j + (q >> 1);
        return (b * height * width + tok) * c + ch;
    }

    public void Forward(Tensor x, int height, int width, Tensor weight, Tensor bias, float eps, Tensor y, Tensor mean, Tensor rstd)
    {
        PatchMergeNormOps.Check(x, height, width, weight, bias, mean, rstd);
        PatchMergeNormOps.CheckOut(x, height, width, y, "y");
        Host(x, "x"); Host(weight, "weight"); Host(bias, "bias"); Host(y, "y"); Host(mean, "mean"); Host(rstd, "rstd");
        var (b, c) = PatchMergeNormOps.Geometry(x, height, width);
        long rows = PatchMergeNormOps.Rows(b, height, width);
        int c4 = 4 * c;
        var xv = Read(x); var g = Read(weight); var bt = Read(bias);
        var yv = new double[rows * c4]; var mv = new double[rows]; var rv = new double[rows];
        Parallel.For(0, rows, r =>
        {
            var row = new double[c4];
            double s = 0;
            for (int e = 0; e < c4; e++) { row[e] = xv[Source(r, e, height, width, c)]; s += row[e]; }
            double m = s / c4, q = 0;
            for (int e = 0; e < c4; e++) { double d = row[e] - m; q += d * d; }
            double rs = 1.0 / Math.Sqrt(q / c4 + eps);
            for (int e = 0; e < c4; e++) yv[r * c4 + e] = (row[e] - m) * rs * g[e] + bt[e];
            mv[r] = m; rv[r] = rs;
        });
        Write(y, yv); Write(mean, mv); Write(rstd, rv);
    }

    public void Backward(Tensor x, int height, int width, Tensor weight, Tensor mean, Tensor rstd, Tensor dy,
                         Tensor? dx, Tensor? dweight, Tensor? dbias)
    {
        PatchMergeNormOps.CheckBackward(x, height, width, weight, mean, rstd, dy, dx, dweight, dbias);
        Host(x, "x"); Host(weight, "weight"); Host(mean, "mean"); Host(rstd, "rstd"); Host(dy, "dy");
        Host(dx, "dx"); Host(dweight, "dweight"); Host(dbias, "dbias");
        if (dx is null && dweight is null && dbias is null) return;
        var (b, c) = PatchMergeNormOps.Geometry(x, height, width);
        long rows = PatchMergeNormOps.Rows(b, height, width);
        int c4 = 4 * c;
        var xv = Read(x); var g = Read(weight); var mv = Read(mean); var rv = Read(rstd); var gy = Read(dy);
        var dxv = dx is null ? null : Read(dx);
        var dg = new double[c4]; var db = new double[c4];
        for (long r = 0; r < rows; r++)
        {
            double m = mv[r], rs = rv[r], a = 0, bb = 0;
            for (int e = 0; e < c4; e++)
            {
                double xh = (xv[Source(r, e, height, width, c)] - m) * rs, d = gy[r * c4 + e], dxh = d * g[e];
                a += dxh; bb += dxh * xh;
                dg[e] += d * xh; db[e] += d;
            }
            a /= c4; bb /= c4;
            if (dxv is null) continue;
            for (int e = 0; e < c4; e++)
            {
                long at = Source(r, e, height, width, c);
                double xh = (xv[at] - m) * rs;
                dxv[at] += rs * (gy[r * c4 + e] * g[e] - a - xh * bb);
            }
        }
        if (dx is not null) Write(dx, dxv!);
        if (dweight is not null) { var v = Read(dweight); for (int e = 0; e < c4; e++) v[e] += dg[e]; Write(dweight, v); }
        if (dbias is not null) { var v = Read(dbias); for (int e = 0; e < c4; e++) v[e] += db[e]; Write(dbias, v); }
    }
}
