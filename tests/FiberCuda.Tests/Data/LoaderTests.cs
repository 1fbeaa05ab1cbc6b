using FiberCuda.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace FiberCuda.Tests.Data;

[TestClass]
public sealed class CaptionLoaderTests
{
    static readonly CaptionTokenizer Gpt2 = CaptionTokenizer.Gpt2Fallback();

    static LoaderOptions Small(int workers, int prefetch = 3) => new()
    {
        BatchSize = 8, ImageSize = 24, MaxTextLength = 16, Workers = workers, PrefetchBatches = prefetch, Seed = 5,
    };

    static List<Batch> Run(CaptionLoader l, int epoch) => l.Epoch(epoch).ToList();

    [TestMethod]
    public void OrderAndContentDependOnlyOnSeedAndEpoch()
    {
        var data = new SyntheticShapes(1, new SyntheticOptions { ImageSize = 40 }).InMemory(0, 20);
        var one = new CaptionLoader(data, Gpt2, Small(1));
        var three = new CaptionLoader(data, Gpt2, Small(3));
        int pairs = data.Items.Sum(i => i.Captions.Count);
        Assert.AreEqual(pairs, one.PairCount);
        var e0a = Run(one, 0); var e0b = Run(three, 0); var e1 = Run(three, 1);
        Assert.AreEqual((pairs + 7) / 8, e0a.Count);
        Assert.AreEqual(pairs % 8 == 0 ? 8 : pairs % 8, e0a[^1].Size);
        for (int k = 0; k < e0a.Count; k++)
        {
            Assert.AreEqual(k, e0b[k].Index);
            CollectionAssert.AreEqual(e0a[k].PairIndex, e0b[k].PairIndex);
            CollectionAssert.AreEqual(e0a[k].PixelValues, e0b[k].PixelValues);
            CollectionAssert.AreEqual(e0a[k].InputIds, e0b[k].InputIds);
            CollectionAssert.AreEqual(e0a[k].AttentionMask, e0b[k].AttentionMask);
            CollectionAssert.AreEqual(e0a[k].MlmInputIds, e0b[k].MlmInputIds);
            CollectionAssert.AreEqual(e0a[k].MlmLabels, e0b[k].MlmLabels);
        }
        // Each epoch visits every pair once; epochs are shuffled differently; no shuffle keeps manifest order.
        var order0 = e0a.SelectMany(b => b.PairIndex).ToArray();
        var order1 = e1.SelectMany(b => b.PairIndex).ToArray();
        CollectionAssert.AreEquivalent(Enumerable.Range(0, pairs).ToArray(), order0);
        CollectionAssert.AreEquivalent(Enumerable.Range(0, pairs).ToArray(), order1);
        CollectionAssert.AreNotEqual(order0, order1);
        var seq = new CaptionLoader(data, Gpt2, Small(2) with { Shuffle = false });
        CollectionAssert.AreEqual(Enumerable.Range(0, pairs).ToArray(), Run(seq, 0).SelectMany(b => b.PairIndex).ToArray());
        Assert.AreEqual(pairs / 8, new CaptionLoader(data, Gpt2, Small(2) with { DropLast = true }).Epoch(0).Count());
    }

    [TestMethod]
    public void RowsMatchTheirSamples()
    {
        var gen = new SyntheticShapes(2, new SyntheticOptions { ImageSize = 40 });
        var data = gen.InMemory(0, 6);
        var loader = new CaptionLoader(data, Gpt2, Small(2));
        var b = loader.Epoch(0).First();
        CollectionAssert.AreEqual(new[] { 8, 3, 24, 24 }, b.PixelShape);
        for (int r = 0; r < b.Size; r++)
        {
            Assert.AreEqual(data[b.ImageIndex[r]].Captions[b.CaptionIndex[r]], b.Captions[r]);
            var ids = new long[16]; var mask = new long[16];
            Gpt2.Encode(b.Captions[r], ids, mask);
            CollectionAssert.AreEqual(ids, b.Ids(r).ToArray());
            CollectionAssert.AreEqual(mask, b.Mask(r).ToArray());
            using var img = gen.Render(b.ImageIndex[r]);
            var px = new float[3 * 24 * 24];
            ImagePreprocess.ToPixelValues(img, 24, px);
            CollectionAssert.AreEqual(px, b.Pixels(r).ToArray());
            for (int t = 0; t < 16; t++)
            {
                long label = b.MlmLabels![r * 16 + t];
                if (label != -100) Assert.AreEqual(ids[t], label);
                else Assert.AreEqual(ids[t], b.MlmInputIds![r * 16 + t]);
            }
        }
    }

    [TestMethod]
    public void PrefetchQueueIsBounded()
    {
        int rendering = 0, maxRendering = 0, firstWait = 0;
        var items = Enumerable.Range(0, 48).Select(i => new CaptionedImage(new RenderedImageRef($"slow:{i}", () =>
        {
            int now = Interlocked.Increment(ref rendering);
            InterlockedMax(ref maxRendering, now);
            // The first render waits (bounded) for a second worker, so parallelism is observed even on a busy machine.
            if (Interlocked.Exchange(ref firstWait, 1) == 0) SpinWait.SpinUntil(() => Volatile.Read(ref maxRendering) >= 2, 3000);
            Thread.Sleep(2);
            Interlocked.Decrement(ref rendering);
            return new Image<Rgb24>(8, 8, new Rgb24((byte)i, 0, 0));
        }), new[] { $"picture {i}" })).ToList();
        const int prefetch = 2;
        var loader = new CaptionLoader(new ListCaptionDataset(items), Gpt2, Small(3, prefetch) with { BatchSize = 2 });
        int i = 0;
        bool ranAhead = false;
        foreach (var b in loader.Epoch(0))
        {
            Thread.Sleep(15);  // a slow consumer: workers must wait rather than run ahead
            long built = loader.BatchesBuilt;
            Assert.IsTrue(built <= i + 1 + prefetch, $"after taking batch {i}, {built} batches built");
            ranAhead |= built > i + 1;
            i++;
        }
        Assert.AreEqual(24, i);
        Assert.IsTrue(loader.MaxInFlight <= prefetch, $"max in flight {loader.MaxInFlight}");
        Assert.IsTrue(ranAhead, "workers never prefetched");
        Assert.IsTrue(maxRendering > 1, "workers never ran in parallel");
    }

    static void InterlockedMax(ref int target, int value)
    {
        int cur;
        while (value > (cur = Volatile.Read(ref target)) && Interlocked.CompareExchange(ref target, value, cur) != cur) { }
    }

    [TestMethod]
    public void BadImagesAreSkippedCountedAndReplaced()
    {
        using var dir = new TempDir();
        var good = new List<string>();
        for (int i = 0; i < 5; i++)
        {
            using var img = DataTestUtil.NoiseImage(20, 20, 100 + i);
            File.WriteAllBytes(dir.P($"good{i}.png"), DataTestUtil.Png(img));
            good.Add($"good{i}.png");
        }
        using (var img = DataTestUtil.NoiseImage(20, 20, 200))
        {
            var png = DataTestUtil.Png(img);
            File.WriteAllBytes(dir.P("trunc.png"), png[..(png.Length / 2)]);
            var jpg = DataTestUtil.Jpeg(img);
            File.WriteAllBytes(dir.P("trunc.jpg"), jpg[..(jpg.Length / 2)]);
        }
        File.WriteAllBytes(dir.P("garbage.png"), Enumerable.Range(0, 300).Select(i => (byte)(i * 37)).ToArray());
        File.WriteAllBytes(dir.P("bomb.png"), DataTestUtil.PngHeaderOnly(50_000, 50_000));
        var lines = good.Concat(new[] { "missing.png", "trunc.png", "trunc.jpg", "garbage.png", "bomb.png" })
            .Select(f => $$"""{"image": "{{f}}", "captions": ["caption of {{f}}", "another caption of {{f}}"]}""")
            .Append("not json at all").ToArray();
        File.WriteAllLines(dir.P("m.jsonl"), lines);
        var logged = new List<string>();
        var stats = new DataStats { Log = m => { lock (logged) logged.Add(m); } };
        var data = Manifests.ReadJsonl(dir.P("m.jsonl"), stats);
        Assert.AreEqual(1, stats.BadManifestLines);
        Assert.AreEqual(10, data.Count);
        var loader = new CaptionLoader(data, Gpt2, Small(2) with { BatchSize = 4, ReplacementTries = 32 }, stats);
        var batches = loader.Epoch(0).Concat(loader.Epoch(1)).ToList();
        Assert.AreEqual(1, stats.MissingImages);
        Assert.AreEqual(3, stats.CorruptImages);
        Assert.AreEqual(1, stats.OversizedImages);
        Assert.AreEqual(1 + 5, logged.Count, "each bad image is logged once");
        foreach (var name in new[] { "missing.png", "trunc.png", "trunc.jpg", "garbage.png", "bomb.png" })
            Assert.IsTrue(logged.Any(m => m.Contains(dir.P(name))), name);
        // Every row is a good image, batches stay full thanks to replacements, and runs are reproducible.
        foreach (var b in batches)
        {
            Assert.AreEqual(4, b.Size);
            for (int r = 0; r < b.Size; r++)
                Assert.IsTrue(b.ImageIndex[r] < 5 && b.Captions[r].Contains($"good{b.ImageIndex[r]}.png"));
        }
        var again = new CaptionLoader(data, Gpt2, Small(3) with { BatchSize = 4, ReplacementTries = 32 }, new DataStats { Log = _ => { } });
        CollectionAssert.AreEqual(batches.Take(5).SelectMany(b => b.PairIndex).ToArray(), again.Epoch(0).SelectMany(b => b.PairIndex).ToArray());
    }

    [TestMethod]
    public void WorkerExceptionsReachTheConsumer()
    {
        var items = new[] { new CaptionedImage(new RenderedImageRef("boom", () => throw new InvalidOperationException("renderer broke")), new[] { "x" }) };
        var loader = new CaptionLoader(new ListCaptionDataset(items), Gpt2, Small(2));
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => loader.Epoch(0).ToList());
        Assert.AreEqual("renderer broke", e.Message);
    }
}

[TestClass]
public sealed class CaptionDatasetsTests
{
    [TestMethod]
    public void SpecificationsOpenEachFormat()
    {
        CollectionAssert.AreEqual(new[] { "s-08.tar", "s-09.tar", "s-10.tar" }, CaptionDatasets.ExpandBraces("s-{08..10}.tar").ToArray());
        var stats = new DataStats { Log = _ => { } };
        using var dir = new TempDir();
        var gen = new SyntheticShapes(4, new SyntheticOptions { ImageSize = 32 });
        var (train, val) = gen.WriteDataset(dir.Path, 3, 2);
        var both = CaptionDatasets.Open($"{train};{val};synthetic:4:4:32", stats);
        Assert.AreEqual(3 + 2 + 4, both.Count);
        Assert.AreEqual(2, CaptionDatasets.Open(val, stats, splits: new[] { "val" }).Count);
        Assert.AreEqual(0, CaptionDatasets.Open(val, stats, splits: new[] { "train" }).Count);
        // synthetic:4:4:32 is scenes 0..3 of the same generator as the folder, so the first captions agree.
        CollectionAssert.AreEqual(both[0].Captions.ToArray(), both[5].Captions.ToArray());
        var loader = CaptionDatasets.OpenLoader(train, new LoaderOptions { BatchSize = 2, ImageSize = 16, Workers = 1 }, dir.Path, stats);
        Assert.AreEqual("gpt2-fallback", loader.Tokenizer.Name);
        Assert.AreEqual(CaptionDatasets.Open(train, stats).Items.Sum(i => i.Captions.Count), loader.PairCount);
        Assert.AreEqual((loader.PairCount + 1) / 2, loader.Epoch(0).Count());
        Assert.AreEqual(0, stats.SkippedImages);
    }

    [TestMethod]
    public void EarlyStopReleasesWorkersAndRowsCarryPhrases()
    {
        var data = new SyntheticShapes(9, new SyntheticOptions { ImageSize = 32 }).InMemory(0, 30);
        var loader = new CaptionLoader(data, CaptionTokenizer.Gpt2Fallback(), new LoaderOptions
        {
            BatchSize = 4, ImageSize = 16, MaxTextLength = 24, Workers = 2, PrefetchBatches = 2,
        });
        var first = loader.Epoch(0).Take(2).ToList();
        Assert.AreEqual(2, first.Count);
        Assert.IsTrue(loader.BatchesBuilt <= 2 + 2);
        var b = first[0];
        for (int r = 0; r < b.Size; r++)
        {
            Assert.AreEqual((32, 32), b.OriginalSizes[r]);
            var ps = b.Phrases[r]!;
            Assert.IsTrue(ps.Count >= 1);
            foreach (var p in ps) Assert.AreEqual(p.Text, b.Captions[r][p.Start..p.End]);
        }
    }
}
