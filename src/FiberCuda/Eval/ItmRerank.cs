using System.Numerics;

namespace FiberCuda.Eval;

/// <summary>Outcome of <see cref="ItmRerank.Run{T}"/>.</summary>
/// <param name="Recall">Recall of the re-ranked matrices (TR from the image rows, IR from the text columns).</param>
/// <param name="Ranks">Per-query ranks under <see cref="RetrievalMetrics"/>' rule, on the re-ranked matrices.</param>
/// <param name="KTexts">Texts re-ranked per image (the requested k clamped to the text count).</param>
/// <param name="KImages">Images re-ranked per text (the requested k clamped to the image count).</param>
/// <param name="PairsScored">Distinct (image, text) pairs sent to the ITM scorer.</param>
public sealed record ItmRerankResult(RetrievalRecall Recall, RetrievalRanks Ranks, int KTexts, int KImages, int PairsScored);

/// <summary>
/// ITC → ITM re-ranking as ALBEF/FIBER evaluate it: for every image its k best texts by ITC, and for every text its k
/// best images by ITC, are scored by the fused model's ITM head; in the text-retrieval matrix row i holds those ITM
/// scores at image i's k texts and −∞ elsewhere, in the image-retrieval matrix column t holds the ITM scores at text
/// t's k images and −∞ elsewhere. Recall follows <see cref="RetrievalMetrics"/> (ties against the correct item), so a
/// correct item outside the ITC top-k ties at −∞ with every other unselected candidate and misses at every k below
/// the number of wrong candidates. With k at least the candidate count every pair is scored, which is what FIBER's
/// <c>compute_itm_recall</c> does (spec §5.3). The matrices are never materialised: ranks come from the top-k lists.
/// <para>
/// Top-k selection is deterministic: higher ITC first, a tie goes to the lower index, NaN ranks last. The scorer is
/// called with the union of the needed pairs, deduplicated and sorted by (image, text), in consecutive chunks of at
/// most <c>batchSize</c> pairs; it must return one score per pair, in order.
/// </para>
/// </summary>
public static class ItmRerank
{
    public static ItmRerankResult Run(float[] itc, int nImages, IReadOnlyList<int> textImage, int k,
        Func<IReadOnlyList<(int Image, int Text)>, float[]> scorePairs, int batchSize = 256, bool addItc = false)
        => Run<float>(itc, nImages, textImage, k, scorePairs, batchSize, addItc);

    public static ItmRerankResult Run(double[] itc, int nImages, IReadOnlyList<int> textImage, int k,
        Func<IReadOnlyList<(int Image, int Text)>, float[]> scorePairs, int batchSize = 256, bool addItc = false)
        => Run<double>(itc, nImages, textImage, k, scorePairs, batchSize, addItc);

    /// <param name="itc">ITC scores [nImages × nTexts], row-major.</param>
    /// <param name="k">Candidates re-ranked per query (ALBEF's k_test; clamped to the candidate count).</param>
    /// <param name="scorePairs">ITM score of each pair of a chunk (e.g. the fused model's match logit).</param>
    /// <param name="batchSize">Most pairs per scorer call.</param>
    /// <param name="addItc">Re-ranked score = ITM + ITC, as ALBEF's evaluation does; false: ITM alone (the ITC score only
    /// selects the candidates), as FIBER's <c>compute_itm_recall</c> ranks by <c>rank_output</c> alone.</param>
    public static ItmRerankResult Run<T>(ReadOnlySpan<T> itc, int nImages, IReadOnlyList<int> textImage, int k,
        Func<IReadOnlyList<(int Image, int Text)>, float[]> scorePairs, int batchSize = 256, bool addItc = false)
        where T : INumber<T>
    {
        int nTexts = textImage.Count;
        RetrievalMetrics.CheckShape(itc.Length, nImages, textImage);
        if (k < 1) throw new ArgumentOutOfRangeException(nameof(k), "k must be at least 1");
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize));
        ArgumentNullException.ThrowIfNull(scorePairs);

        int kt = Math.Min(k, nTexts), ki = Math.Min(k, nImages);
        int[][] topTexts = TopTexts(itc, nImages, nTexts, kt);
        int[][] topImages = TopImages(itc, nImages, nTexts, ki);

        long[] keys = PairKeys(topTexts, topImages, nTexts);
        var itm = new float[keys.Length];
        for (int start = 0; start < keys.Length; start += batchSize)
        {
            int n = Math.Min(batchSize, keys.Length - start);
            var chunk = new (int Image, int Text)[n];
            for (int j = 0; j < n; j++) chunk[j] = ((int)(keys[start + j] / nTexts), (int)(keys[start + j] % nTexts));
            var s = scorePairs(chunk) ?? throw new InvalidOperationException("ITM scorer returned null");
            if (s.Length != n) throw new InvalidOperationException($"ITM scorer returned {s.Length} scores for {n} pairs");
            s.CopyTo(itm, start);
        }

        float Score(int i, int t, ReadOnlySpan<T> m)
        {
            long key = (long)i * nTexts + t;
            float v = itm[Array.BinarySearch(keys, key)];
            return addItc ? v + float.CreateTruncating(m[i * nTexts + t]) : v;
        }

        // Own-text counts per image, for the text-retrieval rank of the unselected candidates.
        var ownCount = new int[nImages];
        foreach (int img in textImage) ownCount[img]++;

        var trRank = new int[nImages];
        var entries = new (int Index, float Value, bool Own)[Math.Max(kt, ki)];
        for (int i = 0; i < nImages; i++)
        {
            if (ownCount[i] == 0) { trRank[i] = -1; continue; }
            var list = topTexts[i];
            for (int j = 0; j < list.Length; j++)
                entries[j] = (list[j], Score(i, list[j], itc), textImage[list[j]] == i);
            trRank[i] = SparseRank(entries.AsSpan(0, list.Length), ownCount[i], nTexts);
        }
        var irRank = new int[nTexts];
        for (int t = 0; t < nTexts; t++)
        {
            var list = topImages[t];
            for (int j = 0; j < list.Length; j++)
                entries[j] = (list[j], Score(list[j], t, itc), list[j] == textImage[t]);
            irRank[t] = SparseRank(entries.AsSpan(0, list.Length), 1, nImages);
        }
        var ranks = new RetrievalRanks(trRank, irRank);
        return new ItmRerankResult(RetrievalMetrics.FromRanks(ranks, nImages, nTexts), ranks, kt, ki, keys.Length);
    }

    /// <summary>
    /// Rank of one query whose row holds <paramref name="listed"/> scores and −∞ at every other of its
    /// <paramref name="candidates"/> candidates, <paramref name="ownTotal"/> of which are correct; same rule as
    /// <see cref="RetrievalMetrics.Ranks{T}"/> on the dense row.
    /// </summary>
    static int SparseRank(ReadOnlySpan<(int Index, float Value, bool Own)> listed, int ownTotal, int candidates)
    {
        bool hasBest = false;
        float best = 0;
        int ownListed = 0;
        foreach (var e in listed)
        {
            if (!e.Own) continue;
            ownListed++;
            if (float.IsNaN(e.Value)) continue;
            if (!hasBest || e.Value > best) best = e.Value;
            hasBest = true;
        }
        // A correct candidate left out of the list scores −∞, which only matters when nothing listed beats it.
        if (ownListed < ownTotal && !hasBest) { best = float.NegativeInfinity; hasBest = true; }
        if (!hasBest) return int.MaxValue;
        // −∞ ties with every unselected wrong candidate, and every listed one is ≥ −∞ or NaN: all wrong ones count.
        if (float.IsNegativeInfinity(best)) return candidates - ownTotal;
        int r = 0;
        foreach (var e in listed)
            if (!e.Own && !(e.Value < best)) r++;
        return r;
    }

    /// <summary>Per image, its k best texts by ITC (order: score descending, ties to the lower index, NaN last).</summary>
    public static int[][] TopTexts<T>(ReadOnlySpan<T> itc, int nImages, int nTexts, int k) where T : INumber<T>
    {
        RetrievalMetricsShape(itc.Length, nImages, nTexts);
        var top = new TopKBuffers<T>(nImages, Math.Min(k, nTexts));
        for (int i = 0; i < nImages; i++)
        {
            var row = itc.Slice(i * nTexts, nTexts);
            for (int t = 0; t < nTexts; t++) top.Offer(i, t, row[t]);
        }
        return top.Result();
    }

    /// <summary>Per text, its k best images by ITC (same order as <see cref="TopTexts{T}"/>).</summary>
    public static int[][] TopImages<T>(ReadOnlySpan<T> itc, int nImages, int nTexts, int k) where T : INumber<T>
    {
        RetrievalMetricsShape(itc.Length, nImages, nTexts);
        var top = new TopKBuffers<T>(nTexts, Math.Min(k, nImages));
        // Row by row (sequential memory) rather than column by column (a cache miss per element at COCO's 5k × 25k).
        for (int i = 0; i < nImages; i++)
        {
            var row = itc.Slice(i * nTexts, nTexts);
            for (int t = 0; t < nTexts; t++) top.Offer(t, i, row[t]);
        }
        return top.Result();
    }

    static void RetrievalMetricsShape(int length, int nImages, int nTexts)
    {
        if (nImages < 0 || nTexts < 0 || (long)nImages * nTexts != length)
            throw new ArgumentException($"score matrix has {length} entries, expected {nImages} × {nTexts}");
    }

    /// <summary>True when candidate a (index, score) is ranked strictly before b.</summary>
    static bool Before<T>(int ia, T a, int ib, T b) where T : INumber<T>
    {
        bool na = T.IsNaN(a), nb = T.IsNaN(b);
        if (na || nb) return na == nb ? ia < ib : nb;
        if (a != b) return a > b;
        return ia < ib;
    }

    /// <summary>
    /// The k best candidates of many queries at once: per query a binary heap with the worst kept candidate at the
    /// root, so most offers cost one comparison and the rest O(log k); sorted best first at the end.
    /// </summary>
    sealed class TopKBuffers<T>(int queries, int k) where T : INumber<T>
    {
        readonly int[] _idx = new int[queries * k];
        readonly T[] _val = new T[queries * k];
        readonly int[] _filled = new int[queries];
        // Copies of each full heap's root, contiguous over queries: when a matrix row is offered to every column's
        // query in turn, the usual reject touches sequential memory instead of a cache line per query.
        readonly int[] _rootIdx = new int[queries];
        readonly T[] _rootVal = new T[queries];

        public void Offer(int q, int index, T v)
        {
            if (k == 0) return;
            int n = _filled[q];
            if (n == k && !Before(index, v, _rootIdx[q], _rootVal[q])) return;
            Insert(q, n, index, v);
            _rootIdx[q] = _idx[q * k]; _rootVal[q] = _val[q * k];
        }

        void Insert(int q, int n, int index, T v)
        {
            int b = q * k;
            if (n < k)
            {
                // Sift up while the parent ranks before the newcomer (the root must be the worst).
                int c = n;
                _filled[q] = n + 1;
                while (c > 0)
                {
                    int p = (c - 1) >> 1;
                    if (!Before(_idx[b + p], _val[b + p], index, v)) break;
                    _idx[b + c] = _idx[b + p]; _val[b + c] = _val[b + p];
                    c = p;
                }
                _idx[b + c] = index; _val[b + c] = v;
                return;
            }
            // Replace the root and sift down towards the worse child.
            int at = 0;
            while (true)
            {
                int l = 2 * at + 1;
                if (l >= k) break;
                int w = l;
                if (l + 1 < k && Before(_idx[b + l], _val[b + l], _idx[b + l + 1], _val[b + l + 1])) w = l + 1;
                if (!Before(index, v, _idx[b + w], _val[b + w])) break;
                _idx[b + at] = _idx[b + w]; _val[b + at] = _val[b + w];
                at = w;
            }
            _idx[b + at] = index; _val[b + at] = v;
        }

        public int[][] Result()
        {
            var r = new int[queries][];
            for (int q = 0; q < queries; q++)
            {
                int b = q * k, n = _filled[q];
                var order = Enumerable.Range(b, n).ToArray();
                Array.Sort(order, (x, y) => x == y ? 0 : Before(_idx[x], _val[x], _idx[y], _val[y]) ? -1 : 1);
                r[q] = order.Select(j => _idx[j]).ToArray();
            }
            return r;
        }
    }

    /// <summary>Sorted distinct keys image·nTexts + text of every pair some query needs.</summary>
    static long[] PairKeys(int[][] topTexts, int[][] topImages, int nTexts)
    {
        long total = 0;
        foreach (var l in topTexts) total += l.Length;
        foreach (var l in topImages) total += l.Length;
        var keys = new long[total];
        long p = 0;
        for (int i = 0; i < topTexts.Length; i++)
            foreach (int t in topTexts[i]) keys[p++] = (long)i * nTexts + t;
        for (int t = 0; t < topImages.Length; t++)
            foreach (int i in topImages[t]) keys[p++] = (long)i * nTexts + t;
        Array.Sort(keys);
        int m = 0;
        for (int j = 0; j < keys.Length; j++)
            if (m == 0 || keys[j] != keys[m - 1]) keys[m++] = keys[j];
        Array.Resize(ref keys, m);
        return keys;
    }
}
