using System.CommandLine;
using System.Text.RegularExpressions;
using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Cli.Commands;
using FiberCuda.IO;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tensors;
using FiberCuda.Tests.Model;

namespace FiberCuda.Tests.IO;

/// <summary>
/// The weights round trip: the tiny FIBER of tools/fixtures/make_model_fixtures.py, saved by torch in the official
/// Lightning layout (tiny_coarse_official.ckpt: temp, queues, every head, relative_position_index / attn_mask /
/// position_ids buffers, optimizer state), goes through `fiber convert --from official-coarse IN --out DIR`
/// in-process, DIR/model.safetensors is loaded strictly into the C# model, and the f32 CPU forward must give what
/// PyTorch recorded for the same model (fused features, ITC embeddings, caption path).
/// </summary>
[TestClass]
[DoNotParallelize] // captures Console.Out / Console.Error
public sealed class RoundTripTests
{
    static ModelFixture Fx => ModelFixture.Instance;
    static string Ckpt => Path.Combine(AppContext.BaseDirectory, "Fixtures", "model", "tiny_coarse_official.ckpt");

    // The official module's training-only state and buffers the engine recomputes (fiber-coarse.md §6.2), listed here
    // rather than taken from the converter so the test can disagree with it.
    static readonly string[] Queues = ["image_queue", "text_queue", "image_input_queue", "text_input_queue", "text_input_mask_queue", "queue_ptr", "queue_total"];
    static bool ShouldDrop(string n) => Queues.Contains(n) || n.EndsWith(".relative_position_index") || n.EndsWith(".attn_mask") || n.EndsWith(".position_ids");

    const double Tol = 1e-4; // FiberModelFixtureTests.OutTol for f32

    string _dir = null!;

    [TestInitialize]
    public void Setup() => _dir = Fixture.TempDir();

    [TestCleanup]
    public void Cleanup() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    static (int Rc, string Out, string Err) Cli(params string[] args)
    {
        var root = new RootCommand();
        root.Subcommands.Add(ConvertCommand.Create());
        var (o, e) = (new StringWriter(), new StringWriter());
        var (so, se) = (Console.Out, Console.Error);
        Console.SetOut(o); Console.SetError(e);
        try { return (root.Parse(args).Invoke(), o.ToString(), e.ToString()); }
        finally { Console.SetOut(so); Console.SetError(se); }
    }

    static int SummaryCount(string stdout, string field)
    {
        var m = Regex.Match(stdout, "^" + field + @"\s+(\d+)", RegexOptions.Multiline);
        Assert.IsTrue(m.Success, $"no '{field}' line in the summary:\n{stdout}");
        return int.Parse(m.Groups[1].Value);
    }

    [TestMethod]
    public void OfficialCheckpointConvertsLoadsAndMatchesTorch()
    {
        string outDir = Path.Combine(_dir, "tiny");
        var (rc, stdout, err) = Cli("convert", "--from", "official-coarse", Ckpt, "--out", outDir);
        Assert.AreEqual(ExitCodes.Ok, rc, err + stdout);

        // The summary: queues and recomputable buffers dropped, nothing missing or unexpected, nothing invented.
        List<string> inCkpt;
        using (var ck = TorchCheckpoint.Open(Ckpt)) inCkpt = ck.Tensors.Select(t => t.Name).ToList();
        var drop = inCkpt.Where(ShouldDrop).ToList();
        CollectionAssert.IsSubsetOf(Queues, drop, "the fixture has every queue");
        Assert.IsTrue(drop.Any(n => n.EndsWith(".relative_position_index")) && drop.Any(n => n.EndsWith(".attn_mask")) && drop.Any(n => n.EndsWith(".position_ids")));
        Assert.AreEqual(drop.Count, SummaryCount(stdout, "dropped"), stdout);
        Assert.AreEqual(0, SummaryCount(stdout, "missing"), stdout);
        Assert.AreEqual(0, SummaryCount(stdout, "unexpected"), stdout);
        Assert.AreEqual(0, SummaryCount(stdout, "resized"), stdout);
        Assert.AreEqual(0, SummaryCount(stdout, "initialised"), stdout);
        Assert.AreEqual(inCkpt.Count - drop.Count, SummaryCount(stdout, "tensors"), stdout);
        StringAssert.Contains(stdout, Ckpt);
        StringAssert.Contains(stdout, Path.Combine(outDir, "model.safetensors"));

        using var f = SafeTensorsFile.Open(Path.Combine(outDir, "model.safetensors"));
        CollectionAssert.AreEquivalent(inCkpt.Where(n => !ShouldDrop(n)).ToList(), f.Tensors.Select(t => t.Name).ToList(), "written names");
        var cfg = EngineWeights.ReadConfig(f);
        Assert.AreEqual(FiberConfig.FromJson(File.ReadAllText(Path.Combine(outDir, "config.json"))), cfg);
        Assert.AreEqual(FiberStage.Coarse, cfg.Stage);
        Assert.AreEqual(64, cfg.ImageSize);
        Assert.AreEqual(2, cfg.WindowSize);
        Assert.AreEqual(ModelFixture.Config.NumFuse, cfg.NumFuse);
        // The model the forward runs carries the fixture's values bit for bit.
        foreach (var n in Fx.Names("param."))
            CollectionAssert.AreEqual(Fx.T["param." + n].Data, f.Read(n).Data, n);

        // Strict load of the whole file against the catalog, then the backbone and the caption adapters, strictly.
        var be = Backend.Cpu;
        var sd = EngineWeights.Load(cfg, f, be, strict: true);
        var ctx = new NnContext(be, DType.F32);
        var model = new FiberCoarseModel(ctx, cfg);
        var rep = model.LoadBackbone(sd);
        Assert.IsTrue(rep.Ok, rep.ToString());
        var adapters = new CaptionAdapters(ctx, cfg);
        rep = adapters.LoadStateDict(sd.Where(kv => kv.Key.StartsWith("cross_modal_att_layers.")).ToDictionary(kv => kv.Key, kv => kv.Value));
        Assert.IsTrue(rep.Ok, rep.ToString());
        model.Eval();

        using var _ = Grad.NoGrad();
        var img = Fx.Tensor("input.image", be, DType.F32);
        var text = Fx.Text();
        var o = model.Forward(img, text);
        Fx.AssertOutput("out.fused.image_feats", o.ImageFeats, Tol);
        Fx.AssertOutput("out.fused.text_feats", o.TextFeats, Tol);
        Fx.AssertOutput("out.fused.cls_feats", o.ClsFeats, Tol);
        Fx.AssertOutput("out.image.itc", model.ImageOnly(img), Tol);
        Fx.AssertOutput("out.text.itc", model.TextOnly(text), Tol);
        Fx.AssertOutput("out.caption.text_feats", model.ForwardCaption(model.Swin.Forward(img), text, adapters), Tol);
    }

    [TestMethod]
    public void HeadsAndTemperatureKeepTheCheckpointValues()
    {
        // What the forward does not exercise must still be the checkpoint's, including rank_output, which torch
        // stored as a view of itm_score.fc row 1.
        var r = FiberConverter.Convert(new ConvertOptions { Inputs = [Ckpt], From = "official-coarse" });
        using var ck = TorchCheckpoint.Open(Ckpt);
        var byName = r.Tensors.ToDictionary(t => t.Key, t => t.Value);
        foreach (var n in new[] { "temp", "itm_score.fc.weight", "itm_score.fc.bias", "mlm_score.decoder.weight", "vqa_classifier.3.weight", "nlvr2_classifier.0.weight" })
            CollectionAssert.AreEqual(ck.Read(n).Data, byName[n].Data, n);
        var fc = byName["itm_score.fc.weight"].ToFloats();
        CollectionAssert.AreEqual(fc[(fc.Length / 2)..], byName["rank_output.weight"].ToFloats());
        Assert.AreEqual(0.05f, byName["temp"].ToFloats().Single(), 1e-7f);
    }
}
