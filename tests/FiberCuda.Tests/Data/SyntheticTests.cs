using FiberCuda.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace FiberCuda.Tests.Data;

[TestClass]
public sealed class SyntheticShapesTests
{
    [TestMethod]
    public void SameSeedSameBytesOtherSeedOtherBytes()
    {
        var a = new SyntheticShapes(42); var b = new SyntheticShapes(42); var c = new SyntheticShapes(43);
        int differ = 0;
        for (int i = 0; i < 8; i++)
        {
            CollectionAssert.AreEqual(a.EncodePng(i), b.EncodePng(i), $"scene {i}");
            CollectionAssert.AreEqual(a.Scene(i).Captions.ToArray(), b.Scene(i).Captions.ToArray());
            if (!a.EncodePng(i).SequenceEqual(c.EncodePng(i))) differ++;
        }
        Assert.IsTrue(differ >= 7, "another seed should give other scenes");

        using var d1 = new TempDir(); using var d2 = new TempDir();
        a.WriteDataset(d1.Path, 6, 2); b.WriteDataset(d2.Path, 6, 2);
        var files = Directory.GetFiles(d1.Path, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(d1.Path, f)).OrderBy(f => f).ToArray();
        Assert.AreEqual(6 + 2 + 2, files.Length);
        foreach (var f in files) CollectionAssert.AreEqual(File.ReadAllBytes(Path.Combine(d1.Path, f)), File.ReadAllBytes(Path.Combine(d2.Path, f)), f);
    }

    [TestMethod]
    public void CaptionsAgreeWithPixelsAndBoxes()
    {
        var gen = new SyntheticShapes(7, new SyntheticOptions { ImageSize = 64 });
        int relations = 0, shapesSeen = 0;
        for (int i = 0; i < 40; i++)
        {
            var scene = gen.Scene(i);
            using var img = gen.Render(scene);
            shapesSeen += scene.Shapes.Count;
            Assert.AreEqual(scene.Captions.Count, scene.Phrases.Count);
            for (int ci = 0; ci < scene.Captions.Count; ci++)
            {
                string cap = scene.Captions[ci];
                var ps = scene.Phrases[ci];
                foreach (var p in ps)
                {
                    Assert.AreEqual(p.Text, cap[p.Start..p.End]);
                    var words = p.Text.Split(' ');   // "a", size, colour, kind
                    Assert.AreEqual(4, words.Length, p.Text);
                    CheckPhraseBox(img, words[1], SyntheticShapes.ColourOf(words[2]), words[3], p.Box, 64, $"scene {i}: {cap}");
                }
                if (ps.Count == 2)
                {
                    relations++;
                    string rel = cap[ps[0].End..ps[1].Start].Trim();
                    var (a, b) = (ps[0].Box, ps[1].Box);
                    double dx = b.CenterX - a.CenterX, dy = b.CenterY - a.CenterY;
                    bool ok = rel switch
                    {
                        "left of" => dx > 0 && Math.Abs(dx) >= Math.Abs(dy),
                        "right of" => dx < 0 && Math.Abs(dx) >= Math.Abs(dy),
                        "above" => dy > 0 && Math.Abs(dy) > Math.Abs(dx),
                        "below" => dy < 0 && Math.Abs(dy) > Math.Abs(dx),
                        _ => false,
                    };
                    Assert.IsTrue(ok, $"scene {i}: '{cap}' vs boxes {a} {b}");
                }
            }
        }
        Assert.IsTrue(relations > 20 && shapesSeen > 60, $"too few relations ({relations}) or shapes ({shapesSeen})");
    }

    /// <summary>
    /// The box must be tight around pixels of the phrase's colour (every edge row/column touches one, nothing of
    /// that colour just outside), the fill ratio must fit the kind, and the size word must fit the box.
    /// </summary>
    static void CheckPhraseBox(Image<Rgb24> img, string size, Rgb24 colour, string kind, PixelBox box, int s, string what)
    {
        int inBox = 0;
        bool top = false, bottom = false, left = false, right = false;
        for (int y = box.Y0; y < box.Y1; y++)
            for (int x = box.X0; x < box.X1; x++)
                if (img[x, y].Equals(colour))
                {
                    inBox++;
                    top |= y == box.Y0; bottom |= y == box.Y1 - 1; left |= x == box.X0; right |= x == box.X1 - 1;
                }
        Assert.IsTrue(top && bottom && left && right, $"{what}: box {box} not tight");
        for (int y = Math.Max(0, box.Y0 - 1); y < Math.Min(s, box.Y1 + 1); y++)
            for (int x = Math.Max(0, box.X0 - 1); x < Math.Min(s, box.X1 + 1); x++)
                if (x < box.X0 || x >= box.X1 || y < box.Y0 || y >= box.Y1)
                    Assert.IsFalse(img[x, y].Equals(colour), $"{what}: colour just outside box {box}");
        double fill = (double)inBox / box.Area;
        var (lo, hi) = kind switch { "square" => (0.999, 1.0), "circle" => (0.70, 0.86), "triangle" => (0.40, 0.62), _ => (2.0, 2.0) };
        Assert.IsTrue(fill >= lo && fill <= hi, $"{what}: {kind} fill {fill:F3}");
        if (size == "large") Assert.IsTrue(box.Width >= 0.25 * s, $"{what}: large but {box.Width} wide");
        else Assert.IsTrue(size == "small" && box.Width <= 0.18 * s, $"{what}: small but {box.Width} wide");
    }

    [TestMethod]
    public void DatasetFolderRoundTripsThroughJsonlWithHeldOutSplit()
    {
        using var dir = new TempDir();
        var gen = new SyntheticShapes(3, new SyntheticOptions { ImageSize = 48 });
        var (train, val) = gen.WriteDataset(dir.Path, 5, 3);
        var stats = new DataStats { Log = _ => { } };
        var tr = Manifests.ReadJsonl(train, stats);
        var va = Manifests.ReadJsonl(val, stats);
        Assert.AreEqual(0, stats.BadManifestLines);
        Assert.AreEqual(5, tr.Count); Assert.AreEqual(3, va.Count);
        Assert.IsTrue(tr.Items.All(i => i.Split == "train") && va.Items.All(i => i.Split == "val"));
        var trainKeys = tr.Items.Select(i => i.Image.Key).ToHashSet();
        Assert.IsFalse(va.Items.Any(i => trainKeys.Contains(i.Image.Key)));
        for (int k = 0; k < 3; k++)
        {
            var scene = gen.Scene(5 + k);
            CollectionAssert.AreEqual(scene.Captions.ToArray(), va[k].Captions.ToArray());
            for (int c = 0; c < scene.Captions.Count; c++)
                CollectionAssert.AreEqual(scene.Phrases[c].ToArray(), va[k].Phrases![c].ToArray());
            using var png = va[k].Image.Load(DecodeLimits.Default);
            using var direct = gen.Render(5 + k);
            CollectionAssert.AreEqual(DataTestUtil.Rgb(direct), DataTestUtil.Rgb(png));
        }
        // The in-memory view serves the same scenes.
        var mem = gen.InMemory(5, 3, "val");
        using var m0 = mem[0].Image.Load(DecodeLimits.Default);
        using var f0 = va[0].Image.Load(DecodeLimits.Default);
        CollectionAssert.AreEqual(DataTestUtil.Rgb(f0), DataTestUtil.Rgb(m0));
    }
}
