using System.Runtime.InteropServices;
using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Data;

/// <summary>
/// One training batch on the host, row-major: pixel_values [B,3,S,S] f32 (ImageNet-normalised), input_ids and
/// attention_mask [B,L] i64, and the MLM view of the same text (mlm_input_ids [B,L], mlm_labels [B,L] with −100 where
/// no loss). B may be smaller than the configured batch size for the last batch of an epoch, or when images failed
/// and no replacement could be found.
/// </summary>
public sealed class Batch
{
    public Batch(int size, int imageSize, int textLength, bool mlm)
    {
        Size = size; ImageSize = imageSize; TextLength = textLength;
        PixelValues = new float[size * 3 * imageSize * imageSize];
        InputIds = new long[size * textLength];
        AttentionMask = new long[size * textLength];
        MlmInputIds = mlm ? new long[size * textLength] : null;
        MlmLabels = mlm ? new long[size * textLength] : null;
        PairIndex = new int[size];
        ImageIndex = new int[size];
        CaptionIndex = new int[size];
        Captions = new string[size];
        OriginalSizes = new (int, int)[size];
        Phrases = new IReadOnlyList<GroundedPhrase>?[size];
    }

    /// <summary>Position of this batch in its epoch.</summary>
    public int Index { get; init; }
    public int Epoch { get; init; }
    public int Size { get; }
    public int ImageSize { get; }
    public int TextLength { get; }

    public float[] PixelValues { get; }
    public long[] InputIds { get; }
    public long[] AttentionMask { get; }
    public long[]? MlmInputIds { get; }
    public long[]? MlmLabels { get; }

    /// <summary>(image, caption) pair index in the loader's flattened order, and its parts.</summary>
    public int[] PairIndex { get; }
    public int[] ImageIndex { get; }
    public int[] CaptionIndex { get; }
    public string[] Captions { get; }

    /// <summary>Width and height of each source image before the S×S resize (to map boxes: x·S/W, y·S/H).</summary>
    public (int Width, int Height)[] OriginalSizes { get; }

    /// <summary>Grounded phrases of each row's caption when the dataset has them (synthetic data); boxes in original pixels.</summary>
    public IReadOnlyList<GroundedPhrase>?[] Phrases { get; }

    public int[] PixelShape => new[] { Size, 3, ImageSize, ImageSize };
    public int[] TextShape => new[] { Size, TextLength };

    public Span<float> Pixels(int row) => PixelValues.AsSpan(row * 3 * ImageSize * ImageSize, 3 * ImageSize * ImageSize);
    public Span<long> Ids(int row) => InputIds.AsSpan(row * TextLength, TextLength);
    public Span<long> Mask(int row) => AttentionMask.AsSpan(row * TextLength, TextLength);

    /// <summary>Copies the arrays into tensors on <paramref name="backend"/>; the caller owns (disposes) them.</summary>
    public BatchTensors ToTensors(IBackend backend)
    {
        Tensor Up<T>(T[] data, int[] shape, DType dt) where T : unmanaged
        {
            var t = backend.Empty(shape, dt);
            backend.Upload(t, MemoryMarshal.AsBytes(data.AsSpan()));
            return t;
        }
        return new BatchTensors(
            Up(PixelValues, PixelShape, DType.F32),
            Up(InputIds, TextShape, DType.I64),
            Up(AttentionMask, TextShape, DType.I64),
            MlmInputIds is null ? null : Up(MlmInputIds, TextShape, DType.I64),
            MlmLabels is null ? null : Up(MlmLabels, TextShape, DType.I64));
    }
}

/// <summary>A batch as tensors on a backend.</summary>
public sealed record BatchTensors(Tensor PixelValues, Tensor InputIds, Tensor AttentionMask, Tensor? MlmInputIds, Tensor? MlmLabels) : IDisposable
{
    public void Dispose()
    {
        PixelValues.Dispose(); InputIds.Dispose(); AttentionMask.Dispose();
        MlmInputIds?.Dispose(); MlmLabels?.Dispose();
    }
}
