using FiberCuda.Data;

namespace FiberCuda.Eval;

public sealed record RetrievalSetOptions
{
    /// <summary>Keep only the first N distinct images of the dataset (counted before unusable ones are dropped); null: all.</summary>
    public int? MaxImages { get; init; }

    /// <summary>Parallel image decoders (the validation pass and each image batch).</summary>
    public int Workers { get; init; } = Math.Max(1, Environment.ProcessorCount - 1);

    public DecodeLimits Limits { get; init; } = DecodeLimits.Default;

    /// <summary>
    /// When set, the validation pass also keeps every image resized to this S as S×S RGB bytes (3·S² bytes each, about
    /// 2.2 GB for COCO's 5k test images at 384), so image batches of that size skip decoding and resizing again.
    /// </summary>
    public int? CacheImageSize { get; init; }
}

/// <summary>An image that was dropped from the set, with the captions that went with it.</summary>
public sealed record SkippedImage(string Key, DataProblem Problem, string Reason, int Captions);

/// <summary>Images [Start, Start+Count) of a set as pixel_values [Count, 3, S, S] f32, ImageNet-normalised.</summary>
public sealed record RetrievalImageBatch(int Start, int Count, int ImageSize, float[] Pixels)
{
    public int[] Shape => new[] { Count, 3, ImageSize, ImageSize };
}

/// <summary>Texts [Start, Start+Count) of a set as input_ids and attention_mask [Count, L] i64.</summary>
public sealed record RetrievalTextBatch(int Start, int Count, int TextLength, long[] Ids, long[] Mask)
{
    public int[] Shape => new[] { Count, TextLength };
}

/// <summary>
/// The evaluation set of a retrieval benchmark: the distinct images of a caption dataset in dataset order (entries with
/// the same image key are merged, their captions appended in order) and all their captions flattened, image by image,
/// so text t belongs to image <see cref="TextImage"/>[t] and every image's texts are contiguous. Score matrices are
/// [<see cref="ImageCount"/> × <see cref="TextCount"/>] in this order.
/// <para>
/// Construction decodes every image once on <see cref="RetrievalSetOptions.Workers"/> threads: an image that is missing,
/// corrupt or too large is reported to <see cref="Stats"/> (as the <see cref="CaptionLoader"/> does), listed in
/// <see cref="Skipped"/> and dropped with its captions, so the set is final before anything is encoded. Batches
/// preprocess exactly as the loader (<see cref="ImagePreprocess.ToPixelValues(SixLabors.ImageSharp.Image{SixLabors.ImageSharp.PixelFormats.Rgb24}, int, Span{float})"/>,
/// <see cref="CaptionTokenizer.Encode"/>). An image that fails later, in a batch, after passing validation, throws
/// <see cref="ImageLoadException"/>: the score matrix could no longer match the set.
/// </para>
/// </summary>
public sealed class RetrievalSet
{
    readonly ImageRef[] _images;
    readonly int[] _source;
    readonly string[] _texts;
    readonly int[] _textImage;
    readonly int[] _textStart;
    readonly byte[]?[]? _cache;

    RetrievalSet(ImageRef[] images, int[] source, string[] texts, int[] textImage, int[] textStart, byte[]?[]? cache,
        IReadOnlyList<SkippedImage> skipped, RetrievalSetOptions options, DataStats stats)
    {
        _images = images; _source = source; _texts = texts; _textImage = textImage; _textStart = textStart; _cache = cache;
        Skipped = skipped; Options = options; Stats = stats;
    }

    public RetrievalSetOptions Options { get; }
    public DataStats Stats { get; }

    public int ImageCount => _images.Length;
    public int TextCount => _texts.Length;

    public IReadOnlyList<ImageRef> Images => _images;

    /// <summary>Dataset index of each image's first entry.</summary>
    public IReadOnlyList<int> ImageSource => _source;

    public IReadOnlyList<string> Texts => _texts;

    /// <summary>Owner image of each text.</summary>
    public IReadOnlyList<int> TextImage => _textImage;

    /// <summary>Texts of image i are [TextStart(i), TextStart(i) + TextsOf(i)).</summary>
    public int TextStart(int image) => _textStart[image];
    public int TextsOf(int image) => _textStart[image + 1] - _textStart[image];

    /// <summary>Images dropped because they could not be loaded, in dataset order.</summary>
    public IReadOnlyList<SkippedImage> Skipped { get; }

    /// <summary>Captions dropped with <see cref="Skipped"/> images.</summary>
    public int SkippedTexts => Skipped.Sum(s => s.Captions);

    public static RetrievalSet Create(ICaptionDataset dataset, RetrievalSetOptions? options = null, DataStats? stats = null)
    {
        options ??= new RetrievalSetOptions();
        stats ??= new DataStats();
        if (options.Workers < 1) throw new ArgumentException("need at least one worker");
        if (options.MaxImages is < 0) throw new ArgumentException("MaxImages must not be negative");
        if (options.CacheImageSize is < 1) throw new ArgumentException("CacheImageSize must be positive");

        // Distinct images in first-appearance order, with their captions.
        var order = new List<(ImageRef Image, int Source, List<string> Captions)>();
        var byKey = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int d = 0; d < dataset.Count; d++)
        {
            var item = dataset[d];
            if (byKey.TryGetValue(item.Image.Key, out int at)) { order[at].Captions.AddRange(item.Captions); continue; }
            if (options.MaxImages is { } max && order.Count >= max) continue;
            byKey[item.Image.Key] = order.Count;
            order.Add((item.Image, d, new List<string>(item.Captions)));
        }

        // Validation: decode everything once; failures are reported and dropped.
        var failure = new ImageLoadException?[order.Count];
        var cache = options.CacheImageSize is null ? null : new byte[]?[order.Count];
        ParallelFor(order.Count, options.Workers, j =>
        {
            try
            {
                using var img = order[j].Image.Load(options.Limits);
                if (cache is not null)
                {
                    int s = options.CacheImageSize!.Value;
                    var rgb = ImagePreprocess.ToRgbBytes(img);
                    cache[j] = img.Width == s && img.Height == s ? rgb : PilBicubic.Resize(rgb, img.Width, img.Height, 3, s, s);
                }
            }
            catch (ImageLoadException e) { failure[j] = e; }
        });

        var images = new List<ImageRef>();
        var source = new List<int>();
        var texts = new List<string>();
        var textImage = new List<int>();
        var textStart = new List<int> { 0 };
        var kept = new List<byte[]?>();
        var skipped = new List<SkippedImage>();
        for (int j = 0; j < order.Count; j++)
        {
            var (img, src, caps) = order[j];
            if (failure[j] is { } e)
            {
                // Reported in dataset order after the parallel pass, so logs do not depend on thread timing.
                stats.Report(e.Problem, img.Key, e.Message);
                skipped.Add(new SkippedImage(img.Key, e.Problem, e.Message, caps.Count));
                continue;
            }
            if (caps.Count == 0) continue;
            int index = images.Count;
            images.Add(img); source.Add(src);
            foreach (var c in caps) { texts.Add(c); textImage.Add(index); }
            textStart.Add(texts.Count);
            if (cache is not null) kept.Add(cache[j]);
        }
        if (skipped.Count > 0)
            stats.Log($"[eval] retrieval set: skipped {skipped.Count} unusable images and their {skipped.Sum(s => s.Captions)} captions; {images.Count} images and {texts.Count} texts remain");
        return new RetrievalSet(images.ToArray(), source.ToArray(), texts.ToArray(), textImage.ToArray(), textStart.ToArray(),
            cache is null ? null : kept.ToArray(), skipped, options, stats);
    }

    /// <summary>Images [start, start+count) preprocessed to S×S (rows decoded in parallel).</summary>
    public RetrievalImageBatch ImageBatch(int start, int count, int imageSize)
    {
        CheckRange(start, count, ImageCount);
        if (imageSize < 1) throw new ArgumentOutOfRangeException(nameof(imageSize));
        int plane = 3 * imageSize * imageSize;
        var px = new float[(long)count * plane];
        bool cached = _cache is not null && Options.CacheImageSize == imageSize;
        ParallelFor(count, Options.Workers, r =>
        {
            var dst = px.AsSpan(r * plane, plane);
            if (cached) ImagePreprocess.ToPixelValues(_cache![start + r], imageSize, imageSize, imageSize, dst);
            else
            {
                using var img = _images[start + r].Load(Options.Limits);
                ImagePreprocess.ToPixelValues(img, imageSize, dst);
            }
        });
        return new RetrievalImageBatch(start, count, imageSize, px);
    }

    /// <summary>All images in batches of <paramref name="batchSize"/>; the next batch is prepared while the caller works on one.</summary>
    public IEnumerable<RetrievalImageBatch> ImageBatches(int batchSize, int imageSize)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize));
        return Prefetched(ImageCount, batchSize, (s, n) => ImageBatch(s, n, imageSize));
    }

    /// <summary>Texts [start, start+count) tokenised to <paramref name="maxLength"/> (&lt;s&gt; … &lt;/s&gt;, padded).</summary>
    public RetrievalTextBatch TextBatch(int start, int count, CaptionTokenizer tokenizer, int maxLength)
    {
        CheckRange(start, count, TextCount);
        if (maxLength < 2) throw new ArgumentOutOfRangeException(nameof(maxLength), "need L ≥ 2");
        var ids = new long[(long)count * maxLength];
        var mask = new long[(long)count * maxLength];
        for (int r = 0; r < count; r++)
            tokenizer.Encode(_texts[start + r], ids.AsSpan(r * maxLength, maxLength), mask.AsSpan(r * maxLength, maxLength));
        return new RetrievalTextBatch(start, count, maxLength, ids, mask);
    }

    public IEnumerable<RetrievalTextBatch> TextBatches(int batchSize, CaptionTokenizer tokenizer, int maxLength)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize));
        for (int s = 0; s < TextCount; s += batchSize)
            yield return TextBatch(s, Math.Min(batchSize, TextCount - s), tokenizer, maxLength);
    }

    static IEnumerable<TB> Prefetched<TB>(int total, int batchSize, Func<int, int, TB> build)
    {
        if (total == 0) yield break;
        Task<TB> Start(int s) => Task.Run(() => build(s, Math.Min(batchSize, total - s)));
        var next = Start(0);
        for (int s = 0; s < total; s += batchSize)
        {
            var current = next.GetAwaiter().GetResult();
            if (s + batchSize < total) next = Start(s + batchSize);
            yield return current;
        }
    }

    /// <summary>Parallel.For that rethrows a worker's exception itself rather than an AggregateException.</summary>
    static void ParallelFor(int n, int workers, Action<int> body)
    {
        try { Parallel.For(0, n, new ParallelOptions { MaxDegreeOfParallelism = workers }, body); }
        catch (AggregateException e) when (e.InnerExceptions.Count >= 1)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
        }
    }

    static void CheckRange(int start, int count, int total)
    {
        if (start < 0 || count < 0 || start > total - count) throw new ArgumentOutOfRangeException(nameof(start), $"[{start}, {start}+{count}) outside [0, {total})");
    }
}
