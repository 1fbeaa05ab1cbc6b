using FiberCuda.Data;

namespace FiberCuda.Training;

/// <summary>
/// The raw inputs behind the ITC feature queues (the official `image_input_queue`, `text_input_queue`,
/// `text_input_mask_queue`): slot j holds the image and text whose features sit in slot j of
/// <see cref="Autograd.ItcQueues"/>, so a hard negative drawn from the queue can be fed to the fused model.
/// Kept on the host (the official keeps it on the GPU: 4096·3·384² floats ≈ 7 GB at FIBER-B).
/// </summary>
public sealed class ItmInputQueue
{
    public ItmInputQueue(int size, int imageSize, int textLength)
    {
        Size = size; ImageSize = imageSize; TextLength = textLength;
        Pixels = new float[(long)size * PixelsPerImage];
        Ids = new long[size * textLength];
        Mask = new long[size * textLength];
    }

    public int Size { get; }
    public int ImageSize { get; }
    public int TextLength { get; }
    public int PixelsPerImage => 3 * ImageSize * ImageSize;
    public float[] Pixels { get; }
    public long[] Ids { get; }
    public long[] Mask { get; }

    public Span<float> PixelsOf(int slot) => Pixels.AsSpan(slot * PixelsPerImage, PixelsPerImage);
    public Span<long> IdsOf(int slot) => Ids.AsSpan(slot * TextLength, TextLength);
    public Span<long> MaskOf(int slot) => Mask.AsSpan(slot * TextLength, TextLength);

    /// <summary>Writes the batch's (unmasked) inputs at <paramref name="ptr"/>, wrapping like the feature queues.</summary>
    public void Enqueue(Batch b, int ptr)
    {
        if (b.ImageSize != ImageSize || b.TextLength != TextLength)
            throw new ArgumentException($"batch {b.ImageSize}px × {b.TextLength} tokens does not fit the ITM input queue ({ImageSize}px × {TextLength})");
        for (int i = 0; i < b.Size; i++)
        {
            int slot = (ptr + i) % Size;
            b.Pixels(i).CopyTo(PixelsOf(slot));
            b.Ids(i).CopyTo(IdsOf(slot));
            b.Mask(i).CopyTo(MaskOf(slot));
        }
    }
}

/// <summary>
/// Global hard-negative mining for ITM (fiber-coarse.md §4.2, after VLMo): for each row i of an [n × (B + Q)]
/// similarity matrix, one candidate is drawn with probability softmax(row over the first <c>valid</c> columns) with
/// the positive (column i) set to 0, like `torch.multinomial(weights.fill_diagonal_(0), 1)`. Columns &lt; B are the
/// micro-batch, the rest the queue slots. Deterministic in (seed, stream).
/// </summary>
public static class ItmNegatives
{
    /// <param name="sim">[rows × cols] row-major similarities (already divided by the temperature).</param>
    /// <param name="valid">The candidate columns are [0, valid): the micro-batch plus the filled queue slots.</param>
    public static int[] Sample(ReadOnlySpan<double> sim, int rows, int cols, int valid, ulong seed, ulong stream)
    {
        if (sim.Length != rows * cols) throw new ArgumentException($"similarities: {sim.Length} values for [{rows}×{cols}]");
        if (valid > cols || valid < rows) throw new ArgumentException($"valid columns {valid} outside [{rows}, {cols}]");
        if (valid < 2) throw new ArgumentException("hard-negative sampling needs at least two candidates (batch of 1 and an empty queue)");
        var picks = new int[rows];
        var w = new double[valid];
        for (int i = 0; i < rows; i++)
        {
            var row = sim.Slice(i * cols, valid);
            double max = double.NegativeInfinity;
            for (int j = 0; j < valid; j++) if (j != i && row[j] > max) max = row[j];
            double total = 0;
            for (int j = 0; j < valid; j++) total += w[j] = j == i || double.IsNaN(row[j]) ? 0 : Math.Exp(row[j] - max);
            var rng = new DataRng(DataRng.Hash(seed, stream, (ulong)i, 0x49544DUL));
            if (!(total > 0) || double.IsInfinity(total))
            {
                // Degenerate row (all NaN or infinite): uniform over the other candidates rather than a crash.
                int k = rng.NextInt(valid - 1);
                picks[i] = k >= i ? k + 1 : k;
                continue;
            }
            double u = rng.NextDouble() * total, acc = 0;
            int pick = -1;
            for (int j = 0; j < valid; j++)
            {
                if (w[j] == 0) continue;
                acc += w[j];
                pick = j;
                if (u < acc) break;
            }
            picks[i] = pick;
        }
        return picks;
    }
}
