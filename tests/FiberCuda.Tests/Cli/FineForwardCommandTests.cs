using System.CommandLine;
using FiberCuda.Cli.Commands;
using FiberCuda.IO;
using FiberCuda.Backends;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tests.Model;

namespace FiberCuda.Tests.Cli;

/// <summary>
/// `fiber forward` with a fine config, end to end on the tiny fine PyTorch fixture (v3, a 64×94 image): C2..C5 in the
/// official NCHW layout, the text `hidden` and `embedded`, against what PyTorch computed.
/// </summary>
[TestClass]
[DoNotParallelize] // captures Console.Error
public sealed class FineForwardCommandTests
{
    static ModelFixture Fx => ModelFixture.Fine(3);
    static readonly FiberConfig Config = FiberConfig.Tiny(FiberStage.Fine, queryNorm: true, window: 3);

    string _dir = null!;
    string Weights => Path.Combine(_dir, "model.safetensors");
    string Input => Path.Combine(_dir, "input.safetensors");
    string Out => Path.Combine(_dir, "feats.safetensors");

    [TestInitialize]
    public void Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), "fiber-fine-fwd-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
        SafeTensorsFile.Write(Weights, Fx.Names("param.").Select(n => KeyValuePair.Create(n, Fx.T["param." + n])), EngineWeights.Metadata(Config, "test"));
        WriteInput(Fx.T["input.image"]);
    }

    [TestCleanup]
    public void Cleanup() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    void WriteInput(HostTensor pixels) => SafeTensorsFile.Write(Input, new Dictionary<string, HostTensor>
    {
        [ForwardCommand.PixelValues] = pixels, [ForwardCommand.InputIds] = Fx.T["input.ids"], [ForwardCommand.AttentionMask] = Fx.T["input.mask"],
    });

    (int Rc, string Err) Forward(params string[] extra)
    {
        var root = new RootCommand();
        root.Subcommands.Add(ForwardCommand.Create());
        var err = new StringWriter();
        var saved = Console.Error;
        Console.SetError(err);
        try { return (root.Parse(["forward", "--weights", Weights, "--input", Input, "--out", Out, .. extra]).Invoke(), err.ToString()); }
        finally { Console.SetError(saved); }
    }

    void AssertMatchesTorch(double tol)
    {
        using var f = SafeTensorsFile.Open(Out);
        CollectionAssert.AreEquivalent(ForwardCommand.FineOutputNames, f.Tensors.Select(t => t.Name).ToList());
        foreach (var name in ForwardCommand.FineOutputNames)
        {
            var r = Fx.T["out.fused." + (name == "hidden" ? "text" : name)];
            var got = f.Read(name);
            CollectionAssert.AreEqual(r.Shape, got.Shape, name + " shape");
            double err = ModelFixture.Err(got.ToDoubles(), r.ToDoubles(), 1e-6);
            Assert.IsTrue(err <= tol, $"{name}: relative error {err:g3} against torch > {tol:g3}");
        }
    }

    [TestMethod]
    [DataRow("f32", 1e-4)]
    [DataRow("bf16", 0.1)]
    public void OutputsMatchTorch(string dtype, double tol)
    {
        var (rc, err) = Forward("--device", "cpu", "--dtype", dtype, "--batch-size", "1");
        Assert.AreEqual(ExitCodes.Ok, rc, err);
        AssertMatchesTorch(tol);
    }

    [TestMethod]
    [TestCategory("Emulated")]
    public void EmulatedGpuMatchesTorch()
    {
        var (rc, err) = Forward("--device", "emu");
        Assert.AreEqual(ExitCodes.Ok, rc, err);
        AssertMatchesTorch(1e-4);
    }

    /// <summary>
    /// The user's path: an official fine checkpoint (the maskrcnn `.pth` of tests/…/Fixtures/weights, `module.` keys,
    /// anchors and buffers) through `fiber convert`'s converter into engine weights, then `fiber forward`: the outputs
    /// equal the fine model run in-process on the converted tensors (the file and the CLI lose nothing).
    /// </summary>
    [TestMethod]
    public void AConvertedOfficialCheckpointRunsThroughTheCli()
    {
        var r = FiberConverter.Convert(new ConvertOptions { Inputs = [FiberCuda.Tests.IO.Fixture.P("tiny_fine_v2.pth")], From = "official-fine" });
        var dir = Path.Combine(_dir, "converted");
        FiberConverter.Write(r, dir);
        var img = new float[2 * 3 * 64 * 64];
        var rng = new Random(4);
        for (int i = 0; i < img.Length; i++) img[i] = (float)(2 * rng.NextDouble() - 1);
        WriteInput(HostTensor.FromFloats(img, [2, 3, 64, 64]));
        var root = new RootCommand();
        root.Subcommands.Add(ForwardCommand.Create());
        Assert.AreEqual(ExitCodes.Ok, root.Parse(["forward", "--weights", Path.Combine(dir, "model.safetensors"), "--input", Input, "--out", Out, "--device", "cpu"]).Invoke());

        var m = new FiberFineModel(NnContext.Cpu(), r.Config);
        Assert.IsTrue(m.LoadBackbone(r.Tensors.ToDictionary(t => t.Key, t => t.Value.ToTensor(FiberCuda.Backends.Backend.Cpu))).Ok);
        m.Eval();
        FineBackboneOutput o;
        using (FiberCuda.Autograd.Grad.NoGrad())
            o = m.Forward(FiberCuda.Backends.Backend.Cpu.FromDoubles(Array.ConvertAll(img, v => (double)v), [2, 3, 64, 64], FiberCuda.Tensors.DType.F32), Fx.Text());
        using var f = SafeTensorsFile.Open(Out);
        for (int s = 0; s < 4; s++)
            CollectionAssert.AreEqual(o.Features[s].ToNchw().ToFloatArray(), f.Read($"c{s + 2}").ToFloats(), $"c{s + 2}");
        CollectionAssert.AreEqual(o.TextHidden.ToFloatArray(), f.Read("hidden").ToFloats(), "hidden");
    }

    /// <summary>README "Using the library": its snippet, in f32 and at the fixture's image size, on the fixture's weights; equals torch.</summary>
    [TestMethod]
    public void TheReadmeLibraryExampleRuns()
    {
        var pix = Fx.T["input.image"];
        float[] bgrNormalised = pix.ToFloats();
        long[] inputIds = Array.ConvertAll(Fx.T["input.ids"].ToDoubles(), v => (long)v);
        long[] attentionMask = Array.ConvertAll(Fx.T["input.mask"].ToDoubles(), v => (long)v);
        int batch = 2, length = 7, height = 64, width = 94;

        // ---- README snippet (keep in sync) ----
        IBackend be = FiberCuda.Runtime.CudaDevice.TryCreate(out var gpu, out _) ? new FiberCuda.Backends.Cuda.CudaBackend(gpu!, ownsDevice: true) : Backend.Cpu;
        using var weights = SafeTensorsFile.Open(Weights);
        var config = EngineWeights.ReadConfig(weights);                       // the config `fiber convert` stored
        var model = new FiberFineModel(new NnContext(be, FiberCuda.Tensors.DType.F32), config);
        model.LoadBackbone(weights);
        model.Eval();
        using (FiberCuda.Autograd.Grad.NoGrad())
        {
            var pixels = ModelInputs.Pixels(model.Ctx, bgrNormalised, [batch, 3, height, width]);
            var text = ModelInputs.Text(inputIds, attentionMask, batch, length);
            var o = model.Forward(pixels, text);
            // ---- end of snippet ----
            for (int s = 0; s < 4; s++)
                Assert.IsTrue(ModelFixture.Err(o.Features[s].ToNchw().ToDoubleArray(), Fx.T[$"out.fused.c{s + 2}"].ToDoubles(), 1e-6) < 1e-4, $"c{s + 2}");
            Assert.IsTrue(ModelFixture.Err(o.TextHidden.ToDoubleArray(), Fx.T["out.fused.text"].ToDoubles(), 1e-6) < 1e-4, "hidden");
        }
    }

    [TestMethod]
    public void ImagesThatAreNotPaddedToThe32GridAreRefused()
    {
        WriteInput(HostTensor.FromFloats(new float[2 * 3 * 48 * 64], [2, 3, 48, 64]));
        var (rc, err) = Forward("--device", "cpu");
        Assert.AreEqual(ExitCodes.Mismatch, rc, err);
        StringAssert.Contains(err, "pad the images to a multiple of 32");
        Assert.IsFalse(File.Exists(Out));
    }
}
