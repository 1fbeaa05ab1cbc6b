using System.CommandLine;
using FiberCuda.Cli.Commands;
using FiberCuda.IO;
using FiberCuda.Tests.Model;

namespace FiberCuda.Tests.Cli;

/// <summary>
/// `fiber forward` end to end on the tiny PyTorch fixture: the fixture's parameters written as an engine weight file,
/// its recorded inputs as the input file; the written outputs are compared with what PyTorch computed
/// (fused text/image/cls features, unfused ITC embeddings). Error paths check the exit code, the message and that
/// no output appears (or an existing one survives).
/// </summary>
[TestClass]
[DoNotParallelize] // captures Console.Error
public sealed class ForwardCommandTests
{
    static ModelFixture Fx => ModelFixture.Instance;

    /// <summary>Output name → the fixture tensor PyTorch recorded for it.</summary>
    static readonly Dictionary<string, string> Reference = new()
    {
        ["image_feats"] = "out.fused.image_feats",
        ["text_feats"] = "out.fused.text_feats",
        ["cls_feats"] = "out.fused.cls_feats",
        ["itc_image"] = "out.image.itc",
        ["itc_text"] = "out.text.itc",
    };

    string _dir = null!;
    string Weights => Path.Combine(_dir, "w", "model.safetensors");
    string Input => Path.Combine(_dir, "input.safetensors");
    string Out => Path.Combine(_dir, "out", "feats.safetensors");

    [TestInitialize]
    public void Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), "fiber-fwd-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path.Combine(_dir, "w"));
        WriteWeights(Weights, withConfig: true);
        WriteInput(Input, new()
        {
            [ForwardCommand.PixelValues] = Fx.T["input.image"],
            [ForwardCommand.InputIds] = Fx.T["input.ids"],
            [ForwardCommand.AttentionMask] = Fx.T["input.mask"],
        });
    }

    [TestCleanup]
    public void Cleanup() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    static void WriteWeights(string path, bool withConfig, Func<string, bool>? keep = null) =>
        SafeTensorsFile.Write(path,
            Fx.Names("param.").Where(n => keep?.Invoke(n) ?? true).Select(n => KeyValuePair.Create(n, Fx.T["param." + n])),
            withConfig ? EngineWeights.Metadata(ModelFixture.Config, "test") : null);

    static void WriteInput(string path, Dictionary<string, HostTensor> tensors) => SafeTensorsFile.Write(path, tensors);

    /// <summary>The command as the `fiber` router parses it; returns the exit code and what went to stderr.</summary>
    static (int Rc, string Err) Cli(params string[] args)
    {
        var root = new RootCommand();
        root.Subcommands.Add(ForwardCommand.Create());
        var err = new StringWriter();
        var saved = Console.Error;
        Console.SetError(err);
        try { return (root.Parse(["forward", .. args]).Invoke(), err.ToString()); }
        finally { Console.SetError(saved); }
    }

    (int Rc, string Err) Forward(params string[] extra) =>
        Cli(["--weights", Weights, "--input", Input, "--out", Out, "--device", "cpu", .. extra]);

    static Dictionary<string, HostTensor> ReadAll(string path)
    {
        using var f = SafeTensorsFile.Open(path);
        return f.Tensors.ToDictionary(t => t.Name, t => f.Read(t.Name));
    }

    void AssertMatchesTorch(double tol)
    {
        var got = ReadAll(Out);
        CollectionAssert.AreEquivalent(ForwardCommand.OutputNames, got.Keys.ToList(), "output names");
        foreach (var (name, refName) in Reference)
        {
            var r = Fx.T[refName];
            Assert.AreEqual(WeightDType.F32, got[name].DType, name + " dtype");
            CollectionAssert.AreEqual(r.Shape, got[name].Shape, name + " shape");
            double err = ModelFixture.Err(got[name].ToDoubles(), r.ToDoubles(), 1e-6);
            Assert.IsTrue(err <= tol, $"{name}: relative error {err:g3} against torch > {tol:g3}");
        }
        Assert.IsEmpty(Directory.GetFiles(Path.GetDirectoryName(Out)!).Where(f => f != Out).ToList(), "temporary files left behind");
    }

    [TestMethod]
    [DataRow("f32", 1e-4)]
    [DataRow("f64", 1e-6)]   // the fixture is fp64 rounded to fp32: a tight check of the same maths
    [DataRow("bf16", 0.1)]   // as the model's own bf16 tests
    public void OutputsMatchTorch(string dtype, double tol)
    {
        var (rc, err) = Forward("--dtype", dtype);
        Assert.AreEqual(ExitCodes.Ok, rc, err);
        AssertMatchesTorch(tol);
        using var f = SafeTensorsFile.Open(Out);
        Assert.AreEqual(dtype, f.Metadata["dtype"]);
        Assert.AreEqual("cpu", f.Metadata["device"]);
        Assert.AreEqual(ModelFixture.Config, FiberCuda.Models.FiberConfig.FromJson(f.Metadata["config"]));
    }

    /// <summary>For <see cref="ForwardCommandOnCudaTests"/>: f32 on <paramref name="device"/>, then the torch comparison if it ran.</summary>
    internal void RunOn(string device, Action<int, string> checkRc)
    {
        var (rc, err) = Cli("--weights", Weights, "--input", Input, "--out", Out, "--device", device);
        checkRc(rc, err);
        AssertMatchesTorch(1e-4);
        using var f = SafeTensorsFile.Open(Out);
        StringAssert.StartsWith(f.Metadata["device"], "cuda(");
    }

    [TestMethod]
    public void OneImagePerCallGivesTheSameOutputs()
    {
        var (rc, err) = Forward("--batch-size", "1");
        Assert.AreEqual(ExitCodes.Ok, rc, err);
        AssertMatchesTorch(1e-4);
    }

    [TestMethod]
    public void StaticRunAndConfigJsonBesideTheWeights()
    {
        // No metadata: the config comes from config.json next to the weights; then from --config alone.
        WriteWeights(Weights, withConfig: false);
        File.WriteAllText(Path.Combine(_dir, "w", "config.json"), ModelFixture.Config.ToJson());
        var o = new ForwardOptions { Weights = Weights, Input = Input, Out = Out, Device = "cpu" };
        Assert.AreEqual(ExitCodes.Ok, ForwardCommand.Run(o, TextWriter.Null));
        AssertMatchesTorch(1e-4);

        File.Delete(Path.Combine(_dir, "w", "config.json"));
        File.Delete(Out);
        var (rc, err) = Forward();
        Assert.AreEqual(ExitCodes.Usage, rc);
        StringAssert.Contains(err, "--config");
        Assert.IsFalse(File.Exists(Out));

        Assert.AreEqual(ExitCodes.Ok, ForwardCommand.Run(o with { Config = "fiber-tiny-coarse-64" }, TextWriter.Null));
        AssertMatchesTorch(1e-4);
    }

    [TestMethod]
    public void ConfigThatDiffersFromTheWeightsFails()
    {
        var (rc, err) = Forward("--config", "fiber-tiny-coarse-96");
        Assert.AreEqual(ExitCodes.Mismatch, rc, err);
        StringAssert.Contains(err, "image_size 96 vs 64");
        Assert.IsFalse(File.Exists(Out));
        (rc, err) = Forward("--config", "no-such-preset");
        Assert.AreEqual(ExitCodes.Usage, rc, err);
        StringAssert.Contains(err, "unknown config preset");
    }

    [TestMethod]
    public void MissingInputTensor()
    {
        WriteInput(Input, new() { [ForwardCommand.PixelValues] = Fx.T["input.image"], [ForwardCommand.InputIds] = Fx.T["input.ids"] });
        Directory.CreateDirectory(Path.GetDirectoryName(Out)!);
        File.WriteAllText(Out, "previous");
        var (rc, err) = Forward();
        Assert.AreEqual(ExitCodes.Mismatch, rc, err);
        StringAssert.Contains(err, "missing input tensor 'attention_mask'");
        Assert.AreEqual("previous", File.ReadAllText(Out), "a failed run must leave an existing output alone");
    }

    [TestMethod]
    [DataRow("input_ids", "f32")]
    [DataRow("attention_mask", "f32")]
    [DataRow("pixel_values", "i64")]
    public void WrongDType(string name, string dtype)
    {
        var t = new Dictionary<string, HostTensor>
        {
            [ForwardCommand.PixelValues] = Fx.T["input.image"],
            [ForwardCommand.InputIds] = Fx.T["input.ids"],
            [ForwardCommand.AttentionMask] = Fx.T["input.mask"],
        };
        t[name] = t[name].ConvertTo(dtype == "f32" ? WeightDType.F32 : WeightDType.I64);
        WriteInput(Input, t);
        var (rc, err) = Forward();
        Assert.AreEqual(ExitCodes.Mismatch, rc, err);
        StringAssert.Contains(err, $"{name} is {dtype}");
        Assert.IsFalse(File.Exists(Out));
    }

    [TestMethod]
    public void WrongShapesAndValues()
    {
        var img = Fx.T["input.image"];
        var ids = Fx.T["input.ids"];
        var mask = Fx.T["input.mask"];
        // an image of the wrong size (64x32: half the buffer)
        var half = new HostTensor(img.DType, [2, 3, 64, 32], img.Data[..(img.Data.Length / 2)]);
        WriteInput(Input, new() { [ForwardCommand.PixelValues] = half, [ForwardCommand.InputIds] = ids, [ForwardCommand.AttentionMask] = mask });
        var (rc, err) = Forward();
        Assert.AreEqual(ExitCodes.Mismatch, rc, err);
        StringAssert.Contains(err, "[B,3,64,64]");

        // one text for two images
        var oneIds = new HostTensor(ids.DType, [1, 8], ids.Data[..(ids.Data.Length / 2)]);
        var oneMask = new HostTensor(mask.DType, [1, 8], mask.Data[..(mask.Data.Length / 2)]);
        WriteInput(Input, new() { [ForwardCommand.PixelValues] = img, [ForwardCommand.InputIds] = oneIds, [ForwardCommand.AttentionMask] = oneMask });
        (rc, err) = Forward();
        Assert.AreEqual(ExitCodes.Mismatch, rc, err);
        StringAssert.Contains(err, "2 images but 1 texts");

        // a token id outside the tiny vocabulary
        var v = ids.ToDoubles().Select(d => (long)d).ToArray();
        v[3] = ModelFixture.Config.VocabSize;
        WriteInput(Input, new() { [ForwardCommand.PixelValues] = img, [ForwardCommand.InputIds] = HostTensor.FromLongs(v, 2, 8), [ForwardCommand.AttentionMask] = mask });
        (rc, err) = Forward();
        Assert.AreEqual(ExitCodes.Mismatch, rc, err);
        StringAssert.Contains(err, "outside the vocabulary");
        Assert.IsFalse(File.Exists(Out));
    }

    [TestMethod]
    public void MissingFiles()
    {
        var (rc, err) = Cli("--weights", Weights, "--input", Path.Combine(_dir, "nope.safetensors"), "--out", Out, "--device", "cpu");
        Assert.AreEqual(ExitCodes.BadInput, rc, err);
        StringAssert.Contains(err, "nope.safetensors");
        (rc, err) = Cli("--weights", Path.Combine(_dir, "none.safetensors"), "--input", Input, "--out", Out, "--device", "cpu");
        Assert.AreEqual(ExitCodes.BadInput, rc, err);
        StringAssert.Contains(err, "none.safetensors");
        Assert.IsFalse(File.Exists(Out));
    }

    [TestMethod]
    public void WeightsThatDoNotFitTheModel()
    {
        const string dropped = "cross_modal_image_pooler_itc.dense.weight";
        WriteWeights(Weights, withConfig: true, keep: n => n != dropped);
        var (rc, err) = Forward();
        Assert.AreEqual(ExitCodes.Mismatch, rc, err);
        StringAssert.Contains(err, dropped);
        Assert.IsFalse(File.Exists(Out));
    }

    [TestMethod]
    public void BadOptions()
    {
        var (rc, _) = Forward("--device", "tpu");
        Assert.AreEqual(ExitCodes.Usage, rc);
        (rc, _) = Forward("--dtype", "f16");
        Assert.AreEqual(ExitCodes.Usage, rc);
        (rc, var err) = Cli("--weights", Weights, "--input", Input, "--out", Out, "--device", "emu", "--dtype", "f64");
        Assert.AreEqual(ExitCodes.Usage, rc, err);
        StringAssert.Contains(err, "CPU only");
        Assert.IsFalse(File.Exists(Out));
    }
}

/// <summary>`fiber forward` on the CUDA backend: the emulated GPU always, the real one when there is one.</summary>
[TestClass]
[DoNotParallelize]
public sealed class ForwardCommandOnCudaTests
{
    static void Run(string device, Action<int, string> onResult)
    {
        var t = new ForwardCommandTests();
        t.Setup();
        try { t.RunOn(device, onResult); }
        finally { t.Cleanup(); }
    }

    [TestMethod]
    [TestCategory("Emulated")]
    public void EmulatedGpuMatchesTorch() => Run("emu", (rc, err) => Assert.AreEqual(ExitCodes.Ok, rc, err));

    [TestMethod]
    [TestCategory("Gpu")]
    public void GpuMatchesTorch() => Run("gpu", (rc, err) =>
    {
        if (rc == ExitCodes.Device) Assert.Inconclusive("no GPU: " + err.Trim());
        Assert.AreEqual(ExitCodes.Ok, rc, err);
    });
}
