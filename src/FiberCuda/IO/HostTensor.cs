using System.Buffers.Binary;
using System.Runtime.InteropServices;
using FiberCuda.Tensors;

namespace FiberCuda.IO;

/// <summary>
/// A tensor in host memory as read from (or written to) a weight file: dtype, shape, and the elements
/// contiguous, C order, little-endian. Shapes are long because a checkpoint may describe buffers that
/// are never read (a 7 GB image queue); the data itself is a managed array.
/// </summary>
public sealed class HostTensor
{
    public HostTensor(WeightDType dtype, long[] shape, byte[] data)
    {
        long n = CountElements(shape);
        if (n * dtype.Size() != data.LongLength)
            throw new ArgumentException($"{dtype.Lower()}{Fmt(shape)} needs {n * dtype.Size()} bytes, got {data.LongLength}");
        DType = dtype; Shape = shape; Data = data;
    }

    public WeightDType DType { get; }
    public long[] Shape { get; }
    public byte[] Data { get; }
    public long Numel => CountElements(Shape);
    public int[] IntShape => Array.ConvertAll(Shape, d => checked((int)d));

    public static long CountElements(ReadOnlySpan<long> shape)
    {
        long n = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new WeightFormatException("negative dimension");
            n = checked(n * d);
        }
        return n;
    }

    public static string Fmt(ReadOnlySpan<long> shape) => "[" + string.Join(",", shape.ToArray()) + "]";

    public static HostTensor FromFloats(float[] v, params long[] shape)
    {
        var b = new byte[v.Length * 4];
        MemoryMarshal.AsBytes(v.AsSpan()).CopyTo(b);
        if (!BitConverter.IsLittleEndian) SwapInPlace(b, 4);
        return new HostTensor(WeightDType.F32, shape, b);
    }

    public static HostTensor FromLongs(long[] v, params long[] shape)
    {
        var b = new byte[v.Length * 8];
        for (int i = 0; i < v.Length; i++) BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(i * 8), v[i]);
        return new HostTensor(WeightDType.I64, shape, b);
    }

    /// <summary>Values widened to double (integers exactly up to 2^53), for conversion and tests.</summary>
    public double[] ToDoubles()
    {
        long n = Numel;
        var r = new double[n];
        ReadOnlySpan<byte> d = Data;
        for (long i = 0; i < n; i++) r[i] = ReadAsDouble(d, DType, i);
        return r;
    }

    public float[] ToFloats() => Array.ConvertAll(ToDoubles(), x => (float)x);

    public static double ReadAsDouble(ReadOnlySpan<byte> d, WeightDType t, long i)
    {
        int s = t.Size();
        var e = d.Slice(checked((int)(i * s)), s);
        return t switch
        {
            WeightDType.Bool => e[0] != 0 ? 1 : 0,
            WeightDType.U8 => e[0],
            WeightDType.I8 => (sbyte)e[0],
            WeightDType.I16 => BinaryPrimitives.ReadInt16LittleEndian(e),
            WeightDType.U16 => BinaryPrimitives.ReadUInt16LittleEndian(e),
            WeightDType.F16 => (double)BinaryPrimitives.ReadHalfLittleEndian(e),
            WeightDType.BF16 => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(e) << 16),
            WeightDType.I32 => BinaryPrimitives.ReadInt32LittleEndian(e),
            WeightDType.U32 => BinaryPrimitives.ReadUInt32LittleEndian(e),
            WeightDType.F32 => BinaryPrimitives.ReadSingleLittleEndian(e),
            WeightDType.F64 => BinaryPrimitives.ReadDoubleLittleEndian(e),
            WeightDType.I64 => BinaryPrimitives.ReadInt64LittleEndian(e),
            WeightDType.U64 => BinaryPrimitives.ReadUInt64LittleEndian(e),
            _ => throw new NotSupportedException($"{t.Lower()} cannot be read as a number"),
        };
    }

    /// <summary>This tensor in another float dtype (f32, bf16, f16, f64), rounding to nearest even.</summary>
    public HostTensor ConvertTo(WeightDType to)
    {
        if (to == DType) return this;
        var v = ToDoubles();
        int s = to.Size();
        var b = new byte[v.LongLength * s];
        for (long i = 0; i < v.LongLength; i++)
        {
            var e = b.AsSpan(checked((int)(i * s)), s);
            switch (to)
            {
                case WeightDType.F32: BinaryPrimitives.WriteSingleLittleEndian(e, (float)v[i]); break;
                case WeightDType.F64: BinaryPrimitives.WriteDoubleLittleEndian(e, v[i]); break;
                case WeightDType.F16: BinaryPrimitives.WriteHalfLittleEndian(e, (Half)v[i]); break;
                case WeightDType.BF16: BinaryPrimitives.WriteUInt16LittleEndian(e, BFloat16.FromFloat((float)v[i])); break;
                case WeightDType.I64: BinaryPrimitives.WriteInt64LittleEndian(e, checked((long)v[i])); break;
                case WeightDType.I32: BinaryPrimitives.WriteInt32LittleEndian(e, checked((int)v[i])); break;
                default: throw new NotSupportedException($"conversion to {to.Lower()}");
            }
        }
        return new HostTensor(to, (long[])Shape.Clone(), b);
    }

    /// <summary>Uploads into a new engine tensor (the dtype must be one the engine has).</summary>
    public Tensor ToTensor(Backends.IBackend backend)
    {
        var et = DType.ToEngine() ?? throw new NotSupportedException($"the engine has no {DType.Lower()} tensors; convert first");
        var t = backend.Empty(IntShape, et);
        if (BitConverter.IsLittleEndian) backend.Upload(t, Data);
        else { var c = (byte[])Data.Clone(); SwapInPlace(c, DType.Size()); backend.Upload(t, c); }
        return t;
    }

    internal static void SwapInPlace(Span<byte> b, int size)
    {
        if (size == 1) return;
        for (int i = 0; i + size <= b.Length; i += size) b.Slice(i, size).Reverse();
    }

    public override string ToString() => $"{DType.Lower()}{Fmt(Shape)}";
}
