using FiberCuda.Backends;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Profile;

/// <summary>
/// The engine's GEMM (IBackend.Gemm: tensor checks, plan cache, bias epilogue) against the same
/// cuBLASLt matmul called directly with a plan built once up front: the engine must not lose time.
/// </summary>
public static class DirectGemm
{
    static GemmDesc Desc(Tensor a, Tensor b, Tensor c, Tensor? bias, int m, int n, int k) =>
        new(a.Address, b.Address, c.Address, bias?.Address ?? 0, a.DType, c.DType, bias?.DType ?? c.DType,
            m, n, k, TransA: false, TransB: true, Alpha: 1f, Beta: 0f, Batch: 1, StrideA: 0, StrideB: 0, StrideC: 0);

    public static Action<Tensor, Tensor, Tensor>? For(IGpuDevice device)
    {
        if (device is not CudaDevice cuda) return null;
        return (a, b, c) =>
        {
            using var p = cuda.Lt.Prepare(Desc(a, b, c, null, a.Dim(0), b.Dim(0), a.Dim(1)));
            p.Run();
        };
    }

    public static IEnumerable<CaseResult> Compare(IGpuDevice device, IBackend be, bool fiber, int iters)
    {
        if (device is not CudaDevice cuda) yield break;
        var shapes = fiber
            ? new (int M, int N, int K)[] { (4608, 2048, 512), (2560, 3072, 768), (73728, 384, 128), (8192, 8192, 8192) }
            : [(256, 256, 256)];
        foreach (var (m, n, k) in shapes)
        {
            using var a = be.Empty([m, k], DType.BF16);
            using var b = be.Empty([n, k], DType.BF16);
            using var bias = be.Empty([n], DType.BF16);
            using var c1 = be.Empty([m, n], DType.BF16);
            using var c2 = be.Empty([m, n], DType.BF16);
            be.Fill(a, 0.01); be.Fill(b, 0.02); be.Fill(bias, 0.5);
            var args = new GemmArgs(a, b, c1, m, n, k, TransB: true, Bias: bias);
            using var direct = cuda.Lt.Prepare(Desc(a, b, c2, bias, m, n, k));
            double engineMs = Median(device, () => be.Gemm(args), iters);
            double directMs = Median(device, direct.Run, iters);
            double flops = 2.0 * m * n * k;
            bool same = Runner.ScaledError(c1.ToFloatArray(), c2.ToFloatArray()) == 0;
            yield return new CaseResult($"gemm engine vs direct {m}x{n}x{k}", "gemm_vs_direct", $"{m}x{n}x{k}", "bf16",
                same, 0, same ? null : "engine and direct results differ",
                engineMs, directMs, 0, flops / (engineMs * 1e-3) / 1e12, 0, 100 * directMs / engineMs);
        }
    }

    /// <summary>Median of back-to-back timed runs (L2 warm: both paths see the same state).</summary>
    static double Median(IGpuDevice device, Action run, int iters)
    {
        using var timer = device.CreateTimer();
        for (int w = 0; w < 3; w++) run();
        var ms = new List<double>();
        for (int r = 0; r < iters; r++) { timer.Start(); run(); timer.Stop(); ms.Add(timer.ElapsedMs()); }
        ms.Sort();
        return ms[ms.Count / 2];
    }
}
