using System.Runtime.InteropServices;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

public sealed unsafe partial class CudaBackend
{
    // =============================================================================================
    // reductions
    // =============================================================================================

    public void SumLastDim(Tensor x, Tensor y)
    {
        Float(x, "x");
        int C = LastDim(x, nameof(SumLastDim));
        long rows = ShapeUtil.Rows(x.Shape);
        Small(y, rows, nameof(SumLastDim), "y");
        if (rows == 0) return;
        nint px = x.Address, py = y.Address; int ydt = Dt(y);
        void** a = stackalloc void*[] { &px, &py, &ydt, &rows, &C };
        Launch("reduce.cu", "sum_last_" + S(x), RowGrid(rows), Threads, 0, a);
    }

    public void SumRows(Tensor x, Tensor y, bool accumulate)
    {
        Float(x, "x");
        int C = LastDim(x, nameof(SumRows));
        Bias(y, C, nameof(SumRows), "y");
        if (C == 0) return;
        long rows = x.Numel / C;
        if (rows == 0) { if (!accumulate) Fill(y, 0); return; }
        var (grid, R, vec) = ColumnGrid(rows, C, Pack(x));
        nint partial = Scratch((long)R * C * 4);
        nint px = x.Address;
        void** a = stackalloc void*[] { &px, &partial, &rows, &C, &vec };
        Launch("reduce.cu", "sum_rows_" + S(x), grid, new Dim3(32, 8), 0, a);
        ColSum(partial, R, C, C, y.Address, y.DType, accumulate);
    }

    public void SumAll(Tensor x, Tensor y)
    {
        Float(x, "x"); Small(y, 1, nameof(SumAll), "y");
        long n = x.Numel;
        int blocks = Grid(n);
        nint partial = Scratch(blocks * 4L);
        nint px = x.Address;
        void** a = stackalloc void*[] { &px, &n, &partial };
        Launch("reduce.cu", "sum_all_" + S(x), blocks, Threads, 0, a);
        SumFinal(partial, blocks, y);
    }

    public void L2Normalize(Tensor x, float eps, Tensor y, Tensor norm)
    {
        Float(x, "x"); SameAll(nameof(L2Normalize), x, y);
        int C = LastDim(x, nameof(L2Normalize));
        long rows = ShapeUtil.Rows(x.Shape);
        Stats(norm, rows, nameof(L2Normalize), "norm");
        if (x.Numel == 0) return;
        nint px = x.Address, py = y.Address, pn = norm.Address;
        void** a = stackalloc void*[] { &px, &eps, &py, &pn, &rows, &C };
        Launch("reduce.cu", "l2norm_fwd_" + S(x), RowGrid(rows), Threads, 0, a);
    }

    public void L2NormalizeBackward(Tensor y, Tensor norm, float eps, Tensor dy, Tensor dx)
    {
        Float(y, "y"); SameAll(nameof(L2NormalizeBackward), y, dy, dx);
        int C = LastDim(y, nameof(L2NormalizeBackward));
        long rows = ShapeUtil.Rows(y.Shape);
        Stats(norm, rows, nameof(L2NormalizeBackward), "norm");
        if (y.Numel == 0) return;
        nint py = y.Address, pn = norm.Address, pdy = dy.Address, pdx = dx.Address;
        void** a = stackalloc void*[] { &py, &pn, &eps, &pdy, &pdx, &rows, &C };
        Launch("reduce.cu", "l2norm_bwd_" + S(y), RowGrid(rows), Threads, 0, a);
    }
}
