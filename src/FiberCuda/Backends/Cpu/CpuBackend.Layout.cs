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
}
