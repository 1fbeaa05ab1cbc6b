using System.Text.Json;
using FiberCuda.Eval;

namespace FiberCuda.Tests.Eval;

[TestClass]
public sealed class RetrievalMetricsTests
{
    // 3 images × 5 texts: texts 0,1 → image 0; 2,3 → image 1; 4 → image 2.
    static readonly int[] TinyOwners = { 0, 0, 1, 1, 2 };
    static readonly float[] Tiny =
    {
        0.9f, 0.1f, 0.5f, 0.2f, 0.3f,   // image 0: own best 0.9, nothing above → rank 0
        0.8f, 0.7f, 0.6f, 0.1f, 0.75f,  // image 1: own best 0.6; 0.8, 0.7, 0.75 above → rank 3
        0.4f, 0.4f, 0.4f, 0.4f, 0.4f,   // image 2: all tied; 4 wrong ties count against → rank 4
    };

    [TestMethod]
    public void HandCheckedTinyCase()
    {
        var r = RetrievalMetrics.Ranks<float>(Tiny, 3, TinyOwners);
        CollectionAssert.AreEqual(new[] { 0, 3, 4 }, r.TextRetrieval);
        // Columns: t0 0.9 best; t1 0.1 < 0.7, 0.4; t2 0.6 best; t3 0.1 < 0.2, 0.4; t4 0.4 < 0.75 only.
        CollectionAssert.AreEqual(new[] { 0, 2, 0, 2, 1 }, r.ImageRetrieval);
        var m = RetrievalMetrics.Compute(Tiny, 3, TinyOwners);
        Assert.AreEqual(1.0 / 3, m.TrR1, 1e-12);
        Assert.AreEqual(1.0, m.TrR5); Assert.AreEqual(1.0, m.TrR10);
        Assert.AreEqual(2.0 / 5, m.IrR1, 1e-12);
        Assert.AreEqual(1.0, m.IrR5); Assert.AreEqual(1.0, m.IrR10);
        Assert.AreEqual((1.0 / 3 + 2 + 0.4 + 2) / 6, m.Mean, 1e-12);
        Assert.AreEqual(3, m.Images); Assert.AreEqual(5, m.Texts);
        var d = RetrievalMetrics.Compute(Tiny.Select(x => (double)x).ToArray(), 3, TinyOwners);
        Assert.AreEqual(m, d);
    }

    [TestMethod]
    public void TieRuleAgainstBruteForce()
    {
        // Exact ties, decided per direction: image 0 row [0.5, 0.5] → its text t0 ties with t1 → rank 1;
        // image 1 row [0.2, 0.9] → rank 0. Column t0 [0.5, 0.2] → rank 0; column t1 [0.5, 0.9] → rank 0.
        var s = new float[] { 0.5f, 0.5f, 0.2f, 0.9f };
        var owners = new[] { 0, 1 };
        var r = RetrievalMetrics.Ranks<float>(s, 2, owners);
        CollectionAssert.AreEqual(new[] { 1, 0 }, r.TextRetrieval);
        CollectionAssert.AreEqual(new[] { 0, 0 }, r.ImageRetrieval);
        var m = EvalReference.ToMatrix(s, 2, 2);
        CollectionAssert.AreEqual(EvalReference.TextRanks(m, owners), r.TextRetrieval);
        // All-equal matrix: every query misses at 1 and hits at 5 (fewer than 5 candidates).
        var eq = Enumerable.Repeat(0.25f, 3 * 4).ToArray();
        var o = new[] { 0, 1, 2, 2 };
        var all = RetrievalMetrics.Compute(eq, 3, o);
        Assert.AreEqual(0.0, all.TrR1); Assert.AreEqual(0.0, all.IrR1);
        Assert.AreEqual(1.0, all.TrR5); Assert.AreEqual(1.0, all.IrR5);
        var eqRanks = RetrievalMetrics.Ranks<float>(eq, 3, o);
        CollectionAssert.AreEqual(new[] { 3, 3, 2 }, eqRanks.TextRetrieval);   // every wrong text ties: 4 texts − own
        CollectionAssert.AreEqual(new[] { 2, 2, 2, 2 }, eqRanks.ImageRetrieval);
    }

    [TestMethod]
    public void RandomMatricesMatchBruteForce()
    {
        var rnd = new Random(1234);
        foreach (var (nI, maxPer, levels) in new[] { (4, 3, 0), (23, 5, 0), (23, 5, 7), (41, 2, 3), (60, 5, 0), (12, 1, 2) })
        {
            int[] owners = EvalReference.RandomOwners(rnd, nI, maxPer);
            float[] s = EvalReference.RandomScores(rnd, nI * owners.Length, levels);
            var m = EvalReference.ToMatrix(s, nI, owners.Length);
            int[] tr = EvalReference.TextRanks(m, owners), ir = EvalReference.ImageRanks(m, owners);
            var r = RetrievalMetrics.Ranks<float>(s, nI, owners);
            CollectionAssert.AreEqual(tr, r.TextRetrieval, $"TR ranks {nI}/{maxPer}/{levels}");
            CollectionAssert.AreEqual(ir, r.ImageRetrieval, $"IR ranks {nI}/{maxPer}/{levels}");
            var rec = RetrievalMetrics.Compute(s, nI, owners);
            Assert.AreEqual(EvalReference.Recall(tr, 1), rec.TrR1, 1e-12);
            Assert.AreEqual(EvalReference.Recall(tr, 5), rec.TrR5, 1e-12);
            Assert.AreEqual(EvalReference.Recall(tr, 10), rec.TrR10, 1e-12);
            Assert.AreEqual(EvalReference.Recall(ir, 1), rec.IrR1, 1e-12);
            Assert.AreEqual(EvalReference.Recall(ir, 5), rec.IrR5, 1e-12);
            Assert.AreEqual(EvalReference.Recall(ir, 10), rec.IrR10, 1e-12);
            if (nI <= 5) Assert.AreEqual(1.0, rec.IrR5, "k beyond the candidate count is always a hit");
        }
    }

    [TestMethod]
    public void NaNIsAMissWhenCorrectAndAboveWhenWrong()
    {
        // 2 images × 3 texts, owners [0, 1, 1].
        var s = new float[]
        {
            float.NaN, 0.3f, 0.2f,     // image 0: own score NaN → miss everywhere
            0.1f, float.NaN, 0.5f,     // image 1: own {NaN, 0.5} → best 0.5; wrong 0.1 below → rank 0
        };
        var r = RetrievalMetrics.Ranks<float>(s, 2, new[] { 0, 1, 1 });
        CollectionAssert.AreEqual(new[] { int.MaxValue, 0 }, r.TextRetrieval);
        // t0: correct NaN → miss; t1: correct NaN → miss; t2: correct 0.5, wrong 0.2 → 0.
        CollectionAssert.AreEqual(new[] { int.MaxValue, int.MaxValue, 0 }, r.ImageRetrieval);
        var wrongNaN = new float[] { 0.9f, float.NaN, 0.1f, 0.8f };   // 2 × 2, t → t
        var w = RetrievalMetrics.Ranks<float>(wrongNaN, 2, new[] { 0, 1 });
        CollectionAssert.AreEqual(new[] { 1, 0 }, w.TextRetrieval);   // image 0's wrong text is NaN → counts above
        CollectionAssert.AreEqual(new[] { 0, 1 }, w.ImageRetrieval);  // t1's wrong image 0 is NaN → counts above
        var rec = RetrievalMetrics.Compute(s, 2, new[] { 0, 1, 1 });
        Assert.AreEqual(0.5, rec.TrR10); Assert.AreEqual(1.0 / 3, rec.IrR10, 1e-12);
    }

    [TestMethod]
    public void ImagesWithoutTextsAreNotQueries()
    {
        var owners = new[] { 0, 0, 2 };
        var s = EvalReference.RandomScores(new Random(3), 3 * 3, 0);
        var r = RetrievalMetrics.Ranks<float>(s, 3, owners);
        Assert.AreEqual(-1, r.TextRetrieval[1]);
        CollectionAssert.AreEqual(EvalReference.TextRanks(EvalReference.ToMatrix(s, 3, 3), owners), r.TextRetrieval);
        var rec = RetrievalMetrics.Compute(s, 3, owners);
        Assert.AreEqual(EvalReference.Recall(r.TextRetrieval, 1), rec.TrR1, 1e-12);
        Assert.IsTrue(rec.TrR1 is 0.0 or 0.5 or 1.0, "two queries");
    }

    [TestMethod]
    public void ShapeErrors()
    {
        Assert.ThrowsExactly<ArgumentException>(() => RetrievalMetrics.Compute(new float[5], 2, new[] { 0, 1, 1 }));
        Assert.ThrowsExactly<ArgumentException>(() => RetrievalMetrics.Compute(new float[6], 2, new[] { 0, 2, 1 }));
    }

    [TestMethod]
    public void JsonHasEveryNumber()
    {
        var m = RetrievalMetrics.Compute(Tiny, 3, TinyOwners);
        using var doc = JsonDocument.Parse(m.ToJson());
        var o = doc.RootElement;
        Assert.AreEqual(m.TrR1, o.GetProperty("tr_r1").GetDouble(), 1e-15);
        Assert.AreEqual(m.IrR1, o.GetProperty("ir_r1").GetDouble(), 1e-15);
        Assert.AreEqual(m.IrR10, o.GetProperty("ir_r10").GetDouble(), 1e-15);
        Assert.AreEqual(m.Mean, o.GetProperty("mean").GetDouble(), 1e-15);
        Assert.AreEqual(5, o.GetProperty("texts").GetInt32());
        StringAssert.Contains(m.ToString(), "R@1 33.33");
    }
}
