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
public sealed unsafe class CudaBackend : IBackend
{
    const int Threads = 256;
    const int MaxStaticSmem = 48 * 1024;

    readonly IGpuDevice _dev;
    readonly bool _ownsDevice;
    readonly CachingAllocator _mem;
    readonly bool _ownsAllocator;
    readonly Dictionary<(string File, string Name), IKernel> _kernels = new();
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
    readonly bool _ownsAllocator;
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
    // GEMM
    // =============================================================================================

    public void Gemm(in GemmArgs g)
    {
        Mine(g.A, "A"); Mine(g.B, "B"); Mine(g.C, "C");
        if (g.A.DType != g.B.DType) throw new ArgumentException($"Gemm: A is {g.A.DType.Name()} but B is {g.B.DType.Name()}");
        Float(g.A, "A"); Float(g.C, "C");
        if (g.M < 0 || g.N < 0 || g.K < 0 || g.Batch < 1) throw new ArgumentException($"Gemm: bad sizes M={g.M} N={g.N} K={g.K} batch={g.Batch}");
        NeedElems(g.A, g.StrideA, (long)g.M * g.K, g.Batch, "A");
        NeedElems(g.B, g.StrideB, (long)g.K * g.N, g.Batch, "B");
        NeedElems(g.C, g.StrideC, (long)g.M * g.N, g.Batch, "C");
        DType biasType = g.C.DType;
        nint bias = 0;
        if (g.Bias is { } b)
        {
            Mine(b, "Bias");
            if (b.DType != DType.F32 && b.DType != g.C.DType) throw new ArgumentException($"Gemm: bias must be f32 or C's dtype, got {b.DType.Name()}");
            if (b.Numel != g.N) throw new ArgumentException($"Gemm: bias has {b.Numel} elements, N = {g.N}");
            biasType = b.DType; bias = b.Address;
            if (g.C.DType == DType.BF16 && b.DType == DType.F32)
            {
                // cuBLASLt has no bias epilogue for bf16 C with an f32 bias (refused on the H200). Run the GEMM
                // into an f32 copy of C instead: still one rounding to bf16 at the end, as on the CPU. C is
                // copied in whole first, so elements between batch strides come back unchanged.
                using var c32 = Empty(g.C.Shape, DType.F32);
                Cast(g.C, c32);
                Gemm(g with { C = c32 });
                Cast(c32, g.C);
                return;
            }
        }
        _dev.Gemm(new GemmDesc(g.A.Address, g.B.Address, g.C.Address, bias, g.A.DType, g.C.DType, biasType,
            g.M, g.N, g.K, g.TransA, g.TransB, g.Alpha, g.Beta, g.Batch, g.StrideA, g.StrideB, g.StrideC));
    }

    static void NeedElems(Tensor t, long stride, long per, int batch, string name)
    {
        long need = (batch - 1) * stride + per;
        if (stride < 0 || t.Numel < need) throw new ArgumentException($"Gemm: {name} {Describe(t)} is too small ({need} elements needed)");
    }

    // =============================================================================================
    // elementwise
    // =============================================================================================

    public void Add(Tensor a, Tensor b, Tensor y) => Binary("ew_add_", a, b, y, nameof(Add));
    public void Mul(Tensor a, Tensor b, Tensor y) => Binary("ew_mul_", a, b, y, nameof(Mul));

    void Binary(string kernel, Tensor a, Tensor b, Tensor y, string op)
    {
        Float(a, "a"); SameAll(op, a, b, y);
        if (a.Numel == 0) return;
        nint pa = a.Address, pb = b.Address, py = y.Address; long n = a.Numel;
        void** args = stackalloc void*[] { &pa, &pb, &py, &n };
        Launch("elementwise.cu", kernel + S(a), Grid(n, Pack(a)), Threads, 0, args);
    }

    public void Scale(Tensor x, float s, Tensor y)
    {
        Float(x, "x"); SameAll(nameof(Scale), x, y);
        if (x.Numel == 0) return;
        nint px = x.Address, py = y.Address; long n = x.Numel;
        void** a = stackalloc void*[] { &px, &s, &py, &n };
        Launch("elementwise.cu", "ew_scale_" + S(x), Grid(n, Pack(x)), Threads, 0, a);
    }

    public void Axpy(float alpha, Tensor x, Tensor y)
    {
        Float(x, "x"); SameAll(nameof(Axpy), x, y);
        if (x.Numel == 0) return;
        nint px = x.Address, py = y.Address; long n = x.Numel;
        void** a = stackalloc void*[] { &alpha, &px, &py, &n };
        Launch("elementwise.cu", "ew_axpy_" + S(x), Grid(n, Pack(x)), Threads, 0, a);
    }

    public void AddBias(Tensor x, Tensor bias, Tensor y)
    {
        Float(x, "x"); SameAll(nameof(AddBias), x, y);
        int C = LastDim(x, nameof(AddBias));
        Bias(bias, C, nameof(AddBias), "bias");
        if (x.Numel == 0) return;
        nint px = x.Address, pb = bias.Address, py = y.Address; long n = x.Numel;
        void** a = stackalloc void*[] { &px, &pb, &py, &n, &C };
        Launch("elementwise.cu", $"ew_add_bias_{S(x)}_{S(bias)}", Grid(n, Pack(x)), Threads, 0, a);
    }

    public void BiasGelu(Tensor x, Tensor? bias, Tensor y)
    {
        Float(x, "x"); SameAll(nameof(BiasGelu), x, y);
        int C = LastDim(x, nameof(BiasGelu));
        if (bias is not null) Bias(bias, C, nameof(BiasGelu), "bias");
        if (x.Numel == 0) return;
        nint px = x.Address, pb = bias?.Address ?? 0, py = y.Address; long n = x.Numel;
        void** a = stackalloc void*[] { &px, &pb, &py, &n, &C };
        int u = Perf("gu1") ? 1 : Perf("gu2") ? 2 : 4;
        Launch("gelu.cu", $"bias_gelu_fwd_{S(x)}_{(bias is null ? S(x) : S(bias))}{(u == 4 ? "" : $"_u{u}")}", Grid(n, Pack(x) * u), Threads, 0, a);
    }

    public void BiasGeluBackward(Tensor x, Tensor? bias, Tensor dy, Tensor dx, Tensor? dbias)
    {
        Float(x, "x"); SameAll(nameof(BiasGeluBackward), x, dy, dx);
        int C = LastDim(x, nameof(BiasGeluBackward));
        if (bias is not null) Bias(bias, C, nameof(BiasGeluBackward), "bias");
        if (dbias is not null) Bias(dbias, C, nameof(BiasGeluBackward), "dbias");
        if (x.Numel == 0 || C == 0) return;
        long rows = x.Numel / C;
        int vec = C % Pack(x) == 0 ? 1 : 0, nv = vec == 1 ? Pack(x) : 1;
        // Block (TX, 256/TX): TX threads across the row's packs (a power of two ≤ 32), two rows per
        // thread and step. With dbias, a bounded grid (each block adds one partial row for the
        // column sum); without, one step per thread.
        int tx = Math.Min(32, (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)((C + nv - 1) / nv)));
        int ty = Threads / tx, gx = (C + tx * nv - 1) / (tx * nv);
        long needY = (rows + 2L * ty - 1) / (2L * ty);
        int perSm = Perf("gb2") ? 2 : Perf("gb8") ? 8 : 4;
        int maxY = dbias is null ? 65535 : Math.Max(1, (_dev.IsEmulated ? _maxBlocks : _smCount * perSm) / gx);
        int R = (int)Math.Clamp(needY, 1, maxY);
        nint partial = dbias is null ? 0 : Scratch((long)R * C * 4);
        nint px = x.Address, pb = bias?.Address ?? 0, pdy = dy.Address, pdx = dx.Address;
        void** a = stackalloc void*[] { &px, &pb, &pdy, &pdx, &partial, &rows, &C, &vec };
        Launch("gelu.cu", $"bias_gelu_bwd_{S(x)}_{(bias is null ? S(x) : S(bias))}", new Dim3((uint)gx, (uint)R), new Dim3((uint)tx, (uint)ty), 0, a);
        if (dbias is not null) ColSum(partial, R, C, C, dbias.Address, dbias.DType, accumulate: true);
    }

    // =============================================================================================
    // normalisation
    // =============================================================================================

    public void LayerNorm(Tensor x, Tensor? residual, Tensor gamma, Tensor beta, float eps,
                          Tensor y, Tensor? residualOut, Tensor mean, Tensor rstd)
    {
        const string op = nameof(LayerNorm);
        Float(x, "x"); SameAll(op, x, y);
        if (residual is not null)
        {
            SameAll(op, x, residual);
            if (residualOut is null) throw new ArgumentException("LayerNorm: residualOut is required when residual is given");
            SameAll(op, x, residualOut);
        }
        int C = LastDim(x, op);
        Bias(gamma, C, op, "gamma"); Bias(beta, C, op, "beta");
        if (gamma.DType != beta.DType) throw new ArgumentException($"LayerNorm: gamma is {gamma.DType.Name()} but beta is {beta.DType.Name()}");
        long rows = ShapeUtil.Rows(x.Shape);
        Stats(mean, rows, op, "mean"); Stats(rstd, rows, op, "rstd");
        if (x.Numel == 0) return;
        nint px = x.Address, pr = residual?.Address ?? 0, pg = gamma.Address, pbt = beta.Address, py = y.Address,
             pro = residual is null ? 0 : residualOut!.Address, pm = mean.Address, ps = rstd.Address;
        void** a = stackalloc void*[] { &px, &pr, &pg, &pbt, &eps, &py, &pro, &pm, &ps, &rows, &C };
        var v = RowVariant(C, x.DType);
        if (v is { } fp && residual is null && Pipelined(fp.Kp, rows, layerNorm: true) is { } pipe)
            Launch("layernorm.cu", $"layernorm_fwd_{S(x)}_{S(gamma)}_{fp.Suffix}p", PipeGrid(rows, fp.Tpr), Threads, pipe.Smem, a);
        else if (v is { } f)
        {
            int rb = RowsPerGroup(f.Kp, residual is not null);
            Launch("layernorm.cu", $"layernorm_fwd_{S(x)}_{S(gamma)}_{f.Suffix}{RbSuffix(rb)}", GroupGrid(rows, f.Tpr, rb), Threads, 0, a);
        }
        else Launch("layernorm.cu", $"layernorm_fwd_{S(x)}_{S(gamma)}", RowGrid(rows), Threads, 0, a);
    }

    public void LayerNormBackward(Tensor s, Tensor gamma, Tensor mean, Tensor rstd, Tensor dy,
                                  Tensor dx, Tensor dgamma, Tensor dbeta)
    {
        const string op = nameof(LayerNormBackward);
        Float(s, "s"); SameAll(op, s, dy, dx);
        int C = LastDim(s, op);
        Bias(gamma, C, op, "gamma"); Bias(dgamma, C, op, "dgamma"); Bias(dbeta, C, op, "dbeta");
        long rows = ShapeUtil.Rows(s.Shape);
        Stats(mean, rows, op, "mean"); Stats(rstd, rows, op, "rstd");
        if (s.Numel == 0 || C == 0) return;
        var v = RowVariant(C, s.DType);
        IKernel k;
        int blocks, threads, smem;
        if (v is { } f)
        {
            // Persistent grid: row groups sum dgamma/dbeta in registers, so each block adds one
            // 2C-float partial row however many rows it visits; the register cap (launch bounds)
            // guarantees `bps` blocks fit on an SM. Shared memory: W·C floats for the final fold.
            int bps = LnBwdBlocksPerSm(f.Kp);
            k = Kernel("layernorm.cu", $"layernorm_bwd_{S(s)}_{S(gamma)}_{f.Suffix}{(bps == 4 && f.Kp == 1 ? "m4" : "")}");
            threads = Threads;
            long groups = Threads / f.Tpr;
            blocks = (int)Math.Clamp((rows + groups - 1) / groups, 1, _dev.IsEmulated ? _maxBlocks : _smCount * bps);
            smem = Threads / 32 * C * 4;
        }
        else
        {
            // W warps per block, each with its own 2C-float dgamma|dbeta slice in shared memory.
            int W = (int)Math.Clamp(MaxStaticSmem / (8L * C), 1, 4);
            k = Kernel("layernorm.cu", $"layernorm_bwd_{S(s)}_{S(gamma)}");
            threads = W * 32;
            smem = W * 2 * C * 4;
            blocks = (int)Math.Clamp((rows + W - 1) / W, 1, _smCount * 8);
        }
        if (smem > MaxStaticSmem && k.MaxDynamicSharedBytes < smem) k.MaxDynamicSharedBytes = smem;
        nint partial = Scratch((long)blocks * 2 * C * 4);
        nint ps = s.Address, pg = gamma.Address, pm = mean.Address, pr = rstd.Address, pdy = dy.Address, pdx = dx.Address;
        void** a = stackalloc void*[] { &ps, &pg, &pm, &pr, &pdy, &pdx, &partial, &rows, &C };
        Launch(k, blocks, threads, smem, a);
        long R = blocks;
        nint pdg = dgamma.Address, pdb = dbeta.Address;
        int dtg = Dt(dgamma), dtb = Dt(dbeta);
        void** a2 = stackalloc void*[] { &partial, &R, &C, &pdg, &dtg, &pdb, &dtb };
        var cb = ColSumBlock(R);
        Launch("reduce.cu", "colsum_partials2", (int)((2 * C + cb.X - 1) / cb.X), cb, 0, a2);
    }

    public void Softmax(Tensor x, float scale, Tensor y)
    {
        Float(x, "x"); SameAll(nameof(Softmax), x, y);
        int C = LastDim(x, nameof(Softmax));
        if (x.Numel == 0) return;
        long rows = ShapeUtil.Rows(x.Shape);
        nint px = x.Address, py = y.Address;
        void** a = stackalloc void*[] { &px, &py, &scale, &rows, &C };
        if (RowVariant(C, x.DType) is { } fp && Pipelined(fp.Kp, rows, layerNorm: false) is { } pipe)
            Launch("softmax.cu", $"softmax_fwd_{S(x)}_{fp.Suffix}p", PipeGrid(rows, fp.Tpr), Threads, pipe.Smem, a);
        else if (RowVariant(C, x.DType) is { } f)
        {
            int rb = RowsPerGroup(f.Kp);
            Launch("softmax.cu", $"softmax_fwd_{S(x)}_{f.Suffix}{RbSuffix(rb)}", GroupGrid(rows, f.Tpr, rb), Threads, 0, a);
        }
        else Launch("softmax.cu", "softmax_fwd_" + S(x), RowGrid(rows), Threads, 0, a);
    }

    public void SoftmaxBackward(Tensor y, Tensor dy, float scale, Tensor dx)
    {
        Float(y, "y"); SameAll(nameof(SoftmaxBackward), y, dy, dx);
        int C = LastDim(y, nameof(SoftmaxBackward));
        if (y.Numel == 0) return;
        long rows = ShapeUtil.Rows(y.Shape);
        nint py = y.Address, pdy = dy.Address, pdx = dx.Address;
        void** a = stackalloc void*[] { &py, &pdy, &scale, &pdx, &rows, &C };
        if (RowVariant(C, y.DType) is { } f) Launch("softmax.cu", $"softmax_bwd_{S(y)}_{f.Suffix}", GroupGrid(rows, f.Tpr), Threads, 0, a);
        else Launch("softmax.cu", "softmax_bwd_" + S(y), RowGrid(rows), Threads, 0, a);
    }

    // =============================================================================================
    // losses
    // =============================================================================================

    public void CrossEntropy(Tensor logits, Tensor targets, int ignoreIndex, Tensor loss, Tensor lse)
    {
        const string op = nameof(CrossEntropy);
        var (N, C) = CeShapes(op, logits, targets);
        Small(loss, N, op, "loss"); Stats(lse, N, op, "lse");
        if (N == 0) return;
        nint pl = logits.Address, pt = targets.Address, ploss = loss.Address, plse = lse.Address;
        long ignore = ignoreIndex; int ldt = Dt(loss);
        void** a = stackalloc void*[] { &pl, &pt, &ignore, &ploss, &ldt, &plse, &C };
        Launch("crossentropy.cu", $"ce_fwd_{S(logits)}_{targets.DType.Name()}", (int)N, RowThreads(C), 0, a);
    }

    public void CrossEntropyBackward(Tensor logits, Tensor targets, int ignoreIndex, Tensor lse, Tensor dloss, Tensor dlogits)
    {
        const string op = nameof(CrossEntropyBackward);
        var (N, C) = CeShapes(op, logits, targets);
        SameAll(op, logits, dlogits);
        Small(dloss, N, op, "dloss"); Stats(lse, N, op, "lse");
        if (N == 0) return;
        nint pl = logits.Address, pt = targets.Address, plse = lse.Address, pd = dloss.Address, pdl = dlogits.Address;
        long ignore = ignoreIndex; int ddt = Dt(dloss);
        void** a = stackalloc void*[] { &pl, &pt, &ignore, &plse, &pd, &ddt, &pdl, &C };
        Launch("crossentropy.cu", $"ce_bwd_{S(logits)}_{targets.DType.Name()}", (int)N, RowThreads(C), 0, a);
    }

    (long N, int C) CeShapes(string op, Tensor logits, Tensor targets)
    {
        Float(logits, "logits"); Index(targets, op, "targets");
        if (logits.Rank != 2) throw new ArgumentException($"{op}: logits must be [N,C], got {Describe(logits)}");
        if (targets.Numel != logits.Shape[0]) throw new ArgumentException($"{op}: {Describe(targets)} does not match {Describe(logits)}");
        return (logits.Shape[0], logits.Shape[1]);
    }

    // =============================================================================================
    // embedding
    // =============================================================================================

    public void Embedding(Tensor weight, Tensor ids, Tensor y)
    {
        const string op = nameof(Embedding);
        Float(weight, "weight"); Index(ids, op, "ids"); Mine(y, "y");
        var (V, D) = EmbShapes(op, weight, ids, y);
        if (y.DType != weight.DType) throw new ArgumentException($"{op}: y is {y.DType.Name()} but weight is {weight.DType.Name()}");
        long N = ids.Numel;
        if (N == 0 || D == 0) return;
        nint pw = weight.Address, pi = ids.Address, py = y.Address;
        void** a = stackalloc void*[] { &pw, &pi, &py, &V, &N, &D };
        Launch("embedding.cu", $"embedding_fwd_{S(weight)}_{ids.DType.Name()}", Grid(N * D, Pack(weight)), Threads, 0, a);
    }

    public void EmbeddingBackward(Tensor dy, Tensor ids, Tensor dweight)
    {
        const string op = nameof(EmbeddingBackward);
        Float(dy, "dy"); Float(dweight, "dweight"); Index(ids, op, "ids");
        var (V, D) = EmbShapes(op, dweight, ids, dy);
        long N = ids.Numel;
        if (N == 0 || D == 0) return;
        nint pdy = dy.Address, pi = ids.Address, pw = dweight.Address;
        void** a = stackalloc void*[] { &pdy, &pi, &pw, &V, &N, &D };
        Launch("embedding.cu", $"embedding_bwd_{S(dy)}_{S(dweight)}_{ids.DType.Name()}", Grid(N * D), Threads, 0, a);
    }

    static (long V, int D) EmbShapes(string op, Tensor weight, Tensor ids, Tensor rows)
    {
        if (weight.Rank != 2) throw new ArgumentException($"{op}: weight must be [V,D], got {Describe(weight)}");
        int D = weight.Shape[1];
        if (rows.Numel != ids.Numel * D || rows.Dim(-1) != D)
            throw new ArgumentException($"{op}: {Describe(rows)} does not match ids {Describe(ids)} and weight {Describe(weight)}");
        return (weight.Shape[0], D);
    }

    // =============================================================================================
    // dropout
    // =============================================================================================

    public void Dropout(Tensor x, float p, ulong seed, ulong offset, Tensor y)
    {
        Float(x, "x"); SameAll(nameof(Dropout), x, y); DropP(p);
        if (x.Numel == 0) return;
        nint px = x.Address, py = y.Address; long n = x.Numel;
        void** a = stackalloc void*[] { &px, &py, &n, &p, &seed, &offset };
        Launch("dropout.cu", "dropout_fwd_" + S(x), Grid(n), Threads, 0, a);
    }

    public void DropoutBackward(Tensor dy, float p, ulong seed, ulong offset, Tensor dx)
    {
        Float(dy, "dy"); SameAll(nameof(DropoutBackward), dy, dx); DropP(p);
        if (dy.Numel == 0) return;
        nint pdy = dy.Address, pdx = dx.Address; long n = dy.Numel;
        void** a = stackalloc void*[] { &pdy, &pdx, &n, &p, &seed, &offset };
        Launch("dropout.cu", "dropout_bwd_" + S(dy), Grid(n), Threads, 0, a);
    }

    static void DropP(float p)
    {
        if (!(p >= 0 && p <= 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "dropout probability must be in [0, 1]");
    }

    // =============================================================================================
    // reductions
    // =============================================================================================

    public void SumLastDim(Tensor x, Tensor y)
    {
        Float(x, "x");
        int C = LastDim(x, nameof(SumLastDim));
        long rows = ShapeUtil.Rows(x.Shape);
        Small(y, rows, nameof(SumLastDim), "y");
        if (rows == 0) return;
        nint px = x.Address, py = y.Address; int ydt = Dt(y);
        void** a = stackalloc void*[] { &px, &py, &ydt, &rows, &C };
        Launch("reduce.cu", "sum_last_" + S(x), RowGrid(rows), Threads, 0, a);
    }

    public void SumRows(Tensor x, Tensor y, bool accumulate)
    {
        Float(x, "x");
        int C = LastDim(x, nameof(SumRows));
        Bias(y, C, nameof(SumRows), "y");
        if (C == 0) return;
        long rows = x.Numel / C;
        if (rows == 0) { if (!accumulate) Fill(y, 0); return; }
        var (grid, R, vec) = ColumnGrid(rows, C, Pack(x));
        nint partial = Scratch((long)R * C * 4);
        nint px = x.Address;
        void** a = stackalloc void*[] { &px, &partial, &rows, &C, &vec };
        Launch("reduce.cu", "sum_rows_" + S(x), grid, new Dim3(32, 8), 0, a);
        ColSum(partial, R, C, C, y.Address, y.DType, accumulate);
    }

    public void SumAll(Tensor x, Tensor y)
    {
        Float(x, "x"); Small(y, 1, nameof(SumAll), "y");
        long n = x.Numel;
        int blocks = Grid(n);
        nint partial = Scratch(blocks * 4L);
        nint px = x.Address;
        void** a = stackalloc void*[] { &px, &n, &partial };
        Launch("reduce.cu", "sum_all_" + S(x), blocks, Threads, 0, a);
        SumFinal(partial, blocks, y);
    }

    public void L2Normalize(Tensor x, float eps, Tensor y, Tensor norm)
    {
        Float(x, "x"); SameAll(nameof(L2Normalize), x, y);
        int C = LastDim(x, nameof(L2Normalize));
        long rows = ShapeUtil.Rows(x.Shape);
        Stats(norm, rows, nameof(L2Normalize), "norm");
        if (x.Numel == 0) return;
        nint px = x.Address, py = y.Address, pn = norm.Address;
        void** a = stackalloc void*[] { &px, &eps, &py, &pn, &rows, &C };
        Launch("reduce.cu", "l2norm_fwd_" + S(x), RowGrid(rows), Threads, 0, a);
    }

    public void L2NormalizeBackward(Tensor y, Tensor norm, float eps, Tensor dy, Tensor dx)
    {
        Float(y, "y"); SameAll(nameof(L2NormalizeBackward), y, dy, dx);
        int C = LastDim(y, nameof(L2NormalizeBackward));
        long rows = ShapeUtil.Rows(y.Shape);
        Stats(norm, rows, nameof(L2NormalizeBackward), "norm");
        if (y.Numel == 0) return;
        nint py = y.Address, pn = norm.Address, pdy = dy.Address, pdx = dx.Address;
        void** a = stackalloc void*[] { &py, &pn, &eps, &pdy, &pdx, &rows, &C };
        Launch("reduce.cu", "l2norm_bwd_" + S(y), RowGrid(rows), Threads, 0, a);
    }

    // =============================================================================================
    // layout
    // =============================================================================================

    public void Permute(Tensor x, int[] perm, Tensor y, bool accumulate)
    {
        const string op = nameof(Permute);
        Mine(x, "x"); Mine(y, "y");
        int r = x.Rank;
        if (r > 6) throw new ArgumentException($"{op}: rank {r} > 6");
        if (perm.Length != r || perm.Distinct().Count() != r || perm.Any(p => p < 0 || p >= r))
            throw new ArgumentException($"{op}: [{string.Join(",", perm)}] is not a permutation of {r} dims");
        if (y.Rank != r || Enumerable.Range(0, r).Any(i => y.Shape[i] != x.Shape[perm[i]]))
            throw new ArgumentException($"{op}: {Describe(y)} is not {Describe(x)} permuted by [{string.Join(",", perm)}]");
        if (x.DType != y.DType) throw new ArgumentException($"{op}: x is {x.DType.Name()} but y is {y.DType.Name()}");
        string kind = LayoutKernel(x, accumulate, op);
        long n = x.Numel;
        if (n == 0) return;
        var xs = new long[r];
        for (long s = 1, i = r - 1; i >= 0; i--) { xs[i] = s; s *= x.Shape[i]; }
        long* d = stackalloc long[6];
        long* st = stackalloc long[6];
        for (int i = 0; i < 6; i++)
        {
            int j = i - (6 - r);
            d[i] = j >= 0 ? y.Shape[j] : 1;
            st[i] = j >= 0 ? xs[perm[j]] : 0;
        }
        nint px = x.Address, py = y.Address;
        void** a = stackalloc void*[] { &px, &py, &n, d, d + 1, d + 2, d + 3, d + 4, d + 5, st, st + 1, st + 2, st + 3, st + 4, st + 5 };
        Launch("layout.cu", "permute_" + kind, Grid(n), Threads, 0, a);
    }

    public void CopySlice(Tensor x, int axis, int srcStart, Tensor y, int dstStart, int len, bool accumulate)
    {
        const string op = nameof(CopySlice);
        Mine(x, "x"); Mine(y, "y");
        if (x.DType != y.DType) throw new ArgumentException($"{op}: x is {x.DType.Name()} but y is {y.DType.Name()}");
        if (x.Rank != y.Rank) throw new ArgumentException($"{op}: {Describe(x)} and {Describe(y)} differ in rank");
        int r = x.Rank;
        int ax = axis < 0 ? axis + r : axis;
        if (ax < 0 || ax >= r) throw new ArgumentOutOfRangeException(nameof(axis), axis, $"{op}: axis out of range for rank {r}");
        for (int i = 0; i < r; i++)
            if (i != ax && x.Shape[i] != y.Shape[i])
                throw new ArgumentException($"{op}: {Describe(x)} and {Describe(y)} differ outside axis {ax}");
        if (len < 0 || srcStart < 0 || dstStart < 0 || srcStart + (long)len > x.Shape[ax] || dstStart + (long)len > y.Shape[ax])
            throw new ArgumentOutOfRangeException(nameof(len), $"{op}: [{srcStart},{srcStart + len}) of {x.Shape[ax]} -> [{dstStart},{dstStart + len}) of {y.Shape[ax]} is out of range");
        string kind = LayoutKernel(x, accumulate, op);
        long outer = 1, inner = 1;
        for (int i = 0; i < ax; i++) outer *= x.Shape[i];
        for (int i = ax + 1; i < r; i++) inner *= x.Shape[i];
        long n = outer * len * inner;
        if (n == 0) return;
        nint px = x.Address, py = y.Address;
        long Lx = x.Shape[ax], Ly = y.Shape[ax], src = srcStart, dst = dstStart, l = len;
        void** a = stackalloc void*[] { &px, &py, &outer, &inner, &Lx, &Ly, &src, &dst, &l };
        Launch("layout.cu", "copy_slice_" + kind, Grid(n), Threads, 0, a);
    }

    static string LayoutKernel(Tensor x, bool accumulate, string op)
    {
        if (x.DType == DType.F64) throw F64();
        if (accumulate)
        {
            if (!x.DType.IsFloat()) throw new ArgumentException($"{op}: accumulate needs a float tensor, got {x.DType.Name()}");
            return "acc_" + S(x);
        }
        return "copy" + x.DType.Size();
    }

    // =============================================================================================
    // optimizer
    // =============================================================================================

    [StructLayout(LayoutKind.Sequential)]
    struct SumsqEntry { public long Ptr, N; public int Dt, Pad; }

    [StructLayout(LayoutKind.Sequential)]
    struct AdamWEntry
    {
        public long Param, Grad, M, V, Master, N;
        public float Lr, Wd;
        public int ParamDt, GradDt;
    }

    public void SumOfSquares(IReadOnlyList<Tensor> xs, Tensor y)
    {
        Small(y, 1, nameof(SumOfSquares), "y");
        if (y.DType != DType.F32) throw new ArgumentException($"SumOfSquares: y must be f32, got {y.DType.Name()}");
        var list = xs.Where(t => { Float(t, "xs[i]"); return t.Numel > 0; }).ToArray();
        if (list.Length == 0) { Fill(y, 0); return; }
        if (list.Length > 65535) throw new ArgumentException("SumOfSquares: more than 65535 tensors");
        var table = new SumsqEntry[list.Length];
        long maxN = 0;
        for (int i = 0; i < list.Length; i++)
        {
            table[i] = new SumsqEntry { Ptr = list[i].Address, N = list[i].Numel, Dt = Dt(list[i]) };
            maxN = Math.Max(maxN, list[i].Numel);
        }
        int bx = Math.Max(1, Math.Min(Grid(maxN), Math.Max(1, _maxBlocks * 4 / list.Length)));
        long tableBytes = Align(table.Length * (long)sizeof(SumsqEntry));
        nint buf = Scratch(tableBytes + (long)bx * list.Length * 4);
        UploadTable(buf, table);
        nint pt = buf, partial = buf + (nint)tableBytes;
        void** a = stackalloc void*[] { &pt, &partial };
        Launch("reduce.cu", "sumsq_multi", new Dim3((uint)bx, (uint)list.Length), Threads, 0, a);
        SumFinal(partial, (long)bx * list.Length, y);
    }

    public void AdamW(IReadOnlyList<AdamWTensor> group, float beta1, float beta2, float eps, int step, float gradScale)
    {
        if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, "AdamW: step counts from 1");
        var items = group.Where(t => t.Param.Numel > 0).ToArray();
        foreach (var t in group) CheckAdam(t);
        if (items.Length == 0) return;
        if (items.Length > 65535) throw new ArgumentException("AdamW: more than 65535 tensors in one group");
        var table = new AdamWEntry[items.Length];
        long maxN = 0;
        for (int i = 0; i < items.Length; i++)
        {
            var t = items[i];
            table[i] = new AdamWEntry
            {
                Param = t.Param.Address, Grad = t.Grad.Address, M = t.M.Address, V = t.V.Address,
                Master = t.Master?.Address ?? 0, N = t.Param.Numel, Lr = t.Lr, Wd = t.WeightDecay,
                ParamDt = Dt(t.Param), GradDt = Dt(t.Grad),
            };
            maxN = Math.Max(maxN, t.Param.Numel);
        }
        nint buf = AdamTable(table);
        float bc1 = (float)(1 - Math.Pow(beta1, step)), bc2 = (float)(1 - Math.Pow(beta2, step));
        // Four elements per thread and step (adamw.cu's vector path).
        int bx = Math.Max(1, Math.Min(Grid(maxN, 4), Math.Max(1, _maxBlocks * 4 / items.Length)));
        nint pt = buf;
        void** a = stackalloc void*[] { &pt, &beta1, &beta2, &eps, &bc1, &bc2, &gradScale };
        Launch("adamw.cu", "adamw_multi", new Dim3((uint)bx, (uint)items.Length), Threads, 0, a);
    }

    void CheckAdam(in AdamWTensor t)
    {
        const string op = nameof(AdamW);
        Float(t.Param, "Param"); Float(t.Grad, "Grad"); Mine(t.M, "M"); Mine(t.V, "V");
        long n = t.Param.Numel;
        foreach (var (u, name) in new[] { (t.Grad, "Grad"), (t.M, "M"), (t.V, "V") })
            if (u.Numel != n) throw new ArgumentException($"{op}: {name} {Describe(u)} does not match Param {Describe(t.Param)}");
        if (t.M.DType != DType.F32 || t.V.DType != DType.F32) throw new ArgumentException($"{op}: M and V must be f32");
        if (t.Master is { } m)
        {
            Mine(m, "Master");
            if (m.DType != DType.F32 || m.Numel != n) throw new ArgumentException($"{op}: Master must be f32 with Param's element count, got {Describe(m)}");
        }
    }

    /// <summary>
    /// AdamW's table lives in its own device buffer and is uploaded only when it changed: the upload
    /// synchronises the stream (CopyHostToDevice), which costs more than the kernel on small groups.
    /// Nothing else writes the buffer, so an identical table means identical device contents.
    /// </summary>
    nint AdamTable(AdamWEntry[] table)
    {
        long bytes = table.Length * (long)sizeof(AdamWEntry);
        if (_adamTable != 0 && _adamTableHost.Length == table.Length && MemoryMarshal.AsBytes(table.AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(_adamTableHost.AsSpan())))
            return _adamTable;
        if (bytes > _adamTableBytes)
        {
            if (_adamTable != 0) _mem.Free(_adamTable);
            _adamTableBytes = Math.Max(bytes, 4096);
            _adamTable = _mem.Alloc(_adamTableBytes);
        }
        UploadTable(_adamTable, table);
        _adamTableHost = (AdamWEntry[])table.Clone();
        return _adamTable;
    }

    /// <summary>Copies a small table (AdamW, SumOfSquares) to device scratch; the copy is stream-ordered after earlier readers.</summary>
    void UploadTable<T>(nint dst, T[] table) where T : unmanaged
    {
        fixed (T* p = table) _dev.CopyHostToDevice(dst, p, (long)table.Length * sizeof(T));
    }

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
    static (int Smem, int Stages)? Pipelined(int kp, long rows, bool layerNorm)
    {
        if (kp > 2 || Perf("nocpa")) return null;
        if (!Perf("cpa") && !(layerNorm && rows >= 32768)) return null;
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

    IKernel Kernel(string file, string name)
    {
        lock (_kernels)
        {
            if (!_kernels.TryGetValue((file, name), out var k))
                _kernels[(file, name)] = k = _dev.GetKernel(file, name);
            return k;
        }
    }

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
