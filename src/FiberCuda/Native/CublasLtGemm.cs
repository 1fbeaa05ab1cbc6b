using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Native;

/// <summary>
/// Row-major <see cref="GemmDesc"/> on cuBLASLt (column-major). Row-major C (M×N) is column-major Cᵀ (N×M, ld N),
/// so we compute Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLASLt's A is our B, its B is our A, m = N, n = M, k = K, and each
/// operand's op is just our Trans flag (a row-major matrix read column-major is already its transpose).
/// Descriptors, layouts and the heuristic's algorithm are cached per (shape, dtypes, flags, alignments).
/// </summary>
public sealed unsafe class CublasLtGemm : IDisposable
{
    /// <summary>32 MiB: what Hopper kernels want (llm.c, ggml); harmless elsewhere.</summary>
    public const long WorkspaceBytes = 32L << 20;

    readonly nint _stream;
    readonly Func<long, nint> _malloc;
    readonly Action<nint> _free;
    readonly object _lock = new();
    readonly Dictionary<GemmKey, Plan> _plans = new();
    nint _handle, _workspace, _ones;
    long _onesCount;
    DType _onesType;
    bool _disposed;

    /// <summary>fp32 GEMMs may use TF32 tensor cores only when FIBER_ALLOW_TF32=1 (reference tolerances assume full fp32).</summary>
    public bool AllowTf32 { get; init; } = Environment.GetEnvironmentVariable("FIBER_ALLOW_TF32") == "1";

    public nint Handle => _handle;
    public nint Workspace => _workspace;
    public nint Stream => _stream;
    public int CachedPlans { get { lock (_lock) return _plans.Count; } }
    /// <summary>How many cached shapes add the bias with a second rank-1 GEMM because the epilogue was refused.</summary>
    public int BiasFallbackPlans { get { lock (_lock) return _plans.Values.Count(p => p.BiasViaRank1); } }
    public static nuint Version { get { CublasLt.Load(); return CublasLt.cublasLtGetVersion(); } }

    public CublasLtGemm(nint stream, Func<long, nint> malloc, Action<nint> free)
    {
        CublasLt.Load();
        _stream = stream; _malloc = malloc; _free = free;
        nint h;
        CublasLt.Check(CublasLt.cublasLtCreate(&h));
        _handle = h;
        _workspace = _malloc(WorkspaceBytes);
    }

    readonly record struct GemmKey(
        int M, int N, int K, bool TransA, bool TransB, DType AB, DType C, bool HasBias, DType BiasType,
        int Batch, long StrideA, long StrideB, long StrideC, int AlignA, int AlignB, int AlignC, bool Tf32);

    internal sealed class Plan
    {
        public nint Desc, LayoutA, LayoutB, LayoutC; // cuBLASLt's A (= our B), B (= our A), C = D
        public CublasLtMatmulAlgo Algo;
        public nuint WorkspaceNeeded;
        public bool BiasEpilogue, BiasViaRank1;

        public void Destroy()
        {
            if (LayoutA != 0) CublasLt.cublasLtMatrixLayoutDestroy(LayoutA);
            if (LayoutB != 0) CublasLt.cublasLtMatrixLayoutDestroy(LayoutB);
            if (LayoutC != 0) CublasLt.cublasLtMatrixLayoutDestroy(LayoutC);
            if (Desc != 0) CublasLt.cublasLtMatmulDescDestroy(Desc);
            LayoutA = LayoutB = LayoutC = Desc = 0;
        }
    }

    static int CudaType(DType t) => t switch
    {
        DType.F32 => CublasLt.CUDA_R_32F,
        DType.BF16 => CublasLt.CUDA_R_16BF,
        _ => throw new NotSupportedException($"cuBLASLt GEMM: dtype {t.Name()} is not supported (f32, bf16 only)"),
    };

    /// <summary>Largest power of two (≤ 256) dividing the address and, for batches, the batch stride in bytes.</summary>
    internal static int Alignment(nint ptr, long strideElems, int elemSize, int batch)
    {
        ulong v = (ulong)ptr | (batch > 1 ? (ulong)(strideElems * elemSize) : 0UL) | 256UL;
        return (int)(v & (~v + 1));
    }

    static void Validate(in GemmDesc g)
    {
        if (g.M < 0 || g.N < 0 || g.K < 0 || g.Batch < 1)
            throw new ArgumentException($"bad GEMM shape M={g.M} N={g.N} K={g.K} batch={g.Batch}");
        bool ok = (g.ABType, g.CType) is (DType.BF16, DType.BF16) or (DType.BF16, DType.F32) or (DType.F32, DType.F32);
        if (!ok) throw new NotSupportedException($"cuBLASLt GEMM: A/B {g.ABType.Name()} with C {g.CType.Name()} is not supported " +
                                                 "(bf16→bf16, bf16→f32, f32→f32)");
        if (g.Bias != 0 && g.BiasType is not (DType.F32 or DType.BF16))
            throw new NotSupportedException($"cuBLASLt GEMM: bias dtype {g.BiasType.Name()}");
        if (g.A == 0 || g.B == 0 || g.C == 0) throw new ArgumentException("GEMM operand pointer is null");
    }

    GemmKey KeyOf(in GemmDesc g)
    {
        int ab = g.ABType.Size(), c = g.CType.Size();
        return new GemmKey(g.M, g.N, g.K, g.TransA, g.TransB, g.ABType, g.CType, g.Bias != 0, g.Bias != 0 ? g.BiasType : g.CType,
            g.Batch, g.Batch > 1 ? g.StrideA : 0, g.Batch > 1 ? g.StrideB : 0, g.Batch > 1 ? g.StrideC : 0,
            Alignment(g.A, g.StrideA, ab, g.Batch), Alignment(g.B, g.StrideB, ab, g.Batch), Alignment(g.C, g.StrideC, c, g.Batch),
            g.ABType == DType.F32 && AllowTf32);
    }

    /// <summary>The engine path: cached plan, bias epilogue (or the rank-1 fallback).</summary>
    public void Gemm(in GemmDesc g)
    {
        Validate(g);
        if (g.M == 0 || g.N == 0) return;
        if (g.K == 0) throw new NotSupportedException("cuBLASLt GEMM with K = 0 (C = beta·C + bias) is not implemented");
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var key = KeyOf(g);
            if (!_plans.TryGetValue(key, out var plan))
            {
                plan = Build(key, withBias: key.HasBias, throwIfNone: !key.HasBias);
                if (plan is null)
                {
                    // cuBLASLt refused the bias epilogue for this combination: plain GEMM, then C += ones(M×1)·bias(1×N).
                    plan = Build(key, withBias: false, throwIfNone: true)!;
                    plan.BiasViaRank1 = true;
                    if (key.BiasType != key.C && !(key.BiasType == DType.BF16 && key.C == DType.F32))
                    {
                        plan.Destroy();
                        throw new NotSupportedException($"cuBLASLt has no bias epilogue for C {key.C.Name()} with bias {key.BiasType.Name()}, " +
                                                        "and the rank-1 fallback needs bias dtype = C dtype (or bf16 bias with f32 C)");
                    }
                }
                _plans[key] = plan;
            }
            Run(plan, g);
            if (plan.BiasViaRank1) AddBiasRank1(g);
        }
    }

    void AddBiasRank1(in GemmDesc g)
    {
        var r = RankOneBias(g, Ones(g.BiasType, g.M));
        var key = KeyOf(r);
        if (!_plans.TryGetValue(key, out var plan)) _plans[key] = plan = Build(key, withBias: false, throwIfNone: true)!;
        Run(plan, r);
    }

    /// <summary>
    /// C += ones(M×1)·bias(1×N) as a GEMM: A = <paramref name="ones"/> (≥ M elements of the bias dtype), B = bias,
    /// beta = 1 keeps the product already in C; the bias is broadcast over batches (strides 0).
    /// </summary>
    internal static GemmDesc RankOneBias(in GemmDesc g, nint ones) =>
        new(ones, g.Bias, g.C, 0, g.BiasType, g.CType, g.BiasType, g.M, g.N, 1, false, false, 1f, 1f, g.Batch, 0, 0, g.StrideC);

    nint Ones(DType t, long count)
    {
        if (_ones != 0 && _onesType == t && _onesCount >= count) return _ones;
        if (_ones != 0) { _free(_ones); _ones = 0; }
        long n = Math.Max(count, 1024);
        _ones = _malloc(n * t.Size());
        // 1.0 as a bit pattern, so no kernel is needed: f32 0x3F800000, bf16 0x3F80.
        if (t == DType.F32) CuDriver.Check(CuDriver.cuMemsetD32Async((ulong)_ones, 0x3F800000u, (nuint)n, _stream));
        else CuDriver.Check(CuDriver.cuMemsetD16Async((ulong)_ones, (ushort)0x3F80, (nuint)n, _stream));
        _onesType = t; _onesCount = n;
        return _ones;
    }

    void Run(Plan plan, in GemmDesc g)
    {
        float alpha = g.Alpha, beta = g.Beta;
        if (plan.BiasEpilogue)
        {
            nint bias = g.Bias;
            CublasLt.Check(CublasLt.SetDesc(plan.Desc, CublasLt.CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias));
        }
        var algo = plan.Algo;
        CublasLt.Check(CublasLt.cublasLtMatmul(_handle, plan.Desc, &alpha, g.B, plan.LayoutA, g.A, plan.LayoutB, &beta,
                                               g.C, plan.LayoutC, g.C, plan.LayoutC, &algo, _workspace, (nuint)WorkspaceBytes, _stream),
                       Describe(g));
    }

    static string Describe(in GemmDesc g) =>
        $"GEMM M={g.M} N={g.N} K={g.K} transA={g.TransA} transB={g.TransB} A/B={g.ABType.Name()} C={g.CType.Name()} " +
        $"bias={(g.Bias != 0 ? g.BiasType.Name() : "none")} batch={g.Batch} strides=({g.StrideA},{g.StrideB},{g.StrideC}) " +
        $"alpha={g.Alpha} beta={g.Beta} A=0x{g.A:x} B=0x{g.B:x} C=0x{g.C:x}";

    static nint Layout(int type, long rows, long cols, long ld, int batch, long stride)
    {
        nint l;
        CublasLt.Check(CublasLt.cublasLtMatrixLayoutCreate(&l, type, (ulong)rows, (ulong)cols, ld));
        if (batch > 1)
        {
            CublasLt.Check(CublasLt.SetLayout(l, CublasLt.CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, batch));
            CublasLt.Check(CublasLt.SetLayout(l, CublasLt.CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, stride));
        }
        return l;
    }

    /// <summary>Descriptors + heuristic for one key; null when no algorithm exists and <paramref name="throwIfNone"/> is false.</summary>
    Plan? Build(in GemmKey k, bool withBias, bool throwIfNone)
    {
        var p = new Plan { BiasEpilogue = withBias };
        nint pref = 0;
        try
        {
            int compute = k.Tf32 ? CublasLt.CUBLAS_COMPUTE_32F_FAST_TF32 : CublasLt.CUBLAS_COMPUTE_32F;
            nint desc;
            CublasLt.Check(CublasLt.cublasLtMatmulDescCreate(&desc, compute, CublasLt.CUDA_R_32F));
            p.Desc = desc;
            CublasLt.Check(CublasLt.SetDesc(desc, CublasLt.CUBLASLT_MATMUL_DESC_TRANSA, k.TransB ? CublasLt.CUBLAS_OP_T : CublasLt.CUBLAS_OP_N));
            CublasLt.Check(CublasLt.SetDesc(desc, CublasLt.CUBLASLT_MATMUL_DESC_TRANSB, k.TransA ? CublasLt.CUBLAS_OP_T : CublasLt.CUBLAS_OP_N));
            if (withBias)
            {
                CublasLt.Check(CublasLt.SetDesc(desc, CublasLt.CUBLASLT_MATMUL_DESC_EPILOGUE, CublasLt.CUBLASLT_EPILOGUE_BIAS));
                if (k.BiasType != k.C)
                {
                    int sa = CublasLt.SetDesc(desc, CublasLt.CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, CudaType(k.BiasType));
                    if (sa != CublasLt.CUBLAS_STATUS_SUCCESS && !throwIfNone) { p.Destroy(); return null; }
                    CublasLt.Check(sa, "bias data type");
                }
            }
            int ab = CudaType(k.AB), c = CudaType(k.C);
            // Stored shapes (before op), column-major: our row-major B is N×K (ld N) or, transposed, K×N (ld K).
            p.LayoutA = k.TransB ? Layout(ab, k.K, k.N, k.K, k.Batch, k.StrideB) : Layout(ab, k.N, k.K, k.N, k.Batch, k.StrideB);
            p.LayoutB = k.TransA ? Layout(ab, k.M, k.K, k.M, k.Batch, k.StrideA) : Layout(ab, k.K, k.M, k.K, k.Batch, k.StrideA);
            p.LayoutC = Layout(c, k.N, k.M, k.N, k.Batch, k.StrideC);

            nint pr;
            CublasLt.Check(CublasLt.cublasLtMatmulPreferenceCreate(&pr));
            pref = pr;
            CublasLt.Check(CublasLt.SetPref(pref, CublasLt.CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, (ulong)WorkspaceBytes));
            // Alignments of the real pointers: the default (256) would let the heuristic pick kernels that fault on views.
            CublasLt.Check(CublasLt.SetPref(pref, CublasLt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, (uint)k.AlignB));
            CublasLt.Check(CublasLt.SetPref(pref, CublasLt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, (uint)k.AlignA));
            CublasLt.Check(CublasLt.SetPref(pref, CublasLt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, (uint)k.AlignC));
            CublasLt.Check(CublasLt.SetPref(pref, CublasLt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, (uint)k.AlignC));

            CublasLtMatmulHeuristicResult res = default;
            int found = 0;
            int st = CublasLt.cublasLtMatmulAlgoGetHeuristic(_handle, desc, p.LayoutA, p.LayoutB, p.LayoutC, p.LayoutC, pref, 1, &res, &found);
            bool none = st == CublasLt.CUBLAS_STATUS_NOT_SUPPORTED || (st == CublasLt.CUBLAS_STATUS_SUCCESS && (found == 0 || res.State != 0));
            // cuBLASLt 13.1 answers an unsupported bias type (bf16 bias, f32 D) with INVALID_VALUE rather than NOT_SUPPORTED
            // (seen on H200): with an epilogue, any refusal means "try the fallback".
            if (!throwIfNone && (none || st != CublasLt.CUBLAS_STATUS_SUCCESS)) { p.Destroy(); return null; }
            if (none)
            {
                throw new NotSupportedException($"cuBLASLt found no algorithm for {k} (status {CublasLt.StatusName(st)}, " +
                                                $"{found} results, state {CublasLt.StatusName(res.State)})");
            }
            CublasLt.Check(st, k.ToString());
            p.Algo = res.Algo;
            p.WorkspaceNeeded = res.WorkspaceSize;
            return p;
        }
        catch
        {
            p.Destroy();
            throw;
        }
        finally
        {
            if (pref != 0) CublasLt.cublasLtMatmulPreferenceDestroy(pref);
        }
    }

    /// <summary>
    /// The "direct cuBLASLt" path for the profiler: builds descriptors and asks the heuristic on every call (as llm.c
    /// does), runs, destroys. No cache, no fallback — compare its time with <see cref="Gemm"/>.
    /// </summary>
    public void GemmUncached(in GemmDesc g)
    {
        Validate(g);
        if (g.M == 0 || g.N == 0) return;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var plan = Build(KeyOf(g), withBias: g.Bias != 0, throwIfNone: true)!;
            try { Run(plan, g); }
            finally { plan.Destroy(); }
        }
    }

    /// <summary>
    /// The "direct cuBLASLt" baseline for the profiler: descriptors and heuristic built once here, so
    /// <see cref="PreparedGemm.Run"/> is one cublasLtMatmul call and nothing else.
    /// </summary>
    public PreparedGemm Prepare(in GemmDesc g)
    {
        Validate(g);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return new PreparedGemm(this, Build(KeyOf(g), withBias: g.Bias != 0, throwIfNone: true)!, g);
        }
    }

    public sealed class PreparedGemm : IDisposable
    {
        readonly CublasLtGemm _owner;
        readonly Plan _plan;
        readonly GemmDesc _g;
        bool _disposed;
        internal PreparedGemm(CublasLtGemm owner, Plan plan, GemmDesc g) { _owner = owner; _plan = plan; _g = g; }
        public void Run() { ObjectDisposedException.ThrowIf(_disposed, this); _owner.Run(_plan, _g); }
        public void Dispose() { if (!_disposed) { _disposed = true; _plan.Destroy(); } }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var p in _plans.Values) p.Destroy();
            _plans.Clear();
            if (_ones != 0) { _free(_ones); _ones = 0; }
            if (_workspace != 0) { _free(_workspace); _workspace = 0; }
            if (_handle != 0) { CublasLt.cublasLtDestroy(_handle); _handle = 0; }
        }
    }
}
