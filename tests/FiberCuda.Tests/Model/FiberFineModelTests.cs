using System.Text;
using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;

namespace FiberCuda.Tests.Model;

/// <summary>
/// The fine-grained backbone (fusion v2 / v3) against PyTorch (tools/fixtures/make_fine_fixtures.py): a 64×94 image
/// (padded to the patch, then every stage's map padded to the window of 3: partial windows everywhere, the last stage's
/// 2×3 map inside one padded window), C2..C5 after the output norms, the text hidden states and `embedded`, and every
/// parameter gradient of a scalar loss. Plus the structural properties of fiber-fine.md §3.
/// </summary>
[TestClass]
public sealed class FiberFineModelTests
{
    public TestContext TestContext { get; set; } = null!;

    static FiberConfig Config(int version) => FiberConfig.Tiny(FiberStage.Fine, queryNorm: version == 3, window: 3);

    static Tensor Image(ModelFixture fx, IBackend be, DType dt) => fx.Tensor(fx.T.ContainsKey("input.image") ? "input.image" : "input.pixels", be, dt);

    static FiberFineModel Model(int version, DType dt, IBackend? backend = null)
    {
        var be = backend ?? Backend.Cpu;
        var fx = ModelFixture.Fine(version);
        var m = new FiberFineModel(new NnContext(be, dt), Config(version));
        var sd = fx.Names("param.").ToDictionary(n => n, n => fx.Tensor("param." + n, be, dt));
        Assert.IsTrue(m.LoadBackbone(sd).Ok);
        m.Eval();
        return m;
    }

    static Dictionary<string, Tensor> Outputs(FineBackboneOutput o)
    {
        var d = new Dictionary<string, Tensor>();
        for (int s = 0; s < o.Features.Length; s++) d[$"c{s + 2}"] = o.Features[s].ToNchw();
        d["text"] = o.TextHidden;
        d["embedded"] = o.TextEmbedded;
        return d;
    }

    void Check(int version, DType dt, IBackend? backend, double outTol, double gradTol)
    {
        var fx = ModelFixture.Fine(version);
        var m = Model(version, dt, backend);
        var be = backend ?? Backend.Cpu;
        var outs = Outputs(m.Forward(Image(fx, be, dt), fx.Text()));
        var log = new StringBuilder();
        foreach (var (k, v) in outs) fx.AssertOutput($"out.fused.{k}", v, outTol, log);
        fx.Loss("fused", outs).Backward();
        fx.AssertGrads("fused", m, gradTol, log);
        TestContext.WriteLine(log.ToString());
    }

    [TestMethod]
    [DataRow(2)]
    [DataRow(3)]
    public void ParameterNamesAreTheOfficialKeysAndTheCatalogs(int version)
    {
        var c = Config(version);
        var m = new FiberFineModel(NnContext.Cpu(), c);
        var fx = ModelFixture.Fine(version);
        var mine = m.NamedParameters().Select(p => p.Name).ToList();
        CollectionAssert.AreEquivalent(fx.Names("param.").ToList(), mine, "parameters vs torch named_parameters");
        foreach (var (n, p) in m.NamedParameters()) CollectionAssert.AreEqual(fx.T["param." + n].IntShape, p.Shape, n);
        Assert.AreEqual(version == 3, mine.Any(n => n.Contains("norm_i2t_i")), "norm_i2t_i exists in v3 only");

        // The catalog's backbone subset (everything but the FPN, the head and the anchors) is this module, for the tiny
        // and the FIBER-B fine configs (names only for FIBER-B: no need to allocate 220M parameters).
        foreach (var cfg in new[] { c, FiberConfig.Tiny(FiberStage.Fine, queryNorm: version == 3) })
        {
            var mm = new FiberFineModel(NnContext.Cpu(), cfg);
            var cat = FiberParameters.Enumerate(cfg).Where(p => FiberFineModel.IsBackboneKey(p.Name)).ToList();
            CollectionAssert.AreEquivalent(cat.Where(p => p.Stored).Select(p => p.Name).ToList(), mm.NamedParameters().Select(p => p.Name).ToList(), cfg.Name);
            CollectionAssert.AreEquivalent(cat.Where(p => !p.Stored).Select(p => p.Name).ToList(), mm.RecomputedBufferNames().ToList(), cfg.Name + " buffers");
        }
    }

    [TestMethod]
    [DataRow(2, DType.F32)]
    [DataRow(2, DType.F64)]
    [DataRow(3, DType.F32)]
    [DataRow(3, DType.F64)]
    public void FusedForwardAndGradientsMatchTorch(int version, DType dt) =>
        Check(version, dt, null, dt == DType.F64 ? 1e-6 : 1e-4, dt == DType.F64 ? 1e-5 : 1e-3);

    /// <summary>On the emulated GPU the tiny head dims take the composed window path (roll, partition, mask tensor) with
    /// the same padding, and the text side the CUDA kernels.</summary>
    [TestMethod]
    [TestCategory("Emulated")]
    [DataRow(2)]
    [DataRow(3)]
    public void FusedForwardAndGradientsMatchTorchOnTheEmulatedGpu(int version)
    {
        Check(version, DType.F32, TestDevices.Emulated, 1e-4, 2e-3);
    }

    [TestMethod]
    [TestCategory("Gpu")]
    [DataRow(2)]
    [DataRow(3)]
    public void FusedForwardAndGradientsMatchTorchOnTheGpu(int version) => Check(version, DType.F32, TestDevices.Gpu, 1e-4, 2e-3);

    [TestMethod]
    public void WithEveryAlphaZeroTheFusedPathIsTheTwoTowers()
    {
        var fx = ModelFixture.Fine(3);
        var m = Model(3, DType.F64);
        var img = Image(fx, Backend.Cpu, DType.F64);
        var text = fx.Text();
        using var _ = Grad.NoGrad();
        var towers = m.Swin.ForwardFeatures(img);
        var on = m.Forward(img, text);
        Assert.IsFalse(towers[3].Tokens.ToDoubleArray().SequenceEqual(on.Features[3].Tokens.ToDoubleArray()), "fusion has no effect on the image side");

        foreach (var (n, p) in m.NamedParameters())
            if (n.EndsWith("alpha_i2t") || n.EndsWith("alpha_t2i")) p.Backend.Fill(p, 0.0);
        var off = m.Forward(img, text);
        for (int s = 0; s < 4; s++)
            CollectionAssert.AreEqual(towers[s].Tokens.ToDoubleArray(), off.Features[s].Tokens.ToDoubleArray(), $"C{s + 2}");
        // The fine text tower keeps every output LayerNorm (the coarse one skips the last).
        CollectionAssert.AreEqual(m.Text.Forward(text).ToDoubleArray(), off.TextHidden.ToDoubleArray(), "text");
    }

    [TestMethod]
    public void BatchElementsAreIndependentAndTextPaddingIsInvisible()
    {
        var fx = ModelFixture.Fine(2);
        var m = Model(2, DType.F64);
        var img = Image(fx, Backend.Cpu, DType.F64);
        var text = fx.Text();
        using var _ = Grad.NoGrad();
        var both = m.Forward(img, text);

        // Item 1 alone, with its text cut to its real length: the same features and the same real-token states.
        int len = text.Mask.Skip(text.Length).Take(text.Length).Sum();
        Assert.IsTrue(len < text.Length, "the fixture's second text is padded");
        var ids1 = text.Ids.Skip(text.Length).Take(len).ToArray();
        var one = m.Forward(F.Slice(img, 0, 1, 1), new TextBatch(ids1, Enumerable.Repeat(1, len).ToArray(), 1, len));
        for (int s = 0; s < 4; s++)
        {
            var a = both.Features[s].Tokens.ToDoubleArray();
            var b = one.Features[s].Tokens.ToDoubleArray();
            AssertClose(a.Skip(a.Length / 2).ToArray(), b, 1e-10, $"C{s + 2}");
        }
        int d = both.TextHidden.Dim(2);
        var t = both.TextHidden.ToDoubleArray().Skip(text.Length * d).Take(len * d).ToArray();
        AssertClose(t, one.TextHidden.ToDoubleArray(), 1e-10, "text");
        // `embedded` zeroes exactly the pad rows.
        var e = both.TextEmbedded.ToDoubleArray();
        for (int i = 0; i < text.Batch * text.Length; i++)
            for (int k = 0; k < d; k++)
                if (text.Mask[i] == 0) Assert.AreEqual(0.0, e[i * d + k]);
                else Assert.AreEqual(both.TextHidden.ToDoubleArray()[i * d + k], e[i * d + k]);
    }

    /// <summary>A map that is not a multiple of the window behaves as the official zero padding after norm1 (the padded
    /// tokens' q, k, v are the qkv bias, attended to, not masked): the block (padding inside the attention op) against
    /// the explicit composition (pad, Linear, attention on the whole 6×6 map, crop), values and every gradient.</summary>
    [TestMethod]
    public void PaddedBlockEqualsTheBlockOnAnExplicitlyPaddedMap()
    {
        var c = Config(2);
        var ctx = new NnContext(Backend.Cpu, DType.F64);
        var blk = new SwinBlock(ctx, c, 1, 1, 0f);
        var rng = new Random(5);
        var sd = blk.NamedParameters().ToDictionary(p => p.Name, p => ctx.Backend.FromDoubles(
            Enumerable.Range(0, (int)p.Tensor.Numel).Select(_ => (p.Name.Contains("norm") && p.Name.EndsWith("weight") ? 1 : 0) + 0.3 * (rng.NextDouble() - 0.5)).ToArray(), p.Tensor.Shape, DType.F64));
        blk.LoadStateDict(sd);
        blk.Eval();
        int h = 4, w = 5; // padded to 6×6 by the window 3, shift 1
        var x = ctx.Backend.FromDoubles(Enumerable.Range(0, 2 * h * w * blk.Dim).Select(_ => rng.NextDouble() - 0.5).ToArray(), [2, h * w, blk.Dim], DType.F64);
        x.RequiresGrad = true;
        var gw = ctx.Backend.FromDoubles(Enumerable.Range(0, 2 * h * w * blk.Dim).Select(_ => rng.NextDouble() - 0.5).ToArray(), [2, h * w, blk.Dim], DType.F64);
        (double[] Y, double[] Dx, Dictionary<string, double[]> G) Grads(Func<Tensor> f)
        {
            blk.ZeroGrad(); x.Grad?.Dispose(); x.Grad = null;
            var y = f();
            F.Sum(F.Mul(y, gw)).Backward();
            return (y.ToDoubleArray(), x.Grad!.ToDoubleArray(), blk.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor.Grad!.ToDoubleArray()));
        }
        var got = Grads(() => blk.Forward(x, h, w));
        // The same block written out: norm1, zero padding, qkv Linear, attention on the whole 6×6 map, crop, residual, MLP.
        var want = Grads(() =>
        {
            var xn = Fx.PadGrid(blk.Norm1.Forward(x), h, w, 6, 6);
            var a = blk.Attn.Proj.Forward(Fx.CropGrid(WindowAttentionOp.Apply(blk.Attn.Qkv.Forward(xn), blk.Attn.Table, 6, 6, blk.Heads, 3, 1), 6, 6, h, w));
            var s = F.Add(x, a);
            return F.Add(s, blk.Mlp.Forward(blk.Norm2.Forward(s)));
        });
        AssertClose(want.Y, got.Y, 1e-12, "block");
        AssertClose(want.Dx, got.Dx, 1e-10, "dx");
        foreach (var (n, g) in want.G) AssertClose(g, got.G[n], 1e-10, "d" + n);

        // The coarse Swin never pads: its window divides the grid by construction, and a grid it does not divide is an error.
        var coarse = new SwinBlock(ctx, FiberConfig.Tiny(), 1, 1, 0f);
        Assert.AreEqual(blk.Dim, coarse.Dim);
        Assert.ThrowsExactly<ArgumentException>(() => coarse.Forward(x, h, w));
    }

    /// <summary>
    /// A FIBER-B-like block (head dim 32, so the CUDA path takes the fused window kernel) on a 10×9 map with window 7 and
    /// shift 3: padded to 14×14, partial windows in both directions, the shift mask on the padded map. The emulated GPU
    /// (pad, kernel, crop) against the CPU backend: output, input gradient and every parameter gradient.
    /// </summary>
    [TestMethod]
    [TestCategory("Emulated")]
    [DataRow(DType.F32)]
    [DataRow(DType.BF16)] // the tensor-core forward
    public void FusedKernelBlockWithPartialWindowsMatchesTheCpuOnTheEmulatedGpu(DType dt) => PartialWindowBlockMatchesCpu(TestDevices.Emulated, dt);

    [TestMethod]
    [TestCategory("Gpu")]
    [DataRow(DType.F32)]
    [DataRow(DType.BF16)]
    public void FusedKernelBlockWithPartialWindowsMatchesTheCpuOnTheGpu(DType dt) => PartialWindowBlockMatchesCpu(TestDevices.Gpu, dt);

    static void PartialWindowBlockMatchesCpu(FiberCuda.Backends.IBackend device, DType deviceDType)
    {
        var cfg = FiberConfig.Tiny(FiberStage.Fine, window: 7) with { EmbedDim = 32, NumHeads = [1, 2, 2, 4] };
        const int h = 10, w = 9, b = 2;
        (double[] Y, double[] Dx, Dictionary<string, double[]> G) Run(FiberCuda.Backends.IBackend be, DType dt)
        {
            var r = new Random(3);
            var blk = new SwinBlock(new NnContext(be, dt), cfg, 1, 1, 0f);
            Assert.IsTrue(blk.PadsToWindow && blk.Shift == 3 && blk.Dim / blk.Heads == 32);
            Assert.IsTrue(blk.FusedWindowKernel, "head dim 32 takes the fused kernel on every backend");
            blk.LoadStateDict(blk.NamedParameters().ToDictionary(p => p.Name, p => be.FromDoubles(
                Enumerable.Range(0, (int)p.Tensor.Numel).Select(_ => (p.Name.Contains("norm") && p.Name.EndsWith("weight") ? 1 : 0) + 0.4 * (r.NextDouble() - 0.5)).ToArray(), p.Tensor.Shape)));
            blk.Eval();
            var x = be.FromDoubles(Enumerable.Range(0, b * h * w * blk.Dim).Select(_ => r.NextDouble() - 0.5).ToArray(), [b, h * w, blk.Dim], dt);
            x.RequiresGrad = true;
            var y = blk.Forward(x, h, w);
            var gw = be.FromDoubles(Enumerable.Range(0, (int)y.Numel).Select(_ => r.NextDouble() - 0.5).ToArray(), y.Shape, dt);
            F.Sum(F.Mul(y, gw)).Backward();
            return (y.ToDoubleArray(), x.Grad!.ToDoubleArray(), blk.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor.Grad!.ToDoubleArray()));
        }
        var cpu = Run(Backend.Cpu, DType.F32);
        var gpu = Run(device, deviceDType);
        // bf16: activations, weights and GEMM inputs rounded to 8 bits of mantissa (u = 2^-8) along a block.
        double ty = deviceDType == DType.BF16 ? 3e-2 : 1e-5, tg = deviceDType == DType.BF16 ? 6e-2 : 1e-4;
        AssertClose(cpu.Y, gpu.Y, ty, "y");
        AssertClose(cpu.Dx, gpu.Dx, tg, "dx");
        foreach (var (n, g) in cpu.G) AssertClose(g, gpu.G[n], tg, "d" + n);
    }

    [TestMethod]
    public void OddGridsAtAMergingAreAClearError()
    {
        var m = new FiberFineModel(NnContext.Cpu(), Config(2));
        m.Eval();
        var text = new TextBatch([0, 5, 2], [1, 1, 1], 1, 3);
        using var _ = Grad.NoGrad();
        var e = Assert.ThrowsExactly<ArgumentException>(() => m.Forward(Backend.Cpu.Zeros([1, 3, 48, 64], DType.F32), text));
        StringAssert.Contains(e.Message, "multiple of 32");
    }

    static void AssertClose(double[] expected, double[] actual, double tol, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length, what + " length");
        double err = ModelFixture.Err(actual, expected, 1e-9);
        Assert.IsTrue(err <= tol, $"{what}: relative error {err:g3} > {tol:g3}");
    }
}
