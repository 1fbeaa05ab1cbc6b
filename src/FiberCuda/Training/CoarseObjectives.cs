using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Data;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Training;

public enum ItcVariant
{
    /// <summary>FIBER's ITC: queries against [detached in-batch keys ‖ feature queue], learnable temperature (the fused kernel).</summary>
    Official,
    /// <summary>
    /// CLIP-style symmetric ITC over the micro-batch only, with the gradient through both sides and the temperature held
    /// at its current value. Training from scratch, the official variant's detached keys and stale queue leave the fresh
    /// towers' collapsed features (cosine ≈ 1) where they are; this one pulls them apart. Not the official recipe.
    /// </summary>
    InBatch,
}

/// <summary>Which stage-1 objectives a step computes (the official pre-training uses all three, weights 1).</summary>
public sealed record CoarseObjectiveOptions
{
    public bool Mlm { get; init; } = true;
    public bool Itc { get; init; } = true;
    public bool Itm { get; init; } = true;
    /// <summary>
    /// Start the ITC feature queues L2-normalised (ALBEF) instead of the official unnormalised randn, whose huge first
    /// logits (‖q‖ ≈ √D at temperature 0.07) are harmless next to pretrained towers but can saturate a model trained from scratch.
    /// </summary>
    public bool NormalizedQueueInit { get; init; }
    /// <summary>
    /// <see cref="ItcVariant.Official"/> (default) or <see cref="ItcVariant.InBatch"/>, a from-scratch aid: see there.
    /// </summary>
    public ItcVariant ItcVariant { get; init; } = ItcVariant.Official;
    /// <summary>
    /// Run the towers below the fusion (Swin up to the first fused block, the unfused text layers) once per image and
    /// per text of the micro-batch and feed the result to all three objectives (the MLM's masked text still gets its
    /// own lower pass; queued hard negatives get theirs). Off by default: the official recipe runs every path whole,
    /// with its own dropout masks.
    /// </summary>
    public bool SharedLower { get; init; }
}

/// <summary>
/// One micro-batch's losses: <see cref="Total"/> on the graph, the parts as host values, and the detached ITC features
/// that <see cref="CoarseObjectives.Enqueue"/> writes into the queues once the step is known to be good.
/// </summary>
public sealed record CoarseLosses(Tensor Total, double Mlm, double Itc, double Itm, int MaskedTokens, double Temperature,
    Tensor? ImageFeatures = null, Tensor? TextFeatures = null)
{
    public double TotalValue => Mlm + Itc + Itm;
    public bool Finite => double.IsFinite(Mlm) && double.IsFinite(Itc) && double.IsFinite(Itm);
}

/// <summary>
/// The coarse pre-training objectives of one micro-batch (fiber-coarse.md §4.2), in the official order: MLM on the
/// fused path with masked text; ITC on the unfused paths against the feature queues; ITM on 3B fused pairs with one
/// hard negative text per image and one hard negative image per text, mined from the batch and the queues; then the
/// queues (features and raw inputs) take the batch. Holds the queue state that a checkpoint must save.
/// </summary>
public sealed class CoarseObjectives : IDisposable
{
    public CoarseObjectives(FiberCoarseModel model, CoarseHeads heads, CoarseObjectiveOptions? options = null, ulong seed = 0)
    {
        Model = model; Heads = heads; Options = options ?? new CoarseObjectiveOptions(); Seed = seed;
        var c = model.Config;
        if (Options.Mlm && heads.Mlm is null) throw new ArgumentException($"{c.Name}: MLM needs the mlm head");
        if ((Options.Itc || Options.Itm) && heads.Temp is null) throw new ArgumentException($"{c.Name}: ITC/ITM need the itc head (temperature, queues)");
        if (Options.Itm && heads.Itm is null) throw new ArgumentException($"{c.Name}: ITM needs the itm head");
        if (heads.Temp is not null)
        {
            var be = model.Ctx.Backend;
            // Official buffers start as unnormalised randn (fiber-coarse.md §10); seeded for reproducibility.
            Queues = new ItcQueues(RandnQueue(be, c.QueueSize, c.CrossHidden, model.Ctx.DType, seed, 1, Options.NormalizedQueueInit),
                                   RandnQueue(be, c.QueueSize, c.CrossHidden, model.Ctx.DType, seed, 2, Options.NormalizedQueueInit));
            Inputs = new ItmInputQueue(c.QueueSize, c.ImageSize, c.MaxTextLen);
        }
    }

    public FiberCoarseModel Model { get; }
    public CoarseHeads Heads { get; }
    public CoarseObjectiveOptions Options { get; }
    public ulong Seed { get; }
    public ItcQueues? Queues { get; }
    public ItmInputQueue? Inputs { get; }

    /// <summary>
    /// Runs the objectives on <paramref name="batch"/>; <paramref name="stream"/> (e.g. the global micro-batch index)
    /// decides the hard negatives. Records on the tape when gradients are on. The queues are not touched: call
    /// <see cref="Enqueue"/> after a good step (a NaN batch must not poison them). Inputs the backward needs are
    /// allocated here and left to the caller's <see cref="TensorScope"/> (one per step).
    /// </summary>
    public CoarseLosses Forward(Batch batch, ulong stream)
    {
        var c = Model.Config;
        if (batch.ImageSize != c.ImageSize) throw new ArgumentException($"batch images are {batch.ImageSize}px, the model's {c.ImageSize}px");
        if (batch.TextLength > c.MaxPositionEmbeddings - 2) throw new ArgumentException($"text length {batch.TextLength} exceeds the position table");
        var text = ModelInputs.Text(batch.InputIds, batch.AttentionMask, batch.Size, batch.TextLength);
        var pixels = ModelInputs.Pixels(Model.Ctx, batch.PixelValues, batch.PixelShape);
        var lower = new Lower(Model, pixels, text);
        var parts = new List<Tensor>();
        double mlm = 0, itc = 0, itm = 0;
        int masked = 0;

        if (Options.Mlm)
        {
            if (batch.MlmInputIds is null || batch.MlmLabels is null) throw new ArgumentException("MLM needs a batch with mlm_input_ids/labels (LoaderOptions.Mlm)");
            var labels = Array.ConvertAll(batch.MlmLabels, v => (int)v);
            var mlmText = text with { Ids = Array.ConvertAll(batch.MlmInputIds, v => (int)v) };
            var fused = Options.SharedLower ? Model.ForwardFromLower(lower.Image, Model.LowerText(mlmText), Model.Text.Masks(mlmText))
                                            : Model.Forward(pixels, mlmText);
            var l = Heads.Mlm!.Loss(fused.TextFeats, labels);
            masked = labels.Count(v => v != F.DefaultIgnoreIndex);
            parts.Add(l); mlm = l.ToDoubleArray()[0];
        }

        Tensor? imgF = null, txtF = null;
        if (Options.Itc || Options.Itm)
        {
            imgF = Options.SharedLower ? Model.ImageOnlyFromLower(lower.Image) : Model.ImageOnly(pixels);
            txtF = Options.SharedLower ? Model.TextOnlyFromLower(lower.Text, lower.Masks) : Model.TextOnly(text);
        }
        if (Options.Itc)
        {
            var l = Options.ItcVariant == ItcVariant.InBatch ? InBatchItc(imgF!, txtF!) : HeadOps.ItcLoss(imgF!, txtF!, Queues!.Image, Queues.Text, Heads.Temp!);
            parts.Add(l); itc = l.ToDoubleArray()[0];
        }
        double temp = Heads.Temp is null ? double.NaN : Math.Clamp(Heads.Temp.ToDoubleArray()[0], HeadOps.TempMin, HeadOps.TempMax);
        if (Options.Itm)
        {
            var l = ItmLoss(batch, lower, imgF!, txtF!, temp, stream);
            parts.Add(l); itm = l.ToDoubleArray()[0];
        }
        var total = parts[0];
        for (int i = 1; i < parts.Count; i++) total = F.Add(total, parts[i]);
        return new CoarseLosses(total, mlm, itc, itm, masked, temp,
            imgF is null ? null : F.Detach(imgF), txtF is null ? null : F.Detach(txtF));
    }

    /// <summary>The official `_dequeue_and_enqueue` after the step: the batch's ITC features and raw inputs enter the queues.</summary>
    public void Enqueue(Batch batch, CoarseLosses losses)
    {
        if (Queues is null || losses.ImageFeatures is null || losses.TextFeatures is null) return;
        // Check everything before either queue moves: a half-done enqueue leaves feature slots whose raw inputs are
        // another sample's, and later hard negatives would pair them.
        if (batch.Size > Queues.Size) throw new ArgumentException($"a batch of {batch.Size} does not fit the queues ({Queues.Size} slots)");
        if (batch.ImageSize != Inputs!.ImageSize || batch.TextLength != Inputs.TextLength)
            throw new ArgumentException($"batch {batch.ImageSize}px × {batch.TextLength} tokens does not fit the ITM input queue ({Inputs.ImageSize}px × {Inputs.TextLength})");
        using var _ = Grad.NoGrad();
        int ptr = Queues.Ptr;
        Queues.Enqueue(losses.ImageFeatures, losses.TextFeatures);
        Inputs.Enqueue(batch, ptr);
    }

    /// <summary>½(CE(img·txtᵀ/τ) + CE(txt·imgᵀ/τ)) over the micro-batch, both sides differentiated, τ fixed (<see cref="ItcVariant.InBatch"/>).</summary>
    Tensor InBatchItc(Tensor img, Tensor txt)
    {
        var be = img.Backend;
        using (Grad.NoGrad()) be.Heads().ClampInPlace(Heads.Temp!, HeadOps.TempMin, HeadOps.TempMax);
        float inv = (float)(1 / Heads.Temp!.ToDoubleArray()[0]);
        int b = img.Dim(0);
        var y = be.FromInts(Enumerable.Range(0, b).ToArray(), [b]);
        var i2t = F.Scale(F.MatMul(img, txt, transB: true), inv);
        return F.Scale(F.Add(F.CrossEntropy(i2t, y), F.CrossEntropy(F.Transpose(i2t, 0, 1), y)), 0.5f);
    }

    /// <summary>ITM with global hard negatives: pairs (i, i) → 1, (i, text⁻ᵢ) → 0, (image⁻ᵢ, i) → 0.</summary>
    Tensor ItmLoss(Batch batch, Lower lower, Tensor imgF, Tensor txtF, double temp, ulong stream)
    {
        int b = batch.Size, s = batch.ImageSize, len = batch.TextLength;
        var q = Queues!;
        int filled = (int)Math.Min(q.Total, q.Size);
        int cols = b + filled;
        double[] simI2T, simT2I;
        using (Grad.NoGrad())
        {
            simI2T = Similarities(imgF, txtF, q.Text, filled, temp);
            simT2I = Similarities(txtF, imgF, q.Image, filled, temp);
        }
        var negText = ItmNegatives.Sample(simI2T, b, cols, cols, Seed, DataRng.Hash(stream, 1));
        var negImage = ItmNegatives.Sample(simT2I, b, cols, cols, Seed, DataRng.Hash(stream, 2));

        // 3B inputs: images [pos ‖ pos ‖ neg], texts [pos ‖ neg ‖ pos].
        var imageOf = new int[3 * b];
        var textOf = new int[3 * b];
        for (int i = 0; i < b; i++)
        {
            imageOf[i] = imageOf[b + i] = i; imageOf[2 * b + i] = negImage[i];
            textOf[i] = textOf[2 * b + i] = i; textOf[b + i] = negText[i];
        }
        var ids = new long[3 * b * len];
        var mask = new long[3 * b * len];
        for (int r = 0; r < 3 * b; r++) CopyText(batch, textOf[r], r, ids, mask);
        var text3 = ModelInputs.Text(ids, mask, 3 * b, len);
        FusedOutput fused;
        if (Options.SharedLower)
        {
            var masks3 = Model.Text.Masks(text3);
            fused = Model.ForwardFromLower(GatherLower(lower.Image, imageOf, b, QueuedImages), GatherLower(lower.Text, textOf, b, QueuedTexts), masks3);
        }
        else
        {
            int ppi = 3 * s * s;
            var pix = new float[3 * b * ppi];
            for (int r = 0; r < 3 * b; r++) PixelsOf(batch, imageOf[r]).CopyTo(pix.AsSpan(r * ppi, ppi));
            fused = Model.Forward(ModelInputs.Pixels(Model.Ctx, pix, [3 * b, 3, s, s]), text3);
        }
        var logits = Heads.Itm!.Forward(fused.ClsFeats);
        var labels = new int[3 * b];
        Array.Fill(labels, 1, 0, b);
        var y = Model.Ctx.Backend.FromInts(labels, [3 * b]);
        return F.CrossEntropy(logits, y);
    }

    /// <summary>Candidate <paramref name="src"/>'s pixels (&lt; B: the batch, else queue slot src − B).</summary>
    Span<float> PixelsOf(Batch batch, int src) => src < batch.Size ? batch.Pixels(src) : Inputs!.PixelsOf(src - batch.Size);

    /// <summary>
    /// Rows of the shared lower states for candidate indices (&lt; B: the batch's rows; ≥ B: queue slots, whose lower
    /// pass <paramref name="queued"/> runs here on just the slots needed), gathered differentiably.
    /// </summary>
    static Tensor GatherLower(Tensor batchLower, int[] candidates, int b, Func<int[], Tensor> queued)
    {
        var slots = candidates.Where(k => k >= b).Distinct().Order().ToArray();
        var src = slots.Length == 0 ? batchLower : F.Concat([batchLower, queued(slots.Select(k => k - b).ToArray())], 0);
        var row = candidates.Select(k => k < b ? k : b + Array.IndexOf(slots, k)).ToArray();
        int n = src.Dim(0), per = (int)(src.Numel / n);
        var idx = src.Backend.FromInts(row, [row.Length]);
        var shape = (int[])src.Shape.Clone();
        shape[0] = row.Length;
        return F.Reshape(HeadOps.GatherRows(F.Reshape(src, n, per), idx), shape);
    }

    Tensor QueuedImages(int[] slots)
    {
        int ppi = Inputs!.PixelsPerImage, s = Inputs.ImageSize;
        var pix = new float[slots.Length * ppi];
        for (int i = 0; i < slots.Length; i++) Inputs.PixelsOf(slots[i]).CopyTo(pix.AsSpan(i * ppi, ppi));
        return Model.LowerImage(ModelInputs.Pixels(Model.Ctx, pix, [slots.Length, 3, s, s]));
    }

    Tensor QueuedTexts(int[] slots)
    {
        int len = Inputs!.TextLength;
        var ids = new long[slots.Length * len];
        var mask = new long[slots.Length * len];
        for (int i = 0; i < slots.Length; i++)
        {
            Inputs.IdsOf(slots[i]).CopyTo(ids.AsSpan(i * len, len));
            Inputs.MaskOf(slots[i]).CopyTo(mask.AsSpan(i * len, len));
        }
        return Model.LowerText(ModelInputs.Text(ids, mask, slots.Length, len));
    }

    /// <summary>The micro-batch's inputs and, computed on first use, its lower-tower states.</summary>
    sealed class Lower(FiberCoarseModel model, Tensor pixels, TextBatch text)
    {
        Tensor? _image, _text;
        TextMasks? _masks;
        public TextMasks Masks => _masks ??= model.Text.Masks(text);
        public Tensor Image => _image ??= model.LowerImage(pixels);
        public Tensor Text => _text ??= model.LowerText(text, Masks);
    }

    /// <summary>Text row <paramref name="dst"/> ← candidate <paramref name="src"/> (&lt; B: the batch, else queue slot src − B).</summary>
    void CopyText(Batch batch, int src, int dst, long[] ids, long[] mask)
    {
        int len = batch.TextLength, b = batch.Size;
        (src < b ? batch.Ids(src) : Inputs!.IdsOf(src - b)).CopyTo(ids.AsSpan(dst * len, len));
        (src < b ? batch.Mask(src) : Inputs!.MaskOf(src - b)).CopyTo(mask.AsSpan(dst * len, len));
    }

    /// <summary>[n × (n + filled)] = a·[b ‖ queue[0..filled)]ᵀ / temp on the host (f64), from detached features.</summary>
    static double[] Similarities(Tensor a, Tensor b, Tensor queue, int filled, double temp)
    {
        int n = a.Dim(0), cols = n + filled;
        var inBatch = F.MatMul(a, b, transB: true).ToDoubleArray();
        double[] inQueue = filled == 0 ? [] : F.MatMul(a, F.Slice(queue, 0, 0, filled), transB: true).ToDoubleArray();
        var sim = new double[n * cols];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++) sim[i * cols + j] = inBatch[i * n + j] / temp;
            for (int j = 0; j < filled; j++) sim[i * cols + n + j] = inQueue[i * filled + j] / temp;
        }
        return sim;
    }

    static Tensor RandnQueue(IBackend be, int q, int d, DType dtype, ulong seed, ulong which, bool normalize)
    {
        var rng = new DataRng(DataRng.Hash(seed, which, 0x51554555UL));
        var v = new double[q * d];
        for (int i = 0; i < v.Length; i += 2)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble(), r = Math.Sqrt(-2 * Math.Log(u1));
            v[i] = r * Math.Cos(2 * Math.PI * u2);
            if (i + 1 < v.Length) v[i + 1] = r * Math.Sin(2 * Math.PI * u2);
        }
        if (normalize)
            for (int row = 0; row < q; row++)
            {
                var x = v.AsSpan(row * d, d);
                double n = 0;
                foreach (var e in x) n += e * e;
                n = Math.Sqrt(n);
                for (int k = 0; k < d; k++) x[k] /= n;
            }
        using (TensorScope.Suspend()) return be.FromDoubles(v, [q, d], dtype);
    }

    public void Dispose() => Queues?.Dispose();
}
