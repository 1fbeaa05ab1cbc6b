using System.Runtime.CompilerServices;
using FiberCuda.Backends.Cpu;
using FiberCuda.Backends.Cuda;
using FiberCuda.Tensors;

namespace FiberCuda.Backends;

/// <summary>
/// Fused gated residual y = r + α·x, α a one-element tensor (the fusion gates alpha_i2t / alpha_t2i applied
/// to the cross-attention output), an op outside <see cref="IBackend"/> found with <see cref="GatedResidualOps.For"/>.
/// r, x, y share one element count and dtype; α may have another float dtype.
/// Backward (+=): dr += dy, dx += α·dy (dr, dx may be null), dα (when given) += Σ dy·x.
/// </summary>
public interface IGatedResidualOps
{
    void Forward(Tensor r, Tensor x, Tensor alpha, Tensor y);
    void Backward(Tensor x, Tensor alpha, Tensor dy, Tensor? dr, Tensor? dx, Tensor? dalpha);
}

public static class GatedResidualOps
{
    static readonly ConditionalWeakTable<IBackend, IGatedResidualOps> Cache = new();

    public static IGatedResidualOps For(IBackend backend) => Cache.GetValue(backend, b => b switch
    {
        CpuBackend => new CpuGatedResidual(),
        CudaBackend cb => new CudaGatedResidual(cb),
        _ => throw new NotSupportedException($"gated residual is not implemented for backend {b.Name}"),
    });

    internal static void Check(Tensor r, Tensor x, Tensor alpha, Tensor y)
    {
        if (alpha.Numel != 1 || !alpha.DType.IsFloat()) throw new ArgumentException($"gated residual: alpha {alpha} must be one float element");
        if (r.Numel != x.Numel || y.Numel != x.Numel) throw new ArgumentException($"gated residual: r {r}, x {x}, y {y} differ in size");
        if (r.DType != x.DType || y.DType != x.DType || !x.DType.IsFloat()) throw new ArgumentException($"gated residual: r {r}, x {x}, y {y} must share one float dtype");
    }

    internal static void CheckBackward(Tensor x, Tensor alpha, Tensor dy, Tensor? dr, Tensor? dx, Tensor? dalpha)
    {
        Check(dy, x, alpha, dy);
        if (dr is not null && (dr.Numel != x.Numel || dr.DType != x.DType)) throw new ArgumentException($"gated residual: dr {dr} does not match {x}");
        if (dx is not null && (dx.Numel != x.Numel || dx.DType != x.DType)) throw new ArgumentException($"gated residual: dx {dx} does not match {x}");
        if (dalpha is not null && (dalpha.Numel != 1 || !dalpha.DType.IsFloat())) throw new ArgumentException($"gated residual: dalpha {dalpha} must be one float element");
    }
}
