using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cpu;

/// <summary>
/// Typed access to host tensors: reads any float or index dtype into a compute buffer of T (float for
/// f32/bf16 math, double for f64 math) and writes back with rounding to the destination dtype.
/// The typeof(T) tests are folded away by the JIT.
/// </summary>
internal static unsafe class HostIO
{
    public static void Read<T>(Tensor t, long start, Span<T> dst) where T : unmanaged, IFloatingPointIeee754<T>
        => Read(t.Address, t.DType, start, dst);

    public static void Read<T>(nint p, DType dt, long start, Span<T> dst) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = dst.Length;
        if (typeof(T) == typeof(float))
        {
            var d = MemoryMarshal.Cast<T, float>(dst);
            switch (dt)
            {
                case DType.F32: new ReadOnlySpan<float>((float*)p + start, n).CopyTo(d); return;
                case DType.BF16: fixed (float* dp = d) Bf16ToFloat((ushort*)p + start, dp, n); return;
                case DType.F64: { double* s = (double*)p + start; for (int i = 0; i < n; i++) d[i] = (float)s[i]; return; }
                case DType.I32: { int* s = (int*)p + start; for (int i = 0; i < n; i++) d[i] = s[i]; return; }
                case DType.I64: { long* s = (long*)p + start; for (int i = 0; i < n; i++) d[i] = s[i]; return; }
            }
        }
        else if (typeof(T) == typeof(double))
        {
            var d = MemoryMarshal.Cast<T, double>(dst);
            switch (dt)
            {
                case DType.F64: new ReadOnlySpan<double>((double*)p + start, n).CopyTo(d); return;
                case DType.F32: { float* s = (float*)p + start; for (int i = 0; i < n; i++) d[i] = s[i]; return; }
                case DType.BF16: { ushort* s = (ushort*)p + start; for (int i = 0; i < n; i++) d[i] = BitConverter.UInt32BitsToSingle((uint)s[i] << 16); return; }
                case DType.I32: { int* s = (int*)p + start; for (int i = 0; i < n; i++) d[i] = s[i]; return; }
                case DType.I64: { long* s = (long*)p + start; for (int i = 0; i < n; i++) d[i] = s[i]; return; }
            }
        }
        throw new NotSupportedException($"read {dt.Name()} as {typeof(T).Name}");
    }

    public static void Write<T>(Tensor t, long start, ReadOnlySpan<T> src) where T : unmanaged, IFloatingPointIeee754<T>
        => Write(t.Address, t.DType, start, src);

    public static void Write<T>(nint p, DType dt, long start, ReadOnlySpan<T> src) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = src.Length;
        if (typeof(T) == typeof(float))
        {
            var s = MemoryMarshal.Cast<T, float>(src);
            switch (dt)
            {
                case DType.F32: s.CopyTo(new Span<float>((float*)p + start, n)); return;
                case DType.BF16: fixed (float* sp = s) FloatToBf16(sp, (ushort*)p + start, n); return;
                case DType.F64: { double* d = (double*)p + start; for (int i = 0; i < n; i++) d[i] = s[i]; return; }
                case DType.I32: { int* d = (int*)p + start; for (int i = 0; i < n; i++) d[i] = (int)s[i]; return; }
                case DType.I64: { long* d = (long*)p + start; for (int i = 0; i < n; i++) d[i] = (long)s[i]; return; }
            }
        }
        else if (typeof(T) == typeof(double))
        {
            var s = MemoryMarshal.Cast<T, double>(src);
            switch (dt)
            {
                case DType.F64: s.CopyTo(new Span<double>((double*)p + start, n)); return;
                case DType.F32: { float* d = (float*)p + start; for (int i = 0; i < n; i++) d[i] = (float)s[i]; return; }
                case DType.BF16: { ushort* d = (ushort*)p + start; for (int i = 0; i < n; i++) d[i] = BFloat16.FromFloat((float)s[i]); return; }
                case DType.I32: { int* d = (int*)p + start; for (int i = 0; i < n; i++) d[i] = (int)s[i]; return; }
                case DType.I64: { long* d = (long*)p + start; for (int i = 0; i < n; i++) d[i] = (long)s[i]; return; }
            }
        }
        throw new NotSupportedException($"write {typeof(T).Name} as {dt.Name()}");
    }

    /// <summary>bf16 → float: the bits move to the high half (exact).</summary>
    public static void Bf16ToFloat(ushort* s, float* d, int n)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i <= n - 16; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(s + i));
                Vector256.Store(Vector256.ShiftLeft(lo, 16).AsSingle(), d + i);
                Vector256.Store(Vector256.ShiftLeft(hi, 16).AsSingle(), d + i + 8);
            }
        for (; i < n; i++) d[i] = BitConverter.UInt32BitsToSingle((uint)s[i] << 16);
    }

    /// <summary>float → bf16 with <see cref="BFloat16.FromFloat"/>'s rounding (nearest even, NaN kept quiet), 16 at a time.</summary>
    public static void FloatToBf16(float* s, ushort* d, int n)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i <= n - 16; i += 16)
                Vector256.Store(Vector256.Narrow(RoundBf16(Vector256.Load(s + i).AsUInt32()), RoundBf16(Vector256.Load(s + i + 8).AsUInt32())), d + i);
        for (; i < n; i++) d[i] = BFloat16.FromFloat(s[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<uint> RoundBf16(Vector256<uint> u)
    {
        var hi = Vector256.ShiftRightLogical(u, 16);
        var rounded = Vector256.ShiftRightLogical(u + Vector256.Create(0x7fffu) + (hi & Vector256<uint>.One), 16);
        var nan = Vector256.GreaterThan(u & Vector256.Create(0x7fffffffu), Vector256.Create(0x7f800000u));
        return Vector256.ConditionalSelect(nan, hi | Vector256.Create(0x40u), rounded);
    }

    /// <summary>t[start..] += src (read, add in T, round once).</summary>
    public static void Accumulate<T>(Tensor t, long start, Span<T> src, Span<T> scratch) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var old = scratch[..src.Length];
        Read(t, start, old);
        System.Numerics.Tensors.TensorPrimitives.Add<T>(old, src, old);
        Write<T>(t, start, old);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static double LoadD(nint p, DType dt, long i) => dt switch
    {
        DType.F32 => ((float*)p)[i],
        DType.F64 => ((double*)p)[i],
        DType.BF16 => BFloat16.ToFloat(((ushort*)p)[i]),
        DType.I32 => ((int*)p)[i],
        DType.I64 => ((long*)p)[i],
        _ => throw new NotSupportedException(dt.ToString()),
    };

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreD(nint p, DType dt, long i, double v)
    {
        switch (dt)
        {
            case DType.F32: ((float*)p)[i] = (float)v; break;
            case DType.F64: ((double*)p)[i] = v; break;
            case DType.BF16: ((ushort*)p)[i] = BFloat16.FromFloat((float)v); break;
            case DType.I32: ((int*)p)[i] = (int)v; break;
            case DType.I64: ((long*)p)[i] = (long)v; break;
            default: throw new NotSupportedException(dt.ToString());
        }
    }

    /// <summary>An index tensor's element as long.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long LoadIndex(nint p, DType dt, long i) => dt switch
    {
        DType.I32 => ((int*)p)[i],
        DType.I64 => ((long*)p)[i],
        _ => throw new NotSupportedException($"index tensors are i32 or i64, not {dt.Name()}"),
    };
}

/// <summary>Row-range parallelism: one call when the work is small, otherwise a few ranges per core.</summary>
internal static class Par
{
    public const long MinParallelWork = 1 << 15;

    public static void Rows(long rows, long workPerRow, Action<long, long> body)
    {
        if (rows <= 0) return;
        long work = rows * Math.Max(1, workPerRow);
        int threads = Environment.ProcessorCount;
        if (threads <= 1 || rows == 1 || work < MinParallelWork) { body(0, rows); return; }
        int chunks = (int)Math.Min(rows, Math.Min(threads * 4L, Math.Max(2, work / MinParallelWork)));
        Parallel.For(0, chunks, c =>
        {
            long s = rows * c / chunks, e = rows * (c + 1) / chunks;
            if (e > s) body(s, e);
        });
    }

    /// <summary>
    /// Deterministic reduction over rows: fixed blocks (independent of the core count), each producing a
    /// partial of <paramref name="width"/> doubles, summed in block order.
    /// </summary>
    public static double[] ReduceRows(long rows, int width, long workPerRow, Action<long, long, double[]> body)
    {
        const long blockRows = 64;
        long blocks = Math.Max(1, (rows + blockRows - 1) / blockRows);
        var result = new double[width];
        if (rows <= 0) return result;
        var partials = new double[blocks][];
        Rows(blocks, blockRows * workPerRow, (b0, b1) =>
        {
            for (long b = b0; b < b1; b++)
            {
                var p = new double[width];
                body(b * blockRows, Math.Min(rows, (b + 1) * blockRows), p);
                partials[b] = p;
            }
        });
        foreach (var p in partials)
            for (int j = 0; j < width; j++) result[j] += p[j];
        return result;
    }
}
