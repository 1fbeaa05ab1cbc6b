namespace FiberCuda.Runtime;

/// <summary>
/// A CUDA library or the driver/GPU is missing. Distinct from <see cref="Native.CudaException"/> (a call that
/// failed on a working stack) so callers and tests can fall back to the CPU backend or skip with the reason.
/// </summary>
public sealed class GpuNotAvailableException : Exception
{
    public GpuNotAvailableException(string message, Exception? inner = null) : base(message, inner) { }

    /// <summary>What to install, per logical library; appended to every "not found" message.</summary>
    public static string InstallHint(string logical) => logical switch
    {
        "cuda" => "Install the NVIDIA driver (it provides libcuda.so.1); in containers run with the GPU exposed (--gpus all). " +
                  "A libcuda.so under .../stubs/ is a link-time stub and is never loaded.",
        "nvrtc" => "Install the CUDA 12/13 runtime compiler: `pip install nvidia-cuda-nvrtc-cu12` (or the toolkit under /usr/local/cuda), " +
                   "or on Debian `apt install libnvrtc11.2` from non-free. Set FIBER_CUDA_LIB_DIR to the folder holding libnvrtc.so.*.",
        "cublas" or "cublasLt" => "Install cuBLAS: `pip install nvidia-cublas-cu12` (or the CUDA toolkit). " +
                   "Set FIBER_CUDA_LIB_DIR to the folder holding libcublasLt.so.*.",
        _ => "",
    };
}
