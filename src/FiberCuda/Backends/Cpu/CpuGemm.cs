using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cpu;

/// <summary>
/// The reference GEMM on host pointers (row-major, <see cref="GemmDesc"/> semantics). The CPU backend
/// and the emulated GPU's "cuBLAS" both call it. Accumulates in fp32 (fp64 for f64 operands) and rounds
/// once into C's dtype, as cuBLASLt does with fp32 compute.
/// </summary>
public static unsafe class CpuGemm
{
    public static void Gemm(in GemmDesc g)
    {
        if (g.M < 0 || g.N < 0 || g.K < 0 || g.Batch < 1) throw new ArgumentException($"bad GEMM shape M={g.M} N={g.N} K={g.K} batch={g.Batch}");
        var d = g;
        int rows = g.Batch * g.M;
        Parallel.For(0, rows, r => Row(d, r / d.M, r % d.M));
    }

    static void Row(in GemmDesc g, int b, int i)
    {
        bool f64 = g.ABType == DType.F64;
        Span<double> acc = g.N <= 4096 ? stackalloc double[g.N] : new double[g.N];
        acc.Clear();
        long aBase = b * g.StrideA, bBase = b * g.StrideB;
        for (int k = 0; k < g.K; k++)
        {
            double a = Load(g.A, g.ABType, aBase + (g.TransA ? (long)k * g.M + i : (long)i * g.K + k));
            if (a == 0) continue;
            if (!g.TransB && !f64 && g.ABType == DType.F32)
            {
                float* brow = (float*)g.B + bBase + (long)k * g.N;
                for (int j = 0; j < g.N; j++) acc[j] += a * brow[j];
            }
            else
            {
                for (int j = 0; j < g.N; j++)
                    acc[j] += a * Load(g.B, g.ABType, bBase + (g.TransB ? (long)j * g.K + k : (long)k * g.N + j));
            }
        }
        long cBase = b * g.StrideC + (long)i * g.N;
        for (int j = 0; j < g.N; j++)
        {
            double v = g.Alpha * (f64 ? acc[j] : (float)acc[j]);
            if (g.Beta != 0) v += g.Beta * Load(g.C, g.CType, cBase + j);
            if (g.Bias != 0) v += Load(g.Bias, g.BiasType, j);
            Store(g.C, g.CType, cBase + j, v);
        }
    }

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
