namespace FiberCuda.Tensors;

/// <summary>Element types. F64 exists for the CPU reference only (gradient checks); GPU backends reject it.</summary>
public enum DType : byte { F32, BF16, I32, I64, F64 }

public static class DTypeInfo
{
    public static int Size(this DType t) => t switch
    {
        DType.F32 => 4, DType.BF16 => 2, DType.I32 => 4, DType.I64 => 8, DType.F64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "unknown dtype"),
    };

    public static bool IsFloat(this DType t) => t is DType.F32 or DType.BF16 or DType.F64;

    public static string Name(this DType t) => t switch
    {
        DType.F32 => "f32", DType.BF16 => "bf16", DType.I32 => "i32", DType.I64 => "i64", DType.F64 => "f64",
        _ => t.ToString(),
    };
}
