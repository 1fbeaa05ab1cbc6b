using System.Diagnostics;
using FiberCuda.Autograd;
using FiberCuda.Data;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Eval;

/// <summary>Which fused-path score ranks ITM candidates (fiber-coarse.md §5.3).</summary>
public enum ItmScoreHead
{
    /// <summary>itm_score.fc class-1 logit: what the pre-training objective trains.</summary>
    ItmLogit,
    /// <summary>rank_output(cls_feats): the official retrieval score; never trained during pre-training (a copy of fc row 1).</summary>
    RankOutput,
}

public sealed record RetrievalEvalOptions
{
    public int BatchSize { get; init; } = 64;
    /// <summary>Re-rank each query's ITC top k with the fused model; null: ITC only.</summary>
    public int? ItmTopK { get; init; }
    public ItmScoreHead ItmScore { get; init; } = ItmScoreHead.ItmLogit;
    /// <summary>Text length (default: the config's max_text_len).</summary>
    public int? MaxTextLength { get; init; }
}

public sealed record RetrievalEvalResult(RetrievalRecall Itc, RetrievalRecall? Itm, int? ItmTopK, long PairsScored, int Images, int Texts,
    int SkippedImages, double Seconds)
{
    /// <summary>Flat name → value view for metrics files (recalls in percent).</summary>
    public Dictionary<string, double> ToDictionary()
    {
        var d = new Dictionary<string, double>();
        foreach (var (k, v) in Itc.ToDictionary()) d["itc_" + k] = v;
        if (Itm is not null) foreach (var (k, v) in Itm.ToDictionary()) d["itm_" + k] = v;
        return d;
    }
}

/// <summary>
/// Image–text retrieval with a coarse FIBER (fiber-coarse.md §5.3): every image through the unfused image path and
/// every text through the unfused text path (L2-normalised ITC embeddings), scores = dot products, recall@1/5/10 both
/// ways; optionally the ITC top-k of every query re-scored by the fused model (ITM re-ranking). The official ITM
/// evaluation scores every pair, which is k = the candidate count.
/// </summary>
public static class RetrievalEvaluator
{
    public static RetrievalEvalResult Run(FiberCoarseModel model, CoarseHeads? heads, RetrievalSet set, CaptionTokenizer tokenizer,
        RetrievalEvalOptions? options = null)
    {
        var o = options ?? new RetrievalEvalOptions();
        var c = model.Config;
        int len = o.MaxTextLength ?? c.MaxTextLen, s = c.ImageSize, h = c.CrossHidden;
        if (o.ItmTopK is not null && heads?.Itm is null) throw new ArgumentException("ITM re-ranking needs the itm head");
        if (set.ImageCount == 0 || set.TextCount == 0) throw new ArgumentException("the retrieval set is empty");
        var clock = Stopwatch.StartNew();
        bool wasTraining = model.Training;
        model.Eval();
        try
        {
            using var _ = Grad.NoGrad();
            var img = new float[set.ImageCount * h];
            var txt = new float[set.TextCount * h];
            // The fused re-ranking needs any image again; keep the preprocessed pixels (N·3·S² floats) only then.
            float[]? pixels = o.ItmTopK is null ? null : new float[(long)set.ImageCount * 3 * s * s];
            foreach (var b in set.ImageBatches(o.BatchSize, s))
            {
                using var scope = new TensorScope();
                model.ImageOnly(ModelInputs.Pixels(model.Ctx, b.Pixels, b.Shape)).ToFloatArray().CopyTo(img, b.Start * h);
                if (pixels is not null) b.Pixels.CopyTo(pixels, (long)b.Start * 3 * s * s);
            }
            foreach (var b in set.TextBatches(o.BatchSize, tokenizer, len))
            {
                using var scope = new TensorScope();
                model.TextOnly(ModelInputs.Text(b.Ids, b.Mask, b.Count, b.TextLength)).ToFloatArray().CopyTo(txt, b.Start * h);
            }
            var scores = Dot(img, txt, set.ImageCount, set.TextCount, h);
            var itc = RetrievalMetrics.Compute(scores, set.ImageCount, set.TextImage);

            RetrievalRecall? itm = null;
            long pairs = 0;
            if (o.ItmTopK is int k)
            {
                var textIds = set.TextBatch(0, set.TextCount, tokenizer, len);
                var r = ItmRerank.Run(scores, set.ImageCount, set.TextImage, k,
                    batch => ScorePairs(model, heads!, o.ItmScore, batch, pixels!, textIds, s, len), o.BatchSize);
                itm = r.Recall; pairs = r.PairsScored;
            }
            return new RetrievalEvalResult(itc, itm, o.ItmTopK, pairs, set.ImageCount, set.TextCount, set.Skipped.Count, clock.Elapsed.TotalSeconds);
        }
        finally { model.Train(wasTraining); }
    }

    static float[] ScorePairs(FiberCoarseModel model, CoarseHeads heads, ItmScoreHead head, IReadOnlyList<(int Image, int Text)> batch,
        float[] pixels, RetrievalTextBatch texts, int s, int len)
    {
        int n = batch.Count, per = 3 * s * s;
        var px = new float[n * per];
        var ids = new long[n * len];
        var mask = new long[n * len];
        for (int i = 0; i < n; i++)
        {
            var (im, t) = batch[i];
            pixels.AsSpan(im * per, per).CopyTo(px.AsSpan(i * per, per));
            texts.Ids.AsSpan(t * len, len).CopyTo(ids.AsSpan(i * len, len));
            texts.Mask.AsSpan(t * len, len).CopyTo(mask.AsSpan(i * len, len));
        }
        using var scope = new TensorScope();
        var cls = model.Forward(ModelInputs.Pixels(model.Ctx, px, [n, 3, s, s]), ModelInputs.Text(ids, mask, n, len)).ClsFeats;
        if (head == ItmScoreHead.RankOutput) return heads.RankOutput!.Forward(cls).ToFloatArray();
        var logits = heads.Itm!.Forward(cls).ToFloatArray();
        var r = new float[n];
        for (int i = 0; i < n; i++) r[i] = logits[2 * i + 1];
        return r;
    }

    static float[] Dot(float[] img, float[] txt, int ni, int nt, int h)
    {
        var scores = new float[(long)ni * nt];
        Parallel.For(0, ni, i =>
        {
            var a = img.AsSpan(i * h, h);
            for (int t = 0; t < nt; t++)
            {
                var b = txt.AsSpan(t * h, h);
                double acc = 0;
                for (int k = 0; k < h; k++) acc += a[k] * b[k];
                scores[(long)i * nt + t] = (float)acc;
            }
        });
        return scores;
    }
}
