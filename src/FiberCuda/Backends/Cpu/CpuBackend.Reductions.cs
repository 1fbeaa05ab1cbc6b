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
    // ================================================================ reductions

    public void SumLastDim(Tensor x, Tensor y)
    {
        Own(x, y);
        int c = x.Dim(-1); long rows = x.Numel / Math.Max(1, c);
        if (y.Numel != rows) throw new ArgumentException($"SumLastDim: y must have {rows} elements");
        bool wide = Wide(x, y);
        Par.Rows(rows, c, (r0, r1) =>
        {
            var buf = new double[c];
            for (long r = r0; r < r1; r++)
            {
                HostIO.Read<double>(x, r * c, buf);
                double s = 0; foreach (double v in buf) s += v;
                HostIO.StoreD(y.Address, y.DType, r, wide ? s : (float)s);
            }
        });
    }

    public void SumRows(Tensor x, Tensor y, bool accumulate)
    {
        Own(x, y);
        int c = x.Dim(-1); long rows = x.Numel / Math.Max(1, c);
        if (y.Numel != c) throw new ArgumentException($"SumRows: y must have {c} elements");
        var acc = Par.ReduceRows(rows, c, c, (r0, r1, a) =>
        {
            var buf = new double[c];
            for (long r = r0; r < r1; r++)
            {
                HostIO.Read<double>(x, r * c, buf);
                TensorPrimitives.Add(a, buf, a);
            }
        });
        if (accumulate) AccumulateDoubles(y, acc);
        else HostIO.Write<double>(y, 0, acc);
    }

    public void SumAll(Tensor x, Tensor y)
    {
        Own(x, y);
        if (y.Numel != 1) throw new ArgumentException("SumAll: y must have one element");
        double s = SumChunks(x, squares: false);
        HostIO.StoreD(y.Address, y.DType, 0, s);
    }

    /// <summary>Σx or Σx² in double over fixed chunks summed in order (deterministic on any core count).</summary>
    static double SumChunks(Tensor x, bool squares)
    {
        long n = x.Numel;
        long chunks = (n + Chunk - 1) / Chunk;
        var parts = new double[Math.Max(1, chunks)];
        Par.Rows(chunks, Chunk, (c0, c1) =>
        {
            var buf = new double[Chunk];
            for (long c = c0; c < c1; c++)
            {
                long s = c * Chunk; int len = (int)Math.Min(Chunk, n - s);
                var b = buf.AsSpan(0, len);
                HostIO.Read<double>(x, s, b);
                parts[c] = squares ? TensorPrimitives.SumOfSquares<double>(b) : TensorPrimitives.Sum<double>(b);
            }
        });
        double t = 0; foreach (double p in parts) t += p;
        return t;
    }

    public void L2Normalize(Tensor x, float eps, Tensor y, Tensor norm)
    {
        Own(x, y, norm); SameNumel(x, y);
        int c = x.Dim(-1); long rows = x.Numel / Math.Max(1, c);
        if (norm.Numel != rows) throw new ArgumentException($"L2Normalize: norm must have {rows} elements");
        if (Wide(x, y)) L2NormT<double>(x, eps, y, norm); else L2NormT<float>(x, eps, y, norm);
    }

    static void L2NormT<T>(Tensor x, float eps, Tensor y, Tensor norm) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int c = x.Dim(-1); long rows = x.Numel / Math.Max(1, c);
        T e = T.CreateTruncating(eps);
        Par.Rows(rows, c * 2L, (r0, r1) =>
        {
            var buf = new T[c]; Span<T> one = stackalloc T[1];
            for (long r = r0; r < r1; r++)
            {
                HostIO.Read<T>(x, r * c, buf);
                T nr = T.Sqrt(TensorPrimitives.SumOfSquares<T>(buf));
                TensorPrimitives.Multiply<T>(buf, T.One / T.Max(nr, e), buf);
                HostIO.Write<T>(y, r * c, buf);
                one[0] = nr; HostIO.Write<T>(norm, r, one);
            }
        });
    }

    public void L2NormalizeBackward(Tensor y, Tensor norm, float eps, Tensor dy, Tensor dx)
    {
        Own(y, norm, dy, dx); SameNumel(y, dy); SameNumel(y, dx);
        if (Wide(y, dy, dx)) L2NormBwdT<double>(y, norm, eps, dy, dx); else L2NormBwdT<float>(y, norm, eps, dy, dx);
    }

    static void L2NormBwdT<T>(Tensor y, Tensor norm, float eps, Tensor dy, Tensor dx) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int c = y.Dim(-1); long rows = y.Numel / Math.Max(1, c);
        T e = T.CreateTruncating(eps);
        Par.Rows(rows, c * 3L, (r0, r1) =>
        {
            var yy = new T[c]; var g = new T[c]; var scratch = new T[c]; Span<T> one = stackalloc T[1];
            for (long r = r0; r < r1; r++)
            {
                HostIO.Read<T>(y, r * c, yy);
                HostIO.Read<T>(dy, r * c, g);
                HostIO.Read<T>(norm, r, one);
                T inv = T.One / T.Max(one[0], e);
                T dot = TensorPrimitives.Dot<T>(g, yy);
                for (int j = 0; j < c; j++) g[j] = (g[j] - yy[j] * dot) * inv;
                HostIO.Accumulate<T>(dx, r * c, g, scratch);
            }
        });
    }
}
