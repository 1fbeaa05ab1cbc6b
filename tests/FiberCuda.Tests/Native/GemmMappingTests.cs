using FiberCuda.Backends.Cpu;
using FiberCuda.Native;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Native;

/// <summary>CPU checks of the GEMM decompositions the cuBLASLt path relies on.</summary>
[TestClass]
public sealed unsafe class GemmMappingTests
{
    [TestMethod]
    [DataRow(DType.F32, DType.F32, 1)]
    [DataRow(DType.BF16, DType.BF16, 3)]
    [DataRow(DType.BF16, DType.F32, 2)]
    public void RankOneBiasFallbackEqualsBiasEpilogue(DType biasType, DType cType, int batch)
    {
        const int m = 5, n = 7, k = 4;
        var rng = new Random(5);
        float[] a = Enumerable.Range(0, batch * m * k).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        float[] b = Enumerable.Range(0, batch * k * n).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var bias = new byte[n * biasType.Size()];
        var ones = new byte[m * biasType.Size()];
        fixed (byte* pb = bias, po = ones)
            for (int i = 0; i < Math.Max(m, n); i++)
            {
                if (i < n) CpuGemm.Store((nint)pb, biasType, i, rng.NextDouble() * 4 - 2);
                if (i < m) CpuGemm.Store((nint)po, biasType, i, 1.0);
            }
        var c0 = new byte[batch * m * n * cType.Size()];
        fixed (byte* p = c0) for (int i = 0; i < batch * m * n; i++) CpuGemm.Store((nint)p, cType, i, rng.NextDouble());
        byte[] want = (byte[])c0.Clone(), got = (byte[])c0.Clone();
        fixed (float* pa = a, pbm = b) fixed (byte* pbias = bias, pones = ones, pw = want, pg = got)
        {
            var g = new GemmDesc((nint)pa, (nint)pbm, (nint)pw, (nint)pbias, DType.F32, cType, biasType, m, n, k, false, false,
                                 0.5f, 0.25f, batch, m * k, k * n, m * n);
            CpuGemm.Gemm(g);
            var plain = g with { C = (nint)pg, Bias = 0 };
            CpuGemm.Gemm(plain);
            CpuGemm.Gemm(CublasLtGemm.RankOneBias(g with { C = (nint)pg }, (nint)pones));
            double tol = cType == DType.BF16 ? 2e-2 : 1e-6;
            for (int i = 0; i < batch * m * n; i++)
            {
                double w = CpuGemm.Load((nint)pw, cType, i), v = CpuGemm.Load((nint)pg, cType, i);
                Assert.IsLessThanOrEqualTo(tol * (1 + Math.Abs(w)), Math.Abs(w - v), $"element {i}: {v} vs {w}");
            }
        }
    }
}
