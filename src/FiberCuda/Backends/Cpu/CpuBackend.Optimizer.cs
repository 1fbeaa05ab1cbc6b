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
    // ================================================================ optimizer

    public void SumOfSquares(IReadOnlyList<Tensor> xs, Tensor y)
    {
        Own(y);
        if (y.Numel != 1) throw new ArgumentException("SumOfSquares: y must have one element");
        double s = 0;
        foreach (var x in xs) { Own(x); s += SumChunks(x, squares: true); }
        HostIO.StoreD(y.Address, y.DType, 0, s);
    }

    public void AdamW(IReadOnlyList<AdamWTensor> group, float beta1, float beta2, float eps, int step, float gradScale)
    {
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), "AdamW steps count from 1");
        foreach (var t in group)
        {
            Own(t.Param, t.Grad, t.M, t.V); if (t.Master is not null) Own(t.Master);
            SameNumel(t.Param, t.Grad); SameNumel(t.Param, t.M); SameNumel(t.Param, t.V);
            if (t.Master is not null) SameNumel(t.Param, t.Master);
            if (Wide(t.Param, t.Master, t.M)) AdamWT<double>(t, beta1, beta2, eps, step, gradScale);
            else AdamWT<float>(t, beta1, beta2, eps, step, gradScale);
        }
    }

    static void AdamWT<T>(AdamWTensor t, float beta1, float beta2, float eps, int step, float gradScale) where T : unmanaged, IFloatingPointIeee754<T>
    {
        T b1 = T.CreateTruncating(beta1), b2 = T.CreateTruncating(beta2);
        T omb1 = T.One - b1, omb2 = T.One - b2;
        T bc1 = T.One - T.Pow(b1, T.CreateTruncating(step));
        T bc2 = T.One - T.Pow(b2, T.CreateTruncating(step));
        T lr = T.CreateTruncating(t.Lr), wd = T.CreateTruncating(t.WeightDecay), e = T.CreateTruncating(eps), gs = T.CreateTruncating(gradScale);
        Tensor w = t.Master ?? t.Param;
        long n = t.Param.Numel;
        Par.Rows((n + Chunk - 1) / Chunk, Chunk * 6L, (c0, c1) =>
        {
            var ww = new T[Chunk]; var g = new T[Chunk]; var m = new T[Chunk]; var v = new T[Chunk];
            for (long c = c0; c < c1; c++)
            {
                long s = c * Chunk; int len = (int)Math.Min(Chunk, n - s);
                HostIO.Read<T>(w, s, ww.AsSpan(0, len)); HostIO.Read<T>(t.Grad, s, g.AsSpan(0, len));
                HostIO.Read<T>(t.M, s, m.AsSpan(0, len)); HostIO.Read<T>(t.V, s, v.AsSpan(0, len));
                for (int j = 0; j < len; j++)
                {
                    T gj = g[j] * gs;
                    T mj = b1 * m[j] + omb1 * gj;
                    T vj = b2 * v[j] + omb2 * gj * gj;
                    m[j] = mj; v[j] = vj;
                    T mhat = mj / bc1, vhat = vj / bc2;
                    ww[j] -= lr * (mhat / (T.Sqrt(vhat) + e) + wd * ww[j]);
                }
                HostIO.Write<T>(t.M, s, m.AsSpan(0, len)); HostIO.Write<T>(t.V, s, v.AsSpan(0, len));
                HostIO.Write<T>(w, s, ww.AsSpan(0, len));
                if (t.Master is not null) HostIO.Write<T>(t.Param, s, ww.AsSpan(0, len));
            }
        });
    }
}
