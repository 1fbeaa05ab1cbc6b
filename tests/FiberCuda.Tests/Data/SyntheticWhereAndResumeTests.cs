using FiberCuda.Data;

namespace FiberCuda.Tests.Data;

[TestClass]
public sealed class SyntheticWhereTests
{
    /// <summary>Independent grid rule: thirds of the image, by the box centre, each axis on its own.</summary>
    static string Cell(PixelBox b, int s)
    {
        double cx = (b.X0 + b.X1) / 2.0, cy = (b.Y0 + b.Y1) / 2.0;
        string[] rows = ["top", "middle", "bottom"], cols = ["left", "centre", "right"];
        int r = cy * 3 < s ? 0 : cy * 3 < 2 * s ? 1 : 2, c = cx * 3 < s ? 0 : cx * 3 < 2 * s ? 1 : 2;
        return r == 1 && c == 1 ? "centre" : $"{rows[r]} {cols[c]}";
    }

    [TestMethod]
    public void WhereIsTheGridCellOfTheBoxCentre()
    {
        foreach (int s in new[] { 48, 64, 96 })
            for (int x0 = 0; x0 < s; x0 += 3)
                for (int y0 = 0; y0 < s; y0 += 5)
                    foreach (int w in new[] { 1, 4, 11 })
                    {
                        var b = new PixelBox(x0, y0, Math.Min(s, x0 + w), Math.Min(s, y0 + w + 1));
                        Assert.AreEqual(Cell(b, s), SyntheticShapes.Where(b, s), $"{b} in {s}px");
                    }
        Assert.AreEqual("top left", SyntheticShapes.Where(new PixelBox(0, 0, 2, 2), 60));
        Assert.AreEqual("bottom right", SyntheticShapes.Where(new PixelBox(58, 58, 60, 60), 60));
        Assert.AreEqual("middle left", SyntheticShapes.Where(new PixelBox(0, 29, 2, 31), 60));
        Assert.AreEqual("top centre", SyntheticShapes.Where(new PixelBox(29, 0, 31, 2), 60));
    }

    [TestMethod]
    public void SayWhereCaptionsNameTheShapesCell()
    {
        const int s = 64;
        var plain = new SyntheticShapes(21, new SyntheticOptions { ImageSize = s });
        var where = new SyntheticShapes(21, new SyntheticOptions { ImageSize = s, SayWhere = true });
        int single = 0;
        var cells = new HashSet<string>();
        for (int i = 0; i < 120; i++)
        {
            var a = plain.Scene(i); var b = where.Scene(i);
            // The option changes only the wording: same shapes, same number of captions, same phrases and boxes.
            Assert.AreEqual(a.Shapes.Count, b.Shapes.Count);
            for (int k = 0; k < a.Shapes.Count; k++) Assert.AreEqual(a.Shapes[k], b.Shapes[k], $"scene {i}");
            Assert.AreEqual(a.Captions.Count, b.Captions.Count);
            for (int ci = 0; ci < b.Captions.Count; ci++)
            {
                string capA = a.Captions[ci], capB = b.Captions[ci];
                Assert.IsFalse(capA.Contains(" in the "), $"plain caption says where: {capA}");
                var ps = b.Phrases[ci];
                Assert.AreEqual(a.Phrases[ci].Count, ps.Count);
                if (!capB.StartsWith("there is ")) { Assert.AreEqual(capA, capB, "relational captions unchanged"); continue; }
                single++;
                Assert.AreEqual(1, ps.Count);
                var p = ps[0];
                Assert.AreEqual(p.Text, capB[p.Start..p.End], "phrase span still points at the phrase");
                string cell = Cell(p.Box, s);
                cells.Add(cell);
                Assert.AreEqual($"there is {p.Text} in the {cell}", capB, $"scene {i}");
                Assert.AreEqual($"there is {p.Text}", capA, $"scene {i} without SayWhere");
            }
        }
        Assert.IsTrue(single > 40, $"only {single} single-object captions");
        Assert.IsTrue(cells.Count >= 7, $"cells seen: {string.Join(", ", cells)}");
    }

    [TestMethod]
    public void SpecParsesTheWhereField()
    {
        var stats = new DataStats();
        var plain = CaptionDatasets.Open("synthetic:30:5:48:2", stats);
        var where = CaptionDatasets.Open("synthetic:30:5:48:2:where", stats);
        Assert.AreEqual(30, where.Count);
        var gen = new SyntheticShapes(5, new SyntheticOptions { ImageSize = 48, MaxShapes = 2, SayWhere = true });
        for (int i = 0; i < 30; i++)
        {
            CollectionAssert.AreEqual(gen.Scene(i).Captions.ToArray(), where[i].Captions.ToArray(), $"scene {i}");
            Assert.IsFalse(plain[i].Captions.Any(c => c.Contains(" in the ")));
        }
        Assert.IsTrue(where.Items.Any(it => it.Captions.Any(c => c.Contains(" in the "))));
        Assert.ThrowsExactly<ArgumentException>(() => CaptionDatasets.Open("synthetic:30:5:48:2:here", stats));
        Assert.ThrowsExactly<ArgumentException>(() => CaptionDatasets.Open("synthetic:30:5:48:2:", stats));
        Assert.ThrowsExactly<ArgumentException>(() => CaptionDatasets.Open("synthetic:30:5:48:2:where:extra", stats));
    }

    [TestMethod]
    public void WriteDatasetWithChosenScenes()
    {
        var gen = new SyntheticShapes(8, new SyntheticOptions { ImageSize = 40, SayWhere = true });
        using var dir = new TempDir();
        var (train, val) = gen.WriteDataset(dir.Path, [5, 2, 9], [11]);
        var stats = new DataStats();
        var t = Manifests.ReadJsonl(train, stats, null);
        var v = Manifests.ReadJsonl(val, stats, null);
        Assert.AreEqual(3, t.Count); Assert.AreEqual(1, v.Count);
        int[] want = [5, 2, 9];
        for (int k = 0; k < 3; k++) CollectionAssert.AreEqual(gen.Scene(want[k]).Captions.ToArray(), t[k].Captions.ToArray());
        CollectionAssert.AreEqual(gen.Scene(11).Captions.ToArray(), v[0].Captions.ToArray());
        CollectionAssert.AreEquivalent(new[] { "000002.png", "000005.png", "000009.png", "000011.png" },
            Directory.GetFiles(Path.Combine(dir.Path, "images")).Select(Path.GetFileName).ToArray());
    }
}

[TestClass]
public sealed class LoaderStartBatchTests
{
    [TestMethod]
    [DataRow(1)]
    [DataRow(3)]
    public void StartBatchYieldsTheRestOfTheEpochAndBuildsNothingBefore(int workers)
    {
        var data = new SyntheticShapes(4, new SyntheticOptions { ImageSize = 32 }).InMemory(0, 14);
        var opts = new LoaderOptions { BatchSize = 5, ImageSize = 24, MaxTextLength = 12, Workers = workers, PrefetchBatches = 2, Seed = 9 };
        var full = new CaptionLoader(data, CaptionTokenizer.Gpt2Fallback(), opts).Epoch(2).ToList();
        int nb = full.Count;
        Assert.IsTrue(nb >= 6, $"{nb} batches");
        foreach (int k in new[] { 0, 1, nb - 2, nb - 1, nb })
        {
            var l = new CaptionLoader(data, CaptionTokenizer.Gpt2Fallback(), opts);
            var rest = l.Epoch(2, default, startBatch: k).ToList();
            Assert.AreEqual(nb - k, rest.Count, $"start {k}");
            Assert.AreEqual((long)(nb - k), l.BatchesBuilt, $"start {k}: batches before it were built");
            for (int j = 0; j < rest.Count; j++)
            {
                var (a, b) = (full[k + j], rest[j]);
                Assert.AreEqual(k + j, b.Index);
                CollectionAssert.AreEqual(a.PairIndex, b.PairIndex);
                CollectionAssert.AreEqual(a.PixelValues, b.PixelValues);
                CollectionAssert.AreEqual(a.InputIds, b.InputIds);
                CollectionAssert.AreEqual(a.MlmInputIds, b.MlmInputIds);
                CollectionAssert.AreEqual(a.MlmLabels, b.MlmLabels);
            }
        }
        // Beyond the end: nothing; negative: refused.
        var l2 = new CaptionLoader(data, CaptionTokenizer.Gpt2Fallback(), opts);
        Assert.AreEqual(0, l2.Epoch(2, default, startBatch: nb + 3).Count());
        Assert.AreEqual(0L, l2.BatchesBuilt);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => l2.Epoch(2, default, startBatch: -1).ToList());
    }
}
