using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Optim;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;

namespace FiberCuda.Tests.Training;

[TestClass]
public sealed class CoarseHeadsTests
{
    static void Set(Tensor p, double[] v)
    {
        using var t = p.Backend.FromDoubles(v, p.Shape, p.DType);
        p.Backend.Cast(t, p);
    }

    static void Randomise(Module m, int seed, double lo = -0.5, double hi = 0.5)
    {
        int i = 0;
        foreach (var (_, p) in m.NamedParameters()) Set(p, Check.Rand(seed * 1000 + i++, (int)p.Numel, lo, hi));
    }

    /// <summary>
    /// The engine's modules must produce exactly the catalog's trained parameters, names, shapes and order: the catalog
    /// drives conversion, init and checkpoints. The only stored entries without an engine module are the VQA/NLVR2
    /// classifiers of configs that declare those heads.
    /// </summary>
    [TestMethod]
    [DataRow("tiny")]
    [DataRow("demo")]
    public void BackbonePlusHeadsAreTheCatalogsStoredParameters(string which)
    {
        var c = which == "tiny" ? FiberConfig.Tiny() : FiberConfig.Demo();
        var ctx = NnContext.Cpu();
        var model = new FiberCoarseModel(ctx, c);
        var heads = new CoarseHeads(ctx, c);
        var mods = new List<(string, Tensor)>(model.NamedParameters().Concat(heads.NamedParameters()));
        if (c.HasHead("caption")) mods.AddRange(new CaptionAdapters(ctx, c).NamedParameters());
        static bool NoModule(string n) => n.StartsWith("vqa_classifier.") || n.StartsWith("nlvr2_classifier.");

        var stored = FiberParameters.Enumerate(c).Where(p => p.Stored).ToList();
        if (which == "demo") Assert.IsFalse(stored.Any(p => NoModule(p.Name)), "demo declares only the stage-1 heads");
        var expected = stored.Where(p => !NoModule(p.Name)).ToList();
        Assert.AreEqual(expected.Count, mods.Count, "parameter count");
        CollectionAssert.AreEquivalent(expected.Select(p => p.Name).ToList(), mods.Select(m => m.Item1).ToList());
        var byName = expected.ToDictionary(p => p.Name);
        foreach (var (n, t) in mods)
            CollectionAssert.AreEqual(byName[n].Shape, t.Shape, $"{n}: catalog [{string.Join(",", byName[n].Shape)}] vs module [{string.Join(",", t.Shape)}]");

        // Order: each root module follows the catalog's order for its own keys (the official root puts `temp` first,
        // the engine keeps it with the heads, so the comparison is per module).
        CollectionAssert.AreEqual(expected.Where(p => FiberCoarseModel.IsBackboneKey(p.Name)).Select(p => p.Name).ToList(),
            model.NamedParameters().Select(p => p.Name).ToList(), "backbone order");
        CollectionAssert.AreEqual(expected.Where(p => CoarseHeads.IsHeadKey(p.Name)).Select(p => p.Name).ToList(),
            heads.NamedParameters().Select(p => p.Name).ToList(), "head order");
        Assert.AreEqual(0, heads.Temp!.Rank, "temp is 0-dim like the official nn.Parameter(torch.ones([]) * 0.07)");
    }

    [TestMethod]
    public void HeadsFollowTheConfigsHeadList()
    {
        var c = FiberConfig.Demo() with { Heads = ["mlm"] };
        var h = new CoarseHeads(NnContext.Cpu(), c);
        Assert.IsNull(h.Temp); Assert.IsNull(h.Itm); Assert.IsNull(h.RankOutput); Assert.IsNotNull(h.Mlm);
        CollectionAssert.AreEqual(FiberParameters.Enumerate(c).Where(p => p.Stored && CoarseHeads.IsHeadKey(p.Name)).Select(p => p.Name).ToList(),
            h.NamedParameters().Select(p => p.Name).ToList());
        h.TieRankOutput(); // no ITM head: nothing to tie, no crash
    }

    [TestMethod]
    public void FreshInitAndRankOutputTie()
    {
        var c = FiberConfig.Tiny();
        var heads = new CoarseHeads(NnContext.Cpu(), c);
        Randomise(heads, 3, 5, 6); // far from every init value, so a skipped parameter shows
        FiberInit.Apply(heads, c, seed: 4);
        Assert.AreEqual(0.07f, heads.Temp!.ToFloatArray()[0]);
        Assert.IsTrue(heads.Mlm!.Transform.Norm.Weight.ToFloatArray().All(v => v == 1f), "LayerNorm weight 1");
        Assert.IsTrue(heads.Mlm.Transform.Norm.Bias!.ToFloatArray().All(v => v == 0f), "LayerNorm bias 0");
        Assert.IsTrue(heads.Mlm.Bias.ToFloatArray().All(v => v == 0f), "mlm_score.bias 0");
        Assert.IsTrue(heads.Itm!.Fc.Bias!.ToFloatArray().All(v => v == 0f), "itm bias 0");
        var w = heads.Mlm.Decoder.Weight.ToDoubleArray().Concat(heads.Itm.Fc.Weight.ToDoubleArray()).Concat(heads.Mlm.Transform.Dense.Weight.ToDoubleArray()).ToArray();
        double sd = Math.Sqrt(w.Select(x => x * x).Average()), mean = w.Average();
        Assert.AreEqual(0.02, sd, 0.003, "normal 0.02");
        Assert.AreEqual(0, mean, 0.003);

        // The tie must copy the current row 1 (random biases make the bias part observable).
        Set(heads.Itm.Fc.Bias!, [0.3, -0.7]);
        var before = heads.RankOutput!.Weight.ToFloatArray();
        var fcW = heads.Itm.Fc.Weight.ToFloatArray();
        int twoH = 2 * c.CrossHidden;
        CollectionAssert.AreNotEqual(fcW[twoH..], before, "rank_output starts different from row 1");
        heads.TieRankOutput();
        CollectionAssert.AreEqual(fcW[twoH..], heads.RankOutput.Weight.ToFloatArray(), "rank_output.weight = itm_score.fc.weight[1]");
        CollectionAssert.AreEqual(new[] { -0.7f }, heads.RankOutput.Bias!.ToFloatArray(), "rank_output.bias = itm_score.fc.bias[1]");
        CollectionAssert.AreEqual(fcW, heads.Itm.Fc.Weight.ToFloatArray(), "itm_score untouched");
    }

    /// <summary>
    /// fiber-coarse.md §4.3 over backbone + heads: mlm_score/itm_score in the head group (×5), `temp` and `rank_output`
    /// at the base lr; `temp` decayed (no pattern matches it), biases and the MLM LayerNorm not.
    /// </summary>
    [TestMethod]
    public void OptimizerGroupsOfBackbonePlusHeads()
    {
        var c = FiberConfig.Demo();
        var ctx = NnContext.Cpu();
        var named = new FiberCoarseModel(ctx, c).NamedParameters().Concat(new CoarseHeads(ctx, c).NamedParameters()).ToList();
        var groups = FiberParamGroups.Build(named, 1e-4f, weightDecay: 0.01f, crossModalMult: 5f, headMult: 7f);
        var all = groups.SelectMany(g => g.Params).ToList();
        Assert.AreEqual(named.Count, all.Count);
        Assert.AreEqual(named.Count, all.Distinct(ReferenceEqualityComparer.Instance).Count(), "each parameter once");
        ParamGroup Of(string n)
        {
            var t = named.Single(p => p.Name == n).Tensor;
            return groups.Single(g => g.Params.Any(x => ReferenceEquals(x, t)));
        }
        void Expect(string n, float lr, float wd)
        {
            var g = Of(n);
            Assert.AreEqual(lr, g.Lr, 1e-9f, $"{n} lr ({g.Name})");
            Assert.AreEqual(wd, g.WeightDecay, $"{n} weight decay ({g.Name})");
        }
        Expect("temp", 1e-4f, 0.01f);
        Expect("rank_output.weight", 1e-4f, 0.01f);
        Expect("rank_output.bias", 1e-4f, 0f);
        Expect("mlm_score.bias", 7e-4f, 0f);
        Expect("mlm_score.decoder.weight", 7e-4f, 0.01f);
        Expect("mlm_score.transform.dense.weight", 7e-4f, 0.01f);
        Expect("mlm_score.transform.LayerNorm.weight", 7e-4f, 0f);
        Expect("itm_score.fc.weight", 7e-4f, 0.01f);
        Expect("itm_score.fc.bias", 7e-4f, 0f);
        Expect("cross_modal_image_transform_itc.weight", 5e-4f, 0.01f);
    }

    // ------------------------------------------------------------------ MLM head against a composed reference

    const int H = 8, V = 11, B = 2, L = 5;

    static (MlmHead Head, Tensor X) MlmCase(int seed)
    {
        var ctx = new NnContext(Backend.Cpu, DType.F64);
        var head = new MlmHead(ctx, H, V);
        Randomise(head, seed);
        var x = Backend.Cpu.FromDoubles(Check.Rand(seed + 77, B * L * H, -2, 2), [B, L, H], DType.F64);
        x.RequiresGrad = true;
        return (head, x);
    }

    /// <summary>dense → GELU → LayerNorm(1e-12) → decoder + bias → CE(ignore −100) over every position, unfused.</summary>
    static Tensor Reference(MlmHead h, Tensor x, int[] labels)
    {
        var t = F.Gelu(F.Linear(x, h.Transform.Dense.Weight, h.Transform.Dense.Bias));
        t = F.LayerNorm(t, h.Transform.Norm.Weight, h.Transform.Norm.Bias!, 1e-12f);
        var logits = F.Linear(F.Reshape(t, B * L, H), h.Decoder.Weight, h.Bias);
        return F.CrossEntropy(logits, Backend.Cpu.FromInts(labels, [B * L]));
    }

    static Dictionary<string, double[]> Grads(MlmHead h, Tensor x)
    {
        var d = h.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor.Grad?.ToDoubleArray() ?? new double[p.Tensor.Numel]);
        d["input"] = x.Grad?.ToDoubleArray() ?? new double[x.Numel];
        return d;
    }

    static void ZeroGrads(MlmHead h, Tensor x) { h.ZeroGrad(); x.Grad?.Dispose(); x.Grad = null; }

    [TestMethod]
    [DataRow(new[] { -100, 3, -100, -100, 10, 0, -100, -100, 7, -100 })]
    [DataRow(new[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 })]
    [DataRow(new[] { -100, -100, -100, -100, -100, -100, -100, -100, -100, 4 })]
    public void MlmLossAndGradientsMatchComposedReference(int[] labels)
    {
        var (head, x) = MlmCase(labels.Sum() & 0xff);
        // LayerNorm gamma/beta near 1/0 would hide a swapped pair; the random values are far from those.
        var loss = head.Loss(x, labels);
        double got = loss.ToDoubleArray()[0];
        loss.Backward();
        var g = Grads(head, x);
        ZeroGrads(head, x);

        var rl = Reference(head, x, labels);
        double want = rl.ToDoubleArray()[0];
        rl.Backward();
        var r = Grads(head, x);
        Assert.AreEqual(want, got, 1e-10 * Math.Max(1, Math.Abs(want)), "loss");
        Assert.IsTrue(want > 0.5, $"a real loss ({want})");
        foreach (var (n, rv) in r)
        {
            var gv = g[n];
            double scale = Math.Max(1e-3, rv.Max(Math.Abs));
            Assert.IsTrue(rv.Any(v => v != 0), $"reference gradient of {n} is not all zero");
            for (int i = 0; i < rv.Length; i++)
                Assert.AreEqual(rv[i], gv[i], 1e-9 * scale, $"{n}[{i}]");
        }
        // Unmasked positions get no gradient.
        var gx = g["input"];
        for (int row = 0; row < B * L; row++)
            if (labels[row] == -100)
                for (int k = 0; k < H; k++) Assert.AreEqual(0.0, gx[row * H + k], $"input row {row}");

        // Full-vocabulary logits agree with the same composition.
        using (Grad.NoGrad())
        {
            var t = F.LayerNorm(F.Gelu(F.Linear(x, head.Transform.Dense.Weight, head.Transform.Dense.Bias)), head.Transform.Norm.Weight, head.Transform.Norm.Bias!, 1e-12f);
            var want2 = F.Linear(t, head.Decoder.Weight, head.Bias).ToDoubleArray();
            var got2 = head.Logits(x).ToDoubleArray();
            for (int i = 0; i < want2.Length; i++) Assert.AreEqual(want2[i], got2[i], 1e-12, $"logits[{i}]");
        }
    }

    [TestMethod]
    public void MlmLossGradCheck()
    {
        var (head, x) = MlmCase(9);
        int[] labels = [-100, 3, -100, 1, 10, 0, -100, -100, 7, -100];
        var ps = new[] { x, head.Transform.Norm.Weight, head.Transform.Dense.Bias! };
        var rep = GradCheck.Check(t => head.Loss(t[0], labels), ps, names: ["input", "ln.weight", "dense.bias"]);
        Assert.IsTrue(rep.Ok, rep.Text);
    }

    [TestMethod]
    public void NothingMaskedIsZeroLossAndZeroGradient()
    {
        var (head, x) = MlmCase(5);
        var labels = Enumerable.Repeat(-100, B * L).ToArray();
        var loss = head.Loss(x, labels);
        Assert.AreEqual(1L, (long)loss.Numel);
        Assert.AreEqual(0.0, loss.ToDoubleArray()[0]);
        loss.Backward();
        Assert.IsTrue(x.Grad is null || x.Grad.ToDoubleArray().All(v => v == 0), "no gradient into the features");
        foreach (var (n, p) in head.NamedParameters())
            Assert.IsTrue(p.Grad is null || p.Grad.ToDoubleArray().All(v => v == 0), n);
    }
}
