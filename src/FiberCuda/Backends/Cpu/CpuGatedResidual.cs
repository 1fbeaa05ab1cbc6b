using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cpu;

/// <summary>The C# reference of <see cref="IGatedResidualOps"/>, in fp64 for every dtype, rounded once to the output dtype.</summary>
public sealed class CpuGatedResidual : IGatedResidualOps
{
    static double[] Read(Tensor t) { var v = new double[t.Numel]; HostIO.Read<double>(t, 0, v); return v; }
    static void Write(Tensor t, double[] v) => HostIO.Write<double>(t, 0, v);

    static void Host(Tensor? t, string what)
    {
        if (t is not null && t.Backend is not CpuBackend) throw new ArgumentException($"gated residual (CPU): {what} {t} is not a CPU tensor");
    }

    public void Forward(Tensor r, Tensor x, Tensor alpha, Tensor y)
    {
        GatedResidualOps.Check(r, x, alpha, y);
        Host(r, "r"); Host(x, "x"); Host(alpha, "alpha"); Host(y, "y");
        var rv = Read(r); var xv = Read(x); double a = Read(alpha)[0];
        for (long i = 0; i < rv.Length; i++) rv[i] += a * xv[i];
        Write(y, rv);
    }

    public void Backward(Tensor x, Tensor alpha, Tensor dy, Tensor? dr, Tensor? dx, Tensor? dalpha)
    {
        GatedResidualOps.CheckBackward(x, alpha, dy, dr, dx, dalpha);
        Host(x, "x"); Host(alpha, "alpha"); Host(dy, "dy"); Host(dr, "dr"); Host(dx, "dx"); Host(dalpha, "dalpha");
        var g = Read(dy); double a = Read(alpha)[0];
        if (dr is not null) { var v = Read(dr); for (long i = 0; i < g.Length; i++) v[i] += g[i]; Write(dr, v); }
        if (dx is not null) { var v = Read(dx); for (long i = 0; i < g.Length; i++) v[i] += a * g[i]; Write(dx, v); }
        if (dalpha is not null)
        {
            var xv = Read(x); double s = 0;
            for (long i = 0; i < g.Length; i++) s += g[i] * xv[i];
            Write(dalpha, [Read(dalpha)[0] + s]);
        }
    }
}
