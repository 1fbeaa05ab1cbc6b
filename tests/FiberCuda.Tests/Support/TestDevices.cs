using FiberCuda.Backends.Cuda;
using FiberCuda.Runtime;

namespace FiberCuda.Tests.Support;

/// <summary>
/// The devices the CUDA-path tests run on, one of each per test run: the emulated GPU (category
/// Emulated) and the real GPU (category Gpu), which skips with the reason when there is none.
/// </summary>
public static class TestDevices
{
    static readonly Lazy<(CudaBackend? Backend, string Reason)> RealGpu = new(() =>
        CudaDevice.TryCreate(out var d, out var reason) ? (new CudaBackend(d!, ownsDevice: true), "") : (null, reason));

    static readonly Lazy<CudaBackend> EmulatedGpu = new(() => new CudaBackend(new EmulatedDevice(), ownsDevice: true));

    /// <summary>The real GPU's backend, or Assert.Inconclusive("no GPU: …").</summary>
    public static CudaBackend Gpu
    {
        get
        {
            var (b, reason) = RealGpu.Value;
            if (b is null) Assert.Inconclusive("no GPU: " + reason);
            return b!;
        }
    }

    public static CudaBackend Emulated => EmulatedGpu.Value;
}
