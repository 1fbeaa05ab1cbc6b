using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Nn;

/// <summary>y = x·Wᵀ + b (nn.Linear: `weight` [out,in], `bias` [out]).</summary>
public sealed class Linear : Module
{
    public Linear(NnContext ctx, int inFeatures, int outFeatures, bool bias = true) : base(ctx)
    {
        InFeatures = inFeatures; OutFeatures = outFeatures;
        Weight = Param("weight", outFeatures, inFeatures);
        if (bias) Bias = Param("bias", outFeatures);
    }
    public int InFeatures { get; }
    public int OutFeatures { get; }
    public Tensor Weight { get; }
    public Tensor? Bias { get; }
    public Tensor Forward(Tensor x) => F.Linear(x, Weight, Bias);
}

/// <summary>nn.LayerNorm over the last dim (`weight`, `bias`).</summary>
public sealed class LayerNorm : Module
{
    public LayerNorm(NnContext ctx, int dim, float eps = 1e-5f) : base(ctx)
    {
        Eps = eps;
        Weight = Param("weight", dim);
        Bias = Param("bias", dim);
        ctx.Backend.Fill(Weight, 1.0);
    }
    public float Eps { get; }
    public Tensor Weight { get; }
    public Tensor Bias { get; }
    public Tensor Forward(Tensor x) => F.LayerNorm(x, Weight, Bias, Eps);
    /// <summary>LayerNorm(x + residual), fused.</summary>
    public Tensor Forward(Tensor x, Tensor residual) => F.LayerNormResidual(x, residual, Weight, Bias, Eps).Y;
}

/// <summary>
/// nn.Embedding (`weight` [num, dim]). With <c>paddingIdx</c> (as HF RoBERTa's word and position embeddings)
/// the padding row gets no gradient: its rows in the output are replaced by a constant copy, so the backward
/// sends nothing to it (the forward values are unchanged).
/// </summary>
public sealed class Embedding : Module
{
    public Embedding(NnContext ctx, int num, int dim, int? paddingIdx = null) : base(ctx)
    {
        Weight = Param("weight", num, dim);
        PaddingIdx = paddingIdx;
    }
    public Tensor Weight { get; }
    public int? PaddingIdx { get; }

    public Tensor Forward(Tensor ids) => F.Embedding(Weight, ids);

    /// <summary>Lookup of host ids [shape]; rows of <see cref="PaddingIdx"/> carry no gradient.</summary>
    public Tensor Forward(int[] ids, int[] shape)
    {
        var be = Ctx.Backend;
        var idt = be.FromInts(ids, shape);
        var y = F.Embedding(Weight, idt);
        if (PaddingIdx is not int pad || Array.IndexOf(ids, pad) < 0 || !Autograd.Grad.IsEnabled || !Weight.RequiresGrad) return y;
        int d = Weight.Dim(1);
        var keep = new double[y.Numel];
        for (int i = 0; i < ids.Length; i++) if (ids[i] != pad) Array.Fill(keep, 1.0, i * d, d);
        var keepT = be.FromDoubles(keep, y.Shape, y.DType);
        Tensor konst;
        using (Autograd.Grad.NoGrad())
        {
            var dropT = be.FromDoubles(Array.ConvertAll(keep, k => 1.0 - k), y.Shape, y.DType);
            konst = F.Mul(F.Embedding(Weight, idt), dropT); // the pad rows' values, detached
        }
        return F.Add(F.Mul(y, keepT), konst);
    }
}

/// <summary>Inverted dropout with the context's Philox stream; identity in eval mode or at p = 0.</summary>
public sealed class Dropout(NnContext ctx, float p) : Module(ctx)
{
    public float P { get; } = p;
    public Tensor Forward(Tensor x) =>
        Training && P > 0f ? F.Dropout(x, P, Ctx.Seed, Ctx.TakeOffset(x.Numel)) : x;
}

/// <summary>
/// Stochastic depth (timm DropPath): in training each batch element's branch is dropped with
/// probability p and the kept ones scaled by 1/(1−p); identity in eval mode. The per-sample decision is
/// the Philox uniform of element b of the context's stream (offset = Ctx.TakeOffset(B), once per call).
/// Runs as <see cref="DropPathOp"/>: one elementwise pass, the residual add fused in <see cref="Forward(Tensor, Tensor)"/>.
/// </summary>
public sealed class DropPath(NnContext ctx, float p) : Module(ctx)
{
    public float P { get; } = p;

    public Tensor Forward(Tensor x)
    {
        if (!Training || P <= 0f) return x;
        return DropPathOp.Apply(x, P, Ctx.Seed, Ctx.TakeOffset(x.Dim(0)));
    }

    /// <summary>residual + DropPath(y), fused (the Swin block's <c>x + drop_path(f(x))</c>).</summary>
    public Tensor Forward(Tensor y, Tensor residual)
    {
        if (!Training || P <= 0f) return F.Add(residual, y);
        return DropPathOp.Apply(y, P, Ctx.Seed, Ctx.TakeOffset(y.Dim(0)), residual);
    }
}
