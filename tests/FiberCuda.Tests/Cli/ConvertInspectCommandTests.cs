using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using FiberCuda.Cli.Commands;
using FiberCuda.IO;
using FiberCuda.Models;
using FiberCuda.Tests.IO;

namespace FiberCuda.Tests.Cli;

/// <summary>
/// `fiber convert` and `fiber inspect` in-process through the commands as the `fiber` router builds them, on the
/// torch-written fixtures of tools/fixtures/make_{weight,model}_fixtures.py: exit codes, the summary and listing text,
/// error messages that name the file and the problem, and that a failed conversion writes nothing to --out
/// (an earlier output there survives byte for byte).
/// </summary>
[TestClass]
[DoNotParallelize] // captures Console.Out / Console.Error
public sealed class ConvertInspectCommandTests
{
    static string Official => Path.Combine(AppContext.BaseDirectory, "Fixtures", "model", "tiny_coarse_official.ckpt");

    string _dir = null!;

    [TestInitialize]
    public void Setup() => _dir = Fixture.TempDir();

    [TestCleanup]
    public void Cleanup() { try { Directory.Delete(_dir, true); } catch (IOException) { } }

    static (int Rc, string Out, string Err) Cli(params string[] args)
    {
        var root = new RootCommand();
        root.Subcommands.Add(ConvertCommand.Create());
        root.Subcommands.Add(InspectCommand.Create());
        var (o, e) = (new StringWriter(), new StringWriter());
        var (so, se) = (Console.Out, Console.Error);
        Console.SetOut(o); Console.SetError(e);
        try { return (root.Parse(args).Invoke(), o.ToString(), e.ToString()); }
        finally { Console.SetOut(so); Console.SetError(se); }
    }

    static Dictionary<string, byte[]> Snapshot(string dir) =>
        Directory.GetFiles(dir, "*", SearchOption.AllDirectories).ToDictionary(f => Path.GetRelativePath(dir, f), File.ReadAllBytes);

    /// <summary>A good conversion's output, to check that a failing one leaves it alone.</summary>
    string PreviousOutput()
    {
        string d = Path.Combine(_dir, "previous");
        var (rc, _, err) = Cli("convert", Fixture.P("tiny_coarse.ckpt"), "--out", d);
        Assert.AreEqual(ExitCodes.Ok, rc, err);
        return d;
    }

    /// <summary>
    /// Runs `convert ARGS --out D` twice, into a folder that does not exist and into one holding an earlier output:
    /// both must exit with <paramref name="code"/>, say every text of <paramref name="mention"/> on stderr after
    /// "fiber: error:", print no summary, and leave the folders as they were.
    /// </summary>
    void ConvertFails(int code, string[] mention, params string[] args)
    {
        string fresh = Path.Combine(_dir, "fresh-" + Guid.NewGuid().ToString("N")[..8]);
        string prev = PreviousOutput();
        var before = Snapshot(prev);
        Assert.IsTrue(before.ContainsKey("model.safetensors") && before.ContainsKey("config.json"));
        foreach (var outDir in new[] { fresh, prev })
        {
            var (rc, stdout, err) = Cli(["convert", .. args, "--out", outDir]);
            Assert.AreEqual(code, rc, $"exit code; stderr: {err}");
            StringAssert.StartsWith(err, "fiber: error: ");
            foreach (var m in mention) StringAssert.Contains(err, m, $"the message should mention '{m}': {err}");
            Assert.IsFalse(stdout.Contains("wrote"), stdout);
        }
        Assert.IsFalse(Directory.Exists(fresh), "a failed conversion created --out");
        var after = Snapshot(prev);
        CollectionAssert.AreEquivalent(before.Keys.ToList(), after.Keys.ToList(), "files in the earlier output");
        foreach (var (k, v) in before) CollectionAssert.AreEqual(v, after[k], k + " changed");
    }

    // ------------------------------------------------------------------ convert: success

    [TestMethod]
    public void ConvertWritesTheEngineFilesAndSummarises()
    {
        string outDir = Path.Combine(_dir, "out");
        var (rc, stdout, err) = Cli("convert", "--from", "official-coarse", Fixture.P("tiny_coarse.ckpt"), "--out", outDir, "--tokenizer", Fixture.P("hf_roberta"));
        Assert.AreEqual(ExitCodes.Ok, rc, err);
        Assert.AreEqual("", err);
        var keys = Fixture.Keys("tiny_coarse_keys.json");                  // every state_dict entry, as torch saved it
        var kept = JsonSerializer.Deserialize<string[]>(File.ReadAllText(Fixture.P("tiny_coarse_kept.json")))!;
        var lines = stdout.Split('\n', StringSplitOptions.TrimEntries);
        Assert.IsTrue(lines.Contains($"input      OfficialCoarse: {Fixture.P("tiny_coarse.ckpt")}"), stdout);
        Assert.IsTrue(Regex.IsMatch(stdout, @"^config     \S+ \(coarse, image 64, window 2\)$", RegexOptions.Multiline), stdout);
        Assert.IsTrue(lines.Contains($"tensors    {kept.Length}"), stdout);
        long parameters = kept.Sum(k => keys[k].Aggregate(1L, (a, b) => a * b));
        Assert.IsTrue(lines.Contains($"parameters {parameters:N0}"), stdout);
        Assert.IsTrue(Regex.IsMatch(stdout, $@"^dropped    {keys.Count - kept.Length}  \(image_queue, ", RegexOptions.Multiline), stdout);
        Assert.IsTrue(lines.Contains("missing    0") && lines.Contains("unexpected 0") && lines.Contains("resized    0") && lines.Contains("initialised 0"), stdout);
        Assert.IsTrue(lines.Contains($"wrote      {Path.Combine(outDir, "model.safetensors")}, config.json"), stdout);
        CollectionAssert.AreEquivalent(new[] { "config.json", "merges.txt", "model.safetensors", "vocab.json" },
            Directory.GetFiles(outDir).Select(Path.GetFileName).ToArray());
        using var f = SafeTensorsFile.Open(Path.Combine(outDir, "model.safetensors"));
        CollectionAssert.AreEquivalent(kept, f.Tensors.Select(t => t.Name).ToArray());
        foreach (var t in f.Tensors) CollectionAssert.AreEqual(keys[t.Name], t.Shape, t.Name);
    }

    [TestMethod]
    public void ConvertAutoDetectsAndReplacesAnEarlierOutput()
    {
        string prev = PreviousOutput();
        File.WriteAllText(Path.Combine(prev, "config.json"), "{}");
        var (rc, stdout, err) = Cli("convert", Official, "--out", prev);
        Assert.AreEqual(ExitCodes.Ok, rc, err);
        StringAssert.Contains(stdout, "OfficialCoarse: " + Official);
        using var f = SafeTensorsFile.Open(Path.Combine(prev, "model.safetensors"));
        Assert.AreEqual(EngineWeights.ReadConfig(f), FiberConfig.FromJson(File.ReadAllText(Path.Combine(prev, "config.json"))));
    }

    // ------------------------------------------------------------------ convert: failures

    [TestMethod]
    public void WrongFromIsAUsageError() =>
        ConvertFails(ExitCodes.Usage, ["--from", "'official-corse'", "official-coarse"], "--from", "official-corse", Fixture.P("tiny_coarse.ckpt"));

    [TestMethod]
    public void KindThatDoesNotFitTheFileIsAUsageError() =>
        // a coarse checkpoint read as an HF RoBERTa: the tower cannot become a FIBER on its own
        ConvertFails(ExitCodes.Usage, ["hf-roberta", "swin"], "--from", "hf-roberta", Fixture.P("tiny_coarse.ckpt"));

    [TestMethod]
    public void MissingFileIsBadInput()
    {
        string p = Path.Combine(_dir, "no-such.ckpt");
        ConvertFails(ExitCodes.BadInput, [p, "no such file"], p);
        ConvertFails(ExitCodes.BadInput, [Path.Combine(_dir, "no-such-tok"), "--tokenizer"], Fixture.P("tiny_coarse.ckpt"), "--tokenizer", Path.Combine(_dir, "no-such-tok"));
    }

    [TestMethod]
    public void TruncatedArchiveIsBadInput()
    {
        var full = File.ReadAllBytes(Official);
        foreach (int len in new[] { full.Length / 2, full.Length - 30, 100 })
        {
            string p = Path.Combine(_dir, $"truncated-{len}.ckpt");
            File.WriteAllBytes(p, full[..len]);
            ConvertFails(ExitCodes.BadInput, [p, "truncated"], p);
            var (rc, _, err) = Cli("inspect", p);
            Assert.AreEqual(ExitCodes.BadInput, rc, err);
            StringAssert.Contains(err, p);
        }
    }

    [TestMethod]
    public void CorruptArchiveIsBadInput()
    {
        var full = File.ReadAllBytes(Official);
        // The zip's central directory signature of the first entry, and a storage record overwritten with junk
        // in the middle (a zip stores records uncompressed, so the damage lands in tensor data or pickle).
        int cd = -1;
        for (int i = 0; i + 4 <= full.Length; i++)
            if (full[i] == 'P' && full[i + 1] == 'K' && full[i + 2] == 1 && full[i + 3] == 2) { cd = i; break; }
        Assert.IsTrue(cd > 0, "no central directory");
        var sig = (byte[])full.Clone(); sig[cd + 2] = 9;
        string p = Path.Combine(_dir, "bad-cd.ckpt");
        File.WriteAllBytes(p, sig);
        ConvertFails(ExitCodes.BadInput, [p], p);
        // Not a checkpoint at all.
        string txt = Path.Combine(_dir, "notes.ckpt");
        File.WriteAllText(txt, "this is not a checkpoint, just some text");
        ConvertFails(ExitCodes.BadInput, [txt], txt);
    }

    [TestMethod]
    public void ConfigOfAnotherPresetIsAShapeMismatch()
    {
        string ck = Fixture.P("tiny_coarse.ckpt");
        ConvertFails(ExitCodes.Mismatch, [ck, "shape mismatch", "fiber-b-coarse-384", "vit_model.patch_embed.proj.weight"], ck, "--config", "fiber-b-coarse-384");
        // A config.json that differs in one width names that tensor and both shapes.
        string cfg = Path.Combine(_dir, "narrow.json");
        File.WriteAllText(cfg, (FiberConfig.Tiny() with { Name = "narrow", TextIntermediate = 24 }).ToJson());
        ConvertFails(ExitCodes.Mismatch, [ck, "text_transformer.encoder.layer.0.intermediate.dense.weight: checkpoint [32,16]", "[24,16]"], ck, "--config", cfg);
        // A config without task heads: the checkpoint's head tensors are unexpected, by name.
        File.WriteAllText(cfg, (FiberConfig.Tiny() with { Name = "no-heads", Heads = [] }).ToJson());
        ConvertFails(ExitCodes.Mismatch, ["have no place in no-heads", "itm_score.fc.weight", ck], ck, "--config", cfg);
    }

    [TestMethod]
    [DataRow("evil_os_system.pt", "posix.system")]
    [DataRow("evil_builtins_eval.pkl", "builtins.eval")]
    [DataRow("evil_subprocess_popen.pt", "subprocess.Popen")]
    [DataRow("evil_chain.pkl", "builtins.__import__")]
    public void MaliciousPickleIsUnsafe(string file, string global)
    {
        const string Marker = "/tmp/fibercuda_pickle_marker_";
        var markers = Directory.GetFiles("/tmp", "fibercuda_pickle_marker_*").ToHashSet();
        ConvertFails(ExitCodes.Unsafe, [Fixture.P(file), $"refused to call '{global}'"], "--from", "official-coarse", Fixture.P(file));
        var (rc, stdout, err) = Cli("inspect", Fixture.P(file));
        Assert.AreEqual(ExitCodes.Unsafe, rc, err);
        StringAssert.Contains(err, Fixture.P(file));
        StringAssert.Contains(err, global);
        Assert.AreEqual("", stdout);
        CollectionAssert.AreEquivalent(markers.ToList(), Directory.GetFiles("/tmp", "fibercuda_pickle_marker_*").ToList(), "a payload ran (" + Marker + "*)");
    }

    // ------------------------------------------------------------------ inspect

    /// <summary>The rows of the listing: name → (dtype, shape, bytes).</summary>
    static Dictionary<string, (string DType, string Shape, long Bytes)> Rows(string stdout)
    {
        var lines = stdout.Split('\n', StringSplitOptions.TrimEntries);
        int h = Array.FindIndex(lines, l => Regex.IsMatch(l, @"^name\s+dtype\s+shape\s+bytes$"));
        Assert.IsTrue(h > 0, "no table header:\n" + stdout);
        var rows = new Dictionary<string, (string, string, long)>();
        for (int i = h + 1; i < lines.Length && !Regex.IsMatch(lines[i], @"^\S+ tensors, "); i++)
        {
            var c = lines[i].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            Assert.AreEqual(4, c.Length, "row: " + lines[i]);
            rows.Add(c[0], (c[1], c[2], long.Parse(c[3], NumberStyles.AllowThousands, CultureInfo.CurrentCulture)));
        }
        return rows;
    }

    static string Shape(IEnumerable<long> s) => "[" + string.Join(",", s) + "]";

    // Element sizes of the safetensors dtype names, by hand.
    static readonly Dictionary<string, int> Size = new()
    { ["F64"] = 8, ["F32"] = 4, ["F16"] = 2, ["BF16"] = 2, ["I64"] = 8, ["I32"] = 4, ["I16"] = 2, ["I8"] = 1, ["U8"] = 1, ["BOOL"] = 1 };

    [TestMethod]
    [DataRow("dtypes_zip.pt", "torch zip")]
    [DataRow("dtypes_legacy.pt", "torch legacy")]
    public void InspectListsATorchCheckpoint(string file, string format)
    {
        var (rc, stdout, err) = Cli("inspect", Fixture.P(file));
        Assert.AreEqual(ExitCodes.Ok, rc, err);
        StringAssert.StartsWith(stdout, $"{Fixture.P(file)}: {format}");
        var exp = Fixture.ExpectedValues("dtypes_expected.json");
        var rows = Rows(stdout);
        CollectionAssert.AreEquivalent(exp.Keys.ToList(), rows.Keys.ToList());
        foreach (var (n, e) in exp)
        {
            Assert.AreEqual(e.DType.ToLowerInvariant(), rows[n].DType, n);
            Assert.AreEqual(Shape(e.Shape), rows[n].Shape, n);
            Assert.AreEqual(e.Shape.Aggregate(1L, (a, b) => a * b) * Size[e.DType], rows[n].Bytes, n);
        }
        StringAssert.Contains(stdout, $"{exp.Count} tensors, ");
        // --filter keeps matching names only.
        (rc, stdout, err) = Cli("inspect", Fixture.P(file), "--filter", "view_");
        Assert.AreEqual(ExitCodes.Ok, rc, err);
        CollectionAssert.AreEquivalent(exp.Keys.Where(k => k.Contains("view_")).ToList(), Rows(stdout).Keys.ToList());
    }

    [TestMethod]
    public void InspectListsASafetensorsFileAndItsMetadata()
    {
        string p = Path.Combine(_dir, "small.safetensors");
        SafeTensorsFile.Write(p,
            [new("enc.weight", HostTensor.FromFloats([1, 2, 3, 4, 5, 6], 2, 3)), new("ids", HostTensor.FromLongs([7, 8, 9], 3)),
             new("half", HostTensor.FromFloats([1, 2, 3, 4], 4, 1).ConvertTo(WeightDType.BF16))],
            new Dictionary<string, string> { ["source"] = "unit test", ["step"] = "12" });
        var (rc, stdout, err) = Cli("inspect", p);
        Assert.AreEqual(ExitCodes.Ok, rc, err);
        StringAssert.StartsWith(stdout, p + ": safetensors");
        var rows = Rows(stdout);
        Assert.AreEqual(3, rows.Count);
        Assert.AreEqual(("f32", "[2,3]", 24L), rows["enc.weight"]);
        Assert.AreEqual(("i64", "[3]", 24L), rows["ids"]);
        Assert.AreEqual(("bf16", "[4,1]", 8L), rows["half"]);
        var lines = stdout.Split('\n', StringSplitOptions.TrimEntries);
        Assert.IsTrue(lines.Contains("3 tensors, 13 elements, 56 bytes"), stdout);
        Assert.IsTrue(lines.Contains("metadata:") && lines.Contains("source: unit test") && lines.Contains("step: 12"), stdout);
    }

    [TestMethod]
    public void InspectShowsALightningCheckpointsStateDictAndMetadata()
    {
        var (rc, stdout, err) = Cli("inspect", Official);
        Assert.AreEqual(ExitCodes.Ok, rc, err);
        StringAssert.StartsWith(stdout, $"{Official}: torch zip, state dict under 'state_dict'");
        // The official layout is the weight fixtures' FIBERTransformerSS: same names and shapes as torch listed them.
        var keys = Fixture.Keys("tiny_coarse_keys.json");
        var rows = Rows(stdout);
        CollectionAssert.AreEquivalent(keys.Keys.ToList(), rows.Keys.ToList());
        foreach (var (n, s) in keys) Assert.AreEqual(Shape(s), rows[n].Shape, n);
        foreach (var n in new[] { "queue_ptr", "text_input_queue", "text_transformer.embeddings.position_ids", "vit_model.layers.0.blocks.0.attn.relative_position_index" })
            Assert.AreEqual("i64", rows[n].DType, n);
        Assert.AreEqual("f32", rows["temp"].DType);
        Assert.AreEqual("[]", rows["temp"].Shape);

        // Non-tensor content, as inert values; the state dict and the optimizer's tensors are not expanded there.
        int m = stdout.IndexOf("\nmetadata:\n", StringComparison.Ordinal);
        Assert.IsTrue(m > 0, stdout);
        var meta = stdout[(m + 11)..].Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Trim()).Select(l => (K: l[..l.IndexOf(": ", StringComparison.Ordinal)], V: l[(l.IndexOf(": ", StringComparison.Ordinal) + 2)..]))
            .ToDictionary(x => x.K, x => x.V);
        Assert.AreEqual("0", meta["epoch"]);
        Assert.AreEqual("1", meta["global_step"]);
        Assert.AreEqual("'1.3.2'", meta["pytorch-lightning_version"]);
        Assert.AreEqual($"<state dict: {keys.Count} tensors>", meta["state_dict"]);
        Assert.AreEqual("64", meta["hyper_parameters.config.image_size"]);
        Assert.AreEqual("'fiber_tiny_roundtrip'", meta["hyper_parameters.config.exp_name"]);
        Assert.AreEqual("1", meta["hyper_parameters.config.loss_names.itc"]);
        Assert.AreEqual("0.0001", meta["optimizer_states.0.param_groups.0.lr"]);
        Assert.IsFalse(meta.Keys.Any(k => k.StartsWith("state_dict.") || k.StartsWith("vit_model.")), "state dict entries in the metadata");

        // --all adds the optimizer's tensors (AdamW moments of the two stepped parameters).
        (rc, stdout, err) = Cli("inspect", Official, "--all", "--filter", "optimizer_states.");
        Assert.AreEqual(ExitCodes.Ok, rc, err);
        var opt = Rows(stdout);
        Assert.IsTrue(opt.ContainsKey("optimizer_states.0.state.1.exp_avg") && opt.ContainsKey("optimizer_states.0.state.1.exp_avg_sq"), stdout);
        Assert.AreEqual(rows["itm_score.fc.bias"].Shape, opt["optimizer_states.0.state.1.exp_avg"].Shape);
    }

    [TestMethod]
    public void InspectOfAMissingFileIsBadInput()
    {
        string p = Path.Combine(_dir, "absent.safetensors");
        var (rc, stdout, err) = Cli("inspect", p);
        Assert.AreEqual(ExitCodes.BadInput, rc);
        StringAssert.StartsWith(err, "fiber: error: ");
        StringAssert.Contains(err, p + ": no such file");
        Assert.AreEqual("", stdout);
    }
}
