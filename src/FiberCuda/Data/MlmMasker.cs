namespace FiberCuda.Data;

/// <summary>
/// Masked-language-model corruption as HF <c>DataCollatorForLanguageModeling</c> (mlm_probability 0.15, spec §4.2):
/// each non-special token is selected with probability p; of the selected, 80% become &lt;mask&gt;, 10% a random id
/// drawn uniformly from the whole vocabulary (HF draws from <c>len(tokenizer)</c> too), 10% stay. Labels are the
/// original ids at selected positions and −100 elsewhere. Randomness is a pure function of (seed, stream, position),
/// so a given sample is masked the same way whichever worker builds it.
/// </summary>
public sealed class MlmMasker
{
    public const long IgnoreIndex = -100;

    public MlmMasker(CaptionTokenizer tokenizer, double probability = 0.15)
        : this(tokenizer.VocabSize, tokenizer.MaskId, tokenizer.IsSpecial, probability) { }

    public MlmMasker(int vocabSize, long maskId, Func<long, bool> isSpecial, double probability = 0.15)
    {
        if (probability is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(probability));
        VocabSize = vocabSize; MaskId = maskId; IsSpecial = isSpecial; Probability = probability;
    }

    public int VocabSize { get; }
    public long MaskId { get; }
    public Func<long, bool> IsSpecial { get; }
    public double Probability { get; }

    /// <summary>
    /// Writes the corrupted row to <paramref name="maskedIds"/> and the labels to <paramref name="labels"/>.
    /// <paramref name="stream"/> identifies the row (e.g. a hash of epoch and sample index).
    /// </summary>
    public void Mask(ReadOnlySpan<long> ids, Span<long> maskedIds, Span<long> labels, ulong seed, ulong stream)
    {
        if (maskedIds.Length != ids.Length || labels.Length != ids.Length) throw new ArgumentException("spans must have the same length");
        var rng = new DataRng(DataRng.Hash(seed, stream, 0x4D4C4DUL));
        for (int i = 0; i < ids.Length; i++)
        {
            long id = ids[i];
            // Draw for every position so that one token's outcome does not shift the others'.
            double select = rng.NextDouble(), kind = rng.NextDouble();
            int random = rng.NextInt(VocabSize);
            if (IsSpecial(id) || select >= Probability)
            {
                maskedIds[i] = id;
                labels[i] = IgnoreIndex;
                continue;
            }
            labels[i] = id;
            maskedIds[i] = kind < 0.8 ? MaskId : kind < 0.9 ? random : id;
        }
    }
}
