using FiberCuda.Tensors;

namespace FiberCuda.Backends;

public enum BackendKind { Cpu, Cuda, EmulatedCuda }

/// <summary>
/// The op set every backend implements: the CPU backend (the C# reference for every op), the CUDA
/// backend on a real GPU, and the same CUDA backend on the emulated GPU. No autograd here: these are
/// kernels with explicit outputs. Autograd/ composes them.
///
/// Conventions (every implementation follows them; tests hold them to it):
/// - Tensors are contiguous row-major. "Rows" means all dimensions but the last.
/// - Float inputs may be f32 or bf16 (f64 on the CPU only); math is in fp32 (fp64 for f64 tensors),
///   results are rounded to the output's dtype. Statistics (LayerNorm mean/rstd, softmax max/sum,
///   cross-entropy logsumexp) are always f32 (f64 for f64 inputs).
/// - Gradient convention: every *Backward writes its gradients with +=, into buffers the caller
///   zeroed before their first use. Forward ops overwrite their outputs unless they take an
///   `accumulate` flag.
/// - Index tensors (targets, ids) are i32 or i64.
/// </summary>
public interface IBackend : IDisposable
{
    string Name { get; }
    BackendKind Kind { get; }

    // ---------- memory ----------
    Tensor Empty(int[] shape, DType dtype);
    Tensor Zeros(int[] shape, DType dtype);
    void Upload(Tensor dst, ReadOnlySpan<byte> src);
    void Download(Tensor src, Span<byte> dst);
    void Fill(Tensor t, double value);
    /// <summary>dst = src converted to dst's dtype (f32/bf16/f64, same element count).</summary>
    void Cast(Tensor src, Tensor dst);
    void Synchronize();

    // ---------- GEMM ----------
    /// <summary>C[b] = alpha·op(A[b])·op(B[b]) + beta·C[b] (+ bias[n] on every row). See <see cref="GemmArgs"/>.</summary>
    void Gemm(in GemmArgs g);

    // ---------- elementwise (same shapes unless stated) ----------
    void Add(Tensor a, Tensor b, Tensor y);                 // y = a + b
    void Mul(Tensor a, Tensor b, Tensor y);                 // y = a * b
    void Scale(Tensor x, float s, Tensor y);                // y = s * x
    void Axpy(float alpha, Tensor x, Tensor y);             // y += alpha * x  (gradient accumulation)
    /// <summary>y = x + bias, bias [C] broadcast over rows of x [..., C].</summary>
    void AddBias(Tensor x, Tensor bias, Tensor y);

    /// <summary>y = gelu_erf(x + bias); bias [C] optional.</summary>
    void BiasGelu(Tensor x, Tensor? bias, Tensor y);
    /// <summary>dx += dy·gelu'(x + bias); dbias += Σrows of the same (when given).</summary>
    void BiasGeluBackward(Tensor x, Tensor? bias, Tensor dy, Tensor dx, Tensor? dbias);

    // ---------- normalisation ----------
    /// <summary>
    /// s = x (+ residual when given; s is then written to residualOut), y = (s - mean)·rstd·gamma + beta
    /// over the last dim. mean and rstd [rows] f32 are saved for the backward.
    /// </summary>
    void LayerNorm(Tensor x, Tensor? residual, Tensor gamma, Tensor beta, float eps,
                   Tensor y, Tensor? residualOut, Tensor mean, Tensor rstd);
    /// <summary>s is what the forward normalised (x, or x + residual). dx += ds; dgamma += ; dbeta += .</summary>
    void LayerNormBackward(Tensor s, Tensor gamma, Tensor mean, Tensor rstd, Tensor dy,
                           Tensor dx, Tensor dgamma, Tensor dbeta);

    /// <summary>y = softmax(scale·x) over the last dim.</summary>
    void Softmax(Tensor x, float scale, Tensor y);
    /// <summary>dx += scale·y·(dy − Σ dy·y).</summary>
    void SoftmaxBackward(Tensor y, Tensor dy, float scale, Tensor dx);

    // ---------- losses ----------
    /// <summary>
    /// logits [N,C], targets [N] i32/i64. loss[i] = logsumexp(logits[i]) − logits[i, t_i], or 0 where
    /// t_i == ignoreIndex. lse [N] f32 saved for the backward.
    /// </summary>
    void CrossEntropy(Tensor logits, Tensor targets, int ignoreIndex, Tensor loss, Tensor lse);
    /// <summary>dlogits[i] += dloss[i]·(softmax(logits[i]) − onehot(t_i)); ignored rows get nothing.</summary>
    void CrossEntropyBackward(Tensor logits, Tensor targets, int ignoreIndex, Tensor lse, Tensor dloss, Tensor dlogits);

    // ---------- embedding ----------
    /// <summary>y[i,:] = weight[ids[i],:]; weight [V,D], ids [N], y [N,D]. Out-of-range ids throw (CPU) or are clamped to a zero row (GPU).</summary>
    void Embedding(Tensor weight, Tensor ids, Tensor y);
    /// <summary>dweight[ids[i],:] += dy[i,:] (scatter-add; repeated ids add up).</summary>
    void EmbeddingBackward(Tensor dy, Tensor ids, Tensor dweight);

    // ---------- dropout ----------
    /// <summary>
    /// y = x·keep/(1−p), keep decided per element by Philox4x32-10 keyed by seed, counter = offset + element
    /// index (see Ops/Philox.cs): the same mask for the same (seed, offset) on every backend.
    /// </summary>
    void Dropout(Tensor x, float p, ulong seed, ulong offset, Tensor y);
    /// <summary>dx += dy·keep/(1−p) with the forward's mask.</summary>
    void DropoutBackward(Tensor dy, float p, ulong seed, ulong offset, Tensor dx);

    // ---------- reductions ----------
    /// <summary>y[rows] = Σ over the last dim of x.</summary>
    void SumLastDim(Tensor x, Tensor y);
    /// <summary>y[C] (+)= Σ over all rows of x[..., C]; the bias gradient.</summary>
    void SumRows(Tensor x, Tensor y, bool accumulate);
    /// <summary>y (one element, f32/f64) = Σ all elements of x.</summary>
    void SumAll(Tensor x, Tensor y);
    /// <summary>y = x / max(‖x‖₂, eps) over the last dim; norm [rows] f32 saved.</summary>
    void L2Normalize(Tensor x, float eps, Tensor y, Tensor norm);
    /// <summary>dx += (dy − y·Σ(dy·y)) / max(‖x‖, eps).</summary>
    void L2NormalizeBackward(Tensor y, Tensor norm, float eps, Tensor dy, Tensor dx);

    // ---------- layout ----------
    /// <summary>y = x with dims permuted: y.shape[i] = x.shape[perm[i]]; rank ≤ 6. accumulate: y += instead of =.</summary>
    void Permute(Tensor x, int[] perm, Tensor y, bool accumulate);
    /// <summary>
    /// Copies x[..., srcStart:srcStart+len, ...] (along <paramref name="axis"/>) into
    /// y[..., dstStart:dstStart+len, ...]. Slice, concat and both backwards are this op.
    /// All other dims must match.
    /// </summary>
    void CopySlice(Tensor x, int axis, int srcStart, Tensor y, int dstStart, int len, bool accumulate);

    // ---------- optimizer ----------
    /// <summary>
    /// y (one element f32) = Σ over tensors of Σ x², accumulated in fp32 (fp64 for f64).
    /// Used for global gradient-norm clipping.
    /// </summary>
    void SumOfSquares(IReadOnlyList<Tensor> xs, Tensor y);
    /// <summary>
    /// One fused AdamW step over many tensors (see <see cref="AdamWTensor"/>). g = grad·gradScale;
    /// m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²; w −= lr·(m/(1−β1^t) / (sqrt(v/(1−β2^t)) + eps) + wd·w).
    /// Weight decay is decoupled (AdamW). With a bf16 Param, Master holds the fp32 weights and Param
    /// receives their rounding.
    /// </summary>
    void AdamW(IReadOnlyList<AdamWTensor> group, float beta1, float beta2, float eps, int step, float gradScale);
}

/// <summary>
/// Row-major GEMM. op(A) is [M,K]: A is stored [M,K], or [K,M] when TransA. op(B) is [K,N]: B is
/// stored [K,N], or [N,K] when TransB. C is [M,N]. Strides are in elements between batch items
/// (0 broadcasts that operand). A and B share a dtype (f32, or bf16 with fp32 accumulation; f64 on the
/// CPU); C may be f32 or bf16; Bias [N] is f32 or C's dtype.
/// </summary>
public readonly record struct GemmArgs(
    Tensor A, Tensor B, Tensor C,
    int M, int N, int K,
    bool TransA = false, bool TransB = false,
    float Alpha = 1f, float Beta = 0f,
    Tensor? Bias = null,
    int Batch = 1, long StrideA = 0, long StrideB = 0, long StrideC = 0);

/// <summary>One tensor of a fused AdamW step. M and V are f32 like Master; Grad is f32 or bf16.</summary>
public readonly record struct AdamWTensor(
    Tensor Param, Tensor Grad, Tensor M, Tensor V, Tensor? Master, float Lr, float WeightDecay);
