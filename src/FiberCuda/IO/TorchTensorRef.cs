namespace FiberCuda.IO;

/// <summary>A storage of a torch checkpoint: its element type, length and where its bytes are. Never read until a
/// tensor that uses it is.</summary>
public sealed class TorchStorage
{
    public required string Key { get; init; }
    public required WeightDType DType { get; init; }
    /// <summary>Elements in the storage.</summary>
    public required long Numel { get; init; }
    public required string Location { get; init; }
    /// <summary>Absolute file offset of element 0 (set once known; legacy files learn it after the pickle).</summary>
    public long FileOffset { get; set; } = -1;
    /// <summary>For legacy storage views: elements into the root storage.</summary>
    public TorchStorage? Root { get; init; }
    public long RootOffset { get; init; }
}

/// <summary>A tensor as the pickle describes it (storage, element offset, sizes, strides), read on demand.</summary>
public sealed class TorchTensorRef
{
    public required TorchStorage Storage { get; init; }
    public required long Offset { get; init; }
    public required long[] Shape { get; init; }
    public required long[] Stride { get; init; }
    public bool RequiresGrad { get; init; }
    /// <summary>Set by <c>_rebuild_parameter</c>.</summary>
    public bool IsParameter { get; set; }
    public WeightDType DType => Storage.DType;
    public long Numel => HostTensor.CountElements(Shape);
    public override string ToString() => $"tensor {DType.Lower()}{HostTensor.Fmt(Shape)}";

    /// <summary>Range of storage elements the view touches: [lo, hi). Checked against the storage.</summary>
    public (long Lo, long Hi) Extent()
    {
        if (Offset < 0) throw new WeightFormatException($"negative storage offset {Offset}");
        if (Numel == 0) return (Offset, Offset);
        long hi = Offset;
        for (int d = 0; d < Shape.Length; d++)
        {
            if (Stride[d] < 0) throw new WeightFormatException("negative strides are not supported");
            hi = checked(hi + (Shape[d] - 1) * Stride[d]);
        }
        return (Offset, hi + 1);
    }
}
