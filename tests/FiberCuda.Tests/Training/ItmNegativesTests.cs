using FiberCuda.Training;

namespace FiberCuda.Tests.Training;

[TestClass]
public sealed class ItmNegativesTests
{
    static double[] RandomSim(int seed, int rows, int cols, double scale)
    {
        var r = new Random(seed);
        var s = new double[rows * cols];
        for (int i = 0; i < s.Length; i++) s[i] = scale * (2 * r.NextDouble() - 1);
        return s;
    }

    [TestMethod]
    public void NeverThePositiveNeverAnUnfilledColumn()
    {
        const int rows = 4, cols = 9;
        for (int seed = 0; seed < 30; seed++)
        {
            var sim = RandomSim(seed, rows, cols, 3);
            // The positive dominating by far: the max for the softmax must exclude it, or every other weight underflows.
            for (int i = 0; i < rows; i++) sim[i * cols + i] = i % 2 == 0 ? 1e4 : 50;
            // Unfilled queue columns with huge similarity must still never be drawn.
            for (int i = 0; i < rows; i++) { sim[i * cols + 7] = 1e5; sim[i * cols + 8] = double.NaN; }
            for (int valid = rows; valid <= 7; valid++)
                for (ulong stream = 0; stream < 40; stream++)
                {
                    var picks = ItmNegatives.Sample(sim, rows, cols, valid, (ulong)seed, stream);
                    Assert.AreEqual(rows, picks.Length);
                    for (int i = 0; i < rows; i++)
                    {
                        Assert.AreNotEqual(i, picks[i], $"row {i} drew its positive (seed {seed}, valid {valid}, stream {stream})");
                        Assert.IsTrue(picks[i] >= 0 && picks[i] < valid, $"row {i}: column {picks[i]} outside [0, {valid})");
                    }
                }
        }
    }

    [TestMethod]
    public void PositiveFarAboveTheRestStillGivesTheSoftmaxOfTheOthers()
    {
        // Positive at +800, one negative at 0, the rest at −5: a max over the whole row would underflow every
        // negative weight to 0; the correct draw is column 1 with probability 1/(1 + 3e^-5) ≈ 0.98.
        const int cols = 5;
        double[] sim = [800, 0, -5, -5, -5];
        int ones = 0, n = 4000;
        for (ulong s = 0; s < (ulong)n; s++)
        {
            int p = ItmNegatives.Sample(sim, 1, cols, cols, 11, s)[0];
            Assert.AreNotEqual(0, p);
            if (p == 1) ones++;
        }
        double expect = 1 / (1 + 3 * Math.Exp(-5));
        double sd = Math.Sqrt(n * expect * (1 - expect));
        Assert.AreEqual(n * expect, ones, 5 * sd, $"column 1 drawn {ones}/{n}");
    }

    /// <summary>Frequencies over many streams against softmax(row) with the positive zeroed: Pearson χ² per row.</summary>
    [TestMethod]
    public void FrequenciesFollowTheSoftmaxWithoutThePositive()
    {
        const int rows = 3, cols = 8, valid = 6, draws = 12000;
        var sim = RandomSim(5, rows, cols, 1.5);
        var counts = new int[rows, valid];
        for (ulong s = 0; s < draws; s++)
        {
            var picks = ItmNegatives.Sample(sim, rows, cols, valid, 99, s);
            for (int i = 0; i < rows; i++) counts[i, picks[i]]++;
        }
        for (int i = 0; i < rows; i++)
        {
            var w = new double[valid];
            for (int j = 0; j < valid; j++) w[j] = j == i ? 0 : Math.Exp(sim[i * cols + j]);
            double tot = w.Sum(), chi2 = 0;
            for (int j = 0; j < valid; j++)
            {
                if (j == i) { Assert.AreEqual(0, counts[i, j]); continue; }
                double e = draws * w[j] / tot;
                chi2 += (counts[i, j] - e) * (counts[i, j] - e) / e;
            }
            // df = valid − 2 = 4: P(χ² > 25) ≈ 5e-5. A sampler that kept the positive or used the wrong softmax is far off.
            Assert.IsTrue(chi2 < 25, $"row {i}: χ² = {chi2:f1}, counts {string.Join(",", Enumerable.Range(0, valid).Select(j => counts[i, j]))}");
        }
        // The same statistic against the softmax WITH the positive renormalised over all valid columns must fail
        // (guards the test itself: the rows are far enough from uniform to tell the two apart).
        var row0 = Enumerable.Range(0, valid).Select(j => Math.Exp(sim[j])).ToArray();
        double u = 0, all = row0.Sum();
        for (int j = 1; j < valid; j++) { double e = draws * row0[j] / all; u += (counts[0, j] - e) * (counts[0, j] - e) / e; }
        Assert.IsTrue(u > 25, $"χ² against the wrong distribution only {u:f1}");
    }

    [TestMethod]
    public void DeterministicInSeedAndStream()
    {
        const int rows = 5, cols = 12;
        var sim = RandomSim(8, rows, cols, 0.5);
        CollectionAssert.AreEqual(ItmNegatives.Sample(sim, rows, cols, cols, 3, 17), ItmNegatives.Sample(sim, rows, cols, cols, 3, 17));
        var a = Enumerable.Range(0, 20).Select(s => ItmNegatives.Sample(sim, rows, cols, cols, 3, (ulong)s)).ToList();
        var b = Enumerable.Range(0, 20).Select(s => ItmNegatives.Sample(sim, rows, cols, cols, 4, (ulong)s)).ToList();
        Assert.IsTrue(a.Select(p => string.Join(",", p)).Distinct().Count() > 15, "streams give different draws");
        Assert.IsTrue(a.Zip(b).Count(t => !t.First.SequenceEqual(t.Second)) > 15, "seeds give different draws");
    }

    [TestMethod]
    public void DegenerateRowsStillGiveAValidNegative()
    {
        const int rows = 3, cols = 6;
        foreach (var fill in new[] { double.NaN, double.NegativeInfinity, double.PositiveInfinity })
        {
            var sim = Enumerable.Repeat(fill, rows * cols).ToArray();
            var seen = new HashSet<int>();
            for (ulong s = 0; s < 200; s++)
            {
                var picks = ItmNegatives.Sample(sim, rows, cols, 5, 1, s);
                for (int i = 0; i < rows; i++)
                {
                    Assert.AreNotEqual(i, picks[i], $"{fill}: row {i}");
                    Assert.IsTrue(picks[i] >= 0 && picks[i] < 5, $"{fill}: row {i} → {picks[i]}");
                    if (i == 0) seen.Add(picks[i]);
                }
            }
            CollectionAssert.AreEquivalent(new[] { 1, 2, 3, 4 }, seen.ToArray(), $"{fill}: uniform over the other candidates");
        }
        // A NaN candidate in an otherwise fine row is never drawn.
        double[] mixed = [0, double.NaN, 0.5, double.NaN];
        for (ulong s = 0; s < 300; s++) Assert.AreEqual(2, ItmNegatives.Sample(mixed, 1, 4, 4, 2, s)[0]);
    }

    [TestMethod]
    public void RejectsImpossibleShapes()
    {
        Assert.ThrowsExactly<ArgumentException>(() => ItmNegatives.Sample([1.0], 1, 1, 1, 0, 0), "one candidate: nothing to draw");
        Assert.ThrowsExactly<ArgumentException>(() => ItmNegatives.Sample(new double[6], 2, 3, 4, 0, 0), "valid > cols");
        Assert.ThrowsExactly<ArgumentException>(() => ItmNegatives.Sample(new double[6], 3, 2, 2, 0, 0), "valid < rows");
        Assert.ThrowsExactly<ArgumentException>(() => ItmNegatives.Sample(new double[5], 2, 3, 3, 0, 0), "length");
        // Two candidates, one row: always the other one.
        for (ulong s = 0; s < 20; s++) Assert.AreEqual(1, ItmNegatives.Sample([9.0, -9.0], 1, 2, 2, 0, s)[0]);
    }
}
