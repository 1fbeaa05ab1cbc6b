using System.Numerics;
using System.Runtime.InteropServices;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cpu;

/// <summary>
/// The reference GEMM on host pointers (row-major, <see cref="GemmDesc"/> semantics). The CPU backend
/// and the emulated GPU's "cuBLAS" both call it. Accumulates in fp32 (fp64 for f64 operands) and rounds
/// once into C's dtype, as cuBLASLt does with fp32 compute.
///
/// Shape of the loop: op(B) of each batch item is packed once into a row-major [K, N] panel of the
/// compute type (a no-op for untransposed f32/f64 B); then four rows of op(A) at a time sweep over
/// column blocks of the panel, so every loaded B vector feeds four accumulators that stay in L1.
/// Work is spread over (batch item, 4-row block) pairs.
/// </summary>
public static unsafe class CpuGemm
{
    const int RowBlock = 4;
    const int ColBlock = 512;

    public static void Gemm(in GemmDesc g)
    {
        if (g.M < 0 || g.N < 0 || g.K < 0 || g.Batch < 1) throw new ArgumentException($"bad GEMM shape M={g.M} N={g.N} K={g.K} batch={g.Batch}");
        if (g.M == 0 || g.N == 0) return;
        if (g.ABType == DType.F64) Run<double>(g);
        else Run<float>(g);
    }

    static void Run<T>(GemmDesc g) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int M = g.M, N = g.N, K = g.K, batch = g.Batch;
        bool direct = !g.TransB && IsNative<T>(g.ABType);
        int panels = g.StrideB == 0 ? 1 : batch;
        T[][]? packed = direct ? null : new T[panels][];
        if (!direct)
            Par.Rows(panels, (long)K * N, (p0, p1) =>
            {
                for (long p = p0; p < p1; p++) packed![p] = PackB<T>(g, p * g.StrideB);
            });

        T[]? bias = null;
        if (g.Bias != 0) { bias = new T[N]; HostIO.Read<T>(g.Bias, g.BiasType, 0, bias); }
        T alpha = T.CreateTruncating(g.Alpha), beta = T.CreateTruncating(g.Beta);
        bool useBeta = g.Beta != 0f;

        int rowBlocks = (M + RowBlock - 1) / RowBlock;
        long tasks = (long)batch * rowBlocks;
        Par.Rows(tasks, (long)RowBlock * K * N, (t0, t1) =>
        {
            var pa = new T[RowBlock * K];
            var acc = new T[RowBlock * Math.Min(N, ColBlock)];
            var cbuf = new T[Math.Min(N, ColBlock)];
            for (long t = t0; t < t1; t++)
            {
                int b = (int)(t / rowBlocks), i0 = (int)(t % rowBlocks) * RowBlock;
                int rows = Math.Min(RowBlock, M - i0);
                PackA<T>(g, b * g.StrideA, i0, rows, pa);
                ReadOnlySpan<T> panel = direct
                    ? new ReadOnlySpan<T>((T*)g.B + b * g.StrideB, checked(K * N))
                    : packed![g.StrideB == 0 ? 0 : b];
                for (int j0 = 0; j0 < N; j0 += ColBlock)
                {
                    int nb = Math.Min(ColBlock, N - j0);
                    var accs = acc.AsSpan(0, rows * nb);
                    accs.Clear();
                    Kernel(pa, K, rows, panel, N, j0, nb, acc);
                    long cBase = b * g.StrideC;
                    for (int r = 0; r < rows; r++)
                    {
                        var ar = acc.AsSpan(r * nb, nb);
                        long off = cBase + (long)(i0 + r) * N + j0;
                        var cb = cbuf.AsSpan(0, nb);
                        if (useBeta) HostIO.Read<T>(g.C, g.CType, off, cb);
                        for (int j = 0; j < nb; j++)
                        {
                            T v = alpha * ar[j];
                            if (useBeta) v += beta * cb[j];
                            if (bias is not null) v += bias[j0 + j];
                            ar[j] = v;
                        }
                        HostIO.Write<T>(g.C, g.CType, off, ar);
                    }
                }
            }
        });
    }

    /// <summary>acc[r, 0..nb) += Σ_k a[r, k]·panel[k, j0..j0+nb) for rows r &lt; rows (acc rows are nb apart).</summary>
    // Straight to optimised code: short runs (tests, one-off evaluations) should not spend their GEMMs in tier-0.
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    static void Kernel<T>(T[] pa, int K, int rows, ReadOnlySpan<T> panel, int N, int j0, int nb, T[] acc) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int vw = Vector<T>.Count;
        int vend = Vector.IsHardwareAccelerated ? nb - nb % vw : 0;
        ref T acc0 = ref MemoryMarshal.GetArrayDataReference(acc);
        for (int k = 0; k < K; k++)
        {
            var brow = panel.Slice(k * N + j0, nb);
            ref T bref = ref MemoryMarshal.GetReference(brow);
            if (rows == RowBlock)
            {
                T a0 = pa[k], a1 = pa[K + k], a2 = pa[2 * K + k], a3 = pa[3 * K + k];
                var v0 = new Vector<T>(a0); var v1 = new Vector<T>(a1); var v2 = new Vector<T>(a2); var v3 = new Vector<T>(a3);
                int j = 0;
                for (; j < vend; j += vw)
                {
                    var bv = Vector.LoadUnsafe(ref bref, (nuint)j);
                    Vector.StoreUnsafe(Vector.LoadUnsafe(ref acc0, (nuint)j) + v0 * bv, ref acc0, (nuint)j);
                    Vector.StoreUnsafe(Vector.LoadUnsafe(ref acc0, (nuint)(nb + j)) + v1 * bv, ref acc0, (nuint)(nb + j));
                    Vector.StoreUnsafe(Vector.LoadUnsafe(ref acc0, (nuint)(2 * nb + j)) + v2 * bv, ref acc0, (nuint)(2 * nb + j));
                    Vector.StoreUnsafe(Vector.LoadUnsafe(ref acc0, (nuint)(3 * nb + j)) + v3 * bv, ref acc0, (nuint)(3 * nb + j));
                }
                for (; j < nb; j++)
                {
                    T bj = brow[j];
                    acc[j] += a0 * bj; acc[nb + j] += a1 * bj; acc[2 * nb + j] += a2 * bj; acc[3 * nb + j] += a3 * bj;
                }
            }
            else
            {
                for (int r = 0; r < rows; r++)
                {
                    T a = pa[r * K + k];
                    var va = new Vector<T>(a);
                    int o = r * nb, j = 0;
                    for (; j < vend; j += vw)
                        Vector.StoreUnsafe(Vector.LoadUnsafe(ref acc0, (nuint)(o + j)) + va * Vector.LoadUnsafe(ref bref, (nuint)j), ref acc0, (nuint)(o + j));
                    for (; j < nb; j++) acc[o + j] += a * brow[j];
                }
            }
        }
    }

    /// <summary>Rows i0..i0+rows of op(A) into pa (row r at r·K).</summary>
    static void PackA<T>(in GemmDesc g, long aBase, int i0, int rows, T[] pa) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int K = g.K, M = g.M;
        if (!g.TransA)
        {
            for (int r = 0; r < rows; r++) HostIO.Read<T>(g.A, g.ABType, aBase + (long)(i0 + r) * K, pa.AsSpan(r * K, K));
            return;
        }
        Span<T> tmp = stackalloc T[RowBlock];
        for (int k = 0; k < K; k++)
        {
            HostIO.Read<T>(g.A, g.ABType, aBase + (long)k * M + i0, tmp[..rows]);
            for (int r = 0; r < rows; r++) pa[r * K + k] = tmp[r];
        }
    }

    /// <summary>op(B) of one batch item as a row-major [K, N] array of T.</summary>
    static T[] PackB<T>(in GemmDesc g, long bBase) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int K = g.K, N = g.N;
        var p = new T[checked(K * N)];
        if (!g.TransB) { HostIO.Read<T>(g.B, g.ABType, bBase, p); return p; }
        var row = new T[K];
        for (int j = 0; j < N; j++)
        {
            HostIO.Read<T>(g.B, g.ABType, bBase + (long)j * K, row);
            for (int k = 0; k < K; k++) p[k * N + j] = row[k];
        }
        return p;
    }

    static bool IsNative<T>(DType t) => (typeof(T) == typeof(float) && t == DType.F32) || (typeof(T) == typeof(double) && t == DType.F64);

    internal static double Load(nint p, DType t, long i) => t switch
    {
        DType.F32 => ((float*)p)[i],
        DType.F64 => ((double*)p)[i],
        DType.BF16 => BFloat16.ToFloat(((ushort*)p)[i]),
        _ => throw new NotSupportedException($"GEMM operand dtype {t.Name()}"),
    };

    internal static void Store(nint p, DType t, long i, double v)
    {
        switch (t)
        {
            case DType.F32: ((float*)p)[i] = (float)v; break;
            case DType.F64: ((double*)p)[i] = v; break;
            case DType.BF16: ((ushort*)p)[i] = BFloat16.FromFloat((float)v); break;
            default: throw new NotSupportedException($"GEMM output dtype {t.Name()}");
        }
    }
}
