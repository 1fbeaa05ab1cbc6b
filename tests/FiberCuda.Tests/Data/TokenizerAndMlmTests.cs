using FiberCuda.Data;

namespace FiberCuda.Tests.Data;

[TestClass]
public sealed class CaptionTokenizerTests
{
    [TestMethod]
    public void RobertaBpeAddsSpecialsTruncatesAndPads()
    {
        using var dir = new TempDir();
        var (v, m) = DataTestUtil.TinyRoberta(dir);
        var tok = CaptionTokenizer.FromRobertaFiles(v, m);
        Assert.AreEqual(0, tok.BosId); Assert.AreEqual(1, tok.PadId); Assert.AreEqual(2, tok.EosId); Assert.AreEqual(14, tok.MaskId);
        CollectionAssert.AreEqual(new[] { 10, 13, 8, 10 }, tok.EncodeContent("cat sat cat"));
        CollectionAssert.AreEqual(new[] { 10, 7 }, tok.EncodeContent("cats"));
        CollectionAssert.AreEqual(new[] { 10, 17 }, tok.EncodeContent("caté"));
        Assert.AreEqual("caté", tok.Decode(new long[] { 10, 17 }));

        var ids = new long[8]; var mask = new long[8];
        Assert.AreEqual(6, tok.Encode("cat sat cat", ids, mask));
        CollectionAssert.AreEqual(new long[] { 0, 10, 13, 8, 10, 2, 1, 1 }, ids);
        CollectionAssert.AreEqual(new long[] { 1, 1, 1, 1, 1, 1, 0, 0 }, mask);

        // Truncation keeps <s> and </s> and drops content from the end.
        ids = new long[4]; mask = new long[4];
        Assert.AreEqual(4, tok.Encode("cat sat cat", ids, mask));
        CollectionAssert.AreEqual(new long[] { 0, 10, 13, 2 }, ids);
        CollectionAssert.AreEqual(new long[] { 1, 1, 1, 1 }, mask);

        Assert.AreEqual("cat sat cat", tok.Decode(new long[] { 0, 10, 13, 8, 10, 2, 1 }));
    }

    [TestMethod]
    public void DirectoryWithoutVocabularyFallsBackToGpt2()
    {
        using var dir = new TempDir();
        var tok = CaptionTokenizer.FromDirectoryOrGpt2(dir.Path);
        Assert.AreEqual("gpt2-fallback", tok.Name);
        // GPT-2's published ids: "Hello" = 15496, " world" = 995; the fallback shifts them by 4.
        CollectionAssert.AreEqual(new[] { 15496 + 4, 995 + 4 }, tok.EncodeContent("Hello world"));
        var ids = new long[40]; var mask = new long[40];
        int n = tok.Encode("a small red circle left of a blue square", ids, mask);
        Assert.AreEqual(0, ids[0]);
        Assert.AreEqual(2, ids[n - 1]);
        Assert.IsTrue(ids.Skip(n).All(i => i == 1));
        Assert.AreEqual(n, (int)mask.Sum());
        Assert.IsTrue(ids.Skip(1).Take(n - 2).All(i => i >= 4 && i < tok.VocabSize && i != tok.MaskId));
        Assert.AreEqual("a small red circle left of a blue square", tok.Decode(ids));
        Assert.AreEqual(50264, tok.MaskId);
        Assert.AreEqual(50265, tok.VocabSize);

        // With vocab.json + merges.txt present the RoBERTa files win.
        DataTestUtil.TinyRoberta(dir);
        Assert.AreEqual("roberta-bpe", CaptionTokenizer.FromDirectoryOrGpt2(dir.Path).Name);
    }
}

[TestClass]
public sealed class MlmMaskerTests
{
    [TestMethod]
    public void MaskingStatisticsAndSpecials()
    {
        const int vocab = 1000, mask = 999, rows = 2500, len = 40;
        bool IsSpecial(long id) => id is 0 or 1 or 2 or 3 or mask;
        var masker = new MlmMasker(vocab, mask, IsSpecial);
        var rnd = new Random(7);
        long candidates = 0, selected = 0, toMask = 0, randomised = 0, kept = 0;
        var ids = new long[len]; var outIds = new long[len]; var labels = new long[len];
        for (int r = 0; r < rows; r++)
        {
            // <s> content </s> padding, like a tokenised row.
            int n = rnd.Next(3, len + 1);
            ids[0] = 0;
            for (int i = 1; i < n - 1; i++) ids[i] = rnd.Next(4, mask);
            ids[n - 1] = 2;
            for (int i = n; i < len; i++) ids[i] = 1;
            masker.Mask(ids, outIds, labels, seed: 11, stream: (ulong)r);
            for (int i = 0; i < len; i++)
            {
                if (IsSpecial(ids[i]))
                {
                    Assert.AreEqual(ids[i], outIds[i], "special token changed");
                    Assert.AreEqual(-100, labels[i], "special token labelled");
                    continue;
                }
                candidates++;
                if (labels[i] == -100) { Assert.AreEqual(ids[i], outIds[i]); continue; }
                Assert.AreEqual(ids[i], labels[i]);
                selected++;
                if (outIds[i] == mask) toMask++;
                else if (outIds[i] == ids[i]) kept++;
                else randomised++;
            }
        }
        double p = (double)selected / candidates;
        Assert.IsTrue(Math.Abs(p - 0.15) < 0.006, $"selected fraction {p}");
        // A random draw equals the original (or <mask>) with probability ~2/1000: negligible at these tolerances.
        double fm = (double)toMask / selected, fr = (double)randomised / selected, fk = (double)kept / selected;
        Assert.IsTrue(Math.Abs(fm - 0.8) < 0.015, $"mask fraction {fm}");
        Assert.IsTrue(Math.Abs(fr - 0.1) < 0.012, $"random fraction {fr}");
        Assert.IsTrue(Math.Abs(fk - 0.1) < 0.012, $"kept fraction {fk}");
    }

    [TestMethod]
    public void MaskingIsAFunctionOfSeedAndStream()
    {
        var masker = new MlmMasker(500, 499, id => id < 4 || id == 499);
        var ids = Enumerable.Range(0, 200).Select(i => (long)(4 + i)).ToArray();
        long[] Run(ulong seed, ulong stream)
        {
            var o = new long[ids.Length]; var l = new long[ids.Length];
            masker.Mask(ids, o, l, seed, stream);
            return o.Concat(l).ToArray();
        }
        CollectionAssert.AreEqual(Run(3, 9), Run(3, 9));
        CollectionAssert.AreNotEqual(Run(3, 9), Run(3, 10));
        CollectionAssert.AreNotEqual(Run(3, 9), Run(4, 9));
    }
}
