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
    // ================================================================ normalisation

    public void LayerNorm(Tensor x, Tensor? residual, Tensor gamma, Tensor beta, float eps,
                          Tensor y, Tensor? residualOut, Tensor mean, Tensor rstd)
    {
        Own(x, gamma, beta, y, mean, rstd); if (residual is not null) Own(residual); if (residualOut is not null) Own(residualOut);
        int c = x.Dim(-1); long rows = x.Numel / Math.Max(1, c);
        SameNumel(x, y);
        if (residual is not null) { SameNumel(x, residual); if (residualOut is null) throw new ArgumentException("LayerNorm: residual needs residualOut"); SameNumel(x, residualOut); }
        if (gamma.Numel != c || beta.Numel != c) throw new ArgumentException($"LayerNorm: gamma/beta must have {c} elements");
        if (mean.Numel != rows || rstd.Numel != rows) throw new ArgumentException($"LayerNorm: mean/rstd must have {rows} elements");
        if (Wide(x, residual, y)) LayerNormT<double>(x, residual, gamma, beta, eps, y, residualOut, mean, rstd);
        else LayerNormT<float>(x, residual, gamma, beta, eps, y, residualOut, mean, rstd);
    }

    static void LayerNormT<T>(Tensor x, Tensor? residual, Tensor gamma, Tensor beta, float eps,
                              Tensor y, Tensor? residualOut, Tensor mean, Tensor rstd) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int c = x.Dim(-1); long rows = x.Numel / Math.Max(1, c);
        var gm = new T[c]; var bt = new T[c];
        HostIO.Read<T>(gamma, 0, gm); HostIO.Read<T>(beta, 0, bt);
        T n = T.CreateTruncating(c), e = T.CreateTruncating(eps);
        Par.Rows(rows, c * 4L, (r0, r1) =>
        {
            var s = new T[c]; var tmp = new T[c]; Span<T> one = stackalloc T[1];
            for (long r = r0; r < r1; r++)
            {
                HostIO.Read<T>(x, r * c, s);
                if (residual is not null)
                {
                    HostIO.Read<T>(residual, r * c, tmp);
                    TensorPrimitives.Add<T>(s, tmp, s);
                    // The backward sees s as stored, so normalise the stored (rounded) values.
                    HostIO.Write<T>(residualOut!, r * c, s);
                    HostIO.Read<T>(residualOut!, r * c, s);
                }
                T mu = TensorPrimitives.Sum<T>(s) / n;
                TensorPrimitives.Subtract<T>(s, mu, tmp);
                T var = TensorPrimitives.SumOfSquares<T>(tmp) / n;
                T rs = T.One / T.Sqrt(var + e);
                TensorPrimitives.Multiply<T>(tmp, rs, tmp);
                TensorPrimitives.FusedMultiplyAdd<T>(tmp, gm, bt, tmp);
                HostIO.Write<T>(y, r * c, tmp);
                one[0] = mu; HostIO.Write<T>(mean, r, one);
                one[0] = rs; HostIO.Write<T>(rstd, r, one);
            }
        });
    }

    public void LayerNormBackward(Tensor s, Tensor gamma, Tensor mean, Tensor rstd, Tensor dy,
                                  Tensor dx, Tensor dgamma, Tensor dbeta)
    {
        Own(s, gamma, mean, rstd, dy, dx, dgamma, dbeta);
        int c = s.Dim(-1); long rows = s.Numel / Math.Max(1, c);
        SameNumel(s, dy); SameNumel(s, dx);
        if (gamma.Numel != c || dgamma.Numel != c || dbeta.Numel != c) throw new ArgumentException("LayerNormBackward: gamma sizes");
        if (mean.Numel != rows || rstd.Numel != rows) throw new ArgumentException("LayerNormBackward: mean/rstd sizes");
        if (Wide(s, dy, dx)) LayerNormBwdT<double>(s, gamma, mean, rstd, dy, dx, dgamma, dbeta);
        else LayerNormBwdT<float>(s, gamma, mean, rstd, dy, dx, dgamma, dbeta);
    }

    static void LayerNormBwdT<T>(Tensor s, Tensor gamma, Tensor mean, Tensor rstd, Tensor dy,
                                 Tensor dx, Tensor dgamma, Tensor dbeta) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int c = s.Dim(-1); long rows = s.Numel / Math.Max(1, c);
        var gm = new T[c]; HostIO.Read<T>(gamma, 0, gm);
        T n = T.CreateTruncating(c);
        // partial layout: [0, c) dgamma, [c, 2c) dbeta
        var acc2 = Par.ReduceRows(rows, 2 * c, c * 8L, (r0, r1, acc) =>
        {
            var xh = new T[c]; var g = new T[c]; var dxh = new T[c]; var scratch = new T[c];
            Span<T> one = stackalloc T[1];
            for (long r = r0; r < r1; r++)
            {
                HostIO.Read<T>(mean, r, one); T mu = one[0];
                HostIO.Read<T>(rstd, r, one); T rs = one[0];
                HostIO.Read<T>(s, r * c, xh);
                TensorPrimitives.Subtract<T>(xh, mu, xh);
                TensorPrimitives.Multiply<T>(xh, rs, xh);
                HostIO.Read<T>(dy, r * c, g);
                for (int j = 0; j < c; j++)
                {
                    acc[j] += double.CreateTruncating(g[j] * xh[j]);
                    acc[c + j] += double.CreateTruncating(g[j]);
                }
                TensorPrimitives.Multiply<T>(g, gm, dxh);
                T m1 = TensorPrimitives.Sum<T>(dxh) / n;
                T m2 = TensorPrimitives.Dot<T>(dxh, xh) / n;
                for (int j = 0; j < c; j++) dxh[j] = rs * (dxh[j] - m1 - xh[j] * m2);
                HostIO.Accumulate<T>(dx, r * c, dxh, scratch);
            }
        });
        AccumulateDoubles(dgamma, acc2.AsSpan(0, c));
        AccumulateDoubles(dbeta, acc2.AsSpan(c, c));
    }

    public void Softmax(Tensor x, float scale, Tensor y)
    {
        Own(x, y); SameNumel(x, y);
        if (Wide(x, y)) SoftmaxT<double>(x, scale, y); else SoftmaxT<float>(x, scale, y);
    }

    static void SoftmaxT<T>(Tensor x, float scale, Tensor y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int c = x.Dim(-1); long rows = x.Numel / Math.Max(1, c);
        T sc = T.CreateTruncating(scale);
        Par.Rows(rows, c * 4L, (r0, r1) =>
        {
            var buf = new T[c];
            for (long r = r0; r < r1; r++)
            {
                HostIO.Read<T>(x, r * c, buf);
                TensorPrimitives.Multiply<T>(buf, sc, buf);
                T mx = TensorPrimitives.Max<T>(buf);
                if (T.IsNegativeInfinity(mx)) { buf.AsSpan().Clear(); HostIO.Write<T>(y, r * c, buf); continue; } // fully masked row
                TensorPrimitives.Subtract<T>(buf, mx, buf);
                TensorPrimitives.Exp<T>(buf, buf);
                T sum = TensorPrimitives.Sum<T>(buf);
                TensorPrimitives.Multiply<T>(buf, T.One / sum, buf);
                HostIO.Write<T>(y, r * c, buf);
            }
        });
    }

    public void SoftmaxBackward(Tensor y, Tensor dy, float scale, Tensor dx)
    {
        Own(y, dy, dx); SameNumel(y, dy); SameNumel(y, dx);
        if (Wide(y, dy, dx)) SoftmaxBwdT<double>(y, dy, scale, dx); else SoftmaxBwdT<float>(y, dy, scale, dx);
    }

    static void SoftmaxBwdT<T>(Tensor y, Tensor dy, float scale, Tensor dx) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int c = y.Dim(-1); long rows = y.Numel / Math.Max(1, c);
        T sc = T.CreateTruncating(scale);
        Par.Rows(rows, c * 4L, (r0, r1) =>
        {
            var yy = new T[c]; var g = new T[c]; var scratch = new T[c];
            for (long r = r0; r < r1; r++)
            {
                HostIO.Read<T>(y, r * c, yy);
                HostIO.Read<T>(dy, r * c, g);
                T dot = TensorPrimitives.Dot<T>(yy, g);
                TensorPrimitives.Subtract<T>(g, dot, g);
                TensorPrimitives.Multiply<T>(g, yy, g);
                TensorPrimitives.Multiply<T>(g, sc, g);
                HostIO.Accumulate<T>(dx, r * c, g, scratch);
            }
        });
    }
}
