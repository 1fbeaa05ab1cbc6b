using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.IO;
using FiberCuda.Nn;
using FiberCuda.Optim;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;
using FiberCuda.Training;

namespace FiberCuda.Tests.Training;

/// <summary>A temporary folder removed on dispose.</summary>
sealed class RunDir : IDisposable
{
    public RunDir() { Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "fibercuda-train-" + Guid.NewGuid().ToString("N")); Directory.CreateDirectory(Path); }
    public string Path { get; }
    public void Dispose() { try { Directory.Delete(Path, recursive: true); } catch (IOException) { } }
}

[TestClass]
[DoNotParallelize] // one test shrinks the static transfer chunk size
public sealed class CheckpointTests
{
    static IBackend Be => Backend.Cpu;

    static byte[] DownloadBytes(Tensor t) { var b = new byte[t.Bytes]; t.Backend.Download(t, b); return b; }

    /// <summary>A few parameters of every float dtype, with AdamW state after some steps, and two extra state tensors.</summary>
    sealed class Setup : IDisposable
    {
        public readonly List<(string Name, Tensor Param)> Params;
        public readonly AdamW Opt;
        public readonly Dictionary<string, Tensor> Extra;

        public Setup(int seed, bool train)
        {
            Params =
            [
                ("enc.weight", Be.FromDoubles(Check.Rand(seed, 12), [3, 4], DType.F32)),
                ("enc.norm.weight", Be.FromDoubles(Check.Rand(seed + 1, 5), [5], DType.BF16)),
                ("head.bias", Be.FromDoubles(Check.Rand(seed + 2, 4), [2, 2], DType.F64)),
                ("unused", Be.FromDoubles(Check.Rand(seed + 3, 3), [3], DType.F32)), // never gets a gradient: no state
            ];
            foreach (var (_, p) in Params) p.RequiresGrad = true;
            Opt = new AdamW([new ParamGroup(Params.Take(2).Select(p => p.Param), 1e-2f, 0.01f), new ParamGroup(Params.Skip(2).Select(p => p.Param), 3e-2f, 0f)]);
            Extra = new()
            {
                ["image_queue"] = Be.FromDoubles(Check.Rand(seed + 4, 24), [6, 4], DType.F32),
                ["queue_ptr"] = Be.FromDoubles([seed % 6], [1], DType.I64),
            };
            if (!train) return;
            for (int t = 0; t < 3; t++)
            {
                foreach (var (name, p) in Params.Take(3))
                {
                    p.Grad?.Dispose();
                    p.Grad = Be.FromDoubles(Check.Rand(100 * seed + 10 * t + name.Length, (int)p.Numel, -2, 2), p.Shape, p.DType);
                }
                Opt.Step();
            }
        }

        public void Dispose()
        {
            Opt.Dispose();
            foreach (var (_, p) in Params) { p.Grad?.Dispose(); p.Dispose(); }
            foreach (var t in Extra.Values) t.Dispose();
        }
    }

    static void AssertSameState(Setup a, Setup b)
    {
        for (int i = 0; i < a.Params.Count; i++)
        {
            var (name, pa) = a.Params[i]; var pb = b.Params[i].Param;
            CollectionAssert.AreEqual(DownloadBytes(pa), DownloadBytes(pb), $"param {name}");
            var sa = a.Opt.StateOf(pa); var sb = b.Opt.StateOf(pb);
            Assert.AreEqual(sa is null, sb is null, $"state presence of {name}");
            if (sa is null) continue;
            CollectionAssert.AreEqual(DownloadBytes(sa.M), DownloadBytes(sb!.M), $"exp_avg {name}");
            CollectionAssert.AreEqual(DownloadBytes(sa.V), DownloadBytes(sb.V), $"exp_avg_sq {name}");
            Assert.AreEqual(sa.Master is null, sb.Master is null, $"master presence of {name}");
            if (sa.Master is not null) CollectionAssert.AreEqual(DownloadBytes(sa.Master), DownloadBytes(sb.Master!), $"master {name}");
            Assert.AreEqual(sa.M.DType, sb.M.DType);
        }
        Assert.AreEqual(a.Opt.StepCount, b.Opt.StepCount, "step count");
        foreach (var (k, t) in a.Extra) CollectionAssert.AreEqual(DownloadBytes(t), DownloadBytes(b.Extra[k]), $"state {k}");
    }

    [TestMethod]
    [DataRow(64L << 20, DisplayName = "whole tensors")]
    [DataRow(16L, DisplayName = "16-byte transfer chunks (axis-0 slices)")]
    public void SaveRestoreIsBitExact(long chunkBytes)
    {
        long saved = CheckpointStore.ChunkBytes;
        CheckpointStore.ChunkBytes = chunkBytes;
        try
        {
            using var dir = new RunDir();
            using var src = new Setup(1, train: true);
            Assert.IsNotNull(src.Opt.StateOf(src.Params[1].Param)!.Master, "bf16 param has master weights");
            Assert.IsNull(src.Opt.StateOf(src.Params[3].Param));
            var store = new CheckpointStore(dir.Path);
            const string json = "{\"epoch\":2,\"sample\":\"a \\\"quoted\\\" name\"}";
            string path = store.Save(42, src.Params, src.Opt, src.Extra, json);
            Assert.AreEqual(Path.Combine(dir.Path, "checkpoints", "step-00000042.safetensors"), path);

            using var ck = CheckpointStore.Read(path);
            Assert.AreEqual(42, ck.Step);
            Assert.AreEqual(json, ck.TrainerJson);
            Assert.AreEqual(3, ck.OptimizerStepCount);
            CollectionAssert.AreEquivalent(src.Params.Select(p => p.Name).ToList(), ck.ParameterNames.ToList());
            CollectionAssert.AreEquivalent(new[] { "image_queue", "queue_ptr" }, ck.StateKeys.ToList());

            // The file is plain safetensors with the documented names.
            using (var st = SafeTensorsFile.Open(path))
            {
                var names = st.Tensors.Select(t => t.Name).ToHashSet();
                foreach (var n in new[] { "model/enc.weight", "optim/enc.weight/exp_avg", "optim/enc.weight/exp_avg_sq", "optim/enc.norm.weight/master", "state/queue_ptr" })
                    Assert.Contains(n, names);
                Assert.DoesNotContain("optim/enc.weight/master", names);
                Assert.DoesNotContain("optim/unused/exp_avg", names);
                Assert.AreEqual(WeightDType.BF16, st.Tensors.Single(t => t.Name == "model/enc.norm.weight").DType);
                Assert.AreEqual(WeightDType.I64, st.Tensors.Single(t => t.Name == "state/queue_ptr").DType);
                CollectionAssert.AreEqual(DownloadBytes(src.Params[0].Param), st.Read("model/enc.weight").Data);
            }

            using var dst = new Setup(7, train: false); // different values, no optimizer state
            ck.Restore(dst.Params, dst.Opt, dst.Extra);
            AssertSameState(src, dst);
        }
        finally { CheckpointStore.ChunkBytes = saved; }
    }

    /// <summary>A tiny regression problem: Linear(4→3) + MSE with AdamW and the warm-up/decay schedule.</summary>
    sealed class Problem : IDisposable
    {
        public readonly Linear Model;
        public readonly AdamW Opt;
        readonly float[] _baseLrs;
        readonly LrSchedule _schedule = new(10, 0.2);
        readonly Tensor _x, _y;

        public Problem(DType dt)
        {
            var ctx = NnContext.Cpu(dt);
            Model = new Linear(ctx, 4, 3);
            Be.Upload(Model.Weight, DownloadBytes(Be.FromDoubles(Check.Rand(5, 12, -0.5, 0.5), [3, 4], dt)));
            Be.Upload(Model.Bias!, DownloadBytes(Be.FromDoubles(Check.Rand(6, 3, -0.1, 0.1), [3], dt)));
            Opt = new AdamW([new ParamGroup([Model.Weight], 5e-2f, 0.01f), new ParamGroup([Model.Bias!], 5e-2f, 0f)]);
            _baseLrs = LrSchedule.BaseLrsOf(Opt);
            _x = Be.FromDoubles(Check.Rand(7, 32), [8, 4], dt);
            _y = Be.FromDoubles(Check.Rand(8, 24), [8, 3], dt);
        }

        public List<(string Name, Tensor Param)> Named => Model.NamedParameters().ToList();

        public void Steps(int n)
        {
            for (int i = 0; i < n; i++)
            {
                Opt.ZeroGrad();
                using (var scope = new TensorScope())
                {
                    var d = F.Sub(Model.Forward(_x), _y);
                    F.Mean(F.Mul(d, d)).Backward();
                }
                _schedule.Apply(Opt, _baseLrs, Opt.StepCount);
                Opt.Step();
            }
        }

        public void Dispose() { Opt.Dispose(); _x.Dispose(); _y.Dispose(); }
    }

    [TestMethod]
    [DataRow(DType.F32)]
    [DataRow(DType.BF16)]
    public void ResumedTrainingMatchesUninterruptedRun(DType dt)
    {
        using var dir = new RunDir();
        using var straight = new Problem(dt);
        straight.Steps(6);

        string path;
        using (var first = new Problem(dt))
        {
            first.Steps(3);
            path = new CheckpointStore(dir.Path).Save(3, first.Named, first.Opt, null, "{}");
        }
        using var resumed = new Problem(dt);
        using (var ck = CheckpointStore.Read(path)) ck.Restore(resumed.Named, resumed.Opt, null);
        Assert.AreEqual(3, resumed.Opt.StepCount);
        resumed.Steps(3);

        foreach (var ((name, a), (_, b)) in straight.Named.Zip(resumed.Named))
        {
            CollectionAssert.AreEqual(DownloadBytes(a), DownloadBytes(b), $"{name} after resume");
            CollectionAssert.AreEqual(DownloadBytes(straight.Opt.StateOf(a)!.M), DownloadBytes(resumed.Opt.StateOf(b)!.M), $"{name} exp_avg");
        }
        // And the run did move: the comparison is not between two untouched models.
        using var fresh = new Problem(dt);
        CollectionAssert.AreNotEqual(DownloadBytes(fresh.Model.Weight), DownloadBytes(straight.Model.Weight));
    }

    [TestMethod]
    public void KilledWriteLeavesPreviousCheckpointReadable()
    {
        using var dir = new RunDir();
        using var s = new Setup(2, train: true);
        var store = new CheckpointStore(dir.Path, keepLast: 5);
        store.Save(1, s.Params, s.Opt, s.Extra, "{\"n\":1}");
        string good = store.Save(2, s.Params, s.Opt, s.Extra, "{\"n\":2}");

        // A write killed before the rename: only a temporary exists. A killed copy-over (or a lost tail after a crash
        // without fsync) leaves a truncated file under the final name.
        string tmp = Path.Combine(store.Folder, ".step-00000003.safetensors.99999.0123456789abcdef.tmp");
        var goodBytes = File.ReadAllBytes(good);
        File.WriteAllBytes(tmp, goodBytes[..(goodBytes.Length / 3)]);
        string torn = store.PathOf(3);
        File.WriteAllBytes(torn, goodBytes[..(goodBytes.Length - 10)]);

        CollectionAssert.AreEqual(new[] { store.PathOf(1), good, torn }, store.List().ToArray(), "temporaries are not listed");
        var e = Assert.ThrowsExactly<InvalidDataException>(() => CheckpointStore.Read(torn));
        StringAssert.Contains(e.Message, "step-00000003.safetensors");

        Assert.AreEqual(good, store.LatestReadable(out var skipped));
        Assert.HasCount(1, skipped);
        StringAssert.Contains(skipped[0], "step-00000003.safetensors");

        // A body corrupted in place keeps a valid layout; the hash catches it.
        string flipped = store.PathOf(4);
        var bad = (byte[])goodBytes.Clone();
        bad[^5] ^= 0x40;
        File.WriteAllBytes(flipped, bad);
        e = Assert.ThrowsExactly<InvalidDataException>(() => CheckpointStore.Read(flipped));
        StringAssert.Contains(e.Message, "step-00000004.safetensors");
        StringAssert.Contains(e.Message, "hash");
        Assert.AreEqual(good, store.LatestReadable(out skipped));
        Assert.HasCount(2, skipped);

        using (var ck = store.OpenLatestReadable(out skipped))
        {
            Assert.AreEqual(good, ck!.Path);
            Assert.AreEqual(2, ck.Step);
            Assert.AreEqual("{\"n\":2}", ck.TrainerJson);
        }

        // The next save (resuming from step 2 → step 3) replaces the torn file, drops the abandoned step 4 and the temporary.
        store.Save(3, s.Params, s.Opt, s.Extra, "{\"n\":3}");
        Assert.IsFalse(File.Exists(tmp));
        Assert.IsFalse(File.Exists(flipped));
        CollectionAssert.AreEqual(new[] { store.PathOf(1), good, store.PathOf(3) }, store.List().ToArray());
        Assert.AreEqual(store.PathOf(3), store.LatestReadable(out skipped));
        Assert.IsEmpty(skipped);
    }

    [TestMethod]
    public void KeepsTheLastN()
    {
        using var dir = new RunDir();
        using var s = new Setup(3, train: true);
        var store = new CheckpointStore(dir.Path, keepLast: 2);
        for (long step = 100; step <= 500; step += 100) store.Save(step, s.Params, s.Opt, null, "{}");
        CollectionAssert.AreEqual(new[] { store.PathOf(400), store.PathOf(500) }, store.List().ToArray());

        var one = new CheckpointStore(dir.Path, keepLast: 1);
        one.Save(600, s.Params, s.Opt, null, "{}");
        CollectionAssert.AreEqual(new[] { one.PathOf(600) }, one.List().ToArray());

        var all = new CheckpointStore(dir.Path, keepLast: 0);
        for (long step = 700; step <= 900; step += 100) all.Save(step, s.Params, s.Opt, null, "{}");
        Assert.HasCount(4, all.List());
        Assert.IsEmpty(Directory.GetFiles(all.Folder, ".*"), "no temporaries left behind");
    }

    [TestMethod]
    public void RestoreIsStrictAndChangesNothingOnMismatch()
    {
        using var dir = new RunDir();
        using var s = new Setup(4, train: true);
        string path = new CheckpointStore(dir.Path).Save(9, s.Params, s.Opt, s.Extra, "{}");
        using var ck = CheckpointStore.Read(path);

        using var other = new Setup(5, train: false);
        var before = DownloadBytes(other.Params[0].Param);
        // Rename one parameter and change the shape of another: both are reported, nothing is written.
        var renamed = other.Params.ToList();
        renamed[0] = ("enc.weight_renamed", renamed[0].Param);
        using var wrongShape = Be.FromDoubles(new double[6], [6], DType.F32);
        renamed[3] = ("unused", wrongShape);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ck.Restore(renamed, other.Opt, other.Extra));
        StringAssert.Contains(e.Message, "model/enc.weight_renamed");
        StringAssert.Contains(e.Message, "model/enc.weight"); // left over in the checkpoint
        StringAssert.Contains(e.Message, "model/unused");
        StringAssert.Contains(e.Message, "f32[3]");
        CollectionAssert.AreEqual(before, DownloadBytes(other.Params[0].Param), "nothing restored on error");
        Assert.AreEqual(0, other.Opt.StepCount);

        // Missing extra state key, and a dtype mismatch.
        var extra = new Dictionary<string, Tensor>(other.Extra) { ["text_queue"] = other.Extra["image_queue"] };
        e = Assert.ThrowsExactly<InvalidDataException>(() => ck.Restore(other.Params, other.Opt, extra));
        StringAssert.Contains(e.Message, "state/text_queue");
        using var asBf16 = Be.FromDoubles(new double[12], [3, 4], DType.BF16);
        var retyped = other.Params.ToList(); retyped[0] = ("enc.weight", asBf16);
        e = Assert.ThrowsExactly<InvalidDataException>(() => ck.Restore(retyped, null, null));
        StringAssert.Contains(e.Message, "model/enc.weight");

        // Model only (evaluation): the optimizer and state sections are skipped.
        ck.Restore(other.Params, null, null);
        CollectionAssert.AreEqual(DownloadBytes(s.Params[0].Param), DownloadBytes(other.Params[0].Param));
        Assert.AreEqual(0, other.Opt.StepCount);
    }

    [TestMethod]
    public void APlainSafetensorsFileIsNotACheckpoint()
    {
        using var dir = new RunDir();
        string p = Path.Combine(dir.Path, "weights.safetensors");
        SafeTensorsFile.Write(p, [new("model/x", HostTensor.FromFloats([1, 2], 2))]);
        var e = Assert.ThrowsExactly<InvalidDataException>(() => CheckpointStore.Read(p));
        StringAssert.Contains(e.Message, "weights.safetensors");
        StringAssert.Contains(e.Message, "not a training checkpoint");
    }
}

/// <summary>Checkpoints of tensors on the CUDA backend (emulated GPU, real GPU), restored across backends.</summary>
[TestClass]
[DoNotParallelize] // shrinks the static transfer chunk size
public sealed class CheckpointCudaTests
{
    static byte[] DownloadBytes(Tensor t) { var b = new byte[t.Bytes]; t.Backend.Download(t, b); return b; }

    /// <summary>Parameters (f32, bf16 with master), optimizer state and an i64/f32 extra on <paramref name="be"/>.</summary>
    static (List<(string, Tensor)> Ps, AdamW Opt, Dictionary<string, Tensor> Extra) Make(IBackend be, int seed, bool withState)
    {
        var w = be.FromDoubles(Check.Rand(seed, 40), [10, 4], DType.F32);
        var g = be.FromDoubles(Check.Rand(seed + 1, 6), [6], DType.BF16);
        var opt = new AdamW([w, g], lr: 1e-3f);
        if (withState)
        {
            opt.SetState(w, new AdamWState(be.FromDoubles(Check.Rand(seed + 2, 40), [10, 4], DType.F32), be.FromDoubles(Check.Rand(seed + 3, 40, 0, 1), [10, 4], DType.F32), null));
            opt.SetState(g, new AdamWState(be.FromDoubles(Check.Rand(seed + 4, 6), [6], DType.F32), be.FromDoubles(Check.Rand(seed + 5, 6, 0, 1), [6], DType.F32), be.FromDoubles(Check.Rand(seed + 6, 6), [6], DType.F32)));
            opt.StepCount = 17;
        }
        var extra = new Dictionary<string, Tensor>
        {
            ["queue"] = be.FromDoubles(Check.Rand(seed + 7, 36), [9, 4], DType.F32),
            ["ids"] = be.FromDoubles(Enumerable.Range(seed, 10).Select(i => (double)(i * 1_000_003L)).ToArray(), [5, 2], DType.I64),
        };
        return ([("w", w), ("g", g)], opt, extra);
    }

    static void RoundTrip(IBackend gpu)
    {
        long saved = CheckpointStore.ChunkBytes;
        CheckpointStore.ChunkBytes = 48; // every tensor above 48 bytes goes by axis-0 slices (CopySlice on the device)
        try
        {
            using var dir = new RunDir();
            var store = new CheckpointStore(dir.Path);
            var (ps, opt, extra) = Make(gpu, 1, withState: true);
            string path = store.Save(5, ps, opt, extra, "{}");

            // GPU → CPU.
            var (cps, copt, cextra) = Make(Backend.Cpu, 50, withState: false);
            using (var ck = CheckpointStore.Read(path)) ck.Restore(cps, copt, cextra);
            // CPU → file → a fresh set on the GPU.
            string path2 = store.Save(6, cps, copt, cextra, "{}");
            var (gps, gopt, gextra) = Make(gpu, 90, withState: false);
            using (var ck = CheckpointStore.Read(path2)) ck.Restore(gps, gopt, gextra);

            Assert.AreEqual(17, gopt.StepCount);
            for (int i = 0; i < ps.Count; i++)
            {
                var (name, a) = ps[i]; var b = gps[i].Item2; var c = cps[i].Item2;
                CollectionAssert.AreEqual(DownloadBytes(a), DownloadBytes(c), $"{name} on the CPU");
                CollectionAssert.AreEqual(DownloadBytes(a), DownloadBytes(b), $"{name} back on the GPU");
                Assert.AreSame(gpu, gopt.StateOf(b)!.M.Backend, "state lives on the parameter's backend");
                CollectionAssert.AreEqual(DownloadBytes(opt.StateOf(a)!.V), DownloadBytes(gopt.StateOf(b)!.V), $"{name} exp_avg_sq");
            }
            CollectionAssert.AreEqual(DownloadBytes(opt.StateOf(ps[1].Item2)!.Master!), DownloadBytes(gopt.StateOf(gps[1].Item2)!.Master!), "master");
            foreach (var k in extra.Keys) CollectionAssert.AreEqual(DownloadBytes(extra[k]), DownloadBytes(gextra[k]), k);
        }
        finally { CheckpointStore.ChunkBytes = saved; }
    }

    [TestMethod, TestCategory("Emulated")]
    public void EmulatedGpuRoundTripsThroughTheCpu() => RoundTrip(TestDevices.Emulated);

    [TestMethod, TestCategory("Gpu")]
    public void GpuRoundTripsThroughTheCpu() => RoundTrip(TestDevices.Gpu);
}
