using System.Runtime.CompilerServices;

namespace FiberCuda.Tensors;

/// <summary>bf16 bit conversions, identical to kernels/common.cuh: round to nearest even, NaN kept quiet.</summary>
public static class BFloat16
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FromFloat(float f)
    {
        uint u = BitConverter.SingleToUInt32Bits(f);
        if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x40); // NaN stays NaN
        u += 0x7fffu + ((u >> 16) & 1u);
        return (ushort)(u >> 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort h) => BitConverter.UInt32BitsToSingle((uint)h << 16);

    /// <summary>The value bf16 rounding gives, as a float.</summary>
    public static float Round(float f) => ToFloat(FromFloat(f));
}
