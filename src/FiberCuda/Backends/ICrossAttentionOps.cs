using System.Runtime.CompilerServices;
using FiberCuda.Backends.Cpu;
using FiberCuda.Backends.Cuda;
using FiberCuda.Tensors;

namespace FiberCuda.Backends;

/// <summary>
/// Geometry of one fused cross-attention call: <see cref="Lq"/> queries per batch item attend over
/// <see cref="Lk"/> keys (any length: 144 or 576 image tokens, up to ~3,400 in the fine model, up to 256
/// text tokens), <see cref="Heads"/> heads of <see cref="HeadDim"/> channels, score scale (d^-0.5).
/// <see cref="DropP"/> &gt; 0 applies dropout to the attention probabilities exactly as F.Dropout on the
/// [B, nH, Lq, Lk] probability tensor would: element e = ((b·nH + h)·Lq + i)·Lk + j is kept iff
/// Philox.Uniform(<see cref="Seed"/>, <see cref="Offset"/>, e) ≥ p, kept values scaled by 1/(1−p).
/// </summary>
public readonly record struct CrossAttentionShape(int Batch, int Lq, int Lk, int Heads, int HeadDim, float Scale,
                                                  float DropP = 0f, ulong Seed = 0, ulong Offset = 0)
{
    /// <summary>Elements of the (never stored) probability tensor: the dropout stream length.</summary>
    public long ProbElements => (long)Batch * Heads * Lq * Lk;
    public int Channels => Heads * HeadDim;
    public int[] QShape => [Batch, Lq, Channels];
    public int[] KvShape => [Batch, Lk, Channels];
    public int[] OutShape => [Batch, Lq, Channels];
    public int[] LseShape => [Batch, Heads, Lq];
    public int[] MaskShape => [Batch, Lk];

    public void Validate()
    {
        if (Batch < 1 || Lq < 1 || Lk < 1 || Heads < 1 || HeadDim < 1) throw new ArgumentException($"cross attention: bad geometry {this}");
        if (!(DropP >= 0f && DropP < 1f)) throw new ArgumentException($"cross attention: dropout p {DropP} is outside [0, 1)");
    }

    /// <summary>Checks the tensors of a call against this geometry (element counts; shapes may be any view of them).</summary>
    public void Check(Tensor q, Tensor k, Tensor v, Tensor? keyMask, Tensor? y, Tensor? lse)
    {
        Validate();
        Need(q, (long)Batch * Lq * Channels, "q");
        Need(k, (long)Batch * Lk * Channels, "k");
        Need(v, (long)Batch * Lk * Channels, "v");
        if (k.DType != q.DType || v.DType != q.DType) throw new ArgumentException($"cross attention: q {q}, k {k}, v {v} must share one dtype");
        if (!q.DType.IsFloat()) throw new ArgumentException("cross attention: float tensors only");
        if (keyMask is not null) { Need(keyMask, (long)Batch * Lk, "keyMask"); if (!keyMask.DType.IsFloat()) throw new ArgumentException("cross attention: the key mask must be a float (additive) tensor"); }
        if (y is not null) { Need(y, (long)Batch * Lq * Channels, "y"); if (y.DType != q.DType) throw new ArgumentException($"cross attention: y {y} must have q's dtype {q.DType.Name()}"); }
        if (lse is not null) Need(lse, (long)Batch * Heads * Lq, "lse");
    }

    static void Need(Tensor t, long n, string what)
    {
        if (t.Numel != n) throw new ArgumentException($"cross attention: {what} {t} has {t.Numel} elements, {n} expected");
    }
}

/// <summary>
/// Fused multi-head cross-attention, an op outside <see cref="IBackend"/> (one implementation per backend
/// kind, found with <see cref="CrossAttentionOps.For"/>).
///
/// Forward: q [B, Lq, C], k and v [B, Lk, C] (C = nH·d, head h = channels h·d..h·d+d−1, i.e. the Linear
/// outputs before SplitHeads); per batch item b and head h, S = scale·q·kᵀ + keyMask[b, j] (additive, per
/// key, broadcast over heads and queries; none when null), P = softmax over keys, O = P·v, heads merged →
/// y [B, Lq, C] (with dropout: O = drop(P)·v). lse [B, nH, Lq] (f32; f64 for f64 inputs) is the per-row logsumexp of S.
///
/// Backward (gradient convention: +=): recomputes P from q, k, the mask and lse; dq, dk, dv (each may be
/// null when not needed) += the gradients. The mask gets no gradient (it is a constant).
/// </summary>
public interface ICrossAttentionOps
{
    void Forward(Tensor q, Tensor k, Tensor v, Tensor? keyMask, in CrossAttentionShape a, Tensor y, Tensor lse);
    void Backward(Tensor q, Tensor k, Tensor v, Tensor? keyMask, in CrossAttentionShape a, Tensor y, Tensor lse, Tensor dy,
                  Tensor? dq, Tensor? dk, Tensor? dv);
}

public static class CrossAttentionOps
{
    static readonly ConditionalWeakTable<IBackend, ICrossAttentionOps> Cache = new();

    /// <summary>The implementation for <paramref name="backend"/> (CPU reference or CUDA kernels).</summary>
    public static ICrossAttentionOps For(IBackend backend) => Cache.GetValue(backend, b => b switch
    {
        CpuBackend => new CpuCrossAttention(),
        CudaBackend cb => new CudaCrossAttention(cb),
        _ => throw new NotSupportedException($"cross attention is not implemented for backend {b.Name}"),
    });

    /// <summary>
    /// Whether the fused op runs this head dim on <paramref name="backend"/>: the CPU reference takes any;
    /// the CUDA kernels take d = 32 (Swin image side) and d = 64 (RoBERTa text side). Sequence lengths are free.
    /// </summary>
    public static bool Supports(IBackend backend, int headDim) => backend switch
    {
        CpuBackend => true,
        CudaBackend => headDim == 32 || headDim == 64,
        _ => false,
    };
}
