using System.Numerics;
using System.Numerics.Tensors;
using Tensor = FiberCuda.Tensors.Tensor;
using System.Runtime.InteropServices;
using FiberCuda.Ops;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    // ================================================================ elementwise

    public void Add(Tensor a, Tensor b, Tensor y)
    {
        Own(a, b, y); SameNumel(a, y); SameNumel(b, y);
        if (Wide(a, b, y)) Map2<double>(a, b, y, (p, q, r) => TensorPrimitives.Add(p, q, r));
        else Map2<float>(a, b, y, (p, q, r) => TensorPrimitives.Add(p, q, r));
    }

    public void Mul(Tensor a, Tensor b, Tensor y)
    {
        Own(a, b, y); SameNumel(a, y); SameNumel(b, y);
        if (Wide(a, b, y)) Map2<double>(a, b, y, (p, q, r) => TensorPrimitives.Multiply(p, q, r));
        else Map2<float>(a, b, y, (p, q, r) => TensorPrimitives.Multiply(p, q, r));
    }

    public void Scale(Tensor x, float s, Tensor y)
    {
        Own(x, y); SameNumel(x, y);
        if (Wide(x, y)) Map1<double>(x, y, (p, r) => TensorPrimitives.Multiply(p, (double)s, r));
        else Map1<float>(x, y, (p, r) => TensorPrimitives.Multiply(p, s, r));
    }

    public void Axpy(float alpha, Tensor x, Tensor y)
    {
        Own(x, y); SameNumel(x, y);
        // y is both read and written: y's values go in as the second operand.
        if (Wide(x, y)) Map2<double>(x, y, y, (p, q, r) => TensorPrimitives.MultiplyAdd(p, (double)alpha, q, r));
        else Map2<float>(x, y, y, (p, q, r) => TensorPrimitives.MultiplyAdd(p, alpha, q, r));
    }

    public void AddBias(Tensor x, Tensor bias, Tensor y)
    {
        Own(x, bias, y); SameNumel(x, y);
        int c = x.Dim(-1); if (bias.Numel != c) throw new ArgumentException($"AddBias: bias {bias} does not match last dim {c} of {x}");
        if (Wide(x, bias, y)) AddBiasT<double>(x, bias, y); else AddBiasT<float>(x, bias, y);
    }

    static void AddBiasT<T>(Tensor x, Tensor bias, Tensor y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int c = x.Dim(-1); long rows = x.Numel / Math.Max(1, c);
        var b = new T[c]; HostIO.Read<T>(bias, 0, b);
        Par.Rows(rows, c, (r0, r1) =>
        {
            var buf = new T[c];
            for (long r = r0; r < r1; r++)
            {
                HostIO.Read<T>(x, r * c, buf);
                TensorPrimitives.Add<T>(buf, b, buf);
                HostIO.Write<T>(y, r * c, buf);
            }
        });
    }

    public void BiasGelu(Tensor x, Tensor? bias, Tensor y)
    {
        Own(x, y); if (bias is not null) Own(bias); SameNumel(x, y);
        int c = x.Dim(-1);
        if (bias is not null && bias.Numel != c) throw new ArgumentException($"BiasGelu: bias {bias} does not match {x}");
        if (Wide(x, bias, y)) BiasGeluT<double>(x, bias, y); else BiasGeluT<float>(x, bias, y);
    }

    static void BiasGeluT<T>(Tensor x, Tensor? bias, Tensor y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int c = Math.Max(1, x.Rank == 0 ? 1 : x.Dim(-1)); long rows = x.Numel / c;
        T[]? b = null; if (bias is not null) { b = new T[c]; HostIO.Read<T>(bias, 0, b); }
        Par.Rows(rows, c * 8L, (r0, r1) =>
        {
            var buf = new T[c];
            for (long r = r0; r < r1; r++)
            {
                HostIO.Read<T>(x, r * c, buf);
                if (b is not null) TensorPrimitives.Add<T>(buf, b, buf);
                if (typeof(T) == typeof(float))
                {
                    var f = System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(buf.AsSpan());
                    SpecialMath.GeluF(f, f);
                }
                else
                    for (int j = 0; j < c; j++) buf[j] = T.CreateTruncating(SpecialMath.Gelu(double.CreateTruncating(buf[j])));
                HostIO.Write<T>(y, r * c, buf);
            }
        });
    }

    public void BiasGeluBackward(Tensor x, Tensor? bias, Tensor dy, Tensor dx, Tensor? dbias)
    {
        Own(x, dy, dx); if (bias is not null) Own(bias); if (dbias is not null) Own(dbias);
        SameNumel(x, dy); SameNumel(x, dx);
        int c = x.Dim(-1);
        if (bias is not null && bias.Numel != c) throw new ArgumentException("BiasGeluBackward: bias size");
        if (dbias is not null && dbias.Numel != c) throw new ArgumentException("BiasGeluBackward: dbias size");
        if (Wide(x, bias, dy, dx, dbias)) BiasGeluBwdT<double>(x, bias, dy, dx, dbias); else BiasGeluBwdT<float>(x, bias, dy, dx, dbias);
    }

    static void BiasGeluBwdT<T>(Tensor x, Tensor? bias, Tensor dy, Tensor dx, Tensor? dbias) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int c = x.Dim(-1); long rows = x.Numel / Math.Max(1, c);
        T[]? b = null; if (bias is not null) { b = new T[c]; HostIO.Read<T>(bias, 0, b); }
        var db = Par.ReduceRows(rows, c, c * 10L, (r0, r1, acc) =>
        {
            var u = new T[c]; var g = new T[c]; var s = new T[c];
            for (long r = r0; r < r1; r++)
            {
                HostIO.Read<T>(x, r * c, u);
                if (b is not null) TensorPrimitives.Add<T>(u, b, u);
                HostIO.Read<T>(dy, r * c, g);
                if (typeof(T) == typeof(float))
                {
                    var uf = System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(u.AsSpan());
                    SpecialMath.GeluF(uf, uf, grad: true);
                }
                else
                    for (int j = 0; j < c; j++) u[j] = T.CreateTruncating(SpecialMath.GeluGrad(double.CreateTruncating(u[j])));
                for (int j = 0; j < c; j++)
                {
                    g[j] *= u[j];
                    acc[j] += double.CreateTruncating(g[j]);
                }
                HostIO.Accumulate<T>(dx, r * c, g, s);
            }
        });
        if (dbias is not null) AccumulateDoubles(dbias, db);
    }
}
