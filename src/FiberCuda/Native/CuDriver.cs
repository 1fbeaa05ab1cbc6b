using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using FiberCuda.Runtime;

namespace FiberCuda.Native;

/// <summary>
/// CUDA driver API (cuda.h) through function pointers resolved at run time from libcuda.so.1.
/// Types: CUresult/CUdevice/enums = int; CUdeviceptr = ulong (unsigned long long); size_t = nuint;
/// CUcontext/CUstream/CUevent/CUmodule/CUfunction = nint (opaque pointers). ABI names (_v2) as the header maps them.
/// </summary>
public static unsafe class CuDriver
{
    // ---- CUresult values we test for (cuda.h) ----
    public const int CUDA_SUCCESS = 0;
    public const int CUDA_ERROR_INVALID_VALUE = 1;
    public const int CUDA_ERROR_OUT_OF_MEMORY = 2;
    public const int CUDA_ERROR_NOT_INITIALIZED = 3;
    public const int CUDA_ERROR_STUB_LIBRARY = 34;
    public const int CUDA_ERROR_NO_DEVICE = 100;
    public const int CUDA_ERROR_INVALID_DEVICE = 101;
    public const int CUDA_ERROR_INVALID_CONTEXT = 201;
    public const int CUDA_ERROR_NOT_READY = 600;

    // ---- CUdevice_attribute (cuda.h) ----
    public const int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK = 8;
    public const int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
    public const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
    public const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
    public const int CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97;
    public const int CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED = 115;

    // ---- CUfunction_attribute ----
    public const int CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 0;
    public const int CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1;
    public const int CU_FUNC_ATTRIBUTE_NUM_REGS = 4;
    public const int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

    // ---- CUstream_flags / CUevent_flags ----
    public const uint CU_STREAM_NON_BLOCKING = 1; // no implicit sync with the legacy NULL stream
    public const uint CU_EVENT_DEFAULT = 0;       // timing enabled

    // ---- CUjit_option ----
    public const int CU_JIT_ERROR_LOG_BUFFER = 5;
    public const int CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;

    const string Lib = "cuda";
    static readonly object Gate = new();
    static volatile bool _loaded;

#pragma warning disable CS0649 // assigned through the function-pointer table in Load()
    public static delegate* unmanaged[Cdecl]<uint, int> cuInit;
    public static delegate* unmanaged[Cdecl]<int*, int> cuDriverGetVersion;
    public static delegate* unmanaged[Cdecl]<int, byte**, int> cuGetErrorName;
    public static delegate* unmanaged[Cdecl]<int, byte**, int> cuGetErrorString;
    public static delegate* unmanaged[Cdecl]<int*, int> cuDeviceGetCount;
    public static delegate* unmanaged[Cdecl]<int*, int, int> cuDeviceGet;
    public static delegate* unmanaged[Cdecl]<byte*, int, int, int> cuDeviceGetName;
    public static delegate* unmanaged[Cdecl]<int*, int, int, int> cuDeviceGetAttribute;
    public static delegate* unmanaged[Cdecl]<nuint*, int, int> cuDeviceTotalMem_v2;
    public static delegate* unmanaged[Cdecl]<nint*, int, int> cuDevicePrimaryCtxRetain;
    public static delegate* unmanaged[Cdecl]<int, int> cuDevicePrimaryCtxRelease_v2;
    public static delegate* unmanaged[Cdecl]<nint, int> cuCtxSetCurrent;
    public static delegate* unmanaged[Cdecl]<nint*, int> cuCtxGetCurrent;
    public static delegate* unmanaged[Cdecl]<int> cuCtxSynchronize;
    public static delegate* unmanaged[Cdecl]<nuint*, nuint*, int> cuMemGetInfo_v2;

    public static delegate* unmanaged[Cdecl]<nint*, uint, int> cuStreamCreate;
    public static delegate* unmanaged[Cdecl]<nint, int> cuStreamDestroy_v2;
    public static delegate* unmanaged[Cdecl]<nint, int> cuStreamSynchronize;

    public static delegate* unmanaged[Cdecl]<nint*, uint, int> cuEventCreate;
    public static delegate* unmanaged[Cdecl]<nint, nint, int> cuEventRecord;
    public static delegate* unmanaged[Cdecl]<nint, int> cuEventSynchronize;
    public static delegate* unmanaged[Cdecl]<float*, nint, nint, int> cuEventElapsedTime; // _v2 when exported
    public static delegate* unmanaged[Cdecl]<nint, int> cuEventDestroy_v2;

    public static delegate* unmanaged[Cdecl]<ulong*, nuint, int> cuMemAlloc_v2;
    public static delegate* unmanaged[Cdecl]<ulong, int> cuMemFree_v2;
    public static delegate* unmanaged[Cdecl]<void**, nuint, int> cuMemAllocHost_v2;
    public static delegate* unmanaged[Cdecl]<void*, int> cuMemFreeHost;
    public static delegate* unmanaged[Cdecl]<ulong, void*, nuint, nint, int> cuMemcpyHtoDAsync_v2;
    public static delegate* unmanaged[Cdecl]<void*, ulong, nuint, nint, int> cuMemcpyDtoHAsync_v2;
    public static delegate* unmanaged[Cdecl]<ulong, ulong, nuint, nint, int> cuMemcpyDtoDAsync_v2;
    public static delegate* unmanaged[Cdecl]<ulong, byte, nuint, nint, int> cuMemsetD8Async;
    public static delegate* unmanaged[Cdecl]<ulong, ushort, nuint, nint, int> cuMemsetD16Async;
    public static delegate* unmanaged[Cdecl]<ulong, uint, nuint, nint, int> cuMemsetD32Async;
    /// <summary>Stream-ordered allocator (CUDA 11.2+); null when not exported.</summary>
    public static delegate* unmanaged[Cdecl]<ulong*, nuint, nint, int> cuMemAllocAsync;
    public static delegate* unmanaged[Cdecl]<ulong, nint, int> cuMemFreeAsync;

    /// <summary>(module*, image, numOptions, CUjit_option*, void** optionValues)</summary>
    public static delegate* unmanaged[Cdecl]<nint*, void*, uint, int*, void**, int> cuModuleLoadDataEx;
    public static delegate* unmanaged[Cdecl]<nint, int> cuModuleUnload;
    public static delegate* unmanaged[Cdecl]<nint*, nint, byte*, int> cuModuleGetFunction;
    public static delegate* unmanaged[Cdecl]<nint, int, int, int> cuFuncSetAttribute;
    public static delegate* unmanaged[Cdecl]<int*, int, nint, int> cuFuncGetAttribute;
    /// <summary>(f, gridX, gridY, gridZ, blockX, blockY, blockZ, sharedMemBytes, stream, void** kernelParams, void** extra)</summary>
    public static delegate* unmanaged[Cdecl]<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int> cuLaunchKernel;
#pragma warning restore CS0649

    public static string? LibraryPath => CudaLibraryResolver.LoadedPath(Lib);

    /// <summary>Loads libcuda.so.1 and binds every entry point (throws <see cref="GpuNotAvailableException"/>).</summary>
    public static void Load()
    {
        if (_loaded) return;
        lock (Gate)
        {
            if (_loaded) return;
            var h = CudaLibraryResolver.Load(Lib);
            nint S(string name) => CudaLibraryResolver.Export(Lib, h, name);
            cuInit = (delegate* unmanaged[Cdecl]<uint, int>)S("cuInit");
            cuDriverGetVersion = (delegate* unmanaged[Cdecl]<int*, int>)S("cuDriverGetVersion");
            cuGetErrorName = (delegate* unmanaged[Cdecl]<int, byte**, int>)S("cuGetErrorName");
            cuGetErrorString = (delegate* unmanaged[Cdecl]<int, byte**, int>)S("cuGetErrorString");
            cuDeviceGetCount = (delegate* unmanaged[Cdecl]<int*, int>)S("cuDeviceGetCount");
            cuDeviceGet = (delegate* unmanaged[Cdecl]<int*, int, int>)S("cuDeviceGet");
            cuDeviceGetName = (delegate* unmanaged[Cdecl]<byte*, int, int, int>)S("cuDeviceGetName");
            cuDeviceGetAttribute = (delegate* unmanaged[Cdecl]<int*, int, int, int>)S("cuDeviceGetAttribute");
            cuDeviceTotalMem_v2 = (delegate* unmanaged[Cdecl]<nuint*, int, int>)S("cuDeviceTotalMem_v2");
            cuDevicePrimaryCtxRetain = (delegate* unmanaged[Cdecl]<nint*, int, int>)S("cuDevicePrimaryCtxRetain");
            cuDevicePrimaryCtxRelease_v2 = (delegate* unmanaged[Cdecl]<int, int>)S("cuDevicePrimaryCtxRelease_v2");
            cuCtxSetCurrent = (delegate* unmanaged[Cdecl]<nint, int>)S("cuCtxSetCurrent");
            cuCtxGetCurrent = (delegate* unmanaged[Cdecl]<nint*, int>)S("cuCtxGetCurrent");
            // Plain cuCtxSynchronize: CUDA 13's cuCtxSynchronize_v2 takes a context argument (different signature).
            cuCtxSynchronize = (delegate* unmanaged[Cdecl]<int>)S("cuCtxSynchronize");
            cuMemGetInfo_v2 = (delegate* unmanaged[Cdecl]<nuint*, nuint*, int>)S("cuMemGetInfo_v2");
            cuStreamCreate = (delegate* unmanaged[Cdecl]<nint*, uint, int>)S("cuStreamCreate");
            cuStreamDestroy_v2 = (delegate* unmanaged[Cdecl]<nint, int>)S("cuStreamDestroy_v2");
            cuStreamSynchronize = (delegate* unmanaged[Cdecl]<nint, int>)S("cuStreamSynchronize");
            cuEventCreate = (delegate* unmanaged[Cdecl]<nint*, uint, int>)S("cuEventCreate");
            cuEventRecord = (delegate* unmanaged[Cdecl]<nint, nint, int>)S("cuEventRecord");
            cuEventSynchronize = (delegate* unmanaged[Cdecl]<nint, int>)S("cuEventSynchronize");
            // cuEventElapsedTime_v2 (12.8+) has the same signature; the unsuffixed one stays for old drivers.
            var et = CudaLibraryResolver.TryExport(h, "cuEventElapsedTime_v2");
            cuEventElapsedTime = (delegate* unmanaged[Cdecl]<float*, nint, nint, int>)(et != 0 ? et : S("cuEventElapsedTime"));
            cuEventDestroy_v2 = (delegate* unmanaged[Cdecl]<nint, int>)S("cuEventDestroy_v2");
            cuMemAlloc_v2 = (delegate* unmanaged[Cdecl]<ulong*, nuint, int>)S("cuMemAlloc_v2");
            cuMemFree_v2 = (delegate* unmanaged[Cdecl]<ulong, int>)S("cuMemFree_v2");
            cuMemAllocHost_v2 = (delegate* unmanaged[Cdecl]<void**, nuint, int>)S("cuMemAllocHost_v2");
            cuMemFreeHost = (delegate* unmanaged[Cdecl]<void*, int>)S("cuMemFreeHost");
            cuMemcpyHtoDAsync_v2 = (delegate* unmanaged[Cdecl]<ulong, void*, nuint, nint, int>)S("cuMemcpyHtoDAsync_v2");
            cuMemcpyDtoHAsync_v2 = (delegate* unmanaged[Cdecl]<void*, ulong, nuint, nint, int>)S("cuMemcpyDtoHAsync_v2");
            cuMemcpyDtoDAsync_v2 = (delegate* unmanaged[Cdecl]<ulong, ulong, nuint, nint, int>)S("cuMemcpyDtoDAsync_v2");
            cuMemsetD8Async = (delegate* unmanaged[Cdecl]<ulong, byte, nuint, nint, int>)S("cuMemsetD8Async");
            cuMemsetD16Async = (delegate* unmanaged[Cdecl]<ulong, ushort, nuint, nint, int>)S("cuMemsetD16Async");
            cuMemsetD32Async = (delegate* unmanaged[Cdecl]<ulong, uint, nuint, nint, int>)S("cuMemsetD32Async");
            cuMemAllocAsync = (delegate* unmanaged[Cdecl]<ulong*, nuint, nint, int>)CudaLibraryResolver.TryExport(h, "cuMemAllocAsync");
            cuMemFreeAsync = (delegate* unmanaged[Cdecl]<ulong, nint, int>)CudaLibraryResolver.TryExport(h, "cuMemFreeAsync");
            cuModuleLoadDataEx = (delegate* unmanaged[Cdecl]<nint*, void*, uint, int*, void**, int>)S("cuModuleLoadDataEx");
            cuModuleUnload = (delegate* unmanaged[Cdecl]<nint, int>)S("cuModuleUnload");
            cuModuleGetFunction = (delegate* unmanaged[Cdecl]<nint*, nint, byte*, int>)S("cuModuleGetFunction");
            cuFuncSetAttribute = (delegate* unmanaged[Cdecl]<nint, int, int, int>)S("cuFuncSetAttribute");
            cuFuncGetAttribute = (delegate* unmanaged[Cdecl]<int*, int, nint, int>)S("cuFuncGetAttribute");
            cuLaunchKernel = (delegate* unmanaged[Cdecl]<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int>)S("cuLaunchKernel");
            _loaded = true;
        }
    }

    /// <summary>Symbolic name of a CUresult (falls back to a small table when the driver cannot say).</summary>
    public static string ErrorName(int code)
    {
        if (_loaded)
        {
            byte* s = null;
            if (cuGetErrorName(code, &s) == CUDA_SUCCESS && s != null) return Marshal.PtrToStringUTF8((nint)s) ?? "?";
        }
        return code switch
        {
            0 => "CUDA_SUCCESS", 1 => "CUDA_ERROR_INVALID_VALUE", 2 => "CUDA_ERROR_OUT_OF_MEMORY",
            3 => "CUDA_ERROR_NOT_INITIALIZED", 4 => "CUDA_ERROR_DEINITIALIZED", 34 => "CUDA_ERROR_STUB_LIBRARY",
            35 => "CUDA_ERROR_INSUFFICIENT_DRIVER", 100 => "CUDA_ERROR_NO_DEVICE", 101 => "CUDA_ERROR_INVALID_DEVICE",
            200 => "CUDA_ERROR_INVALID_IMAGE", 201 => "CUDA_ERROR_INVALID_CONTEXT", 209 => "CUDA_ERROR_NO_BINARY_FOR_GPU",
            218 => "CUDA_ERROR_INVALID_PTX", 222 => "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", 400 => "CUDA_ERROR_INVALID_HANDLE",
            500 => "CUDA_ERROR_NOT_FOUND", 600 => "CUDA_ERROR_NOT_READY", 700 => "CUDA_ERROR_ILLEGAL_ADDRESS",
            701 => "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", 702 => "CUDA_ERROR_LAUNCH_TIMEOUT",
            710 => "CUDA_ERROR_ASSERT", 716 => "CUDA_ERROR_MISALIGNED_ADDRESS", 719 => "CUDA_ERROR_LAUNCH_FAILED",
            _ => $"CUresult {code}",
        };
    }

    public static string ErrorString(int code)
    {
        if (_loaded)
        {
            byte* s = null;
            if (cuGetErrorString(code, &s) == CUDA_SUCCESS && s != null) return Marshal.PtrToStringUTF8((nint)s) ?? "?";
        }
        return "(no description: driver not loaded)";
    }

    /// <summary>Throws <see cref="CudaException"/> (or <see cref="CudaOutOfMemoryException"/>) naming the call site.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Check(int result, string? context = null,
        [CallerArgumentExpression(nameof(result))] string? call = null,
        [CallerMemberName] string? member = null, [CallerFilePath] string? file = null, [CallerLineNumber] int line = 0)
    {
        if (result != CUDA_SUCCESS) Throw(result, context, call, member, file, line);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void Throw(int result, string? context, string? call, string? member, string? file, int line)
    {
        if (result == CUDA_ERROR_OUT_OF_MEMORY)
            throw new CudaOutOfMemoryException("CUDA driver", result, ErrorName(result), ErrorString(result), call, member, file, line, context);
        throw new CudaException("CUDA driver", result, ErrorName(result), ErrorString(result), call, member, file, line, context);
    }
}
