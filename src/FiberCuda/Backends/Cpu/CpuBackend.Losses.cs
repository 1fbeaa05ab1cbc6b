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
}
