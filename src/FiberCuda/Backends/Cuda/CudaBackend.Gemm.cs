using System.Runtime.InteropServices;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

public sealed unsafe partial class CudaBackend
{
    // =============================================================================================
    // GEMM
    // =============================================================================================

    public void Gemm(in GemmArgs g)
    {
        Mine(g.A, "A"); Mine(g.B, "B"); Mine(g.C, "C");
        if (g.A.DType != g.B.DType) throw new ArgumentException($"Gemm: A is {g.A.DType.Name()} but B is {g.B.DType.Name()}");
        Float(g.A, "A"); Float(g.C, "C");
        if (g.M < 0 || g.N < 0 || g.K < 0 || g.Batch < 1) throw new ArgumentException($"Gemm: bad sizes M={g.M} N={g.N} K={g.K} batch={g.Batch}");
        NeedElems(g.A, g.StrideA, (long)g.M * g.K, g.Batch, "A");
        NeedElems(g.B, g.StrideB, (long)g.K * g.N, g.Batch, "B");
        NeedElems(g.C, g.StrideC, (long)g.M * g.N, g.Batch, "C");
        DType biasType = g.C.DType;
        nint bias = 0;
        if (g.Bias is { } b)
        {
            Mine(b, "Bias");
            if (b.DType != DType.F32 && b.DType != g.C.DType) throw new ArgumentException($"Gemm: bias must be f32 or C's dtype, got {b.DType.Name()}");
            if (b.Numel != g.N) throw new ArgumentException($"Gemm: bias has {b.Numel} elements, N = {g.N}");
            biasType = b.DType; bias = b.Address;
            if (g.C.DType == DType.BF16 && b.DType == DType.F32)
            {
                // cuBLASLt has no bias epilogue for bf16 C with an f32 bias (refused on the H200). Run the GEMM
                // into an f32 copy of C instead: still one rounding to bf16 at the end, as on the CPU. C is
                // copied in whole first, so elements between batch strides come back unchanged.
                using var c32 = Empty(g.C.Shape, DType.F32);
                Cast(g.C, c32);
                Gemm(g with { C = c32 });
                Cast(c32, g.C);
                return;
            }
        }
        _dev.Gemm(new GemmDesc(g.A.Address, g.B.Address, g.C.Address, bias, g.A.DType, g.C.DType, biasType,
            g.M, g.N, g.K, g.TransA, g.TransB, g.Alpha, g.Beta, g.Batch, g.StrideA, g.StrideB, g.StrideC));
    }

    static void NeedElems(Tensor t, long stride, long per, int batch, string name)
    {
        long need = (batch - 1) * stride + per;
        if (stride < 0 || t.Numel < need) throw new ArgumentException($"Gemm: {name} {Describe(t)} is too small ({need} elements needed)");
    }
}
