using System.Runtime.CompilerServices;
using FiberCuda.Backends.Cpu;
using FiberCuda.Backends.Cuda;
using FiberCuda.Tensors;

namespace FiberCuda.Backends;

/// <summary>
/// The fused loss ops of FIBER's coarse pre-training heads (spec §4): image-text contrastive loss
/// (ITC) with feature queues, and the masked-LM decoder + cross-entropy that never holds the full
/// [N, V] logits. A second interface next to <see cref="IBackend"/> (which stays the shared contract);
/// get the implementation of a backend with <see cref="HeadOpsExtensions.Heads"/>.
///
/// Conventions are IBackend's: contiguous row-major tensors; f32/bf16 inputs with fp32 math (f64 with
/// fp64 math on the CPU only); every *Backward accumulates (+=) into buffers the caller zeroed.
/// </summary>
public interface IHeadOps
{
    IBackend Backend { get; }

    // ------------------------------------------------------------------ ITC

    /// <summary>
    /// t = clamp(t, lo, hi) in place, every element (the official code clamps the temperature
    /// parameter under no_grad before each ITC step, so the clamp persists and has no gradient).
    /// NaN stays NaN (like torch.clamp_).
    /// </summary>
    void ClampInPlace(Tensor t, double lo, double hi);

    /// <summary>
    /// ALBEF/FIBER ITC with queues. imgQ, txtQ [B,D]: the query features (L2-normalised by the caller);
    /// imgK, txtK [B,D]: the in-batch keys, which get no gradient (the official code uses the detached
    /// query features, so pass the same tensors; a momentum encoder would pass its own); imgQueue,
    /// txtQueue [Q,D] (Q ≥ 0): queued keys, one entry per ROW (the official buffers are [D,Q]: this is
    /// their transpose); temp [1]: the temperature τ (not clamped here, see <see cref="ClampInPlace"/>).
    ///   s_i2t[b] = imgQ[b]·[txtK ‖ txtQueue]ᵀ / τ,  s_t2i[b] = txtQ[b]·[imgK ‖ imgQueue]ᵀ / τ   ([B, B+Q])
    ///   loss = ½·( mean_b(lse(s_i2t[b]) − s_i2t[b,b]) + mean_b(lse(s_t2i[b]) − s_t2i[b,b]) )
    /// loss [1] is written. When given, gImg/gTxt [B,D] and gTemp [1] are OVERWRITTEN with ∂loss/∂imgQ,
    /// ∂loss/∂txtQ and ∂loss/∂τ (the gradient for an upstream gradient of 1: the op computes loss and
    /// gradients in one pass over the keys; the autograd backward scales them, see <see cref="ScaleAccumulate"/>).
    /// Features, keys, queues and gImg/gTxt share one float dtype; temp, loss and gTemp are f32 (f64 on
    /// the CPU in the f64 mode). D ≤ 1024 on the GPU.
    /// </summary>
    void ItcForward(Tensor imgQ, Tensor txtQ, Tensor imgK, Tensor txtK, Tensor imgQueue, Tensor txtQueue, Tensor temp,
                    Tensor loss, Tensor? gImg, Tensor? gTxt, Tensor? gTemp);

    /// <summary>y += s[0]·x, s a one-element tensor read on the device (no host round trip).</summary>
    void ScaleAccumulate(Tensor s, Tensor x, Tensor y);

    /// <summary>
    /// Ring-buffer enqueue: queue[(ptr + i) mod Q, :] = feats[i, :] for i in [0, B). queue [Q,D], feats [B,D],
    /// same dtype, B ≤ Q, 0 ≤ ptr &lt; Q. Returns the new pointer (ptr + B) mod Q. Wraps around the end like
    /// the official _dequeue_and_enqueue (which does not need Q to be a multiple of B).
    /// </summary>
    int QueueEnqueue(Tensor queue, Tensor feats, int ptr);

    // ------------------------------------------------------------------ MLM

    /// <summary>
    /// Fused MLM decoder + cross-entropy: logits[i, v] = hidden[i]·weight[v] + bias[v] (hidden [N,H],
    /// weight [V,H], bias [V] optional), never stored whole (online logsumexp over V tiles).
    /// loss [N] = lse[i] − logits[i, labels[i]], 0 where labels[i] == ignoreIndex, NaN where a label is
    /// outside [0, V) and not ignored (the GPU does not throw; the CPU throws). lse [N] f32 (f64) is saved
    /// for the backward (it is also written for ignored rows). labels [N] i32/i64.
    /// </summary>
    void MlmForward(Tensor hidden, Tensor weight, Tensor? bias, Tensor labels, int ignoreIndex, Tensor loss, Tensor lse);

    /// <summary>
    /// With G[i, v] = dloss[i]·(softmax(logits[i])[v] − [v == labels[i]]) (0 for ignored rows), recomputed
    /// tile by tile: dHidden += G·weight, dWeight += Gᵀ·hidden, dBias += Σ_i G[i, :]. Any gradient may be null.
    /// </summary>
    void MlmBackward(Tensor hidden, Tensor weight, Tensor? bias, Tensor labels, int ignoreIndex, Tensor lse, Tensor dloss,
                     Tensor? dHidden, Tensor? dWeight, Tensor? dBias);

    /// <summary>Columns of V per tile in the MLM ops (default 8192; smaller tiles exercise the tiling in tests).</summary>
    int MlmTileColumns { get; set; }
}

public static class HeadOpsExtensions
{
    static readonly ConditionalWeakTable<IBackend, IHeadOps> Ops = new();

    /// <summary>The <see cref="IHeadOps"/> of a backend (one per backend instance).</summary>
    public static IHeadOps Heads(this IBackend backend)
    {
        ArgumentNullException.ThrowIfNull(backend);
        return Ops.GetValue(backend, b => b switch
        {
            CpuBackend cpu => new CpuHeadOps(cpu),
            CudaBackend cuda => new CudaHeadOps(cuda),
            _ => throw new NotSupportedException($"no head ops for backend {b.Name}"),
        });
    }
}
