using FiberCuda.Tensors;

namespace FiberCuda.Runtime;

public readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    public static implicit operator Dim3(uint x) => new(x);
    public static implicit operator Dim3(int x) => new((uint)x);
    public override string ToString() => $"({X},{Y},{Z})";
}

/// <summary>A kernel function resolved from a compiled kernel file.</summary>
public interface IKernel
{
    string File { get; }
    string Name { get; }
    /// <summary>Dynamic shared memory bytes the kernel may use; the device raises the attribute past 48 KB.</summary>
    int MaxDynamicSharedBytes { get; set; }
}

/// <summary>
/// GEMM on device pointers, row-major, the same semantics as <see cref="Backends.GemmArgs"/>.
/// Real GPU: cuBLASLt. Emulated GPU: the C# reference GEMM over host memory.
/// </summary>
public readonly record struct GemmDesc(
    nint A, nint B, nint C, nint Bias,
    DType ABType, DType CType, DType BiasType,
    int M, int N, int K, bool TransA, bool TransB,
    float Alpha, float Beta,
    int Batch, long StrideA, long StrideB, long StrideC);

/// <summary>
/// What the CUDA backend needs from a device. Two implementations: <c>CudaDevice</c> (driver API,
/// NVRTC, cuBLASLt) and <c>EmulatedDevice</c> (host memory, kernels compiled by g++ against
/// kernels/emu/cuda_emu.h, GEMM by the C# reference). Everything above this interface (the backend,
/// the allocator, autograd) is the same code on both, which is how CI tests the GPU path without a GPU.
/// All calls are on the device's one stream unless a stream is given; implementations make their
/// context current on entry (callers may be thread-pool or finalizer threads).
/// </summary>
public interface IGpuDevice : IDisposable
{
    string Name { get; }
    bool IsEmulated { get; }
    /// <summary>Compute capability as major*10+minor (90 for H100/H200); the emulator reports 80.</summary>
    int ComputeCapability { get; }
    long TotalMemory { get; }

    /// <summary>Raw device allocation (no caching; the allocator above caches).</summary>
    nint Malloc(long bytes);
    void Free(nint ptr);
    /// <summary>Page-locked host memory for fast transfers (plain host memory on the emulator).</summary>
    nint MallocHost(long bytes);
    void FreeHost(nint ptr);

    unsafe void CopyHostToDevice(nint dst, void* src, long bytes);
    unsafe void CopyDeviceToHost(void* dst, nint src, long bytes);
    void CopyDeviceToDevice(nint dst, nint src, long bytes);
    void Memset(nint dst, byte value, long bytes);

    /// <summary>The kernel <paramref name="name"/> of kernels/<paramref name="file"/> (compiled once, then cached).</summary>
    IKernel GetKernel(string file, string name);
    /// <summary>Launches with args = pointers to each argument's value, in declaration order.</summary>
    unsafe void Launch(IKernel kernel, Dim3 grid, Dim3 block, int dynamicSharedBytes, void** args);

    void Gemm(in GemmDesc g);

    void Synchronize();

    /// <summary>Milliseconds between two points on the stream (CUDA events; wall clock on the emulator).</summary>
    ITimer CreateTimer();
}

public interface ITimer : IDisposable
{
    void Start();
    void Stop();
    /// <summary>Waits for the stop point, then returns elapsed milliseconds.</summary>
    float ElapsedMs();
}
