using System.Runtime.InteropServices;
using FiberCuda.Backends.Cpu;
using FiberCuda.Tensors;

namespace FiberCuda.Backends;

/// <summary>Process-wide backends. The CPU backend is stateless, so one instance serves everyone.</summary>
public static class Backend
{
    public static CpuBackend Cpu { get; } = new();

    /// <summary>Where new tensors go when no backend is named (the CPU unless someone picks a GPU).</summary>
    public static IBackend Default { get; set; } = Cpu;
}

/// <summary>Host-array conveniences for any backend (tests, loaders, examples).</summary>
public static class BackendExtensions
{
    /// <summary>A tensor of <paramref name="dtype"/> (f32, bf16 or f64) holding <paramref name="data"/>, rounded as needed.</summary>
    public static Tensor FromDoubles(this IBackend b, double[] data, int[] shape, DType dtype = DType.F32)
    {
        var t = b.Empty(shape, dtype);
        if (data.Length != t.Numel) { t.Dispose(); throw new ArgumentException($"{data.Length} values for shape {ShapeUtil.Format(shape)}"); }
        switch (dtype)
        {
            case DType.F64: b.Upload(t, MemoryMarshal.AsBytes(data.AsSpan())); break;
            case DType.F32: b.Upload(t, MemoryMarshal.AsBytes(Array.ConvertAll(data, d => (float)d).AsSpan())); break;
            case DType.BF16: b.Upload(t, MemoryMarshal.AsBytes(Array.ConvertAll(data, d => BFloat16.FromFloat((float)d)).AsSpan())); break;
            case DType.I32: b.Upload(t, MemoryMarshal.AsBytes(Array.ConvertAll(data, d => (int)d).AsSpan())); break;
            case DType.I64: b.Upload(t, MemoryMarshal.AsBytes(Array.ConvertAll(data, d => (long)d).AsSpan())); break;
            default: throw new NotSupportedException(dtype.ToString());
        }
        return t;
    }

    public static Tensor FromFloats(this IBackend b, float[] data, int[] shape, DType dtype = DType.F32)
    {
        if (dtype == DType.F32)
        {
            var t = b.Empty(shape, dtype);
            if (data.Length != t.Numel) { t.Dispose(); throw new ArgumentException($"{data.Length} values for shape {ShapeUtil.Format(shape)}"); }
            b.Upload(t, MemoryMarshal.AsBytes(data.AsSpan()));
            return t;
        }
        return b.FromDoubles(Array.ConvertAll(data, f => (double)f), shape, dtype);
    }

    public static Tensor FromInts(this IBackend b, int[] data, int[] shape, DType dtype = DType.I32)
    {
        if (dtype == DType.I32)
        {
            var t = b.Empty(shape, dtype);
            if (data.Length != t.Numel) { t.Dispose(); throw new ArgumentException($"{data.Length} values for shape {ShapeUtil.Format(shape)}"); }
            b.Upload(t, MemoryMarshal.AsBytes(data.AsSpan()));
            return t;
        }
        return b.FromDoubles(Array.ConvertAll(data, i => (double)i), shape, dtype);
    }

    /// <summary>A copy of <paramref name="t"/> on backend <paramref name="b"/> (same dtype and shape).</summary>
    public static Tensor CopyFrom(this IBackend b, Tensor t)
    {
        var bytes = new byte[t.Bytes];
        t.Backend.Download(t, bytes);
        var r = b.Empty(t.Shape, t.DType);
        b.Upload(r, bytes);
        return r;
    }
}
