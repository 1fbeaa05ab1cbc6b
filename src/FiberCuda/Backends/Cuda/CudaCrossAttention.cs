using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

/// <summary>
/// <see cref="ICrossAttentionOps"/> with kernels/cross_attention.cu: blocks of 4 warps own 16 rows of one
/// (batch item, head); keys stream through shared memory in tiles of 32 with an online softmax, so Lk is
/// unbounded; fp32 math; head dim 32 or 64. The backward is three launches: D_i = dO_i·O_i into an f32
/// scratch, dQ per query row, dK/dV per key row (each block owns its rows: deterministic, no atomics).
/// Attention-probability dropout is the Philox stream of F.Dropout over [B, nH, Lq, Lk], regenerated in
/// every pass (nothing stored). Shared memory per block is at most ~25 KB (d = 64), under the 48 KB default.
/// </summary>
public sealed unsafe class CudaCrossAttention : ICrossAttentionOps
{
    const string File = "cross_attention.cu";
    const int Warps = 4;
    const int Rows = 16;
    const int Tile = 32;

    readonly CudaBackend _be;

    public CudaCrossAttention(CudaBackend backend) { _be = backend; }

    IKernel Kernel(string name, int smem)
    {
        var k = _be.Device.GetKernel(File, name);
        if (k.MaxDynamicSharedBytes < smem) k.MaxDynamicSharedBytes = smem;
        return k;
    }

    static string Tn(Tensor t) => t.DType switch
    {
        DType.F32 => "f32",
        DType.BF16 => "bf16",
        _ => throw new ArgumentException($"cross attention (CUDA): {t} must be f32 or bf16"),
    };

    static int MaskDt(Tensor? m) => m is null ? 0 : m.DType switch
    {
        DType.F32 => 0,
        DType.BF16 => 1,
        _ => throw new ArgumentException($"cross attention (CUDA): mask {m} must be f32 or bf16"),
    };

    void Mine(Tensor? t, string what)
    {
        if (t is not null && !ReferenceEquals(t.Backend, _be)) throw new ArgumentException($"cross attention (CUDA): {what} {t} is not on {_be.Name}");
    }

    static void Supported(in CrossAttentionShape a)
    {
        if (a.HeadDim != 32 && a.HeadDim != 64) throw new NotSupportedException($"cross attention (CUDA): head dim {a.HeadDim}; the kernels take 32 or 64");
        if ((long)a.Batch * a.Heads > 65535) throw new NotSupportedException($"cross attention (CUDA): B·nH = {(long)a.Batch * a.Heads} exceeds the grid's y limit");
    }

    public static int ForwardSharedBytes(int d) => 4 * (Rows * d + Tile * (d + 1) + Tile * d + Tile);
    public static int DqSharedBytes(int d) => 4 * (2 * Rows * d + 2 * Tile * (d + 1) + Tile);
    public static int DkdvSharedBytes(int d) => 4 * (2 * Rows * d + 2 * Tile * (d + 1) + 2 * Tile);

    string Name(string kind, Tensor q, in CrossAttentionShape a) => $"cross_attn_{kind}_{Tn(q)}_d{a.HeadDim}";

    public void Forward(Tensor q, Tensor k, Tensor v, Tensor? keyMask, in CrossAttentionShape a, Tensor y, Tensor lse)
    {
        a.Check(q, k, v, keyMask, y, lse); Supported(a);
        Mine(q, "q"); Mine(k, "k"); Mine(v, "v"); Mine(keyMask, "keyMask"); Mine(y, "y"); Mine(lse, "lse");
        if (lse.DType != DType.F32) throw new ArgumentException($"cross attention (CUDA): lse {lse} must be f32");
        int smem = ForwardSharedBytes(a.HeadDim);
        var kr = Kernel(Name("fwd", q, a), smem);
        nint pq = q.Address, pk = k.Address, pv = v.Address, pm = keyMask?.Address ?? 0, py = y.Address, pl = lse.Address;
        int mdt = MaskDt(keyMask), Lq = a.Lq, Lk = a.Lk, nH = a.Heads; float scale = a.Scale, dp = a.DropP;
        ulong seed = a.Seed, off = a.Offset;
        void** args = stackalloc void*[] { &pq, &pk, &pv, &pm, &mdt, &py, &pl, &Lq, &Lk, &nH, &scale, &dp, &seed, &off };
        _be.Device.Launch(kr, new Dim3((uint)((a.Lq + Rows - 1) / Rows), (uint)(a.Batch * a.Heads)), Warps * 32, smem, args);
    }

    public void Backward(Tensor q, Tensor k, Tensor v, Tensor? keyMask, in CrossAttentionShape a, Tensor y, Tensor lse, Tensor dy,
                         Tensor? dq, Tensor? dk, Tensor? dv)
    {
        a.Check(q, k, v, keyMask, y, lse); Supported(a);
        Mine(q, "q"); Mine(k, "k"); Mine(v, "v"); Mine(keyMask, "keyMask"); Mine(y, "y"); Mine(lse, "lse"); Mine(dy, "dy");
        Mine(dq, "dq"); Mine(dk, "dk"); Mine(dv, "dv");
        if (lse.DType != DType.F32) throw new ArgumentException($"cross attention (CUDA): lse {lse} must be f32");
        if (dy.Numel != y.Numel || dy.DType != q.DType) throw new ArgumentException($"cross attention (CUDA): dy {dy} does not match y {y}");
        if (dq is not null && (dq.Numel != q.Numel || dq.DType != q.DType)) throw new ArgumentException($"cross attention (CUDA): dq {dq} does not match q {q}");
        if (dk is not null && (dk.Numel != k.Numel || dk.DType != k.DType)) throw new ArgumentException($"cross attention (CUDA): dk {dk} does not match k {k}");
        if (dv is not null && (dv.Numel != v.Numel || dv.DType != v.DType)) throw new ArgumentException($"cross attention (CUDA): dv {dv} does not match v {v}");
        if (dq is null && dk is null && dv is null) return;
        using var dd = _be.Empty(a.LseShape, DType.F32);
        nint pq = q.Address, pk = k.Address, pv = v.Address, pm = keyMask?.Address ?? 0, py = y.Address, pl = lse.Address;
        nint pdy = dy.Address, pd = dd.Address, pdq = dq?.Address ?? 0, pdk = dk?.Address ?? 0, pdv = dv?.Address ?? 0;
        int mdt = MaskDt(keyMask), B = a.Batch, Lq = a.Lq, Lk = a.Lk, nH = a.Heads; float scale = a.Scale, dp = a.DropP;
        ulong seed = a.Seed, off = a.Offset;
        uint bh = (uint)(a.Batch * a.Heads);

        var kd = Kernel(Name("bwd_dot", q, a), 0);
        long rows = (long)a.Batch * a.Heads * a.Lq;
        void** da = stackalloc void*[] { &py, &pdy, &pd, &B, &Lq, &nH };
        _be.Device.Launch(kd, (uint)Math.Max(1, Math.Min((rows + 7) / 8, 4096)), 256, 0, da);

        if (dq is not null)
        {
            int smem = DqSharedBytes(a.HeadDim);
            var kq = Kernel(Name("bwd_dq", q, a), smem);
            void** qa = stackalloc void*[] { &pq, &pk, &pv, &pm, &mdt, &pl, &pd, &pdy, &pdq, &Lq, &Lk, &nH, &scale, &dp, &seed, &off };
            _be.Device.Launch(kq, new Dim3((uint)((a.Lq + Rows - 1) / Rows), bh), Warps * 32, smem, qa);
        }
        if (dk is not null || dv is not null)
        {
            int smem = DkdvSharedBytes(a.HeadDim);
            var kk = Kernel(Name("bwd_dkdv", q, a), smem);
            void** ka = stackalloc void*[] { &pq, &pk, &pv, &pm, &mdt, &pl, &pd, &pdy, &pdk, &pdv, &Lq, &Lk, &nH, &scale, &dp, &seed, &off };
            _be.Device.Launch(kk, new Dim3((uint)((a.Lk + Rows - 1) / Rows), bh), Warps * 32, smem, ka);
        }
    }
}
