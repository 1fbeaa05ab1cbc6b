using System.Formats.Tar;
using System.Text;
using FiberCuda.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace FiberCuda.Tests.Data;

[TestClass]
public sealed class ManifestTests
{
    static DataStats QuietStats() => new() { Log = _ => { } };

    [TestMethod]
    public void JsonlReadsCaptionsAndSkipsBadLinesWithLineNumbers()
    {
        using var dir = new TempDir();
        string path = dir.P("m.jsonl");
        File.WriteAllLines(path, new[]
        {
            """{"image": "a.png", "caption": "one caption"}""",                 // 1 ok
            """{"image": "b.png", "captions": ["first", "second"], "split": "val"}""", // 2 ok
            "",                                                                     // 3 blank: ignored
            """{"image": "c.png", "caption": """,                                   // 4 invalid JSON
            """{"caption": "no image"}""",                                         // 5 no image
            """{"image": "d.png"}""",                                              // 6 no caption
            """{"image": "e.png", "captions": [1, 2]}""",                          // 7 captions not strings
            """[1, 2, 3]""",                                                       // 8 not an object
            """{"file_name": "sub/f.png", "text": "alt keys"}""",                 // 9 ok
            """{"image": "g.png", "captions": ["abc"], "phrases": [[{"start": 0}]]}""", // 10 phrase without end/box
        });
        var stats = QuietStats();
        var ds = Manifests.ReadJsonl(path, stats);
        Assert.AreEqual(3, ds.Count);
        Assert.AreEqual(6, stats.BadManifestLines);
        foreach (int line in new[] { 4, 5, 6, 7, 8, 10 })
            Assert.IsTrue(stats.Recent.Any(m => m.Contains($"{path}:{line}:")), $"line {line} not logged");
        Assert.IsFalse(stats.Recent.Any(m => m.Contains($"{path}:3:")));
        CollectionAssert.AreEqual(new[] { "first", "second" }, ds[1].Captions.ToArray());
        Assert.AreEqual("val", ds[1].Split);
        Assert.AreEqual(Path.Combine(dir.Path, "a.png"), ((FileImageRef)ds[0].Image).Path);
        Assert.AreEqual(Path.Combine(dir.Path, "sub/f.png"), ((FileImageRef)ds[2].Image).Path);
        Assert.AreEqual(1, ds.WhereSplit("val").Count);
    }

    [TestMethod]
    public void CocoKarpathySplitFile()
    {
        using var dir = new TempDir();
        string path = dir.P("dataset_coco.json");
        File.WriteAllText(path, """
            {"dataset": "coco", "images": [
              {"filepath": "train2014", "filename": "t1.jpg", "split": "train", "sentences": [{"raw": "a dog. "}, {"raw": "a brown dog"}]},
              {"filepath": "val2014", "filename": "v1.jpg", "split": "restval", "sentences": [{"raw": "a cat"}]},
              {"filepath": "val2014", "filename": "v2.jpg", "split": "val", "sentences": [{"raw": "a bird"}]},
              {"filepath": "val2014", "filename": "v3.jpg", "split": "test", "sentences": [{"raw": "a fish"}]},
              {"filepath": "val2014", "split": "train", "sentences": [{"raw": "no file"}]},
              {"filepath": "val2014", "filename": "v4.jpg", "split": "train", "sentences": []}
            ]}
            """);
        var stats = QuietStats();
        var ds = Manifests.ReadCoco(path, dir.Path, stats, new[] { "train", "val" });
        Assert.AreEqual(2, ds.Count);
        Assert.AreEqual(2, stats.BadManifestLines);
        Assert.IsTrue(stats.Recent.Any(m => m.Contains("images[4]")) && stats.Recent.Any(m => m.Contains("images[5]")));
        CollectionAssert.AreEqual(new[] { "a dog.", "a brown dog" }, ds[0].Captions.ToArray());
        Assert.AreEqual(Path.Combine(dir.Path, "train2014", "t1.jpg"), ((FileImageRef)ds[0].Image).Path);
        Assert.AreEqual("val", ds[1].Split);
        Assert.AreEqual(4, Manifests.ReadCoco(path, dir.Path, QuietStats()).Count);
    }

    [TestMethod]
    public void CocoCaptionAnnotationFile()
    {
        using var dir = new TempDir();
        string path = dir.P("captions_val2014.json");
        File.WriteAllText(path, """
            {"images": [{"id": 5, "file_name": "x.jpg"}, {"id": 9, "file_name": "y.jpg"}, {"file_name": "noid.jpg"}],
             "annotations": [
               {"image_id": 9, "caption": "second image"},
               {"image_id": 5, "caption": "first image"},
               {"image_id": 5, "caption": "first image again"},
               {"image_id": 5},
               {"image_id": 77, "caption": "unknown image"}
             ]}
            """);
        var stats = QuietStats();
        var ds = Manifests.ReadCoco(path, dir.Path, stats);
        Assert.AreEqual(2, ds.Count);
        Assert.AreEqual(3, stats.BadManifestLines);
        // Image order follows images[]; captions follow annotations[].
        CollectionAssert.AreEqual(new[] { "first image", "first image again" }, ds[0].Captions.ToArray());
        CollectionAssert.AreEqual(new[] { "second image" }, ds[1].Captions.ToArray());
        Assert.AreEqual(Path.Combine(dir.Path, "y.jpg"), ((FileImageRef)ds[1].Image).Path);
    }

    static void Add(TarWriter w, string name, byte[] data)
    {
        var e = new PaxTarEntry(TarEntryType.RegularFile, name) { DataStream = new MemoryStream(data) };
        w.WriteEntry(e);
    }

    [TestMethod]
    public void WebDatasetTarShards()
    {
        using var dir = new TempDir();
        using var img0 = DataTestUtil.NoiseImage(20, 14, 10);
        using var img1 = DataTestUtil.NoiseImage(9, 25, 11);
        using var img3 = DataTestUtil.NoiseImage(16, 16, 12);
        string longKey = "deep/" + new string('k', 150) + "/003";
        string shard0 = dir.P("shard-000000.tar"), shard1 = dir.P("shard-000001.tar");
        using (var fs = File.Create(shard0))
        using (var w = new TarWriter(fs, TarEntryFormat.Pax))
        {
            Add(w, "s/000.png", DataTestUtil.Png(img0));
            Add(w, "s/000.txt", Encoding.UTF8.GetBytes("a noisy picture\n"));
            Add(w, "s/001.json", Encoding.UTF8.GetBytes("""{"captions": ["tall noise", "more noise"]}"""));
            Add(w, "s/001.png", DataTestUtil.Png(img1));
            Add(w, "s/002.png", DataTestUtil.Png(img1));          // no caption
            Add(w, "s/004.txt", Encoding.UTF8.GetBytes("no image"));
        }
        using (var fs = File.Create(shard1))
        using (var w = new TarWriter(fs, TarEntryFormat.Pax))
        {
            // A name over 100 bytes needs a PAX extended header before the member's own header.
            Add(w, longKey + ".png", DataTestUtil.Png(img3));
            Add(w, longKey + ".txt", Encoding.UTF8.GetBytes("long name"));
        }
        var stats = QuietStats();
        var ds = Manifests.ReadWebDataset(new[] { shard0, shard1 }, stats);
        Assert.AreEqual(3, ds.Count);
        Assert.AreEqual(2, stats.BadManifestLines);
        Assert.IsTrue(stats.Recent.Any(m => m.Contains("'s/002'") && m.Contains("no caption")));
        Assert.IsTrue(stats.Recent.Any(m => m.Contains("'s/004'") && m.Contains("no image")));
        CollectionAssert.AreEqual(new[] { "a noisy picture" }, ds[0].Captions.ToArray());
        CollectionAssert.AreEqual(new[] { "tall noise", "more noise" }, ds[1].Captions.ToArray());
        CollectionAssert.AreEqual(new[] { "long name" }, ds[2].Captions.ToArray());
        // Images are read back from their byte ranges in the shards.
        var expected = new[] { img0, img1, img3 };
        for (int i = 0; i < 3; i++)
        {
            using var got = ds[i].Image.Load(DecodeLimits.Default);
            CollectionAssert.AreEqual(DataTestUtil.Rgb(expected[i]), DataTestUtil.Rgb(got), $"sample {i}");
        }

        // A shard cut short keeps the samples before the cut and reports the damage instead of throwing.
        var bytes = File.ReadAllBytes(shard0);
        string cut = dir.P("cut.tar");
        File.WriteAllBytes(cut, bytes[..(bytes.Length * 2 / 3 + 100)]);
        var cutStats = QuietStats();
        var partial = Manifests.ReadWebDataset(new[] { cut }, cutStats);
        Assert.IsTrue(partial.Count is >= 1 and <= 2, $"{partial.Count} samples");
        Assert.IsTrue(cutStats.BadManifestLines >= 1);
    }
}
