using System.Runtime.CompilerServices;
using FiberCuda.Backends.Cpu;
using FiberCuda.Backends.Cuda;
using FiberCuda.Tensors;

namespace FiberCuda.Backends;

/// <summary>
/// Swin PatchMerging's 2×2 gather fused with its LayerNorm over 4C channels, an op outside <see cref="IBackend"/>
/// found with <see cref="PatchMergeNormOps.For"/>.
/// <para>Forward: x [B, H·W, C] (token t = y·W + x; H, W even) → y [B, (H/2)·(W/2), 4C]. Output token (i, j)
/// (row-major over H/2 × W/2), quarter q = 0..3: g[q·C + c] = x[b, (2i + dy_q)·W + 2j + dx_q, c] with
/// (dy, dx) = (0,0), (1,0), (0,1), (1,1) (the official x0..x3 = [0::2,0::2], [1::2,0::2], [0::2,1::2], [1::2,1::2]);
/// y = (g − mean)·rstd·weight + bias over the 4C values, rstd = 1/√(var + eps). mean, rstd [B·(H/2)·(W/2)]
/// are saved (f32; f64 for f64 inputs).</para>
/// <para>Backward (+=, into caller-zeroed buffers; each may be null): dx += the LayerNorm input gradient
/// scattered back to the four source tokens, dweight += Σ dy·ĝ, dbias += Σ dy.</para>
/// x, y, dy, dx share one float dtype; weight and bias share one float dtype (it may differ from x's).
/// </summary>
public interface IPatchMergeNormOps
{
    void Forward(Tensor x, int height, int width, Tensor weight, Tensor bias, float eps, Tensor y, Tensor mean, Tensor rstd);
    void Backward(Tensor x, int height, int width, Tensor weight, Tensor mean, Tensor rstd, Tensor dy,
                  Tensor? dx, Tensor? dweight, Tensor? dbias);
}

public static class PatchMergeNormOps
{
    static readonly ConditionalWeakTable<IBackend, IPatchMergeNormOps> Cache = new();

    public static IPatchMergeNormOps For(IBackend backend) => Cache.GetValue(backend, b => b switch
    {
        CpuBackend => new CpuPatchMergeNorm(),
        CudaBackend cb => new CudaPatchMergeNorm(cb),
        _ => throw new NotSupportedException($"patch merge norm is not implemented for backend {b.Name}"),
    });

    /// <summary>Throws unless H and W are positive and even and x is [B, H·W, C]; returns (B, C).</summary>
    public static (int B, int C) Geometry(Tensor x, int height, int width)
    {
        if (height <= 0 || width <= 0 || height % 2 != 0 || width % 2 != 0)
            throw new ArgumentException($"patch merge norm: H = {height} and W = {width} must be positive and even (PatchMerging halves both)");
        if (x.Rank != 3 || (long)x.Dim(1) != (long)height * width || x.Dim(2) == 0)
            throw new ArgumentException($"patch merge norm: x {x} is not [B, {height}·{width}, C]");
        return (x.Dim(0), x.Dim(2));
    }

    /// <summary>Output rows B·(H/2)·(W/2).</summary>
    public static long Rows(int b, int height, int width) => (long)b * (height / 2) * (width / 2);

    internal static void Check(Tensor x, int height, int width, Tensor weight, Tensor? bias, Tensor mean, Tensor rstd)
    {
        var (b, c) = Geometry(x, height, width);
        if (!x.DType.IsFloat()) throw new ArgumentException($"patch merge norm: x {x} must be a float tensor");
        if (weight.Numel != 4L * c || !weight.DType.IsFloat()) throw new ArgumentException($"patch merge norm: weight {weight} must be {4 * c} float elements");
        if (bias is not null && (bias.Numel != 4L * c || bias.DType != weight.DType)) throw new ArgumentException($"patch merge norm: bias {bias} must match weight {weight}");
        long rows = Rows(b, height, width);
        var st = x.DType == DType.F64 ? DType.F64 : DType.F32;
        if (mean.Numel != rows || mean.DType != st) throw new ArgumentException($"patch merge norm: mean {mean} must be {rows} {st.Name()} elements");
        if (rstd.Numel != rows || rstd.DType != st) throw new ArgumentException($"patch merge norm: rstd {rstd} must be {rows} {st.Name()} elements");
    }

    internal static void CheckOut(Tensor x, int height, int width, Tensor y, string what)
    {
        var (b, c) = Geometry(x, height, width);
        if (y.Numel != Rows(b, height, width) * 4 * c || y.DType != x.DType)
            throw new ArgumentException($"patch merge norm: {what} {y} must be [{b}, {height / 2 * (width / 2)}, {4 * c}] {x.DType.Name()}");
    }

    internal static void CheckBackward(Tensor x, int height, int width, Tensor weight, Tensor mean, Tensor rstd, Tensor dy,
                                       Tensor? dx, Tensor? dweight, Tensor? dbias)
    {
        Check(x, height, width, weight, null, mean, rstd);
        CheckOut(x, height, width, dy, "dy");
        if (dx is not null && (dx.Numel != x.Numel || dx.DType != x.DType)) throw new ArgumentException($"patch merge norm: dx {dx} does not match x {x}");
        if (dweight is not null && (dweight.Numel != weight.Numel || !dweight.DType.IsFloat())) throw new ArgumentException($"patch merge norm: dweight {dweight} does not match weight {weight}");
        if (dbias is not null && (dbias.Numel != weight.Numel || !dbias.DType.IsFloat())) throw new ArgumentException($"patch merge norm: dbias {dbias} does not match weight {weight}");
    }
}
