using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FiberCuda.Native;

/// <summary>cublasLtMatmulAlgo_t: uint64_t data[8] (opaque, 64 bytes).</summary>
[StructLayout(LayoutKind.Sequential, Size = 64)]
public unsafe struct CublasLtMatmulAlgo
{
    public fixed ulong Data[8];
}

/// <summary>
/// cublasLtMatmulHeuristicResult_t { cublasLtMatmulAlgo_t algo; size_t workspaceSize; cublasStatus_t state;
/// float wavesCount; int reserved[4]; } — offsets 0, 64, 72, 76, 80; 96 bytes (checked by a test).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct CublasLtMatmulHeuristicResult
{
    public CublasLtMatmulAlgo Algo;
    public nuint WorkspaceSize;
    public int State;
    public float WavesCount;
    public fixed int Reserved[4];
}

/// <summary>cuBLASLt (cublasLt.h) via function pointers; all handles/descriptors are opaque pointers (nint).</summary>
public static unsafe class CublasLt
{
    // ---- cudaDataType_t (library_types.h) ----
    public const int CUDA_R_32F = 0;
    public const int CUDA_R_64F = 1;
    public const int CUDA_R_16F = 2;
    public const int CUDA_R_16BF = 14;

    // ---- cublasComputeType_t (cublas_api.h) ----
    public const int CUBLAS_COMPUTE_32F = 68;
    public const int CUBLAS_COMPUTE_32F_PEDANTIC = 69;
    public const int CUBLAS_COMPUTE_32F_FAST_TF32 = 77;

    // ---- cublasOperation_t ----
    public const int CUBLAS_OP_N = 0;
    public const int CUBLAS_OP_T = 1;

    // ---- cublasLtMatmulDescAttributes_t ----
    public const int CUBLASLT_MATMUL_DESC_COMPUTE_TYPE = 0;
    public const int CUBLASLT_MATMUL_DESC_SCALE_TYPE = 1;
    public const int CUBLASLT_MATMUL_DESC_POINTER_MODE = 2;
    public const int CUBLASLT_MATMUL_DESC_TRANSA = 3;       // int32 (cublasOperation_t)
    public const int CUBLASLT_MATMUL_DESC_TRANSB = 4;       // int32
    public const int CUBLASLT_MATMUL_DESC_EPILOGUE = 7;     // uint32 (cublasLtEpilogue_t)
    public const int CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8; // void*
    public const int CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE = 10; // int64, default 0 (same bias for every batch)
    public const int CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26;    // int32 (cudaDataType_t), default = D's type

    // ---- cublasLtEpilogue_t ----
    public const uint CUBLASLT_EPILOGUE_DEFAULT = 1;
    public const uint CUBLASLT_EPILOGUE_BIAS = 4;

    // ---- cublasLtMatrixLayoutAttribute_t ----
    public const int CUBLASLT_MATRIX_LAYOUT_TYPE = 0;
    public const int CUBLASLT_MATRIX_LAYOUT_ORDER = 1;
    public const int CUBLASLT_MATRIX_LAYOUT_ROWS = 2;
    public const int CUBLASLT_MATRIX_LAYOUT_COLS = 3;
    public const int CUBLASLT_MATRIX_LAYOUT_LD = 4;
    public const int CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT = 5;          // int32
    public const int CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET = 6; // int64, in elements

    // ---- cublasLtMatmulPreferenceAttributes_t ----
    public const int CUBLASLT_MATMUL_PREF_SEARCH_MODE = 0;
    public const int CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1; // uint64
    public const int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5; // uint32, default 256
    public const int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6;
    public const int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7;
    public const int CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8;

    // ---- cublasStatus_t ----
    public const int CUBLAS_STATUS_SUCCESS = 0;
    public const int CUBLAS_STATUS_NOT_SUPPORTED = 15;

    const string Lib = "cublasLt";
    static readonly object Gate = new();
    static volatile bool _loaded;

#pragma warning disable CS0649
    public static delegate* unmanaged[Cdecl]<nint*, int> cublasLtCreate;
    public static delegate* unmanaged[Cdecl]<nint, int> cublasLtDestroy;
    public static delegate* unmanaged[Cdecl]<nuint> cublasLtGetVersion;
    /// <summary>(desc*, cublasComputeType_t, cudaDataType_t scaleType)</summary>
    public static delegate* unmanaged[Cdecl]<nint*, int, int, int> cublasLtMatmulDescCreate;
    public static delegate* unmanaged[Cdecl]<nint, int> cublasLtMatmulDescDestroy;
    public static delegate* unmanaged[Cdecl]<nint, int, void*, nuint, int> cublasLtMatmulDescSetAttribute;
    /// <summary>(layout*, cudaDataType_t, uint64 rows, uint64 cols, int64 ld)</summary>
    public static delegate* unmanaged[Cdecl]<nint*, int, ulong, ulong, long, int> cublasLtMatrixLayoutCreate;
    public static delegate* unmanaged[Cdecl]<nint, int> cublasLtMatrixLayoutDestroy;
    public static delegate* unmanaged[Cdecl]<nint, int, void*, nuint, int> cublasLtMatrixLayoutSetAttribute;
    public static delegate* unmanaged[Cdecl]<nint*, int> cublasLtMatmulPreferenceCreate;
    public static delegate* unmanaged[Cdecl]<nint, int> cublasLtMatmulPreferenceDestroy;
    public static delegate* unmanaged[Cdecl]<nint, int, void*, nuint, int> cublasLtMatmulPreferenceSetAttribute;
    /// <summary>(handle, op, Adesc, Bdesc, Cdesc, Ddesc, pref, requested, results*, returned*)</summary>
    public static delegate* unmanaged[Cdecl]<nint, nint, nint, nint, nint, nint, nint, int, CublasLtMatmulHeuristicResult*, int*, int> cublasLtMatmulAlgoGetHeuristic;
    /// <summary>(handle, op, alpha*, A, Adesc, B, Bdesc, beta*, C, Cdesc, D, Ddesc, algo*, workspace, wsBytes, stream)</summary>
    public static delegate* unmanaged[Cdecl]<nint, nint, void*, nint, nint, nint, nint, void*, nint, nint, nint, nint, CublasLtMatmulAlgo*, nint, nuint, nint, int> cublasLtMatmul;
#pragma warning restore CS0649

    public static string? LibraryPath => CudaLibraryResolver.LoadedPath(Lib);

    public static void Load()
    {
        if (_loaded) return;
        lock (Gate)
        {
            if (_loaded) return;
            var h = CudaLibraryResolver.Load(Lib);
            nint S(string name) => CudaLibraryResolver.Export(Lib, h, name);
            cublasLtCreate = (delegate* unmanaged[Cdecl]<nint*, int>)S("cublasLtCreate");
            cublasLtDestroy = (delegate* unmanaged[Cdecl]<nint, int>)S("cublasLtDestroy");
            cublasLtGetVersion = (delegate* unmanaged[Cdecl]<nuint>)S("cublasLtGetVersion");
            cublasLtMatmulDescCreate = (delegate* unmanaged[Cdecl]<nint*, int, int, int>)S("cublasLtMatmulDescCreate");
            cublasLtMatmulDescDestroy = (delegate* unmanaged[Cdecl]<nint, int>)S("cublasLtMatmulDescDestroy");
            cublasLtMatmulDescSetAttribute = (delegate* unmanaged[Cdecl]<nint, int, void*, nuint, int>)S("cublasLtMatmulDescSetAttribute");
            cublasLtMatrixLayoutCreate = (delegate* unmanaged[Cdecl]<nint*, int, ulong, ulong, long, int>)S("cublasLtMatrixLayoutCreate");
            cublasLtMatrixLayoutDestroy = (delegate* unmanaged[Cdecl]<nint, int>)S("cublasLtMatrixLayoutDestroy");
            cublasLtMatrixLayoutSetAttribute = (delegate* unmanaged[Cdecl]<nint, int, void*, nuint, int>)S("cublasLtMatrixLayoutSetAttribute");
            cublasLtMatmulPreferenceCreate = (delegate* unmanaged[Cdecl]<nint*, int>)S("cublasLtMatmulPreferenceCreate");
            cublasLtMatmulPreferenceDestroy = (delegate* unmanaged[Cdecl]<nint, int>)S("cublasLtMatmulPreferenceDestroy");
            cublasLtMatmulPreferenceSetAttribute = (delegate* unmanaged[Cdecl]<nint, int, void*, nuint, int>)S("cublasLtMatmulPreferenceSetAttribute");
            cublasLtMatmulAlgoGetHeuristic = (delegate* unmanaged[Cdecl]<nint, nint, nint, nint, nint, nint, nint, int, CublasLtMatmulHeuristicResult*, int*, int>)S("cublasLtMatmulAlgoGetHeuristic");
            cublasLtMatmul = (delegate* unmanaged[Cdecl]<nint, nint, void*, nint, nint, nint, nint, void*, nint, nint, nint, nint, CublasLtMatmulAlgo*, nint, nuint, nint, int>)S("cublasLtMatmul");
            _loaded = true;
        }
    }

    /// <summary>cublasStatus_t names (cublas_api.h); shared by cuBLAS and cuBLASLt.</summary>
    public static string StatusName(int status) => status switch
    {
        0 => "CUBLAS_STATUS_SUCCESS", 1 => "CUBLAS_STATUS_NOT_INITIALIZED", 3 => "CUBLAS_STATUS_ALLOC_FAILED",
        7 => "CUBLAS_STATUS_INVALID_VALUE", 8 => "CUBLAS_STATUS_ARCH_MISMATCH", 11 => "CUBLAS_STATUS_MAPPING_ERROR",
        13 => "CUBLAS_STATUS_EXECUTION_FAILED", 14 => "CUBLAS_STATUS_INTERNAL_ERROR", 15 => "CUBLAS_STATUS_NOT_SUPPORTED",
        16 => "CUBLAS_STATUS_LICENSE_ERROR", _ => $"cublasStatus {status}",
    };

    public static string StatusText(int status) => status switch
    {
        0 => "success", 1 => "library not initialized (handle not created or created in another context)",
        3 => "resource allocation failed", 7 => "unsupported value or parameter (shape, leading dimension, alignment or attribute)",
        8 => "feature absent on this GPU architecture", 11 => "GPU memory access failed",
        13 => "GPU program failed to execute", 14 => "internal cuBLAS failure",
        15 => "this combination of types/layouts/epilogue is not supported", 16 => "license error",
        _ => "unknown status",
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Check(int status, string? context = null,
        [CallerArgumentExpression(nameof(status))] string? call = null,
        [CallerMemberName] string? member = null, [CallerFilePath] string? file = null, [CallerLineNumber] int line = 0)
    {
        if (status != CUBLAS_STATUS_SUCCESS)
            throw new CudaException("cuBLASLt", status, StatusName(status), StatusText(status), call, member, file, line, context);
    }

    // Attribute helpers: the value is passed by address with its exact C size.
    public static int SetDesc<T>(nint desc, int attr, T value) where T : unmanaged =>
        cublasLtMatmulDescSetAttribute(desc, attr, &value, (nuint)sizeof(T));
    public static int SetLayout<T>(nint layout, int attr, T value) where T : unmanaged =>
        cublasLtMatrixLayoutSetAttribute(layout, attr, &value, (nuint)sizeof(T));
    public static int SetPref<T>(nint pref, int attr, T value) where T : unmanaged =>
        cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, (nuint)sizeof(T));
}

/// <summary>
/// cuBLAS (cublas_v2 ABI) — only what a direct comparison or a fallback needs. The GEMM path of the engine
/// is cuBLASLt; this is loaded lazily and never by the CPU backend.
/// </summary>
public static unsafe class Cublas
{
    const string Lib = "cublas";
    static readonly object Gate = new();
    static volatile bool _loaded;

#pragma warning disable CS0649
    public static delegate* unmanaged[Cdecl]<nint*, int> cublasCreate_v2;
    public static delegate* unmanaged[Cdecl]<nint, int> cublasDestroy_v2;
    public static delegate* unmanaged[Cdecl]<nint, int*, int> cublasGetVersion_v2;
    public static delegate* unmanaged[Cdecl]<nint, nint, int> cublasSetStream_v2;
    /// <summary>(handle, workspace, bytes) — call after every cublasSetStream (which resets the workspace).</summary>
    public static delegate* unmanaged[Cdecl]<nint, nint, nuint, int> cublasSetWorkspace_v2;
    /// <summary>
    /// (handle, transa, transb, m, n, k, alpha*, A, Atype, lda, strideA(int64), B, Btype, ldb, strideB, beta*, C, Ctype, ldc,
    /// strideC, batchCount, computeType, cublasGemmAlgo_t) — unsuffixed in the ABI.
    /// </summary>
    public static delegate* unmanaged[Cdecl]<nint, int, int, int, int, int, void*, nint, int, int, long, nint, int, int, long, void*, nint, int, int, long, int, int, int, int> cublasGemmStridedBatchedEx;
#pragma warning restore CS0649

    /// <summary>cublasGemmAlgo_t CUBLAS_GEMM_DEFAULT.</summary>
    public const int CUBLAS_GEMM_DEFAULT = -1;

    public static void Load()
    {
        if (_loaded) return;
        lock (Gate)
        {
            if (_loaded) return;
            var h = CudaLibraryResolver.Load(Lib);
            nint S(string name) => CudaLibraryResolver.Export(Lib, h, name);
            cublasCreate_v2 = (delegate* unmanaged[Cdecl]<nint*, int>)S("cublasCreate_v2");
            cublasDestroy_v2 = (delegate* unmanaged[Cdecl]<nint, int>)S("cublasDestroy_v2");
            cublasGetVersion_v2 = (delegate* unmanaged[Cdecl]<nint, int*, int>)S("cublasGetVersion_v2");
            cublasSetStream_v2 = (delegate* unmanaged[Cdecl]<nint, nint, int>)S("cublasSetStream_v2");
            cublasSetWorkspace_v2 = (delegate* unmanaged[Cdecl]<nint, nint, nuint, int>)S("cublasSetWorkspace_v2");
            cublasGemmStridedBatchedEx = (delegate* unmanaged[Cdecl]<nint, int, int, int, int, int, void*, nint, int, int, long, nint, int, int, long, void*, nint, int, int, long, int, int, int, int>)S("cublasGemmStridedBatchedEx");
            _loaded = true;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Check(int status, string? context = null,
        [CallerArgumentExpression(nameof(status))] string? call = null,
        [CallerMemberName] string? member = null, [CallerFilePath] string? file = null, [CallerLineNumber] int line = 0)
    {
        if (status != CublasLt.CUBLAS_STATUS_SUCCESS)
            throw new CudaException("cuBLAS", status, CublasLt.StatusName(status), CublasLt.StatusText(status), call, member, file, line, context);
    }
}
