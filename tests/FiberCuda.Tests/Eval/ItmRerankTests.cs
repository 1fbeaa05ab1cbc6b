using FiberCuda.Eval;

namespace FiberCuda.Tests.Eval;

[TestClass]
public sealed class ItmRerankTests
{
    /// <summary>Deterministic pseudo-random ITM score of a pair, optionally quantised to make ties.</summary>
    static float FakeItm(int i, int t, int levels)
    {
        uint h = (uint)(i * 73856093) ^ (uint)(t * 19349663);
        h ^= h >> 13; h *= 0x5bd1e995; h ^= h >> 15;
        return levels > 0 ? (h % (uint)levels) / (float)levels : (h & 0xFFFFFF) / (float)(1 << 24) * 4 - 2;
    }

    /// <summary>The dense re-ranked matrices built plainly (full sorts), then ranked by the brute-force reference.</summary>
    static (int[] Tr, int[] Ir, SortedSet<(int, int)> Pairs) Reference(float[] itc, int nI, int[] owners, int k, Func<int, int, float> itm, bool addItc)
    {
        int nT = owners.Length;
        var tr = new double[nI, nT];
        var ir = new double[nI, nT];
        for (int i = 0; i < nI; i++) for (int t = 0; t < nT; t++) tr[i, t] = ir[i, t] = double.NegativeInfinity;
        var pairs = new SortedSet<(int, int)>();
        double Score(int i, int t) => addItc ? (double)(itm(i, t) + itc[i * nT + t]) : itm(i, t);
        for (int i = 0; i < nI; i++)
            foreach (int t in EvalReference.TopK(Enumerable.Range(0, nT).Select(u => (double)itc[i * nT + u]), k))
            { tr[i, t] = Score(i, t); pairs.Add((i, t)); }
        for (int t = 0; t < nT; t++)
            foreach (int i in EvalReference.TopK(Enumerable.Range(0, nI).Select(j => (double)itc[j * nT + t]), k))
            { ir[i, t] = Score(i, t); pairs.Add((i, t)); }
        return (EvalReference.TextRanks(tr, owners), EvalReference.ImageRanks(ir, owners), pairs);
    }

    [TestMethod]
    public void MatchesDenseBruteForceAndCallsTheScorerWithSortedDistinctChunks()
    {
        var rnd = new Random(99);
        foreach (var (nI, maxPer, k, levels, batch, addItc) in new[]
                 { (13, 5, 4, 0, 7, false), (13, 5, 4, 3, 64, false), (20, 3, 1, 0, 5, true), (9, 5, 100, 4, 1000, false), (30, 5, 16, 5, 33, true) })
        {
            int[] owners = EvalReference.RandomOwners(rnd, nI, maxPer);
            float[] itc = EvalReference.RandomScores(rnd, nI * owners.Length, levels);
            var calls = new List<(int, int)[]>();
            var result = ItmRerank.Run(itc, nI, owners, k, pairs =>
            {
                calls.Add(pairs.ToArray());
                return pairs.Select(p => FakeItm(p.Image, p.Text, levels)).ToArray();
            }, batch, addItc);
            var (tr, ir, refPairs) = Reference(itc, nI, owners, k, (i, t) => FakeItm(i, t, levels), addItc);
            string ctx = $"{nI}/{maxPer}/k{k}/q{levels}/itc{addItc}";
            CollectionAssert.AreEqual(tr, result.Ranks.TextRetrieval, "TR " + ctx);
            CollectionAssert.AreEqual(ir, result.Ranks.ImageRetrieval, "IR " + ctx);
            Assert.AreEqual(EvalReference.Recall(tr, 1), result.Recall.TrR1, 1e-12);
            Assert.AreEqual(EvalReference.Recall(ir, 10), result.Recall.IrR10, 1e-12);
            var sent = calls.SelectMany(c => c).ToArray();
            CollectionAssert.AreEqual(refPairs.ToArray(), sent, "the union of needed pairs, sorted, each once " + ctx);
            Assert.AreEqual(sent.Length, result.PairsScored);
            Assert.IsTrue(calls.All(c => c.Length <= batch) && calls.Take(calls.Count - 1).All(c => c.Length == batch), "chunks of the batch size");
            Assert.AreEqual(Math.Min(k, owners.Length), result.KTexts);
            Assert.AreEqual(Math.Min(k, nI), result.KImages);
        }
    }

    [TestMethod]
    public void PerfectScorerRecallIsTheItcTopKCoverage()
    {
        var rnd = new Random(7);
        const int nI = 25;
        int[] owners = EvalReference.RandomOwners(rnd, nI, 4);
        int nT = owners.Length;
        float[] itc = EvalReference.RandomScores(rnd, nI * nT, 0);
        float[] Perfect(IReadOnlyList<(int Image, int Text)> ps) => ps.Select(p => owners[p.Text] == p.Image ? 1f : 0f).ToArray();
        foreach (int k in new[] { 1, 3, 8 })
        {
            var res = ItmRerank.Run(itc, nI, owners, k, Perfect, 50);
            // Coverage by plain full sorts: does the query's top k by ITC hold a correct item?
            double trCov = Enumerable.Range(0, nI).Count(i =>
                EvalReference.TopK(Enumerable.Range(0, nT).Select(t => (double)itc[i * nT + t]), k).Any(t => owners[t] == i)) / (double)nI;
            double irCov = Enumerable.Range(0, nT).Count(t =>
                EvalReference.TopK(Enumerable.Range(0, nI).Select(i => (double)itc[i * nT + t]), k).Contains(owners[t])) / (double)nT;
            Assert.IsTrue(trCov < 1 && irCov < 1, "the test needs misses");
            // A covered query ranks first; an uncovered one ties at −∞ with more than 10 wrong candidates: a miss.
            foreach (double v in new[] { res.Recall.TrR1, res.Recall.TrR5, res.Recall.TrR10 }) Assert.AreEqual(trCov, v, 1e-12, $"TR k={k}");
            foreach (double v in new[] { res.Recall.IrR1, res.Recall.IrR5, res.Recall.IrR10 }) Assert.AreEqual(irCov, v, 1e-12, $"IR k={k}");
        }
        // k beyond every candidate count: all pairs scored, perfect recall.
        var all = ItmRerank.Run(itc, nI, owners, 10_000, Perfect, 64);
        Assert.AreEqual(nI * nT, all.PairsScored);
        Assert.AreEqual(1.0, all.Recall.Mean);
    }

    [TestMethod]
    public void TopKOrdersTiesByIndexAndNaNLast()
    {
        // One image row over 6 texts and the same values as one text column over 6 images.
        var row = new[] { 0.5f, float.NaN, 0.9f, 0.5f, 0.1f, 0.9f };
        CollectionAssert.AreEqual(new[] { 2, 5, 0, 3, 4, 1 }, ItmRerank.TopTexts<float>(row, 1, 6, 6)[0]);
        CollectionAssert.AreEqual(new[] { 2, 5, 0 }, ItmRerank.TopTexts<float>(row, 1, 6, 3)[0]);
        CollectionAssert.AreEqual(new[] { 2, 5, 0, 3 }, ItmRerank.TopImages<float>(row, 6, 1, 4)[0]);
        // Against the full-sort reference on a tie-heavy matrix.
        var rnd = new Random(5);
        var m = EvalReference.RandomScores(rnd, 11 * 17, 4);
        var tops = ItmRerank.TopImages<float>(m, 11, 17, 5);
        for (int t = 0; t < 17; t++)
            CollectionAssert.AreEqual(EvalReference.TopK(Enumerable.Range(0, 11).Select(i => (double)m[i * 17 + t]), 5), tops[t]);
    }

    [TestMethod]
    public void ScorerContractIsChecked()
    {
        var itc = new float[] { 0.1f, 0.2f, 0.3f, 0.4f };
        Assert.ThrowsExactly<InvalidOperationException>(() => ItmRerank.Run(itc, 2, new[] { 0, 1 }, 2, ps => new float[ps.Count + 1]));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ItmRerank.Run(itc, 2, new[] { 0, 1 }, 0, ps => new float[ps.Count]));
    }
}
