using System.Numerics;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace FiberCuda.Eval;

/// <summary>
/// Recall@1/5/10 of both retrieval directions, as fractions in [0, 1] (multiply by 100 for the percentages papers
/// print). TR is text retrieval (an image queries the texts), IR image retrieval (a text queries the images);
/// <see cref="Mean"/> is RSUM/6, the mean of the six recalls.
/// </summary>
public sealed record RetrievalRecall(
    double TrR1, double TrR5, double TrR10,
    double IrR1, double IrR5, double IrR10,
    int Images, int Texts)
{
    public double Mean => (TrR1 + TrR5 + TrR10 + IrR1 + IrR5 + IrR10) / 6.0;

    static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Flat name → value view (fractions), e.g. for logs or a metrics file.</summary>
    public IReadOnlyDictionary<string, double> ToDictionary() => new Dictionary<string, double>
    {
        ["tr_r1"] = TrR1, ["tr_r5"] = TrR5, ["tr_r10"] = TrR10,
        ["ir_r1"] = IrR1, ["ir_r5"] = IrR5, ["ir_r10"] = IrR10,
        ["mean"] = Mean, ["images"] = Images, ["texts"] = Texts,
    };

    /// <summary>snake_case JSON of every number, <see cref="Mean"/> included.</summary>
    public string ToJson() => JsonSerializer.Serialize(ToDictionary(), JsonOptions);

    public override string ToString() =>
        $"TR R@1 {100 * TrR1:F2} R@5 {100 * TrR5:F2} R@10 {100 * TrR10:F2} | IR R@1 {100 * IrR1:F2} R@5 {100 * IrR5:F2} R@10 {100 * IrR10:F2} | mean {100 * Mean:F2} ({Images} images, {Texts} texts)";
}

/// <summary>
/// Per query, how many wrong candidates rank at or above the correct one (0 = correct at the top); the query is a hit
/// at k when its rank is below k. <see cref="TextRetrieval"/> has one entry per image (−1 for an image without texts:
/// not a query), <see cref="ImageRetrieval"/> one per text.
/// </summary>
public sealed record RetrievalRanks(int[] TextRetrieval, int[] ImageRetrieval);

/// <summary>
/// Retrieval recall from a score matrix S [nImages × nTexts] (row-major; higher = more similar) and the owner image of
/// every text. The rank of a query is the number of WRONG candidates whose score is not strictly below the correct
/// score: ties count against the correct item (a conservative, order-independent rule; ALBEF's argsort breaks ties
/// arbitrarily, so on tie-free scores the two agree exactly). A NaN correct score is a miss at every k; a NaN wrong
/// candidate counts as ranked above. For text retrieval the correct score is the best non-NaN score among the image's
/// own texts (ALBEF: the minimum position over the ground-truth texts), and the image's other own texts are not
/// competitors. Images without texts are not text-retrieval queries. k beyond the candidate count is a hit whenever
/// the score is not NaN.
/// </summary>
public static class RetrievalMetrics
{
    public static readonly int[] Ks = { 1, 5, 10 };

    /// <summary>Recall@1/5/10 of both directions.</summary>
    public static RetrievalRecall Compute<T>(ReadOnlySpan<T> scores, int nImages, IReadOnlyList<int> textImage) where T : INumber<T>
        => FromRanks(Ranks(scores, nImages, textImage), nImages, textImage.Count);

    public static RetrievalRecall Compute(float[] scores, int nImages, IReadOnlyList<int> textImage) => Compute<float>(scores, nImages, textImage);
    public static RetrievalRecall Compute(double[] scores, int nImages, IReadOnlyList<int> textImage) => Compute<double>(scores, nImages, textImage);

    /// <summary>Ranks of every query under the rule of the class summary.</summary>
    public static RetrievalRanks Ranks<T>(ReadOnlySpan<T> scores, int nImages, IReadOnlyList<int> textImage) where T : INumber<T>
    {
        int nTexts = textImage.Count;
        CheckShape(scores.Length, nImages, textImage);

        // Image retrieval: correct score of each text, then one sequential pass over the rows counts the competitors.
        var correct = new T[nTexts];
        var irRank = new int[nTexts];
        var nanCorrect = new bool[nTexts];
        for (int t = 0; t < nTexts; t++)
        {
            correct[t] = scores[textImage[t] * nTexts + t];
            nanCorrect[t] = T.IsNaN(correct[t]);
        }
        for (int i = 0; i < nImages; i++)
        {
            var row = scores.Slice(i * nTexts, nTexts);
            for (int t = 0; t < nTexts; t++)
                if (textImage[t] != i && !(row[t] < correct[t])) irRank[t]++;
        }
        for (int t = 0; t < nTexts; t++) if (nanCorrect[t]) irRank[t] = int.MaxValue;

        // Text retrieval: the correct score is the best non-NaN score among the image's own texts.
        var trRank = new int[nImages];
        var hasText = new bool[nImages];
        var hasBest = new bool[nImages];
        var best = new T[nImages];
        for (int t = 0; t < nTexts; t++)
        {
            int i = textImage[t];
            T s = scores[i * nTexts + t];
            hasText[i] = true;
            if (T.IsNaN(s)) continue;
            if (!hasBest[i] || s > best[i]) best[i] = s;
            hasBest[i] = true;
        }
        for (int i = 0; i < nImages; i++)
        {
            if (!hasText[i]) { trRank[i] = -1; continue; }
            if (!hasBest[i]) { trRank[i] = int.MaxValue; continue; }
            var row = scores.Slice(i * nTexts, nTexts);
            T b = best[i];
            int r = 0;
            for (int u = 0; u < nTexts; u++)
                if (textImage[u] != i && !(row[u] < b)) r++;
            trRank[i] = r;
        }
        return new RetrievalRanks(trRank, irRank);
    }

    /// <summary>Recall from ranks: the fraction of queries with rank &lt; k.</summary>
    public static RetrievalRecall FromRanks(RetrievalRanks ranks, int nImages, int nTexts)
    {
        double Recall(int[] r, int k)
        {
            int q = 0, hit = 0;
            foreach (int x in r)
            {
                if (x < 0) continue;
                q++;
                if (x < k) hit++;
            }
            return q == 0 ? double.NaN : (double)hit / q;
        }
        var tr = ranks.TextRetrieval;
        var ir = ranks.ImageRetrieval;
        return new RetrievalRecall(Recall(tr, 1), Recall(tr, 5), Recall(tr, 10), Recall(ir, 1), Recall(ir, 5), Recall(ir, 10), nImages, nTexts);
    }

    internal static void CheckShape(int length, int nImages, IReadOnlyList<int> textImage)
    {
        if (nImages < 0) throw new ArgumentOutOfRangeException(nameof(nImages));
        if ((long)nImages * textImage.Count != length)
            throw new ArgumentException($"score matrix has {length} entries, expected {nImages} × {textImage.Count}");
        for (int t = 0; t < textImage.Count; t++)
            if ((uint)textImage[t] >= (uint)nImages) throw new ArgumentException($"text {t} belongs to image {textImage[t]}, outside [0, {nImages})");
    }
}
