using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Autograd;

/// <summary>
/// Differentiable losses of FIBER's coarse pre-training heads (spec §4.2), over the fused
/// <see cref="IHeadOps"/> of the inputs' backend. Backward rules: <see cref="HeadBackwardRules"/>.
/// </summary>
public static class HeadOps
{
    /// <summary>The official temperature bounds (compute_itc clamps `temp` to [0.001, 1] before each step).</summary>
    public const double TempMin = 0.001, TempMax = 1.0;

    /// <summary>
    /// ITC loss ½(CE_i2t + CE_t2i) over [in-batch keys ‖ queue] (see <see cref="IHeadOps.ItcForward"/>).
    /// img, txt [B,D]: L2-normalised features (gradients flow to them as queries only: as in-batch keys
    /// they are detached, like the official code); queues [Q,D] (one entry per row, never differentiated);
    /// temp [1] learnable. With <paramref name="clampTemp"/> the temperature parameter is first clamped
    /// IN PLACE to [0.001, 1] (outside the graph), which is what the official compute_itc does.
    /// imgKeys/txtKeys replace the in-batch keys (e.g. a momentum encoder's features); they get no gradient.
    /// Returns a one-element tensor [1] (the temperature's dtype).
    /// </summary>
    public static Tensor ItcLoss(Tensor img, Tensor txt, Tensor imgQueue, Tensor txtQueue, Tensor temp,
                                 bool clampTemp = true, Tensor? imgKeys = null, Tensor? txtKeys = null)
    {
        var be = img.Backend;
        var ops = be.Heads();
        if (clampTemp)
            using (Grad.NoGrad()) ops.ClampInPlace(temp, TempMin, TempMax);
        var inputs = new[] { img, txt, temp };
        bool record = Engine.ShouldRecord(inputs);
        static bool Needs(Tensor t) => t.RequiresGrad || t.GradFn is not null;
        var gImg = record && Needs(img) ? be.Empty(img.Shape, img.DType) : null;
        var gTxt = record && Needs(txt) ? be.Empty(txt.Shape, txt.DType) : null;
        var gTemp = record && Needs(temp) ? be.Empty(new[] { 1 }, temp.DType) : null;
        var loss = be.Empty(new[] { 1 }, temp.DType);
        ops.ItcForward(img, txt, imgKeys ?? img, txtKeys ?? txt, imgQueue, txtQueue, temp, loss, gImg, gTxt, gTemp);
        if (record)
        {
            var owned = new[] { gImg, gTxt, gTemp }.Where(t => t is not null).Select(t => t!).ToArray();
            Engine.Attach(new Node("itc_loss", inputs, new[] { loss }, saved: new Tensor?[] { gImg, gTxt, gTemp }, owned: owned), loss);
        }
        return loss;
    }

    /// <summary>
    /// Mean MLM cross-entropy over the rows whose label is not <paramref name="ignoreIndex"/> (0 when all
    /// are ignored): logits = hidden·weightᵀ + bias, computed tile by tile and never stored whole.
    /// hidden [N,H] (usually the gathered masked positions, see <see cref="GatherRows"/>), weight [V,H],
    /// bias [V] or null, labels [N] i32/i64. Returns [1], f32 (f64 for f64 hidden).
    /// </summary>
    /// <param name="keptRows">The number of non-ignored labels when the caller knows it (skips reading labels back from a GPU).</param>
    public static Tensor MlmLoss(Tensor hidden, Tensor weight, Tensor? bias, Tensor labels, int ignoreIndex = F.DefaultIgnoreIndex, int? keptRows = null)
    {
        var be = hidden.Backend;
        int h = hidden.Dim(-1);
        int n = checked((int)ShapeUtil.Rows(hidden.Shape));
        if (labels.Numel != n) throw new ArgumentException($"MlmLoss: {labels.Numel} labels for {n} rows");
        var st = F.StatType(hidden);
        var rowLoss = be.Empty(new[] { n }, st);
        var lse = be.Empty(new[] { n }, st);
        var h2 = hidden.Reshape(n, h);
        var lab = labels.Reshape(n);
        be.Heads().MlmForward(h2, weight, bias, lab, ignoreIndex, rowLoss, lse);
        int count = keptRows ?? CountKept(labels, ignoreIndex);
        var y = be.Empty(new[] { 1 }, st);
        be.SumAll(rowLoss, y);
        be.Scale(y, count == 0 ? 0f : 1f / count, y);
        rowLoss.Dispose();
        var inputs = bias is null ? new[] { hidden, weight } : new[] { hidden, weight, bias };
        if (Engine.ShouldRecord(inputs))
        {
            var attrs = new Dictionary<string, object?> { ["ignoreIndex"] = ignoreIndex, ["count"] = count };
            Engine.Attach(new Node("mlm_loss", inputs, new[] { y }, saved: new[] { lab, lse }, attrs: attrs, owned: new[] { lse }), y);
        }
        else lse.Dispose();
        return y;
    }

    static int CountKept(Tensor labels, int ignoreIndex)
    {
        int c = 0;
        if (labels.DType == DType.I32) { foreach (int t in labels.ToArray<int>()) if (t != ignoreIndex) c++; }
        else if (labels.DType == DType.I64) { foreach (long t in labels.ToArray<long>()) if (t != ignoreIndex) c++; }
        else throw new ArgumentException($"labels must be i32 or i64, not {labels.DType.Name()}");
        return c;
    }

    /// <summary>
    /// y[i, :] = x[idx[i], :] over the rows of x [..., H] (flattened), differentiable (scatter-add
    /// backward). Selects the masked positions before the MLM transform and decoder.
    /// </summary>
    public static Tensor GatherRows(Tensor x, Tensor idx)
    {
        int h = x.Dim(-1);
        // F.Reshape (not Tensor.Reshape) so the gradient reaches x through the view.
        return F.Embedding(F.Reshape(x, -1, h), idx.Reshape((int)idx.Numel));
    }

    /// <summary>
    /// From host MLM labels over all text positions (−100 where not masked): the flat positions that are
    /// masked and their labels, ready for <see cref="GatherRows"/> and <see cref="MlmLoss"/>.
    /// </summary>
    public static (int[] Positions, int[] Labels) MaskedPositions(ReadOnlySpan<int> labels, int ignoreIndex = F.DefaultIgnoreIndex)
    {
        var pos = new List<int>(); var lab = new List<int>();
        for (int i = 0; i < labels.Length; i++)
            if (labels[i] != ignoreIndex) { pos.Add(i); lab.Add(labels[i]); }
        return (pos.ToArray(), lab.ToArray());
    }
}

/// <summary>
/// ITC feature queues (ALBEF/FIBER): image and text queues [Q,D] (entries as rows; the official buffers
/// are the [D,Q] transpose), the ring pointer and the running count of enqueued entries (queue_total,
/// which the hard-negative ITM sampler uses to restrict sampling to filled slots). Queues are state,
/// not parameters: they never require grad. Slots start as whatever the caller fills them with (the
/// official code: unnormalised randn) and take part in the loss until overwritten.
/// </summary>
public sealed class ItcQueues : IDisposable
{
    public ItcQueues(Tensor imageQueue, Tensor textQueue)
    {
        if (!ShapeUtil.Equal(imageQueue.Shape, textQueue.Shape) || imageQueue.Rank != 2)
            throw new ArgumentException($"queues {imageQueue} and {textQueue} must both be [Q,D]");
        Image = imageQueue; Text = textQueue;
    }

    public Tensor Image { get; }
    public Tensor Text { get; }
    public int Size => Image.Shape[0];
    public int Ptr { get; set; }
    public long Total { get; set; }

    /// <summary>Writes the batch's (detached) features at the pointer, wrapping around; advances Ptr and Total.</summary>
    public void Enqueue(Tensor img, Tensor txt)
    {
        var ops = Image.Backend.Heads();
        ops.QueueEnqueue(Image, img, Ptr);
        Ptr = ops.QueueEnqueue(Text, txt, Ptr);
        Total += img.Shape[0];
    }

    public void Dispose() { Image.Dispose(); Text.Dispose(); }
}
