using System.Runtime.InteropServices;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

public sealed unsafe partial class CudaBackend
{
    // =============================================================================================
    // elementwise
    // =============================================================================================

    public void Add(Tensor a, Tensor b, Tensor y) => Binary("ew_add_", a, b, y, nameof(Add));
    public void Mul(Tensor a, Tensor b, Tensor y) => Binary("ew_mul_", a, b, y, nameof(Mul));

    void Binary(string kernel, Tensor a, Tensor b, Tensor y, string op)
    {
        Float(a, "a"); SameAll(op, a, b, y);
        if (a.Numel == 0) return;
        nint pa = a.Address, pb = b.Address, py = y.Address; long n = a.Numel;
        void** args = stackalloc void*[] { &pa, &pb, &py, &n };
        Launch("elementwise.cu", kernel + S(a), Grid(n, Pack(a)), Threads, 0, args);
    }

    public void Scale(Tensor x, float s, Tensor y)
    {
        Float(x, "x"); SameAll(nameof(Scale), x, y);
        if (x.Numel == 0) return;
        nint px = x.Address, py = y.Address; long n = x.Numel;
        void** a = stackalloc void*[] { &px, &s, &py, &n };
        Launch("elementwise.cu", "ew_scale_" + S(x), Grid(n, Pack(x)), Threads, 0, a);
    }

    public void Axpy(float alpha, Tensor x, Tensor y)
    {
        Float(x, "x"); SameAll(nameof(Axpy), x, y);
        if (x.Numel == 0) return;
        nint px = x.Address, py = y.Address; long n = x.Numel;
        void** a = stackalloc void*[] { &alpha, &px, &py, &n };
        Launch("elementwise.cu", "ew_axpy_" + S(x), Grid(n, Pack(x)), Threads, 0, a);
    }

    public void AddBias(Tensor x, Tensor bias, Tensor y)
    {
        Float(x, "x"); SameAll(nameof(AddBias), x, y);
        int C = LastDim(x, nameof(AddBias));
        Bias(bias, C, nameof(AddBias), "bias");
        if (x.Numel == 0) return;
        nint px = x.Address, pb = bias.Address, py = y.Address; long n = x.Numel;
        void** a = stackalloc void*[] { &px, &pb, &py, &n, &C };
        Launch("elementwise.cu", $"ew_add_bias_{S(x)}_{S(bias)}", Grid(n, Pack(x)), Threads, 0, a);
    }

    public void BiasGelu(Tensor x, Tensor? bias, Tensor y)
    {
        Float(x, "x"); SameAll(nameof(BiasGelu), x, y);
        int C = LastDim(x, nameof(BiasGelu));
        if (bias is not null) Bias(bias, C, nameof(BiasGelu), "bias");
        if (x.Numel == 0) return;
        nint px = x.Address, pb = bias?.Address ?? 0, py = y.Address; long n = x.Numel;
        void** a = stackalloc void*[] { &px, &pb, &py, &n, &C };
        int u = Perf("gu1") ? 1 : Perf("gu2") ? 2 : 4;
        Launch("gelu.cu", $"bias_gelu_fwd_{S(x)}_{(bias is null ? S(x) : S(bias))}{(u == 4 ? "" : $"_u{u}")}", Grid(n, Pack(x) * u), Threads, 0, a);
    }

    public void BiasGeluBackward(Tensor x, Tensor? bias, Tensor dy, Tensor dx, Tensor? dbias)
    {
        Float(x, "x"); SameAll(nameof(BiasGeluBackward), x, dy, dx);
        int C = LastDim(x, nameof(BiasGeluBackward));
        if (bias is not null) Bias(bias, C, nameof(BiasGeluBackward), "bias");
        if (dbias is not null) Bias(dbias, C, nameof(BiasGeluBackward), "dbias");
        if (x.Numel == 0 || C == 0) return;
        long rows = x.Numel / C;
        int vec = C % Pack(x) == 0 ? 1 : 0, nv = vec == 1 ? Pack(x) : 1;
        // Block (TX, 256/TX): TX threads across the row's packs (a power of two ≤ 32), two rows per
        // thread and step. With dbias, a bounded grid (each block adds one partial row for the
        // column sum); without, one step per thread.
        int tx = Math.Min(32, (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)((C + nv - 1) / nv)));
        int ty = Threads / tx, gx = (C + tx * nv - 1) / (tx * nv);
        long needY = (rows + 2L * ty - 1) / (2L * ty);
        int perSm = Perf("gb2") ? 2 : Perf("gb8") ? 8 : 4;
        int maxY = dbias is null ? 65535 : Math.Max(1, (_dev.IsEmulated ? _maxBlocks : _smCount * perSm) / gx);
        int R = (int)Math.Clamp(needY, 1, maxY);
        nint partial = dbias is null ? 0 : Scratch((long)R * C * 4);
        nint px = x.Address, pb = bias?.Address ?? 0, pdy = dy.Address, pdx = dx.Address;
        void** a = stackalloc void*[] { &px, &pb, &pdy, &pdx, &partial, &rows, &C, &vec };
        Launch("gelu.cu", $"bias_gelu_bwd_{S(x)}_{(bias is null ? S(x) : S(bias))}", new Dim3((uint)gx, (uint)R), new Dim3((uint)tx, (uint)ty), 0, a);
        if (dbias is not null) ColSum(partial, R, C, C, dbias.Address, dbias.DType, accumulate: true);
    }
}
