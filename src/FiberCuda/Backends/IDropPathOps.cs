using System.Runtime.CompilerServices;
using FiberCuda.Backends.Cpu;
using FiberCuda.Backends.Cuda;
using FiberCuda.Tensors;

namespace FiberCuda.Backends;

/// <summary>
/// Stochastic depth (DropPath) with an optional fused residual add, an op outside <see cref="IBackend"/> found with
/// <see cref="DropPathOps.For"/>. y, residual, out: [B, ...] (B = y.Dim(0)), one float dtype, rows of
/// per = numel / B elements.
/// <para>Forward: out[b, ·] = (residual ?? 0)[b, ·] + y[b, ·]·s[b], s[b] = keep_b · <see cref="DropPathOps.Scale"/>,
/// keep_b = Philox.Uniform(seed, offset, b) ≥ p: one draw per sample, exactly the numbers of Nn.DropPath
/// (which takes offset = Ctx.TakeOffset(B)). Math in fp32 (fp64 for f64), rounded once.</para>
/// <para>Backward (+=, each may be null): dy += dout·s[b]; dresidual += dout.</para>
/// </summary>
public interface IDropPathOps
{
    void Forward(Tensor y, Tensor? residual, float p, ulong seed, ulong offset, Tensor output);
    void Backward(Tensor dout, float p, ulong seed, ulong offset, Tensor? dy, Tensor? dresidual);
}

public static class DropPathOps
{
    static readonly ConditionalWeakTable<IBackend, IDropPathOps> Cache = new();

    public static IDropPathOps For(IBackend backend) => Cache.GetValue(backend, b => b switch
    {
        CpuBackend => new CpuDropPath(),
        CudaBackend cb => new CudaDropPath(cb),
        _ => throw new NotSupportedException($"drop path is not implemented for backend {b.Name}"),
    });

    /// <summary>
    /// The kept samples' factor 1/(1 − p) as a tensor of <paramref name="dtype"/> holds it (PyTorch's drop_path divides a
    /// mask of x's dtype; Nn.DropPath multiplied by such a mask): rounded to bf16 for bf16, to float for f32; 0 when p ≥ 1.
    /// </summary>
    public static double Scale(float p, DType dtype)
    {
        if (p >= 1f) return 0;
        double s = 1.0 / (1.0 - p);
        return dtype switch
        {
            DType.F64 => s,
            DType.BF16 => BFloat16.Round((float)s),
            _ => (float)s,
        };
    }

    /// <summary>s[b] for b &lt; <paramref name="batch"/>: <see cref="Scale"/> where sample b is kept, else 0.</summary>
    public static double[] SampleScales(int batch, float p, ulong seed, ulong offset, DType dtype)
    {
        double sc = Scale(p, dtype);
        var s = new double[batch];
        for (int b = 0; b < batch; b++) s[b] = Ops.Philox.Uniform(seed, offset, b) >= p ? sc : 0.0;
        return s;
    }

    internal static void CheckP(float p)
    {
        if (!(p >= 0f && p <= 1f)) throw new ArgumentOutOfRangeException(nameof(p), p, "drop path: p must be in [0, 1]");
    }

    internal static void Check(Tensor y, Tensor? residual, Tensor output, float p)
    {
        CheckP(p);
        if (y.Rank < 1 || !y.DType.IsFloat()) throw new ArgumentException($"drop path: y {y} must be a float tensor [B, ...]");
        if (output.Numel != y.Numel || output.DType != y.DType) throw new ArgumentException($"drop path: output {output} does not match y {y}");
        if (residual is not null && (residual.Numel != y.Numel || residual.DType != y.DType)) throw new ArgumentException($"drop path: residual {residual} does not match y {y}");
    }

    internal static void CheckBackward(Tensor dout, float p, Tensor? dy, Tensor? dresidual)
    {
        CheckP(p);
        if (dout.Rank < 1 || !dout.DType.IsFloat()) throw new ArgumentException($"drop path: dout {dout} must be a float tensor [B, ...]");
        if (dy is not null && (dy.Numel != dout.Numel || dy.DType != dout.DType)) throw new ArgumentException($"drop path: dy {dy} does not match dout {dout}");
        if (dresidual is not null && (dresidual.Numel != dout.Numel || dresidual.DType != dout.DType)) throw new ArgumentException($"drop path: dresidual {dresidual} does not match dout {dout}");
    }
}
