using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cpu;

/// <summary>The C# reference of <see cref="IDropPathOps"/>: loops in fp64 with the per-sample scales of
/// <see cref="DropPathOps.SampleScales"/>, rounded once to the output dtype.</summary>
public sealed class CpuDropPath : IDropPathOps
{
    static double[] Read(Tensor t) { var v = new double[t.Numel]; HostIO.Read<double>(t, 0, v); return v; }
    static void Write(Tensor t, double[] v) => HostIO.Write<double>(t, 0, v);

    static void Host(Tensor? t, string what)
    {
        if (t is not null && t.Backend is not CpuBackend) throw new ArgumentException($"drop path (CPU): {what} {t} is not a CPU tensor");
    }

    public void Forward(Tensor y, Tensor? residual, float p, ulong seed, ulong offset, Tensor output)
    {
        DropPathOps.Check(y, residual, output, p);
        Host(y, "y"); Host(residual, "residual"); Host(output, "output");
        int batch = y.Dim(0);
        if (batch == 0) return;
        long per = y.Numel / batch;
        var s = DropPathOps.SampleScales(batch, p, seed, offset, y.DType);
        var yv = Read(y);
        var o = residual is null ? new double[y.Numel] : Read(residual);
        for (int b = 0; b < batch; b++)
            for (long e = b * per; e < (b + 1) * per; e++) o[e] += yv[e] * s[b];
        Write(output, o);
    }

    public void Backward(Tensor dout, float p, ulong seed, ulong offset, Tensor? dy, Tensor? dresidual)
    {
        DropPathOps.CheckBackward(dout, p, dy, dresidual);
        Host(dout, "dout"); Host(dy, "dy"); Host(dresidual, "dresidual");
        int batch = dout.Dim(0);
        if (batch == 0 || (dy is null && dresidual is null)) return;
        long per = dout.Numel / batch;
        var g = Read(dout);
        if (dresidual is not null) { var v = Read(dresidual); for (long e = 0; e < g.Length; e++) v[e] += g[e]; Write(dresidual, v); }
        if (dy is not null)
        {
            var s = DropPathOps.SampleScales(batch, p, seed, offset, dout.DType);
            var v = Read(dy);
            for (int b = 0; b < batch; b++)
                for (long e = b * per; e < (b + 1) * per; e++) v[e] += g[e] * s[b];
            Write(dy, v);
        }
    }
}
