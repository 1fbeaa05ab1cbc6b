using System.Runtime.InteropServices;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

/// <summary>
/// <see cref="IBackend"/> on a GPU: the kernels of kernels/*.cu launched through an
/// <see cref="IGpuDevice"/>, which is either a real GPU or the emulator (the same code runs on both,
/// which is how the GPU path is tested without one). All work goes to the device's one stream, so
/// ops are ordered and the backend's scratch buffers can be reused from one op to the next.
/// f64 tensors are rejected (CPU only). Reductions are deterministic except the embedding
/// backward with repeated ids (atomics).
/// </summary>
public sealed unsafe partial class CudaBackend : IBackend
{
    const int Threads = 256;
    const int MaxStaticSmem = 48 * 1024;

    readonly IGpuDevice _dev;
    readonly bool _ownsDevice;
    readonly CachingAllocator _mem;
    readonly bool _ownsAllocator;
    readonly int _maxBlocks;
    readonly int _smCount;
    nint _scratch;
    long _scratchBytes;
    nint _adamTable;
    long _adamTableBytes;
    AdamWEntry[] _adamTableHost = [];
    bool _disposed;

    /// <param name="device">The GPU (or emulated GPU) to run on.</param>
    /// <param name="ownsDevice">Dispose the device with the backend.</param>
    /// <param name="allocator">Share an allocator (over the same device) with other users; by default the backend makes its own.</param>
    public CudaBackend(IGpuDevice device, bool ownsDevice = false, CachingAllocator? allocator = null)
    {
        _dev = device ?? throw new ArgumentNullException(nameof(device));
        _ownsDevice = ownsDevice;
        if (allocator is not null && !ReferenceEquals(allocator.Device, device)) throw new ArgumentException("the allocator belongs to another device", nameof(allocator));
        _ownsAllocator = allocator is null;
        _mem = allocator ?? new CachingAllocator(device);
        // Grid-stride kernels need only enough blocks to fill the machine (SM count from the real
        // device; 132, the H100/H200 figure, for any other).
        // On the emulator every thread is a fiber, so fewer, fuller threads are cheaper.
        _smCount = device is CudaDevice cd ? cd.MultiprocessorCount : device.IsEmulated ? 2 : 132;
        _maxBlocks = device.IsEmulated ? 8 : _smCount * 16;
    }

    public IGpuDevice Device => _dev;
    public string Name => $"cuda({_dev.Name})";
    public BackendKind Kind => _dev.IsEmulated ? BackendKind.EmulatedCuda : BackendKind.Cuda;

    // =============================================================================================
    // memory
    // =============================================================================================

    sealed class GpuStorage : Storage
    {
        readonly CachingAllocator _mem;
        nint _ptr;
        public GpuStorage(CudaBackend b, long bytes) : base(b, bytes) { _mem = b._mem; _ptr = b._mem.Alloc(bytes); }
        public override nint Address => _ptr;
        protected override void Release() { var p = _ptr; _ptr = 0; if (p != 0) _mem.Free(p); }
    }

    public Tensor Empty(int[] shape, DType dtype)
    {
        ThrowIfDisposed();
        if (dtype == DType.F64) throw F64();
        long n = ShapeUtil.Numel(shape);
        return new Tensor(new GpuStorage(this, n * dtype.Size()), (int[])shape.Clone(), dtype);
    }

    public Tensor Zeros(int[] shape, DType dtype)
    {
        var t = Empty(shape, dtype);
        if (t.Bytes > 0) _dev.Memset(t.Address, 0, t.Bytes);
        return t;
    }

    public void Upload(Tensor dst, ReadOnlySpan<byte> src)
    {
        Mine(dst, nameof(dst));
        if (src.Length != dst.Bytes) throw new ArgumentException($"Upload: {src.Length} bytes given for {Describe(dst)} ({dst.Bytes} bytes)");
        if (src.Length == 0) return;
        fixed (byte* p = src) _dev.CopyHostToDevice(dst.Address, p, src.Length);
    }

    public void Download(Tensor src, Span<byte> dst)
    {
        Mine(src, nameof(src));
        if (dst.Length != src.Bytes) throw new ArgumentException($"Download: {dst.Length} bytes of room for {Describe(src)} ({src.Bytes} bytes)");
        if (dst.Length == 0) return;
        fixed (byte* p = dst) _dev.CopyDeviceToHost(p, src.Address, dst.Length);
    }

    public void Fill(Tensor t, double value)
    {
        Mine(t, nameof(t));
        if (t.Numel == 0) return;
        if (value == 0 && !double.IsNegative(value)) { _dev.Memset(t.Address, 0, t.Bytes); return; }
        nint p = t.Address; long n = t.Numel;
        switch (t.DType)
        {
            case DType.F32:
            case DType.BF16:
            {
                float v = (float)value;
                void** a = stackalloc void*[] { &p, &v, &n };
                Launch("elementwise.cu", "ew_fill_" + S(t), Grid(n), Threads, 0, a);
                break;
            }
            case DType.I32:
            {
                int v = checked((int)value);
                void** a = stackalloc void*[] { &p, &v, &n };
                Launch("elementwise.cu", "ew_fill_i32", Grid(n), Threads, 0, a);
                break;
            }
            case DType.I64:
            {
                long v = checked((long)value);
                void** a = stackalloc void*[] { &p, &v, &n };
                Launch("elementwise.cu", "ew_fill_i64", Grid(n), Threads, 0, a);
                break;
            }
            default: throw F64();
        }
    }

    public void Cast(Tensor src, Tensor dst)
    {
        Mine(src, nameof(src)); Mine(dst, nameof(dst));
        if (src.Numel != dst.Numel) throw new ArgumentException($"Cast: {Describe(src)} and {Describe(dst)} differ in element count");
        if (src.Numel == 0) return;
        if (src.DType == dst.DType) { _dev.CopyDeviceToDevice(dst.Address, src.Address, src.Bytes); return; }
        string name = (src.DType, dst.DType) switch
        {
            (DType.F32, DType.BF16) => "ew_cast_f32_bf16",
            (DType.BF16, DType.F32) => "ew_cast_bf16_f32",
            _ => throw new ArgumentException($"Cast: {src.DType.Name()} -> {dst.DType.Name()} is not supported (f32 <-> bf16 only)"),
        };
        nint x = src.Address, y = dst.Address; long n = src.Numel;
        void** a = stackalloc void*[] { &x, &y, &n };
        Launch("elementwise.cu", name, Grid(n), Threads, 0, a);
    }

    public void Synchronize() => _dev.Synchronize();

    // =============================================================================================
    // shared launch plumbing
    // =============================================================================================

    void ColSum(nint partial, long R, long ld, int C, nint y, DType ydt, bool accumulate)
    {
        int acc = accumulate ? 1 : 0, dt = DtOf(ydt);
        void** a = stackalloc void*[] { &partial, &R, &ld, &C, &y, &dt, &acc };
        var cb = ColSumBlock(R);
        Launch("reduce.cu", "colsum_partials", (int)((C + cb.X - 1) / cb.X), cb, 0, a);
    }

    /// <summary>colsum_partials block: 8 columns (one 32-byte sector) × up to 128 partial-row groups.</summary>
    static Dim3 ColSumBlock(long R) => new(8, (uint)Math.Clamp(R, 1, 128));

    void SumFinal(nint partial, long R, Tensor y)
    {
        nint py = y.Address; int dt = Dt(y);
        void** a = stackalloc void*[] { &partial, &R, &py, &dt };
        Launch("reduce.cu", "sum_final", 1, Threads, 0, a);
    }

    /// <summary>Grid for column-partial kernels: block (32, 8); each thread owns one pack of columns.</summary>
    (Dim3 Grid, int R, int Vec) ColumnGrid(long rows, int C, int pack)
    {
        int vec = C % pack == 0 ? 1 : 0;
        int nv = vec == 1 ? pack : 1;
        int gx = (C + 32 * nv - 1) / (32 * nv);
        int gy = (int)Math.Clamp((rows + 7) / 8, 1, Math.Max(1, _smCount * 8 / gx));
        return (new Dim3((uint)gx, (uint)gy), gy, vec);
    }

    /// <summary>Persistent scratch (partials, tables); safe to reuse because all work is on one stream.</summary>
    nint Scratch(long bytes)
    {
        if (bytes > _scratchBytes)
        {
            if (_scratch != 0) _mem.Free(_scratch); // stream-ordered: later work cannot overtake earlier readers
            _scratchBytes = Math.Max(bytes, Math.Max(1 << 20, _scratchBytes * 2));
            _scratch = _mem.Alloc(_scratchBytes);
        }
        return _scratch;
    }

    static long Align(long b) => (b + 255) & ~255L;

    int Grid(long work, int perThread = 1)
    {
        long items = (work + perThread - 1) / perThread;
        return (int)Math.Clamp((items + Threads - 1) / Threads, 1, _maxBlocks);
    }

    static readonly int[] KpF32 = [1, 2, 3, 4, 6, 8], KpBf16 = [1, 2, 3, 4];

    /// <summary>
    /// The compile-time row-group kernel for rows of C elements (layernorm.cu/softmax.cu `_k{KP}t{TPR}`):
    /// TPR lanes per row, KP 16-byte packs per lane. Null when the row is not whole packs or too long
    /// (the generic kernel handles those).
    /// </summary>
    static (string Suffix, int Tpr, int Kp)? RowVariant(int C, DType dt)
    {
        int n = 16 / dt.Size();
        if (C <= 0 || C % n != 0) return null;
        int packs = C / n;
        if (packs <= 8) return ("k1t8", 8, 1);
        if (packs <= 16) return ("k1t16", 16, 1);
        int need = (packs + 31) / 32;
        foreach (int kp in dt == DType.F32 ? KpF32 : KpBf16)
            if (kp >= need) return ($"k{kp}t32", 32, kp);
        return null;
    }

    /// <summary>Tuning choices, for timing alternatives on a real GPU: FIBER_PERF_VARIANT holds
    /// '+'-separated tokens (rb1/rb2/rb4: rows per row group and step in the forward row kernels;
    /// m4: LayerNorm backward with 4 blocks per SM for one-pack rows instead of 3; cpa/nocpa: always/never
    /// the cp.async-pipelined forward row kernels; gu1/gu2: bias-GELU forward packs per thread (default 4); gb2/gb8: bias-GELU
    /// backward blocks per SM when dbias is wanted (default 4)). Unset: the measured best.</summary>
    static readonly string[] PerfTokens =
        (Environment.GetEnvironmentVariable("FIBER_PERF_VARIANT") ?? "").Split('+', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    static bool Perf(string token) => Array.IndexOf(PerfTokens, token) >= 0;

    /// <summary>Rows each row group of a forward row kernel handles per step (kernels exist for
    /// KP = 1: 1, 2, 4; KP = 2: 1, 2; wider rows: 1).</summary>
    static int RowsPerGroup(int kp, bool residual = false)
    {
        // H200, FIBER shapes (round 1): 2 rows was best without a residual (LayerNorm 73728×128:
        // 20.0 µs vs 21.1 for 1, 21.7 for 4); with a residual the doubled register arrays cost
        // occupancy (33.8 µs for 1 row, 41.3 for 4).
        int rb = Perf("rb1") ? 1 : Perf("rb2") ? 2 : Perf("rb4") ? 4 : residual ? 1 : 2;
        return kp == 1 ? rb : kp == 2 ? Math.Min(rb, 2) : 1;
    }

    /// <summary>The cp.async-pipelined forward row kernels (`_k{KP}t{TPR}p`, KP ≤ 2): their dynamic
    /// shared memory (S stages × KP packs × 256 threads × 16 bytes), or null when not used.
    /// H200 round 2: LayerNorm 73728×128 bf16 16.5 µs pipelined vs 17.9 µs (rb2), but 11.1 vs 9.3 µs
    /// at 4608×512 (too few steps per lane to fill the pipeline), and softmax lost at every shape —
    /// so by default only LayerNorm with many rows takes it ("cpa" forces it, "nocpa" disables it).</summary>
    /// <summary>Forces the cp.async-pipelined forward row kernels on or off for this backend (null: the tuned
    /// choice below). Tests use it so the emulator covers the pipelined kernels at small sizes.</summary>
    internal bool? PipelinedRowKernels { get; set; }

    (int Smem, int Stages)? Pipelined(int kp, long rows, bool layerNorm)
    {
        if (kp > 2) return null;
        if (!(PipelinedRowKernels ?? (!Perf("nocpa") && (Perf("cpa") || (layerNorm && rows >= 32768))))) return null;
        int stages = kp == 1 ? 4 : 3;
        return (stages * kp * Threads * 16, stages);
    }

    /// <summary>Persistent grid of the pipelined kernels: 4 blocks per SM (their launch bounds).</summary>
    int PipeGrid(long rows, int tpr)
    {
        long perBlock = Threads / tpr;
        return (int)Math.Clamp((rows + perBlock - 1) / perBlock, 1, _dev.IsEmulated ? _maxBlocks : _smCount * 4);
    }

    static string RbSuffix(int rb) => rb == 1 ? "" : $"r{rb}";

    /// <summary>Blocks per SM of LayerNorm's backward fast kernels (their __launch_bounds__).</summary>
    static int LnBwdBlocksPerSm(int kp) => kp == 1 ? (Perf("m4") ? 4 : 3) : kp == 2 ? 2 : 1;

    /// <summary>Row-group kernels: 256/TPR row groups per 256-thread block, rb rows each per step.</summary>
    int GroupGrid(long rows, int tpr, int rb = 1)
    {
        long perBlock = Threads / tpr * rb;
        return (int)Math.Clamp((rows + perBlock - 1) / perBlock, 1, _dev.IsEmulated ? _maxBlocks * 4 : _smCount * 64);
    }

    /// <summary>Warp-per-row kernels: 8 rows per 256-thread block.</summary>
    int RowGrid(long rows) => (int)Math.Clamp((rows + 7) / 8, 1, _maxBlocks * 4);

    int RowThreads(int C) => Math.Clamp((C + 31) / 32 * 32, 32, _dev.IsEmulated ? 64 : Threads);

    IKernel Kernel(string file, string name) => _dev.GetKernel(file, name);

    void Launch(string file, string name, Dim3 grid, Dim3 block, int smem, void** args)
        => Launch(Kernel(file, name), grid, block, smem, args);

    void Launch(IKernel k, Dim3 grid, Dim3 block, int smem, void** args)
    {
        ThrowIfDisposed();
        _dev.Launch(k, grid, block, smem, args);
    }

    // =============================================================================================
    // checks (the CPU backend's rules, with GPU wording)
    // =============================================================================================

    static string S(Tensor t) => t.DType switch
    {
        DType.F32 => "f32",
        DType.BF16 => "bf16",
        DType.F64 => throw F64(),
        _ => throw new ArgumentException($"{Describe(t)}: a float tensor (f32 or bf16) is required"),
    };

    static int Dt(Tensor t) => DtOf(t.DType);
    static int DtOf(DType d) => d switch
    {
        DType.F32 => 0,
        DType.BF16 => 1,
        DType.F64 => throw F64(),
        _ => throw new ArgumentException($"{d.Name()}: a float dtype (f32 or bf16) is required"),
    };

    static int Pack(Tensor t) => 16 / t.DType.Size();

    static Exception F64() => new NotSupportedException("the CUDA backend does not support f64 tensors (f64 is for the CPU reference only)");

    static string Describe(Tensor t) => $"{t.DType.Name()}{ShapeUtil.Format(t.Shape)}";

    void Mine(Tensor t, string name)
    {
        ArgumentNullException.ThrowIfNull(t, name);
        ThrowIfDisposed();
        if (!ReferenceEquals(t.Backend, this)) throw new ArgumentException($"{name} {Describe(t)} lives on {t.Backend.Name}, not on {Name}");
        if (t.Storage.IsDisposed) throw new ObjectDisposedException(name, $"{name} {Describe(t)} has been disposed");
        if (t.DType == DType.F64) throw F64();
    }

    void Float(Tensor t, string name)
    {
        Mine(t, name);
        if (t.DType != DType.F32 && t.DType != DType.BF16) throw new ArgumentException($"{name} must be f32 or bf16, got {Describe(t)}");
    }

    void Index(Tensor t, string op, string name)
    {
        Mine(t, name);
        if (t.DType != DType.I32 && t.DType != DType.I64) throw new ArgumentException($"{op}: {name} must be i32 or i64, got {Describe(t)}");
    }

    /// <summary>Same element count (like the CPU backend: tensors are contiguous) and dtype as the first.</summary>
    void SameAll(string op, Tensor first, params Tensor[] others)
    {
        Mine(first, "arg0");
        foreach (var t in others)
        {
            Mine(t, "arg");
            if (first.Numel != t.Numel) throw new ArgumentException($"{op}: size mismatch {Describe(first)} vs {Describe(t)}");
            if (first.DType != t.DType) throw new ArgumentException($"{op}: dtype mismatch {Describe(first)} vs {Describe(t)}");
        }
    }

    static int LastDim(Tensor x, string op)
    {
        if (x.Rank == 0) throw new ArgumentException($"{op}: needs at least one dimension, got a scalar");
        return x.Shape[^1];
    }

    /// <summary>A [C] vector (bias, gamma, beta and their gradients), f32 or bf16.</summary>
    void Bias(Tensor b, int C, string op, string name)
    {
        Float(b, name);
        if (b.Numel != C) throw new ArgumentException($"{op}: {name} {Describe(b)} must have {C} elements (the last dim)");
    }

    /// <summary>Per-row statistics: f32 with one element per row.</summary>
    void Stats(Tensor t, long rows, string op, string name)
    {
        Mine(t, name);
        if (t.DType != DType.F32) throw new ArgumentException($"{op}: {name} must be f32, got {Describe(t)}");
        if (t.Numel != rows) throw new ArgumentException($"{op}: {name} {Describe(t)} must have {rows} elements (one per row)");
    }

    /// <summary>Small float outputs/inputs with a given element count (losses, sums).</summary>
    void Small(Tensor t, long n, string op, string name)
    {
        Float(t, name);
        if (t.Numel != n) throw new ArgumentException($"{op}: {name} {Describe(t)} must have {n} elements");
    }

    void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    public void Dispose()
    {
        if (_disposed) return;
        if (_scratch != 0) { _mem.Free(_scratch); _scratch = 0; }
        if (_adamTable != 0) { _mem.Free(_adamTable); _adamTable = 0; }
        _disposed = true;
        if (_ownsAllocator) _mem.Dispose();
        if (_ownsDevice) _dev.Dispose();
    }
}
