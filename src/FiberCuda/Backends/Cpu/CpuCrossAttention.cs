using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cpu;

/// <summary>
/// The C# reference of <see cref="ICrossAttentionOps"/>: the same fused formulation as
/// kernels/cross_attention.cu (lse saved, P recomputed in the backward), in fp64 for every input dtype;
/// results are rounded to the output dtypes.
/// </summary>
public sealed class CpuCrossAttention : ICrossAttentionOps
{
    /// <summary>Dropout factor of probability element e: 0 or the float 1/(1−p) the kernels and F.Dropout use (1 without dropout).</summary>
    internal static double Keep(in CrossAttentionShape a, long e)
        => a.DropP <= 0f ? 1.0 : Ops.Philox.Uniform(a.Seed, a.Offset, e) >= a.DropP ? (double)(1f / (1f - a.DropP)) : 0.0;

    static double[] Read(Tensor t) { var v = new double[t.Numel]; HostIO.Read<double>(t, 0, v); return v; }
    static void Write(Tensor t, double[] v) => HostIO.Write<double>(t, 0, v);

    static void Host(Tensor? t, string what)
    {
        if (t is not null && t.Backend is not CpuBackend) throw new ArgumentException($"cross attention (CPU): {what} {t} is not a CPU tensor");
    }

    /// <summary>Scores of (b, h, query i) over all keys into s[0..Lk).</summary>
    static void Scores(in CrossAttentionShape a, double[] q, double[] k, double[]? m, int b, int h, int i, double[] s)
    {
        int C = a.Channels, d = a.HeadDim;
        long qo = ((long)b * a.Lq + i) * C + h * d;
        for (int j = 0; j < a.Lk; j++)
        {
            long ko = ((long)b * a.Lk + j) * C + h * d;
            double acc = 0;
            for (int c = 0; c < d; c++) acc += q[qo + c] * k[ko + c];
            s[j] = a.Scale * acc + (m is null ? 0 : m[(long)b * a.Lk + j]);
        }
    }

    public void Forward(Tensor q, Tensor k, Tensor v, Tensor? keyMask, in CrossAttentionShape a, Tensor y, Tensor lse)
    {
        a.Check(q, k, v, keyMask, y, lse);
        Host(q, "q"); Host(k, "k"); Host(v, "v"); Host(keyMask, "keyMask"); Host(y, "y"); Host(lse, "lse");
        var qv = Read(q); var kv = Read(k); var vv = Read(v); var mv = keyMask is null ? null : Read(keyMask);
        var yo = new double[y.Numel]; var lo = new double[lse.Numel];
        int C = a.Channels, d = a.HeadDim;
        var g = a;
        // (b, h) pairs touch disjoint outputs: parallel and still deterministic.
        Parallel.For(0, a.Batch * a.Heads, bh =>
        {
            var a = g;
            int b = bh / a.Heads, h = bh % a.Heads;
            var s = new double[a.Lk];
            var o = new double[d];
                for (int i = 0; i < a.Lq; i++)
                {
                    Scores(a, qv, kv, mv, b, h, i, s);
                    double mx = double.NegativeInfinity;
                    for (int j = 0; j < a.Lk; j++) mx = Math.Max(mx, s[j]);
                    double sum = 0;
                    for (int j = 0; j < a.Lk; j++) { s[j] = Math.Exp(s[j] - mx); sum += s[j]; }
                    long e0 = (((long)b * a.Heads + h) * a.Lq + i) * a.Lk;
                    if (a.DropP > 0f) for (int j = 0; j < a.Lk; j++) s[j] *= Keep(a, e0 + j); // after the sum: lse is of the undropped row
                    long yo0 = ((long)b * a.Lq + i) * C + h * d;
                    // Rows of v are read contiguously; each channel still sums over j in order.
                    Array.Clear(o);
                    for (int j = 0; j < a.Lk; j++)
                    {
                        double sj = s[j];
                        long vj = ((long)b * a.Lk + j) * C + h * d;
                        for (int c = 0; c < d; c++) o[c] += sj * vv[vj + c];
                    }
                    for (int c = 0; c < d; c++) yo[yo0 + c] = o[c] / sum;
                    lo[((long)b * a.Heads + h) * a.Lq + i] = mx + Math.Log(sum);
                }
        });
        Write(y, yo); Write(lse, lo);
    }

    public void Backward(Tensor q, Tensor k, Tensor v, Tensor? keyMask, in CrossAttentionShape a, Tensor y, Tensor lse, Tensor dy,
                         Tensor? dq, Tensor? dk, Tensor? dv)
    {
        a.Check(q, k, v, keyMask, y, lse);
        Host(q, "q"); Host(k, "k"); Host(v, "v"); Host(keyMask, "keyMask"); Host(y, "y"); Host(lse, "lse"); Host(dy, "dy");
        Host(dq, "dq"); Host(dk, "dk"); Host(dv, "dv");
        if (dy.Numel != y.Numel) throw new ArgumentException($"cross attention: dy {dy} does not match y {y}");
        if (dq is not null && dq.Numel != q.Numel) throw new ArgumentException($"cross attention: dq {dq} does not match q {q}");
        if (dk is not null && dk.Numel != k.Numel) throw new ArgumentException($"cross attention: dk {dk} does not match k {k}");
        if (dv is not null && dv.Numel != v.Numel) throw new ArgumentException($"cross attention: dv {dv} does not match v {v}");
        if (dq is null && dk is null && dv is null) return;
        var qv = Read(q); var kv = Read(k); var vv = Read(v); var mv = keyMask is null ? null : Read(keyMask);
        var yo = Read(y); var lo = Read(lse); var g = Read(dy);
        // One host buffer per distinct gradient tensor, so aliased gradients (k and v the same tensor) both accumulate.
        var bufs = new Dictionary<Tensor, double[]>(ReferenceEqualityComparer.Instance);
        double[]? Buf(Tensor? t) => t is null ? null : bufs.TryGetValue(t, out var buf) ? buf : bufs[t] = Read(t);
        var gq = Buf(dq); var gk = Buf(dk); var gv = Buf(dv);
        int C = a.Channels, d = a.HeadDim;
        var shape = a;
        // (b, h) pairs touch disjoint gradient slices (also when gradients alias): parallel and deterministic.
        Parallel.For(0, a.Batch * a.Heads, bh =>
        {
            var a = shape;
            int b = bh / a.Heads, h = bh % a.Heads;
            var s = new double[a.Lk];
                for (int i = 0; i < a.Lq; i++)
                {
                    Scores(a, qv, kv, mv, b, h, i, s);
                    double L = lo[((long)b * a.Heads + h) * a.Lq + i];
                    long oi = ((long)b * a.Lq + i) * C + h * d;
                    double Di = 0;
                    for (int c = 0; c < d; c++) Di += g[oi + c] * yo[oi + c];
                    long e0 = (((long)b * a.Heads + h) * a.Lq + i) * a.Lk;
                    for (int j = 0; j < a.Lk; j++)
                    {
                        long kj = ((long)b * a.Lk + j) * C + h * d;
                        double p = Math.Exp(s[j] - L), kd = Keep(a, e0 + j);
                        double dp = 0;
                        for (int c = 0; c < d; c++) dp += g[oi + c] * vv[kj + c];
                        // D_i = dO_i·O_i = Σ_j P_ij·(keep·dO_i·v_j) still holds with dropout.
                        double ds = p * (kd * dp - Di);
                        for (int c = 0; c < d; c++)
                        {
                            if (gq is not null) gq[oi + c] += a.Scale * ds * kv[kj + c];
                            if (gk is not null) gk[kj + c] += a.Scale * ds * qv[oi + c];
                            if (gv is not null) gv[kj + c] += kd * p * g[oi + c];
                        }
                    }
                }
        });
        foreach (var (t, buf) in bufs) Write(t, buf);
    }
}
