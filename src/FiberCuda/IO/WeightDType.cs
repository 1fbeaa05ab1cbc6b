using FiberCuda.Tensors;

namespace FiberCuda.IO;

/// <summary>
/// Element types a weight file may hold. Wider than the engine's <see cref="DType"/>: checkpoints carry
/// f16, i16, i8, u8 and bool tensors that the engine converts (or only lists) on the way in.
/// </summary>
public enum WeightDType : byte { Bool, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64, F8E4M3, F8E5M2 }

public static class WeightDTypeInfo
{
    public static int Size(this WeightDType t) => t switch
    {
        WeightDType.Bool or WeightDType.U8 or WeightDType.I8 or WeightDType.F8E4M3 or WeightDType.F8E5M2 => 1,
        WeightDType.I16 or WeightDType.U16 or WeightDType.F16 or WeightDType.BF16 => 2,
        WeightDType.I32 or WeightDType.U32 or WeightDType.F32 => 4,
        WeightDType.F64 or WeightDType.I64 or WeightDType.U64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>The safetensors spelling (huggingface/safetensors `Dtype` serde names).</summary>
    public static string SafetensorsName(this WeightDType t) => t switch
    {
        WeightDType.Bool => "BOOL", WeightDType.U8 => "U8", WeightDType.I8 => "I8", WeightDType.I16 => "I16",
        WeightDType.U16 => "U16", WeightDType.F16 => "F16", WeightDType.BF16 => "BF16", WeightDType.I32 => "I32",
        WeightDType.U32 => "U32", WeightDType.F32 => "F32", WeightDType.F64 => "F64", WeightDType.I64 => "I64",
        WeightDType.U64 => "U64", WeightDType.F8E4M3 => "F8_E4M3", WeightDType.F8E5M2 => "F8_E5M2",
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    public static bool TryParseSafetensors(string s, out WeightDType t)
    {
        foreach (WeightDType v in Enum.GetValues<WeightDType>())
            if (v.SafetensorsName() == s) { t = v; return true; }
        t = default; return false;
    }

    public static bool IsFloat(this WeightDType t) =>
        t is WeightDType.F16 or WeightDType.BF16 or WeightDType.F32 or WeightDType.F64 or WeightDType.F8E4M3 or WeightDType.F8E5M2;

    /// <summary>The engine dtype a tensor of this type becomes when loaded; null when the engine has none.</summary>
    public static DType? ToEngine(this WeightDType t) => t switch
    {
        WeightDType.F32 => DType.F32, WeightDType.BF16 => DType.BF16, WeightDType.I32 => DType.I32,
        WeightDType.I64 => DType.I64, WeightDType.F64 => DType.F64, _ => null,
    };

    public static WeightDType FromEngine(DType t) => t switch
    {
        DType.F32 => WeightDType.F32, DType.BF16 => WeightDType.BF16, DType.I32 => WeightDType.I32,
        DType.I64 => WeightDType.I64, DType.F64 => WeightDType.F64, _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    public static string Lower(this WeightDType t) => t.SafetensorsName().ToLowerInvariant().Replace("_", "");
}
