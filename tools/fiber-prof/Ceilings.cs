using FiberCuda.Backends;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Profile;

/// <summary>The device's measured ceilings, taken at start: copy bandwidth and a large bf16 GEMM.</summary>
public sealed record Ceilings(double CopyGBps, double GemmTFlops, string GemmHow)
{
    /// <summary>
    /// Copy: device-to-device copies of 1 GiB, counting bytes read plus written, median of 10.
    /// GEMM: 8192³ bf16 with fp32 accumulation, the best of <paramref name="gemm"/> over 10 runs (median).
    /// </summary>
    public static Ceilings Measure(IGpuDevice gpu, IBackend be, Action<Tensor, Tensor, Tensor>? directGemm)
    {
        const long bytes = 1L << 30;
        double copy;
        using (var src = be.Empty([(int)(bytes / 4)], DType.F32))
        using (var dst = be.Empty([(int)(bytes / 4)], DType.F32))
        using (var timer = gpu.CreateTimer())
        {
            be.Fill(src, 1.0);
            var ms = new List<double>();
            for (int r = 0; r < 13; r++)
            {
                timer.Start(); gpu.CopyDeviceToDevice(dst.Address, src.Address, bytes); timer.Stop();
                if (r >= 3) ms.Add(timer.ElapsedMs());
            }
            ms.Sort();
            copy = 2.0 * bytes / (ms[ms.Count / 2] * 1e-3) / 1e9;
        }

        const int n = 8192;
        double tflops;
        string how;
        using (var a = be.Empty([n, n], DType.BF16))
        using (var b = be.Empty([n, n], DType.BF16))
        using (var c = be.Empty([n, n], DType.BF16))
        using (var timer = gpu.CreateTimer())
        {
            be.Fill(a, 0.01); be.Fill(b, 0.02);
            Action run = directGemm is null
                ? () => be.Gemm(new GemmArgs(a, b, c, n, n, n, TransB: true))
                : () => directGemm(a, b, c);
            how = directGemm is null ? "engine GEMM" : "cuBLASLt called directly";
            var ms = new List<double>();
            for (int r = 0; r < 13; r++)
            {
                timer.Start(); run(); timer.Stop();
                if (r >= 3) ms.Add(timer.ElapsedMs());
            }
            ms.Sort();
            tflops = 2.0 * n * n * (double)n / (ms[ms.Count / 2] * 1e-3) / 1e12;
        }
        return new Ceilings(copy, tflops, how);
    }
}
