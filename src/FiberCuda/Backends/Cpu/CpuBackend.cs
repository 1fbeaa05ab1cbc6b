using System.Numerics;
using System.Numerics.Tensors;
using Tensor = FiberCuda.Tensors.Tensor;
using System.Runtime.InteropServices;
using FiberCuda.Ops;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cpu;

/// <summary>
/// The C# reference for every op of <see cref="IBackend"/>. f32 and bf16 tensors are computed in fp32
/// (bf16 rounded once on store), f64 tensors in fp64 (the "fp64 mode" gradient checks run in).
/// Every op is generic over the compute type T (float or double); rows are spread over cores when the
/// work is big enough, inner loops go through TensorPrimitives where that helps. Reductions that cross
/// rows (bias/gamma gradients, sums of squares) accumulate in double in fixed blocks, so results do not
/// depend on the core count.
/// </summary>
public sealed unsafe partial class CpuBackend : IBackend
{
    const int Chunk = 4096;

    public string Name => "cpu";
    public BackendKind Kind => BackendKind.Cpu;
    public void Dispose() { }
    public void Synchronize() { }

    // ================================================================ memory

    public Tensor Empty(int[] shape, DType dtype)
    {
        var s = (int[])shape.Clone();
        long bytes = ShapeUtil.Numel(s) * dtype.Size();
        return new Tensor(new CpuStorage(this, bytes), s, dtype);
    }

    public Tensor Zeros(int[] shape, DType dtype)
    {
        var t = Empty(shape, dtype);
        NativeMemory.Clear((void*)t.Address, (nuint)t.Bytes);
        return t;
    }

    public void Upload(Tensor dst, ReadOnlySpan<byte> src)
    {
        Own(dst);
        if (src.Length != dst.Bytes) throw new ArgumentException($"upload of {src.Length} bytes into {dst} ({dst.Bytes} bytes)");
        src.CopyTo(new Span<byte>((void*)dst.Address, (int)dst.Bytes));
    }

    public void Download(Tensor src, Span<byte> dst)
    {
        Own(src);
        if (dst.Length != src.Bytes) throw new ArgumentException($"download of {src} ({src.Bytes} bytes) into {dst.Length} bytes");
        new ReadOnlySpan<byte>((void*)src.Address, (int)src.Bytes).CopyTo(dst);
    }

    public void Fill(Tensor t, double value)
    {
        Own(t);
        nint p = t.Address; long n = t.Numel;
        switch (t.DType)
        {
            case DType.F32: new Span<float>((void*)p, (int)n).Fill((float)value); break;
            case DType.F64: new Span<double>((void*)p, (int)n).Fill(value); break;
            case DType.BF16: new Span<ushort>((void*)p, (int)n).Fill(BFloat16.FromFloat((float)value)); break;
            case DType.I32: new Span<int>((void*)p, (int)n).Fill((int)value); break;
            case DType.I64: new Span<long>((void*)p, (int)n).Fill((long)value); break;
            default: throw new NotSupportedException(t.DType.ToString());
        }
    }

    public void Cast(Tensor src, Tensor dst)
    {
        Own(src, dst); SameNumel(src, dst);
        if (src.DType == dst.DType)
        {
            Buffer.MemoryCopy((void*)src.Address, (void*)dst.Address, dst.Bytes, src.Bytes);
            return;
        }
        bool wide = src.DType is DType.F64 or DType.I64 || dst.DType is DType.F64 or DType.I64;
        if (wide) Map1<double>(src, dst, (x, y) => x.CopyTo(y));
        else Map1<float>(src, dst, (x, y) => x.CopyTo(y));
    }

    // ================================================================ helpers

    delegate void Span1<T>(ReadOnlySpan<T> x, Span<T> y);
    delegate void Span2<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, Span<T> y);

    static void Map1<T>(Tensor x, Tensor y, Span1<T> f) where T : unmanaged, IFloatingPointIeee754<T>
    {
        long n = y.Numel;
        Par.Rows((n + Chunk - 1) / Chunk, Chunk, (c0, c1) =>
        {
            var a = new T[Chunk]; var r = new T[Chunk];
            for (long c = c0; c < c1; c++)
            {
                long s = c * Chunk; int len = (int)Math.Min(Chunk, n - s);
                HostIO.Read<T>(x, s, a.AsSpan(0, len));
                f(a.AsSpan(0, len), r.AsSpan(0, len));
                HostIO.Write<T>(y, s, r.AsSpan(0, len));
            }
        });
    }

    static void Map2<T>(Tensor x1, Tensor x2, Tensor y, Span2<T> f) where T : unmanaged, IFloatingPointIeee754<T>
    {
        long n = y.Numel;
        Par.Rows((n + Chunk - 1) / Chunk, Chunk, (c0, c1) =>
        {
            var a = new T[Chunk]; var b = new T[Chunk]; var r = new T[Chunk];
            for (long c = c0; c < c1; c++)
            {
                long s = c * Chunk; int len = (int)Math.Min(Chunk, n - s);
                HostIO.Read<T>(x1, s, a.AsSpan(0, len));
                HostIO.Read<T>(x2, s, b.AsSpan(0, len));
                f(a.AsSpan(0, len), b.AsSpan(0, len), r.AsSpan(0, len));
                HostIO.Write<T>(y, s, r.AsSpan(0, len));
            }
        });
    }

    /// <summary>t += values (doubles, rounded once into t's dtype).</summary>
    static void AccumulateDoubles(Tensor t, ReadOnlySpan<double> values)
    {
        for (int j = 0; j < values.Length; j++)
            HostIO.StoreD(t.Address, t.DType, j, HostIO.LoadD(t.Address, t.DType, j) + values[j]);
    }

    static bool Wide(params Tensor?[] ts)
    {
        foreach (var t in ts) if (t is not null && t.DType == DType.F64) return true;
        return false;
    }

    static void SameNumel(Tensor a, Tensor b)
    {
        if (a.Numel != b.Numel) throw new ArgumentException($"{a} and {b} differ in element count");
    }

    void Own(params Tensor[] ts)
    {
        foreach (var t in ts)
        {
            if (t is null) throw new ArgumentNullException(nameof(ts));
            if (t.Storage is not CpuStorage) throw new ArgumentException($"{t} does not live on the CPU backend");
        }
    }
}
