using System.Numerics;
using System.Numerics.Tensors;
using Tensor = FiberCuda.Tensors.Tensor;
using System.Runtime.InteropServices;
using FiberCuda.Ops;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cpu;

/// <summary>
/// The C# reference for every op of <see cref="IBackend"/>. f32 and bf16 tensors are computed in fp32
/// (bf16 rounded once on store), f64 tensors in fp64 (the "fp64 mode" gradient checks run in).
/// Every op is generic over the compute type T (float or double); rows are spread over cores when the
/// work is big enough, inner loops go through TensorPrimitives where that helps. Reductions that cross
/// rows (bias/gamma gradients, sums of squares) accumulate in double in fixed blocks, so results do not
/// depend on the core count.
/// </summary>
public sealed unsafe partial class CpuBackend : IBackend
{
    const int Chunk = 4096;

    public string Name => "cpu";
    public BackendKind Kind => BackendKind.Cpu;
    public void Dispose() { }
    public void Synchronize() { }

    // ================================================================ memory

    public Tensor Empty(int[] shape, DType dtype)
    {
        var s = (int[])shape.Clone();
        long bytes = ShapeUtil.Numel(s) * dtype.Size();
        return new Tensor(new CpuStorage(this, bytes), s, dtype);
    }

    public Tensor Zeros(int[] shape, DType dtype)
    {
        var t = Empty(shape, dtype);
        NativeMemory.Clear((void*)t.Address, (nuint)t.Bytes);
        return t;
    }

    public void Upload(Tensor dst, ReadOnlySpan<byte> src)
    {
        Own(dst);
        if (src.Length != dst.Bytes) throw new ArgumentException($"upload of {src.Length} bytes into {dst} ({dst.Bytes} bytes)");
        src.CopyTo(new Span<byte>((void*)dst.Address, (int)dst.Bytes));
    }

    public void Download(Tensor src, Span<byte> dst)
    {
        Own(src);
        if (dst.Length != src.Bytes) throw new ArgumentException($"download of {src} ({src.Bytes} bytes) into {dst.Length} bytes");
        new ReadOnlySpan<byte>((void*)src.Address, (int)src.Bytes).CopyTo(dst);
    }

    public void Fill(Tensor t, double value)
    {
        Own(t);
        nint p = t.Address; long n = t.Numel;
        switch (t.DType)
        {
            case DType.F32: new Span<float>((void*)p, (int)n).Fill((float)value); break;
            case DType.F64: new Span<double>((void*)p, (int)n).Fill(value); break;
            case DType.BF16: new Span<ushort>((void*)p, (int)n).Fill(BFloat16.FromFloat((float)value)); break;
            case DType.I32: new Span<int>((void*)p, (int)n).Fill((int)value); break;
            case DType.I64: new Span<long>((void*)p, (int)n).Fill((long)value); break;
            default: throw new NotSupportedException(t.DType.ToString());
        }
    }

    public void Cast(Tensor src, Tensor dst)
    {
        Own(src, dst); SameNumel(src, dst);
        if (src.DType == dst.DType)
        {
            Buffer.MemoryCopy((void*)src.Address, (void*)dst.Address, dst.Bytes, src.Bytes);
            return;
        }
        bool wide = src.DType is DType.F64 or DType.I64 || dst.DType is DType.F64 or DType.I64;
        if (wide) Map1<double>(src, dst, (x, y) => x.CopyTo(y));
        else Map1<float>(src, dst, (x, y) => x.CopyTo(y));
    }

    // ================================================================ GEMM

    public void Gemm(in GemmArgs g)
    {
        Own(g.A, g.B, g.C); if (g.Bias is not null) Own(g.Bias);
        if (g.A.DType != g.B.DType) throw new ArgumentException($"GEMM: A is {g.A.DType.Name()}, B is {g.B.DType.Name()}");
        if (g.M < 0 || g.N < 0 || g.K < 0 || g.Batch < 1) throw new ArgumentException($"GEMM: bad shape M={g.M} N={g.N} K={g.K} batch={g.Batch}");
        if (g.Bias is not null && g.Bias.Numel < g.N) throw new ArgumentException($"GEMM: bias {g.Bias} shorter than N={g.N}");
        CheckSpan("A", g.A, (long)g.M * g.K, g.Batch, g.StrideA);
        CheckSpan("B", g.B, (long)g.K * g.N, g.Batch, g.StrideB);
        CheckSpan("C", g.C, (long)g.M * g.N, g.Batch, g.StrideC);
        if (g.Batch > 1 && g.StrideC == 0 && (long)g.M * g.N > 0)
            throw new ArgumentException("GEMM: StrideC 0 with Batch > 1 would race; sum the batch with SumRows instead");
        var d = new GemmDesc(g.A.Address, g.B.Address, g.C.Address, g.Bias?.Address ?? 0,
            g.A.DType, g.C.DType, g.Bias?.DType ?? g.C.DType,
            g.M, g.N, g.K, g.TransA, g.TransB, g.Alpha, g.Beta, g.Batch, g.StrideA, g.StrideB, g.StrideC);
        CpuGemm.Gemm(d);
    }

    static void CheckSpan(string what, Tensor t, long per, int batch, long stride)
    {
        long need = per == 0 ? 0 : (batch - 1) * stride + per;
        if (t.Numel < need) throw new ArgumentException($"GEMM: {what} {t} has {t.Numel} elements, needs {need}");
    }

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

    // ================================================================ losses

    public void CrossEntropy(Tensor logits, Tensor targets, int ignoreIndex, Tensor loss, Tensor lse)
    {
        Own(logits, targets, loss, lse);
        int c = logits.Dim(-1); long rows = logits.Numel / Math.Max(1, c);
        if (targets.Numel != rows || loss.Numel != rows || lse.Numel != rows) throw new ArgumentException($"CrossEntropy: targets/loss/lse must have {rows} elements");
        CheckTargets(targets, c, ignoreIndex);
        if (Wide(logits, loss)) CrossEntropyT<double>(logits, targets, ignoreIndex, loss, lse);
        else CrossEntropyT<float>(logits, targets, ignoreIndex, loss, lse);
    }

    static void CheckTargets(Tensor targets, int c, int ignoreIndex)
    {
        for (long i = 0; i < targets.Numel; i++)
        {
            long t = HostIO.LoadIndex(targets.Address, targets.DType, i);
            if (t != ignoreIndex && (t < 0 || t >= c)) throw new ArgumentOutOfRangeException(nameof(targets), $"target {t} at row {i} is outside [0,{c}) and is not the ignore index {ignoreIndex}");
        }
    }

    static void CrossEntropyT<T>(Tensor logits, Tensor targets, int ignoreIndex, Tensor loss, Tensor lse) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int c = logits.Dim(-1); long rows = logits.Numel / Math.Max(1, c);
        Par.Rows(rows, c * 4L, (r0, r1) =>
        {
            var buf = new T[c]; var tmp = new T[c]; Span<T> one = stackalloc T[1];
            for (long r = r0; r < r1; r++)
            {
                HostIO.Read<T>(logits, r * c, buf);
                T mx = TensorPrimitives.Max<T>(buf);
                TensorPrimitives.Subtract<T>(buf, mx, tmp);
                TensorPrimitives.Exp<T>(tmp, tmp);
                T l = mx + T.Log(TensorPrimitives.Sum<T>(tmp));
                one[0] = l; HostIO.Write<T>(lse, r, one);
                long t = HostIO.LoadIndex(targets.Address, targets.DType, r);
                one[0] = t == ignoreIndex ? T.Zero : l - buf[t];
                HostIO.Write<T>(loss, r, one);
            }
        });
    }

    public void CrossEntropyBackward(Tensor logits, Tensor targets, int ignoreIndex, Tensor lse, Tensor dloss, Tensor dlogits)
    {
        Own(logits, targets, lse, dloss, dlogits); SameNumel(logits, dlogits);
        int c = logits.Dim(-1); long rows = logits.Numel / Math.Max(1, c);
        if (targets.Numel != rows || dloss.Numel != rows || lse.Numel != rows) throw new ArgumentException("CrossEntropyBackward: sizes");
        CheckTargets(targets, c, ignoreIndex);
        if (Wide(logits, dlogits)) CrossEntropyBwdT<double>(logits, targets, ignoreIndex, lse, dloss, dlogits);
        else CrossEntropyBwdT<float>(logits, targets, ignoreIndex, lse, dloss, dlogits);
    }

    static void CrossEntropyBwdT<T>(Tensor logits, Tensor targets, int ignoreIndex, Tensor lse, Tensor dloss, Tensor dlogits) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int c = logits.Dim(-1); long rows = logits.Numel / Math.Max(1, c);
        Par.Rows(rows, c * 4L, (r0, r1) =>
        {
            var buf = new T[c]; var scratch = new T[c]; Span<T> one = stackalloc T[1];
            for (long r = r0; r < r1; r++)
            {
                long t = HostIO.LoadIndex(targets.Address, targets.DType, r);
                if (t == ignoreIndex) continue;
                HostIO.Read<T>(lse, r, one); T l = one[0];
                HostIO.Read<T>(dloss, r, one); T g = one[0];
                HostIO.Read<T>(logits, r * c, buf);
                TensorPrimitives.Subtract<T>(buf, l, buf);
                TensorPrimitives.Exp<T>(buf, buf);
                buf[t] -= T.One;
                TensorPrimitives.Multiply<T>(buf, g, buf);
                HostIO.Accumulate<T>(dlogits, r * c, buf, scratch);
            }
        });
    }

    // ================================================================ embedding

    public void Embedding(Tensor weight, Tensor ids, Tensor y)
    {
        Own(weight, ids, y);
        int v = weight.Dim(0); int d = (int)(weight.Numel / Math.Max(1, v));
        if (y.Numel != ids.Numel * d) throw new ArgumentException($"Embedding: y {y} must hold {ids.Numel}×{d}");
        for (long i = 0; i < ids.Numel; i++)
        {
            long id = HostIO.LoadIndex(ids.Address, ids.DType, i);
            if (id < 0 || id >= v) throw new ArgumentOutOfRangeException(nameof(ids), $"id {id} at {i} outside [0,{v})");
        }
        if (Wide(weight, y)) EmbeddingT<double>(weight, ids, y); else EmbeddingT<float>(weight, ids, y);
    }

    static void EmbeddingT<T>(Tensor weight, Tensor ids, Tensor y) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int v = weight.Dim(0); int d = (int)(weight.Numel / Math.Max(1, v));
        Par.Rows(ids.Numel, d, (r0, r1) =>
        {
            var buf = new T[d];
            for (long i = r0; i < r1; i++)
            {
                long id = HostIO.LoadIndex(ids.Address, ids.DType, i);
                HostIO.Read<T>(weight, id * d, buf);
                HostIO.Write<T>(y, i * d, buf);
            }
        });
    }

    public void EmbeddingBackward(Tensor dy, Tensor ids, Tensor dweight)
    {
        Own(dy, ids, dweight);
        int v = dweight.Dim(0); int d = (int)(dweight.Numel / Math.Max(1, v));
        if (dy.Numel != ids.Numel * d) throw new ArgumentException("EmbeddingBackward: sizes");
        if (Wide(dy, dweight)) EmbeddingBwdT<double>(dy, ids, dweight); else EmbeddingBwdT<float>(dy, ids, dweight);
    }

    static void EmbeddingBwdT<T>(Tensor dy, Tensor ids, Tensor dweight) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int v = dweight.Dim(0); int d = (int)(dweight.Numel / Math.Max(1, v));
        // Repeated ids must add up without races: accumulate in T per distinct id, in id order of appearance.
        var groups = new Dictionary<long, List<long>>();
        for (long i = 0; i < ids.Numel; i++)
        {
            long id = HostIO.LoadIndex(ids.Address, ids.DType, i);
            if (id < 0 || id >= v) throw new ArgumentOutOfRangeException(nameof(ids), $"id {id} at {i} outside [0,{v})");
            if (!groups.TryGetValue(id, out var l)) groups[id] = l = new List<long>();
            l.Add(i);
        }
        var keys = groups.Keys.ToArray();
        Par.Rows(keys.Length, d * 2L, (k0, k1) =>
        {
            var acc = new T[d]; var row = new T[d];
            for (long k = k0; k < k1; k++)
            {
                long id = keys[k];
                HostIO.Read<T>(dweight, id * d, acc);
                foreach (long i in groups[id]) { HostIO.Read<T>(dy, i * d, row); TensorPrimitives.Add<T>(acc, row, acc); }
                HostIO.Write<T>(dweight, id * d, acc);
            }
        });
    }

    // ================================================================ dropout

    public void Dropout(Tensor x, float p, ulong seed, ulong offset, Tensor y)
    {
        Own(x, y); SameNumel(x, y);
        if (Wide(x, y)) DropoutT<double>(x, p, seed, offset, y, accumulate: false);
        else DropoutT<float>(x, p, seed, offset, y, accumulate: false);
    }

    public void DropoutBackward(Tensor dy, float p, ulong seed, ulong offset, Tensor dx)
    {
        Own(dy, dx); SameNumel(dy, dx);
        if (Wide(dy, dx)) DropoutT<double>(dy, p, seed, offset, dx, accumulate: true);
        else DropoutT<float>(dy, p, seed, offset, dx, accumulate: true);
    }

    static void DropoutT<T>(Tensor x, float p, ulong seed, ulong offset, Tensor y, bool accumulate) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (p < 0 || p > 1) throw new ArgumentOutOfRangeException(nameof(p));
        // The kernel multiplies by a float 1/(1-p); so do we (in T = float or double from the same float).
        T keepScale = p >= 1 ? T.Zero : T.CreateTruncating(1f / (1f - p));
        long n = x.Numel;
        Par.Rows((n + Chunk - 1) / Chunk, Chunk * 8L, (c0, c1) =>
        {
            var buf = new T[Chunk]; var scratch = new T[Chunk]; var words = new uint[Chunk];
            for (long c = c0; c < c1; c++)
            {
                long s = c * Chunk; int len = (int)Math.Min(Chunk, n - s);
                var b = buf.AsSpan(0, len);
                HostIO.Read<T>(x, s, b);
                Philox.Words(seed, offset, s, words.AsSpan(0, len));
                for (int j = 0; j < len; j++)
                    b[j] = (words[j] >> 8) * (1f / 16777216f) >= p ? b[j] * keepScale : T.Zero; // Philox.Keep, from precomputed words
                if (accumulate) HostIO.Accumulate<T>(y, s, b, scratch); else HostIO.Write<T>(y, s, b);
            }
        });
    }

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

    // ================================================================ layout

    public void Permute(Tensor x, int[] perm, Tensor y, bool accumulate)
    {
        Own(x, y);
        int r = x.Rank;
        if (perm.Length != r || r > 6) throw new ArgumentException($"Permute: perm of length {perm.Length} for rank {r} (max 6)");
        var seen = new bool[r];
        for (int i = 0; i < r; i++)
        {
            if (perm[i] < 0 || perm[i] >= r || seen[perm[i]]) throw new ArgumentException($"Permute: [{string.Join(",", perm)}] is not a permutation");
            seen[perm[i]] = true;
            if (y.Rank != r || y.Shape[i] != x.Shape[perm[i]]) throw new ArgumentException($"Permute: y {y} is not x {x} permuted by [{string.Join(",", perm)}]");
        }
        if (x.Numel == 0) return;
        if (r == 0) { PermuteRows<double>(x, perm, y, accumulate); return; }
        if (!accumulate && x.DType == y.DType)
        {
            switch (x.DType.Size())
            {
                case 2: PermuteRaw<ushort>(x, perm, y); return;
                case 4: PermuteRaw<uint>(x, perm, y); return;
                case 8: PermuteRaw<ulong>(x, perm, y); return;
            }
        }
        if (Wide(x, y)) PermuteRows<double>(x, perm, y, accumulate); else PermuteRows<float>(x, perm, y, accumulate);
    }

    /// <summary>Strides of x (in elements) in the order of y's dimensions.</summary>
    static long[] PermutedStrides(Tensor x, int[] perm)
    {
        int r = x.Rank;
        var xs = new long[r];
        long s = 1;
        for (int i = r - 1; i >= 0; i--) { xs[i] = s; s *= x.Shape[i]; }
        var ps = new long[r];
        for (int i = 0; i < r; i++) ps[i] = xs[perm[i]];
        return ps;
    }

    static long SourceOffset(long row, int[] yshape, long[] ps)
    {
        long off = 0;
        for (int d = yshape.Length - 2; d >= 0; d--)
        {
            long q = row / yshape[d];
            off += (row - q * yshape[d]) * ps[d];
            row = q;
        }
        return off;
    }

    static void PermuteRaw<E>(Tensor x, int[] perm, Tensor y) where E : unmanaged
    {
        var ps = PermutedStrides(x, perm); int r = x.Rank; var ys = y.Shape;
        int inner = ys[r - 1]; long step = ps[r - 1]; long rows = y.Numel / inner;
        E* xp = (E*)x.Address, yp = (E*)y.Address;
        Par.Rows(rows, inner, (r0, r1) =>
        {
            for (long row = r0; row < r1; row++)
            {
                long src = SourceOffset(row, ys, ps);
                E* dst = yp + row * inner;
                if (step == 1) new ReadOnlySpan<E>(xp + src, inner).CopyTo(new Span<E>(dst, inner));
                else for (int j = 0; j < inner; j++) dst[j] = xp[src + j * step];
            }
        });
    }

    static void PermuteRows<T>(Tensor x, int[] perm, Tensor y, bool accumulate) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int r = x.Rank;
        if (r == 0)
        {
            double v = HostIO.LoadD(x.Address, x.DType, 0);
            HostIO.StoreD(y.Address, y.DType, 0, accumulate ? v + HostIO.LoadD(y.Address, y.DType, 0) : v);
            return;
        }
        var ps = PermutedStrides(x, perm); var ys = y.Shape;
        int inner = ys[r - 1]; long step = ps[r - 1]; long rows = y.Numel / inner;
        nint xp = x.Address; DType xt = x.DType;
        Par.Rows(rows, inner, (r0, r1) =>
        {
            var buf = new T[inner]; var scratch = new T[inner];
            for (long row = r0; row < r1; row++)
            {
                long src = SourceOffset(row, ys, ps);
                if (step == 1) HostIO.Read<T>(xp, xt, src, buf);
                else for (int j = 0; j < inner; j++) buf[j] = T.CreateTruncating(HostIO.LoadD(xp, xt, src + j * step));
                if (accumulate) HostIO.Accumulate<T>(y, row * inner, buf, scratch);
                else HostIO.Write<T>(y, row * inner, buf);
            }
        });
    }

    public void CopySlice(Tensor x, int axis, int srcStart, Tensor y, int dstStart, int len, bool accumulate)
    {
        Own(x, y);
        int r = x.Rank;
        if (axis < 0) axis += r;
        if (axis < 0 || axis >= r || y.Rank != r) throw new ArgumentException($"CopySlice: axis {axis} for {x} → {y}");
        for (int i = 0; i < r; i++)
            if (i != axis && x.Shape[i] != y.Shape[i]) throw new ArgumentException($"CopySlice: {x} and {y} differ outside axis {axis}");
        if (len < 0 || srcStart < 0 || dstStart < 0 || srcStart + len > x.Shape[axis] || dstStart + len > y.Shape[axis])
            throw new ArgumentOutOfRangeException(nameof(len), $"CopySlice: [{srcStart},{srcStart + len}) of {x} → [{dstStart},{dstStart + len}) of {y} on axis {axis}");
        long outer = 1; for (int i = 0; i < axis; i++) outer *= x.Shape[i];
        long inner = 1; for (int i = axis + 1; i < r; i++) inner *= x.Shape[i];
        long block = len * inner; int xa = x.Shape[axis], ya = y.Shape[axis];
        if (block == 0 || outer == 0) return;
        if (!accumulate && x.DType == y.DType)
        {
            int es = x.DType.Size();
            byte* xp = (byte*)x.Address, yp = (byte*)y.Address;
            Par.Rows(outer, block, (o0, o1) =>
            {
                for (long o = o0; o < o1; o++)
                    Buffer.MemoryCopy(xp + ((o * xa + srcStart) * inner) * es, yp + ((o * ya + dstStart) * inner) * es, block * es, block * es);
            });
            return;
        }
        if (Wide(x, y)) CopySliceT<double>(x, srcStart, y, dstStart, outer, inner, block, xa, ya, accumulate);
        else CopySliceT<float>(x, srcStart, y, dstStart, outer, inner, block, xa, ya, accumulate);
    }

    static void CopySliceT<T>(Tensor x, int srcStart, Tensor y, int dstStart, long outer, long inner, long block, int xa, int ya, bool accumulate)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        Par.Rows(outer, block, (o0, o1) =>
        {
            int cl = (int)Math.Min(block, Chunk);
            var buf = new T[cl]; var scratch = new T[cl];
            for (long o = o0; o < o1; o++)
            {
                long xs = (o * xa + srcStart) * inner, ys = (o * ya + dstStart) * inner;
                for (long k = 0; k < block; k += cl)
                {
                    int l = (int)Math.Min(cl, block - k);
                    var b = buf.AsSpan(0, l);
                    HostIO.Read<T>(x, xs + k, b);
                    if (accumulate) HostIO.Accumulate<T>(y, ys + k, b, scratch);
                    else HostIO.Write<T>(y, ys + k, b);
                }
            }
        });
    }

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

    // ================================================================ helpers

    delegate void Span1<T>(ReadOnlySpan<T> x, Span<T> y);
    delegate void Span2<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> y);

    static void Map1<T>(Tensor x, Tensor y, Span1<T> f) where T : unmanaged, IFloatingPointIeee754<T>
    {
        long n = y.Numel;
        Par.Rows((n + Chunk - 1) / Chunk, Chunk, (c0, c1) =>
        {
            var a = new T[Chunk]; var r = new T[Chunk];
            for (long c = c0; c < c1; c++)
            {
                long s = c * Chunk; int len = (int)Math.Min(Chunk, n - s);
                HostIO.Read<T>(x, s, a.AsSpan(0, len));
                f(a.AsSpan(0, len), r.AsSpan(0, len));
                HostIO.Write<T>(y, s, r.AsSpan(0, len));
            }
        });
    }

    static void Map2<T>(Tensor x1, Tensor x2, Tensor y, Span2<T> f) where T : unmanaged, IFloatingPointIeee754<T>
    {
        long n = y.Numel;
        Par.Rows((n + Chunk - 1) / Chunk, Chunk, (c0, c1) =>
        {
            var a = new T[Chunk]; var b = new T[Chunk]; var r = new T[Chunk];
            for (long c = c0; c < c1; c++)
            {
                long s = c * Chunk; int len = (int)Math.Min(Chunk, n - s);
                HostIO.Read<T>(x1, s, a.AsSpan(0, len));
                HostIO.Read<T>(x2, s, b.AsSpan(0, len));
                f(a.AsSpan(0, len), b.AsSpan(0, len), r.AsSpan(0, len));
                HostIO.Write<T>(y, s, r.AsSpan(0, len));
            }
        });
    }

    /// <summary>t += values (doubles, rounded once into t's dtype).</summary>
    static void AccumulateDoubles(Tensor t, ReadOnlySpan<double> values)
    {
        for (int j = 0; j < values.Length; j++)
            HostIO.StoreD(t.Address, t.DType, j, HostIO.LoadD(t.Address, t.DType, j) + values[j]);
    }

    static bool Wide(params Tensor?[] ts)
    {
        foreach (var t in ts) if (t is not null && t.DType == DType.F64) return true;
        return false;
    }

    static void SameNumel(Tensor a, Tensor b)
    {
        if (a.Numel != b.Numel) throw new ArgumentException($"{a} and {b} differ in element count");
    }

    void Own(params Tensor[] ts)
    {
        foreach (var t in ts)
        {
            if (t is null) throw new ArgumentNullException(nameof(ts));
            if (t.Storage is not CpuStorage) throw new ArgumentException($"{t} does not live on the CPU backend");
        }
    }
}
