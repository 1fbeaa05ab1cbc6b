using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

/// <summary>
/// <see cref="IWindowAttentionOps"/> with kernels/window_attention.cu: one block of 4 warps per (window,
/// head), fp32 math in shared memory, head dim 32, w² ≤ 352 (w ≤ 18). Shared memory per block (f32 rows
/// padded to 33): forward 2·w²·33·4 B + small (w = 18: ~101 KB), backward 4·w²·33·4 B + per-warp buffers
/// and private table-gradient copies (w = 18: ~215 KB, which needs sm_90's 227 KB opt-in).
/// The bias-table gradient is deterministic: per-block partial tables [B·nW, nH, (2w−1)²] f32 in a
/// scratch buffer, then a second kernel sums them over windows in a fixed order and adds into dtable.
/// bf16 inputs take the tensor-core forward (window_attn_fwd_tc_bf16: mma.sync m16n8k16, FlashAttention-2
/// style, P rounded to bf16 before P·V; sm_80+) unless <see cref="UseTensorCores"/> is false; it writes the
/// same y and lse as the fp32-math forward. The bf16 backward likewise takes the tensor-core kernel
/// (window_attn_bwd_tc_bf16: dK, dV, the table gradient by key tiles, then dQ by query tiles; see
/// <see cref="TensorCoreBackwardSharedBytes"/>) unless <see cref="UseTensorCores"/> is false or its shared
/// memory exceeds the device's opt-in limit; then the fp32-math backward runs. Its shared memory is Q, K, V as bf16 rows
/// of 80 B for N rounded up to 16, plus the bias table and per-key info (w = 7: ~16 KB, 12: ~36 KB, 18: ~85 KB);
/// up to 8 warps per block, each owning 16 query rows at a time.
/// </summary>
public sealed unsafe class CudaWindowAttention : IWindowAttentionOps
{
    const string File = "window_attention.cu";
    const int Warps = 4;
    const int MaxN = 11 * 32;
    const int Ld = 33;

    readonly CudaBackend _be;

    /// <summary>FIBER_WINDOW_ATTENTION_TC=0 turns the tensor-core forward and backward off (read once per process).</summary>
    public static readonly bool TensorCoresByDefault = Environment.GetEnvironmentVariable("FIBER_WINDOW_ATTENTION_TC") != "0";

    /// <summary>Whether bf16 forwards and backwards use the tensor-core kernels (f32 always uses the fp32 kernel). Tests and benches flip it.</summary>
    public bool UseTensorCores { get; set; } = TensorCoresByDefault;

    public CudaWindowAttention(CudaBackend backend) { _be = backend; }

    IKernel Kernel(string name, int smem)
    {
        var k = _be.Device.GetKernel(File, name);
        if (k.MaxDynamicSharedBytes < smem) k.MaxDynamicSharedBytes = smem;
        return k;
    }

    static int Dt(Tensor t) => t.DType switch
    {
        DType.F32 => 0,
        DType.BF16 => 1,
        _ => throw new ArgumentException($"window attention (CUDA): {t} must be f32 or bf16"),
    };

    void Mine(Tensor t, string what)
    {
        if (!ReferenceEquals(t.Backend, _be)) throw new ArgumentException($"window attention (CUDA): {what} {t} is not on {_be.Name}");
    }

    static void Supported(in WindowAttentionShape a)
    {
        if (a.HeadDim != 32) throw new NotSupportedException($"window attention (CUDA): head dim {a.HeadDim}; the kernel needs 32");
        if (a.N > MaxN) throw new NotSupportedException($"window attention (CUDA): window {a.Window} has {a.N} tokens; the kernel takes at most {MaxN}");
    }

    public static int ForwardSharedBytes(in WindowAttentionShape a)
        => 4 * (2 * a.N * Ld + Warps * (64 + 2 * a.N) + a.TableRows + a.N);

    /// <summary>Tokens rounded up to whole 16-row m-tiles.</summary>
    static int PaddedN(in WindowAttentionShape a) => (a.N + 15) & ~15;

    /// <summary>Q, K, V as bf16 rows of 40 (80 B), then packed key offsets and labels (int) and the bias table (f32).</summary>
    public static int TensorCoreForwardSharedBytes(in WindowAttentionShape a)
        => 3 * PaddedN(a) * 40 * 2 + 4 * (PaddedN(a) + a.TableRows);

    /// <summary>Warps per block of the tensor-core forward: each takes 16 query rows at a time; at most 8,
    /// spread so every warp gets the same number of m-tiles ± 1.</summary>
    public static int TensorCoreWarps(in WindowAttentionShape a)
    {
        int tiles = PaddedN(a) / 16, rounds = (tiles + 7) / 8;
        return (tiles + rounds - 1) / rounds;
    }

    /// <summary>Q, K, V, dO rows; lse, D; per-warp pair rows and table copies; table; labels; per-warp padding dK|dV [64].</summary>
    public static int BackwardSharedBytes(in WindowAttentionShape a)
        => 4 * (4 * a.N * Ld + 2 * a.N + Warps * 4 * a.N + Warps * a.TableRows + a.TableRows + a.N + Warps * 64);

    /// <summary>Q, K, V, dO as bf16 rows of 40; lse, D, key info [Npad]; the table; per warp a table copy, the
    /// padding tokens' dK|dV [64] and a 16×68 f32 staging tile (w = 7: 43,060 B with 4 warps, 12: 83,544 B with 5, 18: 183,008 B with 7: fits sm_90's 227 KB, not sm_80's 163 KB).</summary>
    public static int TensorCoreBackwardSharedBytes(in WindowAttentionShape a)
        => 4 * PaddedN(a) * 40 * 2 + 4 * (3 * PaddedN(a) + a.TableRows + TensorCoreWarps(a) * (a.TableRows + 64 + 16 * 68));

    /// <summary>The most dynamic shared memory a block of this device may opt in to.</summary>
    int SharedLimit => _be.Device is CudaDevice cd ? cd.MaxSharedMemoryPerBlockOptin : EmulatedDevice.MaxDynamicSharedBytesLimit;

    /// <summary>Whether <see cref="Backward"/> takes the tensor-core kernel for this geometry and dtype: bf16,
    /// <see cref="UseTensorCores"/>, and its shared memory fits the device (else the fp32-math backward).</summary>
    public bool TensorCoreBackward(in WindowAttentionShape a, DType dt)
        => dt == DType.BF16 && UseTensorCores && TensorCoreBackwardSharedBytes(a) <= SharedLimit;

    public void Forward(Tensor qkv, Tensor table, in WindowAttentionShape a, Tensor y, Tensor lse, Tensor? pad = null)
    {
        a.Check(qkv, table, y, lse); a.CheckPad(qkv, pad, null); Supported(a);
        Mine(qkv, "qkv"); Mine(table, "table"); Mine(y, "y"); Mine(lse, "lse");
        if (pad is not null) Mine(pad, "pad");
        int qdt = Dt(qkv), tdt = Dt(table);
        if (lse.DType != DType.F32) throw new ArgumentException($"window attention (CUDA): lse {lse} must be f32");
        bool tc = qdt == 1 && UseTensorCores;
        int smem = tc ? TensorCoreForwardSharedBytes(a) : ForwardSharedBytes(a);
        int warps = tc ? TensorCoreWarps(a) : Warps;
        var k = Kernel(tc ? "window_attn_fwd_tc_bf16" : qdt == 0 ? "window_attn_fwd_f32" : "window_attn_fwd_bf16", smem);
        nint pq = qkv.Address, pt = table.Address, py = y.Address, pl = lse.Address, pp = pad?.Address ?? 0;
        int B = a.Batch, H = a.Height, W = a.Width, Hr = a.ValidHeight, Wr = a.ValidWidth, nH = a.Heads, w = a.Window, s = a.Shift; float scale = a.Scale;
        void** args = stackalloc void*[] { &pq, &pt, &tdt, &py, &pl, &pp, &B, &H, &W, &Hr, &Wr, &nH, &w, &s, &scale };
        _be.Device.Launch(k, new Dim3((uint)a.Windows, (uint)a.Heads), (uint)(warps * 32), smem, args);
    }

    public void Backward(Tensor qkv, Tensor table, in WindowAttentionShape a, Tensor y, Tensor lse, Tensor dy, Tensor dqkv, Tensor? dtable,
                         Tensor? pad = null, Tensor? dpad = null)
    {
        a.Check(qkv, table, y, lse); a.CheckPad(qkv, pad, dpad); Supported(a);
        Mine(qkv, "qkv"); Mine(table, "table"); Mine(y, "y"); Mine(lse, "lse"); Mine(dy, "dy"); Mine(dqkv, "dqkv");
        if (pad is not null) Mine(pad, "pad");
        if (dpad is not null) Mine(dpad, "dpad");
        if (lse.DType != DType.F32) throw new ArgumentException($"window attention (CUDA): lse {lse} must be f32");
        if (dy.Numel != y.Numel || dy.DType != qkv.DType) throw new ArgumentException($"window attention (CUDA): dy {dy} does not match y {y}");
        if (dqkv.Numel != qkv.Numel || dqkv.DType != qkv.DType) throw new ArgumentException($"window attention (CUDA): dqkv {dqkv} does not match qkv {qkv}");
        int qdt = Dt(qkv), tdt = Dt(table);
        Tensor? part = null;
        if (dtable is not null)
        {
            Mine(dtable, "dtable");
            if (dtable.Numel != table.Numel) throw new ArgumentException($"window attention (CUDA): dtable {dtable} does not match table {table}");
            part = _be.Empty([a.Windows, a.Heads, a.TableRows], DType.F32);
        }
        // Padding tokens' dK|dV per (window, head), summed over windows by the second kernel (deterministic).
        Tensor? padPart = dpad is not null && a.Padded ? _be.Empty([a.Windows, a.Heads, 64], DType.F32) : null;
        try
        {
            bool tc = TensorCoreBackward(a, qkv.DType);
            int smem = tc ? TensorCoreBackwardSharedBytes(a) : BackwardSharedBytes(a);
            uint threads = (uint)(32 * (tc ? TensorCoreWarps(a) : Warps));
            var k = Kernel(tc ? "window_attn_bwd_tc_bf16" : qdt == 0 ? "window_attn_bwd_f32" : "window_attn_bwd_bf16", smem);
            nint pq = qkv.Address, pt = table.Address, py = y.Address, pl = lse.Address, pdy = dy.Address, pdq = dqkv.Address;
            nint pp = part?.Address ?? 0, ppad = pad?.Address ?? 0, pdp = padPart?.Address ?? 0;
            int B = a.Batch, H = a.Height, W = a.Width, Hr = a.ValidHeight, Wr = a.ValidWidth, nH = a.Heads, w = a.Window, s = a.Shift; float scale = a.Scale;
            void** args = stackalloc void*[] { &pq, &pt, &tdt, &py, &pl, &pdy, &pdq, &pp, &ppad, &pdp, &B, &H, &W, &Hr, &Wr, &nH, &w, &s, &scale };
            _be.Device.Launch(k, new Dim3((uint)a.Windows, (uint)a.Heads), threads, smem, args);
            if (padPart is not null)
            {
                var r = Kernel("window_attn_dpad_reduce", 0);
                nint pd = dpad!.Address; int nwin = a.Windows;
                void** ra = stackalloc void*[] { &pdp, &nwin, &nH, &pd, &qdt };
                int total = 64 * nH;
                _be.Device.Launch(r, (uint)Math.Max(1, Math.Min((total + 255) / 256, 1024)), 256, 0, ra);
            }
            if (part is not null)
            {
                var r = Kernel("window_attn_dbias_reduce", 0);
                nint pd = dtable!.Address; int nwin = a.Windows, T2 = a.TableRows, ddt = Dt(dtable);
                void** ra = stackalloc void*[] { &pp, &nwin, &nH, &T2, &pd, &ddt };
                int total = T2 * nH;
                _be.Device.Launch(r, (uint)Math.Max(1, Math.Min((total + 255) / 256, 1024)), 256, 0, ra);
            }
        }
        finally { part?.Dispose(); padPart?.Dispose(); }
    }
}
