using FiberCuda.Backends.Cpu;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

/// <summary>
/// <see cref="IHeadOps"/> on a GPU (real or emulated), over a <see cref="CudaBackend"/>: kernels of
/// kernels/itc.cu and kernels/mlm.cu launched on the backend's device, scratch from the backend's
/// allocator (plain tensors), GEMMs through the device's cuBLASLt (the C# reference on the emulator).
///
/// ITC is one custom kernel: the work is tiny (2B query rows × (B+Q) keys × D, a few hundred MFLOP at
/// FIBER's sizes) and fusing the similarity, online log-softmax and both gradients means the keys are
/// read once and no [B, B+Q] matrix exists.
///
/// MLM uses the engine GEMM per V tile plus small row kernels: the decoder matmuls are ~all of the
/// FLOPs (2·N·V·H forward, ×3 with the backward, V = 50265) and cuBLASLt runs them on tensor cores near
/// peak, which a single hand-written fused kernel would have to match before fusion paid off. What
/// fusion is for here — never holding [N, V] — the tiling gives: the scratch is one [N, tile] f32 block
/// (tile = 8192 columns by default: 13 MB at N = 400 instead of 80 MB), the forward keeps an online
/// logsumexp per row, and the backward recomputes each tile's logits, turns them into the softmax
/// gradient in place and feeds the two gradient GEMMs (dHidden += G·W_tile, dW_tile += Gᵀ·hidden).
/// </summary>
public sealed unsafe class CudaHeadOps : IHeadOps
{
    const int ItcRows = 4;       // ITC_R in itc.cu
    const int ItcThreads = 256;  // ITC_THREADS in itc.cu (the kernel's column loop assumes it)
    const int ItcMaxD = 1024;    // ITC_DMAX in itc.cu

    readonly CudaBackend _be;
    readonly IGpuDevice _dev;
    int _tile = 8192;

    public CudaHeadOps(CudaBackend backend)
    {
        _be = backend ?? throw new ArgumentNullException(nameof(backend));
        _dev = backend.Device;
    }

    public IBackend Backend => _be;

    public int MlmTileColumns
    {
        get => _tile;
        set => _tile = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(value), "a tile needs at least one column");
    }

    // ------------------------------------------------------------------ plumbing

    IKernel Kernel(string file, string name) => _dev.GetKernel(file, name);

    void Launch(string file, string name, Dim3 grid, Dim3 block, void** args) => _dev.Launch(Kernel(file, name), grid, block, 0, args);

    int RowThreads(int c) => Math.Clamp((c + 31) / 32 * 32, 32, _dev.IsEmulated ? 64 : 256);

    int GridFor(long n, int threads) => (int)Math.Clamp((n + threads - 1) / threads, 1, _dev.IsEmulated ? 8 : 4096);

    void Mine(Tensor? t, string name)
    {
        if (t is null) return;
        if (!ReferenceEquals(t.Backend, _be)) throw new ArgumentException($"{name} {t} does not live on {_be.Name}");
        if (t.Storage.IsDisposed) throw new ObjectDisposedException(name);
        if (t.DType == DType.F64) throw new NotSupportedException("the CUDA backend does not support f64 tensors (f64 is for the CPU reference only)");
    }

    static string S(DType d) => d switch
    {
        DType.F32 => "f32",
        DType.BF16 => "bf16",
        _ => throw new ArgumentException($"a float tensor (f32 or bf16) is required, got {d.Name()}"),
    };

    static int Dt(Tensor? t) => t is null ? -1 : t.DType switch
    {
        DType.F32 => 0,
        DType.BF16 => 1,
        _ => throw new ArgumentException($"{t}: f32 or bf16 required"),
    };

    static void F32(Tensor t, string op, string name)
    {
        if (t.DType != DType.F32) throw new ArgumentException($"{op}: {name} must be f32 on the GPU, got {t}");
    }

    // ------------------------------------------------------------------ ITC

    public void ClampInPlace(Tensor t, double lo, double hi)
    {
        Mine(t, "t");
        if (!(lo <= hi)) throw new ArgumentException($"ClampInPlace: lo {lo} > hi {hi}");
        nint p = t.Address; long n = t.Numel; float l = (float)lo, h = (float)hi;
        if (n == 0) return;
        void** a = stackalloc void*[] { &p, &l, &h, &n };
        Launch("itc.cu", "clamp_" + S(t.DType), GridFor(n, 256), 256, a);
    }

    public void ItcForward(Tensor imgQ, Tensor txtQ, Tensor imgK, Tensor txtK, Tensor imgQueue, Tensor txtQueue, Tensor temp,
                           Tensor loss, Tensor? gImg, Tensor? gTxt, Tensor? gTemp)
    {
        const string op = nameof(ItcForward);
        foreach (var (t, nm) in new[] { (imgQ, "imgQ"), (txtQ, "txtQ"), (imgK, "imgK"), (txtK, "txtK"), (imgQueue, "imgQueue"), (txtQueue, "txtQueue"), (temp, "temp"), (loss, "loss") })
            Mine(t, nm);
        Mine(gImg, "gImg"); Mine(gTxt, "gTxt"); Mine(gTemp, "gTemp");
        var (b, d, q) = CpuHeadOps.ItcShapes(op, imgQ, txtQ, imgK, txtK, imgQueue, txtQueue, temp, loss, gImg, gTxt, gTemp);
        F32(temp, op, "temp"); F32(loss, op, "loss"); if (gTemp is not null) F32(gTemp, op, "gTemp");
        if (d > ItcMaxD) throw new ArgumentException($"{op}: feature width {d} > {ItcMaxD}");
        using var rows = _be.Empty(new[] { 4 * b }, DType.F32);
        nint pi = imgQ.Address, pt = txtQ.Address, pik = imgK.Address, ptk = txtK.Address, piq = imgQueue.Address, ptq = txtQueue.Address,
             ptemp = temp.Address, pl = rows.Address, pr = rows.Address + 2 * b * 4,
             pgi = gImg?.Address ?? 0, pgt = gTxt?.Address ?? 0;
        void** a = stackalloc void*[] { &pi, &pt, &pik, &ptk, &piq, &ptq, &ptemp, &b, &q, &d, &pl, &pr, &pgi, &pgt };
        Launch("itc.cu", "itc_rows_" + S(imgQ.DType), new Dim3((uint)((b + ItcRows - 1) / ItcRows), 2), ItcThreads, a);
        int n2 = 2 * b; float scale = 1f / (2f * b);
        nint ploss = loss.Address, pgtemp = gTemp?.Address ?? 0;
        void** f = stackalloc void*[] { &pl, &pr, &n2, &scale, &ploss, &pgtemp };
        Launch("itc.cu", "itc_finish", 1, _dev.IsEmulated ? 64 : 256, f);
    }

    public void ScaleAccumulate(Tensor s, Tensor x, Tensor y)
    {
        Mine(s, "s"); Mine(x, "x"); Mine(y, "y");
        if (s.Numel != 1) throw new ArgumentException($"ScaleAccumulate: s must have one element, got {s}");
        if (x.Numel != y.Numel || x.DType != y.DType) throw new ArgumentException($"ScaleAccumulate: {x} and {y} must match in size and dtype");
        nint ps = s.Address, px = x.Address, py = y.Address; int sdt = Dt(s); long n = x.Numel;
        if (n == 0) return;
        void** a = stackalloc void*[] { &ps, &sdt, &px, &py, &n };
        Launch("itc.cu", "scale_acc_" + S(x.DType), GridFor(n, 256), 256, a);
    }

    public int QueueEnqueue(Tensor queue, Tensor feats, int ptr)
    {
        Mine(queue, "queue"); Mine(feats, "feats");
        var (b, rowBytes, q) = CpuHeadOps.EnqueueShapes(queue, feats, ptr);
        int first = Math.Min(b, q - ptr);
        if (first > 0) _dev.CopyDeviceToDevice(queue.Address + (nint)(ptr * rowBytes), feats.Address, first * rowBytes);
        if (b > first) _dev.CopyDeviceToDevice(queue.Address, feats.Address + (nint)(first * rowBytes), (b - first) * rowBytes);
        return (ptr + b) % q;
    }

    // ------------------------------------------------------------------ MLM

    int Tile(int n, int v)
    {
        // Multiples of 8 columns keep every weight-tile pointer 16-byte aligned for cuBLASLt; the
        // scratch is capped at 64M f32 elements whatever the row count.
        long cap = Math.Max(8, (64L << 20) / Math.Max(1, n) / 8 * 8);
        long t = Math.Min(_tile, cap);
        if (t < v) t = Math.Max(8, t / 8 * 8);
        return (int)Math.Max(1, Math.Min(t, v));
    }

    void TileGemm(Tensor hidden, Tensor weight, int n, int h, int v0, int tv, nint dst)
    {
        _dev.Gemm(new GemmDesc(hidden.Address, weight.Address + (nint)((long)v0 * h * weight.DType.Size()), dst, 0,
            hidden.DType, DType.F32, DType.F32, n, tv, h, false, true, 1f, 0f, 1, 0, 0, 0));
    }

    public void MlmForward(Tensor hidden, Tensor weight, Tensor? bias, Tensor labels, int ignoreIndex, Tensor loss, Tensor lse)
    {
        const string op = nameof(MlmForward);
        Mine(hidden, "hidden"); Mine(weight, "weight"); Mine(bias, "bias"); Mine(labels, "labels"); Mine(loss, "loss"); Mine(lse, "lse");
        var (n, h, v) = CpuHeadOps.MlmShapes(op, hidden, weight, bias, labels);
        if (loss.Numel != n) throw new ArgumentException($"{op}: loss {loss} must have {n} elements");
        F32(lse, op, "lse"); if (lse.Numel != n) throw new ArgumentException($"{op}: lse {lse} must have {n} elements");
        S(hidden.DType); int ldt = Dt(loss);
        if (n == 0) return;
        int tile = Tile(n, v);
        using var scratch = _be.Empty(new[] { n * tile + 3 * n }, DType.F32);
        nint pz = scratch.Address, pm = pz + (nint)((long)n * tile * 4), pl = pm + n * 4, pt = pl + n * 4;
        nint pb = bias?.Address ?? 0, plab = labels.Address; int bdt = Dt(bias);
        string ti = labels.DType == DType.I32 ? "i32" : "i64";
        int threads = RowThreads(Math.Min(tile, v));
        int tv = 0, first = 1; long lv0 = 0;
        void** a = stackalloc void*[] { &pz, &tv, &lv0, &pb, &bdt, &plab, &pm, &pl, &pt, &first };
        for (int v0 = 0; v0 < v; v0 += tile)
        {
            tv = Math.Min(tile, v - v0); lv0 = v0; first = v0 == 0 ? 1 : 0;
            TileGemm(hidden, weight, n, h, v0, tv, pz);
            Launch("mlm.cu", "mlm_online_" + ti, n, threads, a);
        }
        long ignore = ignoreIndex, lV = v; nint ploss = loss.Address, plse = lse.Address;
        void** f = stackalloc void*[] { &n, &pm, &pl, &pt, &plab, &ignore, &lV, &ploss, &ldt, &plse };
        Launch("mlm.cu", "mlm_finish_" + ti, GridFor(n, 256), 256, f);
    }

    public void MlmBackward(Tensor hidden, Tensor weight, Tensor? bias, Tensor labels, int ignoreIndex, Tensor lse, Tensor dloss,
                            Tensor? dHidden, Tensor? dWeight, Tensor? dBias)
    {
        const string op = nameof(MlmBackward);
        Mine(hidden, "hidden"); Mine(weight, "weight"); Mine(bias, "bias"); Mine(labels, "labels"); Mine(lse, "lse"); Mine(dloss, "dloss");
        Mine(dHidden, "dHidden"); Mine(dWeight, "dWeight"); Mine(dBias, "dBias");
        var (n, h, v) = CpuHeadOps.MlmShapes(op, hidden, weight, bias, labels);
        F32(lse, op, "lse");
        if (lse.Numel != n || dloss.Numel != n) throw new ArgumentException($"{op}: lse {lse} and dloss {dloss} must have {n} elements");
        if (dHidden is not null && dHidden.Numel != (long)n * h) throw new ArgumentException($"{op}: dHidden {dHidden} must be [{n},{h}]");
        if (dWeight is not null && dWeight.Numel != (long)v * h) throw new ArgumentException($"{op}: dWeight {dWeight} must be [{v},{h}]");
        if (dBias is not null && dBias.Numel != v) throw new ArgumentException($"{op}: dBias {dBias} must have {v} elements");
        int ddt = Dt(dloss), dbdt = Dt(dBias); S(hidden.DType);
        if (dHidden is not null) S(dHidden.DType);
        if (dWeight is not null) S(dWeight.DType);
        if (n == 0 || (dHidden is null && dWeight is null && dBias is null)) return;
        int tile = Tile(n, v);
        using var scratch = _be.Empty(new[] { n, tile }, DType.F32);
        // G goes to the GEMMs with the weights' dtype (A and B share one); f32 rewrites the logits in place.
        using var gbuf = weight.DType == DType.F32 ? null : _be.Empty(new[] { n, tile }, weight.DType);
        nint pz = scratch.Address, pg = gbuf?.Address ?? pz;
        nint pb = bias?.Address ?? 0, plab = labels.Address, plse = lse.Address, pd = dloss.Address, pdb = dBias?.Address ?? 0;
        int bdt = Dt(bias); long ignore = ignoreIndex, lV = v;
        string name = $"mlm_grad_{S(weight.DType)}_{(labels.DType == DType.I32 ? "i32" : "i64")}";
        const int gt = 64;
        int tv = 0; long lv0 = 0;
        void** a = stackalloc void*[] { &pz, &pg, &n, &tv, &lv0, &lV, &pb, &bdt, &plab, &ignore, &plse, &pd, &ddt, &pdb, &dbdt };
        for (int v0 = 0; v0 < v; v0 += tile)
        {
            tv = Math.Min(tile, v - v0); lv0 = v0;
            TileGemm(hidden, weight, n, h, v0, tv, pz);
            Launch("mlm.cu", name, (tv + gt - 1) / gt, gt, a);
            nint wTile = weight.Address + (nint)((long)v0 * h * weight.DType.Size());
            if (dHidden is not null)
                _dev.Gemm(new GemmDesc(pg, wTile, dHidden.Address, 0, weight.DType, dHidden.DType, dHidden.DType,
                    n, h, tv, false, false, 1f, 1f, 1, 0, 0, 0));
            if (dWeight is not null)
                _dev.Gemm(new GemmDesc(pg, hidden.Address, dWeight.Address + (nint)((long)v0 * h * dWeight.DType.Size()), 0, weight.DType, dWeight.DType, dWeight.DType,
                    tv, h, n, true, false, 1f, 1f, 1, 0, 0, 0));
        }
    }
}
