using FiberCuda.Data;
using FiberCuda.Eval;
using FiberCuda.Tests.Data;

namespace FiberCuda.Tests.Eval;

[TestClass]
public sealed class RetrievalSetTests
{
    static readonly CaptionTokenizer Gpt2 = CaptionTokenizer.Gpt2Fallback();

    /// <summary>
    /// Manifest: good0 (2 captions), corrupt (truncated PNG, 2 captions), good1 (1), missing (1), good0 again (1 more
    /// caption: merged), good2 (3, JPEG of another size), good3 (1).
    /// </summary>
    static (TempDir Dir, ListCaptionDataset Data, DataStats Stats, List<string> Log) Build()
    {
        var dir = new TempDir();
        for (int i = 0; i < 4; i++)
        {
            using var img = DataTestUtil.NoiseImage(20 + 3 * i, 17 + i, 300 + i);
            File.WriteAllBytes(dir.P($"good{i}.{(i == 2 ? "jpg" : "png")}"), i == 2 ? DataTestUtil.Jpeg(img) : DataTestUtil.Png(img));
        }
        using (var img = DataTestUtil.NoiseImage(20, 20, 9))
        {
            var png = DataTestUtil.Png(img);
            File.WriteAllBytes(dir.P("corrupt.png"), png[..(png.Length / 2)]);
        }
        File.WriteAllLines(dir.P("m.jsonl"), new[]
        {
            """{"image": "good0.png", "captions": ["a red square", "a square that is red"]}""",
            """{"image": "corrupt.png", "captions": ["broken one", "broken two"]}""",
            """{"image": "good1.png", "caption": "a blue circle"}""",
            """{"image": "missing.png", "caption": "nothing here"}""",
            """{"image": "good0.png", "caption": "the red square again"}""",
            """{"image": "good2.jpg", "captions": ["green", "a green thing", "something green on grey"]}""",
            """{"image": "good3.png", "caption": "the last one"}""",
        });
        var log = new List<string>();
        var stats = new DataStats { Log = m => { lock (log) log.Add(m); } };
        return (dir, Manifests.ReadJsonl(dir.P("m.jsonl"), stats), stats, log);
    }

    [TestMethod]
    public void BadImagesAreSkippedCountedAndTheirCaptionsDropped()
    {
        var (dir, data, stats, log) = Build();
        using var _ = dir;
        var set = RetrievalSet.Create(data, new RetrievalSetOptions { Workers = 2 }, stats);
        Assert.AreEqual(1, stats.CorruptImages);
        Assert.AreEqual(1, stats.MissingImages);
        Assert.AreEqual(2, set.Skipped.Count);
        Assert.AreEqual(dir.P("corrupt.png"), set.Skipped[0].Key);
        Assert.AreEqual(DataProblem.CorruptImage, set.Skipped[0].Problem);
        Assert.AreEqual(DataProblem.MissingImage, set.Skipped[1].Problem);
        Assert.AreEqual(3, set.SkippedTexts);
        Assert.IsTrue(log.Any(m => m.Contains(dir.P("corrupt.png"))) && log.Any(m => m.Contains(dir.P("missing.png"))));
        Assert.IsTrue(log.Any(m => m.Contains("skipped 2 unusable images and their 3 captions")));

        // Distinct images in first-appearance order; the duplicate entry's caption joins good0's.
        CollectionAssert.AreEqual(new[] { "good0.png", "good1.png", "good2.jpg", "good3.png" }, set.Images.Select(i => Path.GetFileName(i.Key)).ToArray());
        CollectionAssert.AreEqual(new[] { 0, 2, 5, 6 }, set.ImageSource.ToArray());
        CollectionAssert.AreEqual(new[] { "a red square", "a square that is red", "the red square again", "a blue circle",
            "green", "a green thing", "something green on grey", "the last one" }, set.Texts.ToArray());
        CollectionAssert.AreEqual(new[] { 0, 0, 0, 1, 2, 2, 2, 3 }, set.TextImage.ToArray());
        for (int i = 0; i < set.ImageCount; i++)
            for (int t = set.TextStart(i); t < set.TextStart(i) + set.TextsOf(i); t++) Assert.AreEqual(i, set.TextImage[t]);
        Assert.IsFalse(set.Texts.Any(t => t.Contains("broken") || t.Contains("nothing")));
    }

    [TestMethod]
    public void BatchesMatchTheTrainingLoader()
    {
        var (dir, data, stats, _) = Build();
        using var __ = dir;
        const int S = 16, L = 12;
        var set = RetrievalSet.Create(data, new RetrievalSetOptions { Workers = 2 }, stats);
        var cached = RetrievalSet.Create(data, new RetrievalSetOptions { Workers = 1, CacheImageSize = S }, new DataStats { Log = _ => { } });

        var imgs = set.ImageBatches(3, S).ToList();
        CollectionAssert.AreEqual(new[] { 0, 3 }, imgs.Select(b => b.Start).ToArray());
        CollectionAssert.AreEqual(new[] { 3, 1 }, imgs.Select(b => b.Count).ToArray());
        CollectionAssert.AreEqual(new[] { 3, 3, S, S }, imgs[0].Shape);
        float[] pixels = imgs.SelectMany(b => b.Pixels).ToArray();
        CollectionAssert.AreEqual(pixels, cached.ImageBatches(4, S).Single().Pixels, "the resize cache gives the same pixels");
        var texts = set.TextBatches(5, Gpt2, L).ToList();
        long[] ids = texts.SelectMany(b => b.Ids).ToArray(), mask = texts.SelectMany(b => b.Mask).ToArray();
        Assert.AreEqual(set.TextCount * L, ids.Length);

        // The pre-training loader, unshuffled, over the same manifest: every row it builds from a good image must have
        // the same pixels as that image in the set and the same ids as that caption (bad rows are replaced by it).
        var loader = new CaptionLoader(data, Gpt2, new LoaderOptions
        {
            BatchSize = 4, ImageSize = S, MaxTextLength = L, Workers = 1, Shuffle = false, Mlm = false,
        }, new DataStats { Log = _ => { } });
        int plane = 3 * S * S, rows = 0;
        foreach (var b in loader.Epoch(0))
            for (int r = 0; r < b.Size; r++)
            {
                string key = data[b.ImageIndex[r]].Image.Key;
                int img = set.Images.Select(i => i.Key).ToList().IndexOf(key);
                Assert.IsTrue(img >= 0, "the loader only yields good images");
                CollectionAssert.AreEqual(b.Pixels(r).ToArray(), pixels.AsSpan(img * plane, plane).ToArray(), key);
                int t = set.Texts.ToList().IndexOf(b.Captions[r]);
                Assert.AreEqual(img, set.TextImage[t]);
                CollectionAssert.AreEqual(b.Ids(r).ToArray(), ids.AsSpan(t * L, L).ToArray());
                CollectionAssert.AreEqual(b.Mask(r).ToArray(), mask.AsSpan(t * L, L).ToArray());
                rows++;
            }
        Assert.IsTrue(rows >= 8);

        // An image that breaks after validation throws instead of silently shifting the rows.
        File.Delete(dir.P("good1.png"));
        Assert.ThrowsExactly<ImageLoadException>(() => set.ImageBatch(0, 2, S));
        CollectionAssert.AreEqual(pixels.AsSpan(2 * plane, 2 * plane).ToArray(), set.ImageBatch(2, 2, S).Pixels, "others still load");
    }

    [TestMethod]
    public void MaxImagesKeepsTheFirstDistinctImages()
    {
        var (dir, data, stats, _) = Build();
        using var __ = dir;
        var set = RetrievalSet.Create(data, new RetrievalSetOptions { MaxImages = 3, Workers = 1 }, stats);
        // First three distinct: good0, corrupt (dropped), good1; good0's later caption is still merged.
        CollectionAssert.AreEqual(new[] { "good0.png", "good1.png" }, set.Images.Select(i => Path.GetFileName(i.Key)).ToArray());
        Assert.AreEqual(4, set.TextCount);
        Assert.AreEqual(1, stats.CorruptImages);
        Assert.AreEqual(0, stats.MissingImages, "images past the limit are never opened");
        var one = RetrievalSet.Create(new SyntheticShapes(2, new SyntheticOptions { ImageSize = 40 }).InMemory(0, 5), new RetrievalSetOptions { MaxImages = 1 });
        Assert.AreEqual(1, one.ImageCount);
    }
}
