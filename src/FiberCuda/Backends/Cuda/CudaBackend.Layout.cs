using System.Runtime.InteropServices;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

public sealed unsafe partial class CudaBackend
{
    // =============================================================================================
    // layout
    // =============================================================================================

    public void Permute(Tensor x, int[] perm, Tensor y, bool accumulate)
    {
        const string op = nameof(Permute);
        Mine(x, "x"); Mine(y, "y");
        int r = x.Rank;
        if (r > 6) throw new ArgumentException($"{op}: rank {r} > 6");
        if (perm.Length != r || perm.Distinct().Count() != r || perm.Any(p => p < 0 || p >= r))
            throw new ArgumentException($"{op}: [{string.Join(",", perm)}] is not a permutation of {r} dims");
        if (y.Rank != r || Enumerable.Range(0, r).Any(i => y.Shape[i] != x.Shape[perm[i]]))
            throw new ArgumentException($"{op}: {Describe(y)} is not {Describe(x)} permuted by [{string.Join(",", perm)}]");
        if (x.DType != y.DType) throw new ArgumentException($"{op}: x is {x.DType.Name()} but y is {y.DType.Name()}");
        string kind = LayoutKernel(x, accumulate, op);
        long n = x.Numel;
        if (n == 0) return;
        var xs = new long[r];
        for (long s = 1, i = r - 1; i >= 0; i--) { xs[i] = s; s *= x.Shape[i]; }
        long* d = stackalloc long[6];
        long* st = stackalloc long[6];
        for (int i = 0; i < 6; i++)
        {
            int j = i - (6 - r);
            d[i] = j >= 0 ? y.Shape[j] : 1;
            st[i] = j >= 0 ? xs[perm[j]] : 0;
        }
        nint px = x.Address, py = y.Address;
        void** a = stackalloc void*[] { &px, &py, &n, d, d + 1, d + 2, d + 3, d + 4, d + 5, st, st + 1, st + 2, st + 3, st + 4, st + 5 };
        Launch("layout.cu", "permute_" + kind, Grid(n), Threads, 0, a);
    }

    public void CopySlice(Tensor x, int axis, int srcStart, Tensor y, int dstStart, int len, bool accumulate)
    {
        const string op = nameof(CopySlice);
        Mine(x, "x"); Mine(y, "y");
        if (x.DType != y.DType) throw new ArgumentException($"{op}: x is {x.DType.Name()} but y is {y.DType.Name()}");
        if (x.Rank != y.Rank) throw new ArgumentException($"{op}: {Describe(x)} and {Describe(y)} differ in rank");
        int r = x.Rank;
        int ax = axis < 0 ? axis + r : axis;
        if (ax < 0 || ax >= r) throw new ArgumentOutOfRangeException(nameof(axis), axis, $"{op}: axis out of range for rank {r}");
        for (int i = 0; i < r; i++)
            if (i != ax && x.Shape[i] != y.Shape[i])
                throw new ArgumentException($"{op}: {Describe(x)} and {Describe(y)} differ outside axis {ax}");
        if (len < 0 || srcStart < 0 || dstStart < 0 || srcStart + (long)len > x.Shape[ax] || dstStart + (long)len > y.Shape[ax])
            throw new ArgumentOutOfRangeException(nameof(len), $"{op}: [{srcStart},{srcStart + len}) of {x.Shape[ax]} -> [{dstStart},{dstStart + len}) of {y.Shape[ax]} is out of range");
        string kind = LayoutKernel(x, accumulate, op);
        long outer = 1, inner = 1;
        for (int i = 0; i < ax; i++) outer *= x.Shape[i];
        for (int i = ax + 1; i < r; i++) inner *= x.Shape[i];
        long n = outer * len * inner;
        if (n == 0) return;
        nint px = x.Address, py = y.Address;
        long Lx = x.Shape[ax], Ly = y.Shape[ax], src = srcStart, dst = dstStart, l = len;
        void** a = stackalloc void*[] { &px, &py, &outer, &inner, &Lx, &Ly, &src, &dst, &l };
        Launch("layout.cu", "copy_slice_" + kind, Grid(n), Threads, 0, a);
    }

    static string LayoutKernel(Tensor x, bool accumulate, string op)
    {
        if (x.DType == DType.F64) throw F64();
        if (accumulate)
        {
            if (!x.DType.IsFloat()) throw new ArgumentException($"{op}: accumulate needs a float tensor, got {x.DType.Name()}");
            return "acc_" + S(x);
        }
        return "copy" + x.DType.Size();
    }
}
