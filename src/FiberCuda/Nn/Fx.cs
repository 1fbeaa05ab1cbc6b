using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Nn;

/// <summary>
/// Differentiable helpers the model needs that are compositions of existing <see cref="F"/> ops
/// (no new kernels): scalar gates, tanh, token means, cyclic rolls, attention. Fused kernels replace
/// these later; the compositions stay as the reference.
/// </summary>
public static class Fx
{
    /// <summary>α·x for a one-element parameter α (a rank-1 GEMM, so α gets Σ x·dy as its gradient).</summary>
    public static Tensor ScaleBy(Tensor x, Tensor alpha)
    {
        if (alpha.Numel != 1) throw new ArgumentException($"ScaleBy: {alpha} is not a scalar");
        var y = F.Linear(F.Reshape(x, (int)x.Numel, 1), F.Reshape(alpha, 1, 1));
        return F.Reshape(y, x.Shape);
    }

    /// <summary>tanh(x) = 2·σ(2x) − 1, with σ(2x) = softmax([x, −x])₀: only softmax, slices and scales.</summary>
    public static Tensor Tanh(Tensor x)
    {
        int n = (int)x.Numel;
        var a = F.Reshape(x, n, 1);
        var pair = F.Concat([a, F.Scale(a, -1f)], 1);
        var s0 = F.Slice(F.Softmax(pair), 1, 0, 1);
        var minusOne = Const(x.Backend, [-1.0], [1], x.DType);
        return F.Reshape(F.AddBias(F.Scale(s0, 2f), minusOne), x.Shape);
    }

    /// <summary>Mean over the token axis: [B, N, D] → [B, D].</summary>
    public static Tensor MeanTokens(Tensor x)
    {
        int b = x.Dim(0), n = x.Dim(1), d = x.Dim(2);
        // xᵀ·(1/N): one batched GEMM, and 1/N in the tensor's own precision (F.Scale takes a float).
        var w = Const(x.Backend, Enumerable.Repeat(1.0 / n, n).ToArray(), [n, 1], x.DType);
        // F.MatMul broadcasts a 2-D operand only over a batch > 1, so a single image is a plain 2-D product.
        var a = b == 1 ? F.Reshape(x, n, d) : x;
        return F.Reshape(F.MatMul(a, w, transA: true), b, d);
    }

    /// <summary>x[:, i] along axis 1 of [B, L, D] → [B, D].</summary>
    public static Tensor Token(Tensor x, int i) => F.Reshape(F.Slice(x, 1, i, 1), x.Dim(0), x.Dim(2));

    /// <summary>A constant (no gradient) tensor.</summary>
    public static Tensor Const(IBackend be, double[] values, int[] shape, DType dtype) => be.FromDoubles(values, shape, dtype);

    /// <summary>torch.roll(x, shift, dim): y[i] = x[(i − shift) mod n] along <paramref name="axis"/>.</summary>
    public static Tensor Roll(Tensor x, int shift, int axis)
    {
        int n = x.Shape[axis];
        int k = ((shift % n) + n) % n;
        if (k == 0) return x;
        return F.Concat([F.Slice(x, axis, n - k, k), F.Slice(x, axis, 0, n - k)], axis);
    }

    /// <summary>
    /// Zero-pads a token grid [B, h·w, C] (row-major) at the bottom and right to [B, hp·wp, C], as the detection Swin's
    /// `F.pad` after norm1; the gradient of the padding is dropped.
    /// </summary>
    public static Tensor PadGrid(Tensor x, int h, int w, int hp, int wp)
    {
        if (hp == h && wp == w) return x;
        int b = x.Dim(0), c = x.Dim(2);
        var g = F.Reshape(x, b, h, w, c);
        if (wp > w) g = F.Concat([g, x.Backend.Zeros([b, h, wp - w, c], x.DType)], 2);
        if (hp > h) g = F.Concat([g, x.Backend.Zeros([b, hp - h, wp, c], x.DType)], 1);
        return F.Reshape(g, b, hp * wp, c);
    }

    /// <summary>The top-left h×w tokens of a grid [B, hp·wp, C] (the crop after the detection Swin's attention).</summary>
    public static Tensor CropGrid(Tensor x, int hp, int wp, int h, int w)
    {
        if (hp == h && wp == w) return x;
        int b = x.Dim(0), c = x.Dim(2);
        var g = F.Reshape(x, b, hp, wp, c);
        if (hp > h) g = F.Slice(g, 1, 0, h);
        if (wp > w) g = F.Slice(g, 2, 0, w);
        return F.Reshape(g, b, h * w, c);
    }

    /// <summary>[B, L, H·dh] → [B, H, L, dh].</summary>
    public static Tensor SplitHeads(Tensor x, int heads)
    {
        int b = x.Dim(0), l = x.Dim(1), d = x.Dim(2);
        return F.Permute(F.Reshape(x, b, l, heads, d / heads), 0, 2, 1, 3);
    }

    /// <summary>[B, H, L, dh] → [B, L, H·dh].</summary>
    public static Tensor MergeHeads(Tensor x)
    {
        int b = x.Dim(0), h = x.Dim(1), l = x.Dim(2), dh = x.Dim(3);
        return F.Reshape(F.Permute(x, 0, 2, 1, 3), b, l, h * dh);
    }

    /// <summary>
    /// The decoder mask of the caption path (roberta.py `_prepare_decoder_attention_mask`): −inf above the diagonal
    /// (causal) plus the dtype's lowest finite value at padded keys, so a future pad key is −inf and a past one
    /// finfo.min; [B, heads, L, L].
    /// </summary>
    public static Tensor CausalKeyMask(IBackend be, int[] mask, int batch, int len, int heads, DType dtype)
    {
        double lowest = dtype == DType.F64 ? double.MinValue : dtype == DType.BF16 ? -3.3895313892515355e38 : float.MinValue;
        var v = new double[(long)batch * heads * len * len];
        long o = 0;
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < len; i++)
                    for (int j = 0; j < len; j++)
                        v[o++] = j > i ? double.NegativeInfinity : mask[b * len + j] == 0 ? lowest : 0.0;
        return be.FromDoubles(v, [batch, heads, len, len], dtype);
    }

    /// <summary>
    /// Additive key mask of a 0/1 text mask [B, L]: (1 − m)·<paramref name="value"/>, expanded to the
    /// score shape [B, heads, rows, L] (the ops have no broadcasting; the mask is a constant).
    /// </summary>
    public static Tensor ExpandKeyMask(IBackend be, int[] mask, int batch, int len, int heads, int rows, DType dtype, double value = -10000.0)
    {
        var v = new double[(long)batch * heads * rows * len];
        long o = 0;
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int r = 0; r < rows; r++)
                    for (int j = 0; j < len; j++) v[o++] = (1 - mask[b * len + j]) * value;
        return be.FromDoubles(v, [batch, heads, rows, len], dtype);
    }
}
