using System.Text;
using FiberCuda.Training;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace FiberCuda.Tests.Training;

[TestClass]
public sealed class MetricsLogTests
{
    static Dictionary<string, double> Rec(long step) => new()
    {
        ["epoch"] = step / 4,
        ["lr"] = 1e-5 * step / 10.0,
        ["loss"] = 9.0 / (1 + step) + 0.1 * Math.Sin(step),
        ["mlm"] = 5.5 / (1 + 0.5 * step),
        ["itc"] = 2.0 / Math.Sqrt(1 + step),
        ["itm"] = 0.7 - 0.01 * step,
        ["samples_per_s"] = 123.456 + step,
    };

    [TestMethod]
    public void AppendsOneObjectPerLineInKeyOrder()
    {
        using var dir = new RunDir();
        string path = Path.Combine(dir.Path, "sub", "metrics.jsonl");
        using (var log = MetricsLog.Open(path))
        {
            for (long s = 1; s <= 3; s++)
            {
                log.Append(s, Rec(s));
                // Flushed per line: the file holds the record before the log is closed.
                Assert.HasCount((int)s, File.ReadAllLines(path));
            }
            log.Append(4, new Dictionary<string, double> { ["zeta"] = 1, ["alpha"] = double.NaN, ["loss"] = double.PositiveInfinity });
            Assert.ThrowsExactly<ArgumentException>(() => log.Append(5, new Dictionary<string, double> { ["step"] = 1 }));
        }
        var lines = File.ReadAllLines(path);
        Assert.HasCount(4, lines);
        StringAssert.StartsWith(lines[0], "{\"step\":1,\"epoch\":0,\"lr\":");
        Assert.AreEqual("{\"step\":4,\"zeta\":1,\"alpha\":\"NaN\",\"loss\":\"Infinity\"}", lines[3]);

        var recs = MetricsLog.ReadAll(path);
        Assert.HasCount(4, recs);
        for (int i = 0; i < 3; i++)
        {
            var expected = Rec(i + 1);
            Assert.AreEqual(i + 1, recs[i].Step);
            CollectionAssert.AreEqual(expected.Keys.ToList(), recs[i].Values.Keys.ToList(), "key order kept");
            foreach (var (k, v) in expected) Assert.AreEqual(v, recs[i][k], $"{k} round-trips exactly");
        }
        CollectionAssert.AreEqual(new[] { "zeta", "alpha", "loss" }, recs[3].Values.Keys.ToList());
        Assert.IsTrue(double.IsNaN(recs[3]["alpha"]));
        Assert.AreEqual(double.PositiveInfinity, recs[3]["loss"]);
    }

    [TestMethod]
    public void ResumeDropsRecordsAfterTheCheckpointStep()
    {
        using var dir = new RunDir();
        string path = Path.Combine(dir.Path, "metrics.jsonl");
        using (var log = MetricsLog.Open(path))
            for (long s = 1; s <= 10; s++) log.Append(s, Rec(s));
        // The run crashed after step 10; the newest checkpoint is step 6.
        using (var log = MetricsLog.Open(path, resumeFromStep: 6))
        {
            CollectionAssert.AreEqual(new long[] { 1, 2, 3, 4, 5, 6 }, MetricsLog.ReadAll(path).Select(r => r.Step).ToArray());
            for (long s = 7; s <= 8; s++) log.Append(s, Rec(s));
        }
        var recs = MetricsLog.ReadAll(path);
        CollectionAssert.AreEqual(new long[] { 1, 2, 3, 4, 5, 6, 7, 8 }, recs.Select(r => r.Step).ToArray(), "no duplicated steps");
        Assert.AreEqual(Rec(7)["loss"], recs[6]["loss"]);
        // Resuming at a later step than logged keeps everything.
        using (MetricsLog.Open(path, resumeFromStep: 100)) { }
        Assert.HasCount(8, MetricsLog.ReadAll(path));
        // A fresh start (resume from step 0 with no step-0 records) empties the log.
        using (MetricsLog.Open(path, resumeFromStep: 0)) { }
        Assert.IsEmpty(MetricsLog.ReadAll(path));
    }

    [TestMethod]
    public void TornLastLineIsDropped()
    {
        using var dir = new RunDir();
        string path = Path.Combine(dir.Path, "metrics.jsonl");
        using (var log = MetricsLog.Open(path))
            for (long s = 1; s <= 3; s++) log.Append(s, Rec(s));
        File.AppendAllText(path, "{\"step\":4,\"loss\":0.12"); // the crash cut this line short
        CollectionAssert.AreEqual(new long[] { 1, 2, 3 }, MetricsLog.ReadAll(path).Select(r => r.Step).ToArray());
        using (var log = MetricsLog.Open(path)) log.Append(4, Rec(4));
        var lines = File.ReadAllLines(path);
        Assert.HasCount(4, lines);
        CollectionAssert.AreEqual(new long[] { 1, 2, 3, 4 }, MetricsLog.ReadAll(path).Select(r => r.Step).ToArray());

        // A broken line in the middle is not a crash artefact: it is reported.
        File.WriteAllText(path, lines[0] + "\n{\"step\":2,\"lo\n" + lines[2] + "\n", new UTF8Encoding(false));
        var e = Assert.ThrowsExactly<InvalidDataException>(() => MetricsLog.ReadAll(path));
        StringAssert.Contains(e.Message, "line 2");
    }

    [TestMethod]
    public void LossPlotWritesADecodablePng()
    {
        using var dir = new RunDir();
        string path = Path.Combine(dir.Path, "plots", "loss.png");
        var recs = new List<MetricsRecord>();
        string log = Path.Combine(dir.Path, "m.jsonl");
        using (var m = MetricsLog.Open(log))
            for (long s = 0; s < 200; s += 5) m.Append(s, Rec(s));
        recs = MetricsLog.ReadAll(log);

        LossPlot.Write(path, recs, ["loss", "mlm", "itc", "itm", "not_logged"], width: 640, height: 360);
        var head = File.ReadAllBytes(path)[..8];
        CollectionAssert.AreEqual(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, head, "PNG signature");
        using (var img = Image.Load<Rgba32>(path))
        {
            Assert.AreEqual(640, img.Width);
            Assert.AreEqual(360, img.Height);
            var colours = new HashSet<Rgba32>();
            for (int y = 0; y < img.Height; y += 2)
                for (int x = 0; x < img.Width; x += 2) colours.Add(img[x, y]);
            Assert.IsGreaterThan(4, colours.Count, "lines and labels were drawn, not a blank canvas");
        }
        // Overwrites in place, no temporaries left.
        LossPlot.Write(path, recs, ["loss"], width: 320, height: 200);
        using (var img = Image.Load<Rgba32>(path)) Assert.AreEqual(320, img.Width);
        CollectionAssert.AreEqual(new[] { "loss.png" }, Directory.GetFiles(Path.GetDirectoryName(path)!).Select(Path.GetFileName).ToArray());
    }
}
