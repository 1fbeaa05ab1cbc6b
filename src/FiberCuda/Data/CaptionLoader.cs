using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;

namespace FiberCuda.Data;

public sealed record LoaderOptions
{
    public int BatchSize { get; init; } = 32;
    /// <summary>S: images become S×S.</summary>
    public int ImageSize { get; init; } = 384;
    /// <summary>L: text rows are padded or truncated to L tokens (40 in pre-training).</summary>
    public int MaxTextLength { get; init; } = 40;
    public int Workers { get; init; } = Math.Max(1, Environment.ProcessorCount - 1);
    /// <summary>Most batches being built or waiting for the consumer at any time.</summary>
    public int PrefetchBatches { get; init; } = 4;
    public ulong Seed { get; init; }
    public bool Shuffle { get; init; } = true;
    public bool DropLast { get; init; }
    /// <summary>Also produce MLM inputs and labels.</summary>
    public bool Mlm { get; init; } = true;
    public double MlmProbability { get; init; } = 0.15;
    public DecodeLimits Limits { get; init; } = DecodeLimits.Default;
    /// <summary>How many random other samples to try in place of one whose image failed before the row is dropped.</summary>
    public int ReplacementTries { get; init; } = 8;
}

/// <summary>
/// Image–caption batches for pre-training. Every (image, caption) pair is one sample, as in ViLT/METER. Each epoch
/// visits the pairs in an order that depends only on (seed, epoch); batches are built by background workers and
/// handed out in order through a bounded window of <see cref="LoaderOptions.PrefetchBatches"/>. A sample whose image
/// is missing, corrupt or too large is logged and counted once, remembered, and replaced by another pair drawn from
/// (seed, epoch, batch, row, try), so batch contents do not depend on thread timing either.
/// </summary>
public sealed class CaptionLoader
{
    readonly ICaptionDataset _data;
    readonly (int Image, int Caption)[] _pairs;
    readonly MlmMasker? _masker;
    readonly ConcurrentDictionary<string, byte> _bad = new();
    long _built;

    public CaptionLoader(ICaptionDataset dataset, CaptionTokenizer tokenizer, LoaderOptions options, DataStats? stats = null)
    {
        if (options.BatchSize < 1 || options.ImageSize < 1 || options.MaxTextLength < 2 || options.Workers < 1 || options.PrefetchBatches < 1)
            throw new ArgumentException("invalid loader options");
        _data = dataset; Tokenizer = tokenizer; Options = options; Stats = stats ?? new DataStats();
        var pairs = new List<(int, int)>();
        for (int i = 0; i < dataset.Count; i++)
            for (int c = 0; c < dataset[i].Captions.Count; c++) pairs.Add((i, c));
        _pairs = pairs.ToArray();
        if (options.Mlm) _masker = new MlmMasker(tokenizer, options.MlmProbability);
    }

    public CaptionTokenizer Tokenizer { get; }
    public LoaderOptions Options { get; }
    public DataStats Stats { get; }

    /// <summary>Number of (image, caption) samples.</summary>
    public int PairCount => _pairs.Length;

    public int BatchesPerEpoch => Options.DropLast ? PairCount / Options.BatchSize : (PairCount + Options.BatchSize - 1) / Options.BatchSize;

    /// <summary>Batches built so far by all epochs (for tests and progress displays).</summary>
    public long BatchesBuilt => Interlocked.Read(ref _built);

    /// <summary>Largest number of batches that were built or in progress but not yet taken by the consumer.</summary>
    public int MaxInFlight { get; private set; }

    /// <summary>Pair order of <paramref name="epoch"/>.</summary>
    public int[] Order(int epoch) =>
        Options.Shuffle ? DataRng.Permutation(PairCount, DataRng.Hash(Options.Seed, (ulong)epoch, 0x5348554646UL)) : Enumerable.Range(0, PairCount).ToArray();

    /// <summary>
    /// Batches of one epoch, in order. Workers start on first enumeration and stop when the enumeration ends or is
    /// disposed early; a worker exception is rethrown here. <paramref name="startBatch"/> skips the first batches
    /// without building them (a resumed run continues mid-epoch).
    /// </summary>
    public IEnumerable<Batch> Epoch(int epoch, CancellationToken cancel = default, int startBatch = 0)
    {
        int[] order = Order(epoch);
        int nb = BatchesPerEpoch;
        if (nb == 0) yield break;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        var window = new SemaphoreSlim(Options.PrefetchBatches, Options.PrefetchBatches);
        var ready = new Dictionary<int, Batch>();
        var gate = new object();
        ExceptionDispatchInfo? failure = null;
        if (startBatch < 0) throw new ArgumentOutOfRangeException(nameof(startBatch));
        int next = startBatch, taken = startBatch;

        void Work()
        {
            try
            {
                while (true)
                {
                    window.Wait(cts.Token);
                    int k = Interlocked.Increment(ref next) - 1;
                    if (k >= nb) { window.Release(); return; }
                    lock (gate) MaxInFlight = Math.Max(MaxInFlight, k + 1 - taken);
                    var b = Build(epoch, k, order);
                    Interlocked.Increment(ref _built);
                    lock (gate) { ready[k] = b; Monitor.PulseAll(gate); }
                }
            }
            catch (OperationCanceledException) when (cts.IsCancellationRequested) { }
            catch (Exception e)
            {
                lock (gate) { failure ??= ExceptionDispatchInfo.Capture(e); Monitor.PulseAll(gate); }
            }
        }

        var threads = new Thread[Math.Max(0, Math.Min(Options.Workers, nb - startBatch))];
        for (int i = 0; i < threads.Length; i++)
        {
            threads[i] = new Thread(Work) { IsBackground = true, Name = $"fiber-data-{i}" };
            threads[i].Start();
        }
        try
        {
            for (int k = startBatch; k < nb; k++)
            {
                Batch b;
                lock (gate)
                {
                    while (!ready.ContainsKey(k) && failure is null)
                    {
                        cts.Token.ThrowIfCancellationRequested();
                        Monitor.Wait(gate, 100);
                    }
                    failure?.Throw();
                    b = ready[k];
                    ready.Remove(k);
                    taken = k + 1;
                }
                window.Release();
                yield return b;
            }
        }
        finally
        {
            cts.Cancel();
            foreach (var t in threads) t.Join();
            window.Dispose();
        }
    }

    /// <summary>Builds batch <paramref name="k"/> of an epoch directly (what the workers run).</summary>
    public Batch Build(int epoch, int k, int[] order)
    {
        int start = k * Options.BatchSize;
        int count = Math.Min(Options.BatchSize, PairCount - start);
        int s = Options.ImageSize, l = Options.MaxTextLength;
        var rows = new List<(int Pair, float[] Pixels, int W, int H)>(count);
        for (int r = 0; r < count; r++)
        {
            int pair = order[start + r];
            var px = TryPixels(pair);
            for (int t = 0; px is null && t < Options.ReplacementTries; t++)
            {
                pair = (int)(DataRng.Hash(Options.Seed, (ulong)epoch, ((ulong)k << 20) ^ (ulong)r, (ulong)t) % (ulong)PairCount);
                px = TryPixels(pair);
            }
            if (px is { } ok) rows.Add((pair, ok.Pixels, ok.W, ok.H));
        }
        var b = new Batch(rows.Count, s, l, _masker is not null) { Index = k, Epoch = epoch };
        for (int r = 0; r < rows.Count; r++)
        {
            var (pair, px, w, h) = rows[r];
            var (img, cap) = _pairs[pair];
            var item = _data[img];
            string caption = item.Captions[cap];
            b.OriginalSizes[r] = (w, h);
            b.Phrases[r] = item.Phrases is { } ps && cap < ps.Count ? ps[cap] : null;
            px.CopyTo(b.Pixels(r));
            Tokenizer.Encode(caption, b.Ids(r), b.Mask(r));
            b.PairIndex[r] = pair; b.ImageIndex[r] = img; b.CaptionIndex[r] = cap; b.Captions[r] = caption;
            if (_masker is not null)
                _masker.Mask(b.Ids(r), b.MlmInputIds.AsSpan(r * l, l), b.MlmLabels.AsSpan(r * l, l), Options.Seed, DataRng.Hash((ulong)epoch, (ulong)pair));
        }
        return b;
    }

    (float[] Pixels, int W, int H)? TryPixels(int pair)
    {
        var item = _data[_pairs[pair].Image];
        string key = item.Image.Key;
        if (_bad.ContainsKey(key)) return null;
        try
        {
            using var img = item.Image.Load(Options.Limits);
            var px = new float[3 * Options.ImageSize * Options.ImageSize];
            ImagePreprocess.ToPixelValues(img, Options.ImageSize, px);
            return (px, img.Width, img.Height);
        }
        catch (ImageLoadException e)
        {
            if (_bad.TryAdd(key, 0)) Stats.Report(e.Problem, key, e.Message);
            return null;
        }
    }
}
