using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace FiberCuda.Ops;

/// <summary>
/// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the
/// counter-based generator behind dropout. The CUDA kernel implements the same bits, so a mask is a
/// pure function of (seed, offset, element index) on every backend: no RNG state to keep in sync.
/// </summary>
public static class Philox
{
    public const uint M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    public const uint W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;

    /// <summary>The four 32-bit outputs for a 128-bit counter and a 64-bit key.</summary>
    public static (uint R0, uint R1, uint R2, uint R3) Generate(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1)
    {
        for (int round = 0; round < 10; round++)
        {
            if (round > 0) { k0 += W0; k1 += W1; }
            ulong p0 = (ulong)M0 * c0, p1 = (ulong)M1 * c2;
            uint hi0 = (uint)(p0 >> 32), lo0 = (uint)p0, hi1 = (uint)(p1 >> 32), lo1 = (uint)p1;
            uint n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
            c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
        }
        return (c0, c1, c2, c3);
    }

    /// <summary>First output word for element <paramref name="index"/> of a tensor (counter = offset + index).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Word(ulong seed, ulong offset, long index)
    {
        ulong ctr = offset + (ulong)index;
        return Generate((uint)ctr, (uint)(ctr >> 32), 0, 0, (uint)seed, (uint)(seed >> 32)).R0;
    }

    /// <summary>
    /// <see cref="Word"/> for elements start, start+1, … into <paramref name="dst"/>. Four counters per AVX2
    /// vector: each 64-bit lane carries one 32-bit word, so the 32×32→64 products are one vpmuludq.
    /// </summary>
    public static void Words(ulong seed, ulong offset, long start, Span<uint> dst)
    {
        int i = 0, n = dst.Length;
        if (Avx2.IsSupported)
        {
            var lo32 = Vector256.Create(0xffffffffUL);
            var m0 = Vector256.Create((ulong)M0).AsUInt32();
            var m1 = Vector256.Create((ulong)M1).AsUInt32();
            for (; i <= n - 4; i += 4)
            {
                ulong b = offset + (ulong)(start + i);
                var ctr = Vector256.Create(b, b + 1, b + 2, b + 3);
                var c0 = ctr & lo32;
                var c1 = Vector256.ShiftRightLogical(ctr, 32);
                var c2 = Vector256<ulong>.Zero;
                var c3 = Vector256<ulong>.Zero;
                uint k0 = (uint)seed, k1 = (uint)(seed >> 32);
                for (int round = 0; round < 10; round++)
                {
                    if (round > 0) { k0 += W0; k1 += W1; }
                    var p0 = Avx2.Multiply(c0.AsUInt32(), m0);
                    var p1 = Avx2.Multiply(c2.AsUInt32(), m1);
                    var n0 = Vector256.ShiftRightLogical(p1, 32) ^ c1 ^ Vector256.Create((ulong)k0);
                    var n2 = Vector256.ShiftRightLogical(p0, 32) ^ c3 ^ Vector256.Create((ulong)k1);
                    c1 = p1 & lo32; c3 = p0 & lo32; c0 = n0; c2 = n2;
                }
                dst[i] = (uint)c0.GetElement(0); dst[i + 1] = (uint)c0.GetElement(1);
                dst[i + 2] = (uint)c0.GetElement(2); dst[i + 3] = (uint)c0.GetElement(3);
            }
        }
        for (; i < n; i++) dst[i] = Word(seed, offset, start + i);
    }

    /// <summary>u = (r0 &gt;&gt; 8)·2^-24, exactly representable in float, in [0, 1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Uniform(ulong seed, ulong offset, long index) => (Word(seed, offset, index) >> 8) * (1f / 16777216f);

    /// <summary>Dropout's decision: keep iff u ≥ p.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Keep(ulong seed, ulong offset, long index, float p) => Uniform(seed, offset, index) >= p;
}
