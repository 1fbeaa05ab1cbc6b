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
}
