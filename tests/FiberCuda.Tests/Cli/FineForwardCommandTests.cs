using System.CommandLine;
using FiberCuda.Cli.Commands;
using FiberCuda.IO;
using FiberCuda.Models;
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
