using System.Runtime.InteropServices;
using FiberCuda.Kernels;
using FiberCuda.Native;

namespace FiberCuda.Tests.Native;

[TestClass]
public sealed class ErrorFormatTests
{
    [TestMethod]
    public void DriverErrorNamesCodeCallAndSite()
    {
        int rc = 700;
        var e = Assert.ThrowsExactly<CudaException>(() => CuDriver.Check(rc, "while testing"));
        Assert.AreEqual(700, e.Code);
        Assert.AreEqual("CUDA_ERROR_ILLEGAL_ADDRESS", e.ErrorName);
        Assert.Contains("CUDA_ERROR_ILLEGAL_ADDRESS (700)", e.Message);
        Assert.Contains("in rc at DriverErrorNamesCodeCallAndSite", e.Message);
        Assert.Contains("ErrorFormatTests.cs:", e.Message);
        Assert.Contains("while testing", e.Message);
    }

    [TestMethod]
    public void OutOfMemoryHasItsOwnType()
    {
        Assert.ThrowsExactly<CudaOutOfMemoryException>(() => CuDriver.Check(CuDriver.CUDA_ERROR_OUT_OF_MEMORY));
        CuDriver.Check(CuDriver.CUDA_SUCCESS); // no throw
    }

    [TestMethod]
    public void CublasAndNvrtcStatusNames()
    {
        var e = Assert.ThrowsExactly<CudaException>(() => CublasLt.Check(CublasLt.CUBLAS_STATUS_NOT_SUPPORTED));
        Assert.AreEqual("cuBLASLt", e.Library);
        Assert.Contains("CUBLAS_STATUS_NOT_SUPPORTED (15)", e.Message);
        Assert.Contains("CublasLt.CUBLAS_STATUS_NOT_SUPPORTED", e.Message); // the call expression
        var n = Assert.ThrowsExactly<CudaException>(() => Nvrtc.Check(Nvrtc.NVRTC_ERROR_INVALID_OPTION));
        Assert.Contains("NVRTC_ERROR_INVALID_OPTION", n.Message);
    }

    [TestMethod]
    public void FormatLayout()
    {
        var m = CudaException.Format("CUDA driver", 2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory",
                                     "cuMemAlloc_v2(&p, n)", "Malloc", "/src/CudaDevice.cs", 123, "allocating 4 bytes");
        Assert.AreEqual("CUDA driver error CUDA_ERROR_OUT_OF_MEMORY (2): out of memory\n  in cuMemAlloc_v2(&p, n) at Malloc (CudaDevice.cs:123)\n  allocating 4 bytes", m);
    }

    [TestMethod]
    public void NvrtcLogIsParsedForFileAndLine()
    {
        const string log = "layernorm.cu(12): warning: variable \"t\" was declared but never referenced\n\n" +
                           "common.cuh(33): error: identifier \"fooo\" is undefined\n\n" +
                           "1 error detected in the compilation of \"layernorm.cu\".\n";
        var e = NvrtcCompiler.CompileError("layernorm.cu", "sm_90", log);
        Assert.AreEqual("common.cuh", e.ErrorFile);
        Assert.AreEqual(33, e.Line);
        Assert.Contains("kernels/layernorm.cu", e.Message);
        Assert.Contains("common.cuh:33", e.Message);
        Assert.Contains("identifier \"fooo\" is undefined", e.Message);
        Assert.Contains("1 error detected", e.Message); // full log kept
    }

    [TestMethod]
    public void CublasLtStructLayoutsMatchTheHeader()
    {
        Assert.AreEqual(64, Marshal.SizeOf<CublasLtMatmulAlgo>());
        Assert.AreEqual(96, Marshal.SizeOf<CublasLtMatmulHeuristicResult>());
        Assert.AreEqual(64, (int)Marshal.OffsetOf<CublasLtMatmulHeuristicResult>(nameof(CublasLtMatmulHeuristicResult.WorkspaceSize)));
        Assert.AreEqual(72, (int)Marshal.OffsetOf<CublasLtMatmulHeuristicResult>(nameof(CublasLtMatmulHeuristicResult.State)));
        Assert.AreEqual(76, (int)Marshal.OffsetOf<CublasLtMatmulHeuristicResult>(nameof(CublasLtMatmulHeuristicResult.WavesCount)));
        Assert.AreEqual(80, (int)Marshal.OffsetOf<CublasLtMatmulHeuristicResult>("Reserved"));
        unsafe { Assert.AreEqual(96, sizeof(CublasLtMatmulHeuristicResult)); }
    }

    [TestMethod]
    public void GemmAlignmentIsLowestPowerOfTwoOfPointerAndStride()
    {
        Assert.AreEqual(256, CublasLtGemm.Alignment((nint)0x1000, 0, 2, 1));
        Assert.AreEqual(2, CublasLtGemm.Alignment((nint)0x1002, 0, 2, 1));
        Assert.AreEqual(16, CublasLtGemm.Alignment((nint)0x1010, 0, 4, 1));
        Assert.AreEqual(2, CublasLtGemm.Alignment((nint)0x1000, 3, 2, 2)); // stride of 3 bf16 = 6 bytes
        Assert.AreEqual(256, CublasLtGemm.Alignment((nint)0x1000, 3, 2, 1)); // stride unused without batches
    }
}
