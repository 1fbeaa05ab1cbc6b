namespace FiberCuda.Tests.Eval;

/// <summary>
/// Plain brute-force retrieval reference: every query's candidates are fully sorted by score, highest first, with a
/// wrong candidate placed before a correct one on equal scores (the documented tie rule) and NaN handled by the
/// caller (the random tests use none); the rank is the position of the first correct candidate.
/// </summary>
static class EvalReference
{
    static int FirstCorrect(IEnumerable<(double Score, bool Correct)> candidates) =>
        candidates.OrderByDescending(c => c.Score).ThenBy(c => c.Correct ? 1 : 0).ToList().FindIndex(c => c.Correct);

    /// <summary>Rank of each image (text retrieval), −1 for an image without texts.</summary>
    public static int[] TextRanks(double[,] s, int[] textImage)
    {
        int nI = s.GetLength(0), nT = s.GetLength(1);
        var r = new int[nI];
        for (int i = 0; i < nI; i++)
            r[i] = textImage.Contains(i) ? FirstCorrect(Enumerable.Range(0, nT).Select(t => (s[i, t], textImage[t] == i))) : -1;
        return r;
    }

    /// <summary>Rank of each text (image retrieval).</summary>
    public static int[] ImageRanks(double[,] s, int[] textImage)
    {
        int nI = s.GetLength(0), nT = s.GetLength(1);
        var r = new int[nT];
        for (int t = 0; t < nT; t++)
            r[t] = FirstCorrect(Enumerable.Range(0, nI).Select(i => (s[i, t], textImage[t] == i)));
        return r;
    }

    public static double Recall(int[] ranks, int k)
    {
        var q = ranks.Where(r => r >= 0).ToArray();
        return (double)q.Count(r => r < k) / q.Length;
    }

    public static double[,] ToMatrix(float[] flat, int nI, int nT)
    {
        var m = new double[nI, nT];
        for (int i = 0; i < nI; i++)
            for (int t = 0; t < nT; t++) m[i, t] = flat[i * nT + t];
        return m;
    }

    /// <summary>The k best candidates of a row by full sort: score descending, lower index first on ties.</summary>
    public static int[] TopK(IEnumerable<double> row, int k) =>
        row.Select((v, j) => (v, j)).OrderByDescending(x => x.v).ThenBy(x => x.j).Take(k).Select(x => x.j).ToArray();

    /// <summary>Random owner images: every image gets 1..maxPer texts; texts are shuffled so owners are not contiguous.</summary>
    public static int[] RandomOwners(Random rnd, int nImages, int maxPer)
    {
        var owners = new List<int>();
        for (int i = 0; i < nImages; i++)
            for (int c = rnd.Next(1, maxPer + 1); c > 0; c--) owners.Add(i);
        var a = owners.ToArray();
        rnd.Shuffle(a);
        return a;
    }

    /// <summary>Random scores; with <paramref name="levels"/> &gt; 0 they are quantised to that many values, which makes ties common.</summary>
    public static float[] RandomScores(Random rnd, int n, int levels) =>
        Enumerable.Range(0, n).Select(_ => levels > 0 ? rnd.Next(levels) / (float)levels : (float)(rnd.NextDouble() * 2 - 1)).ToArray();
}
