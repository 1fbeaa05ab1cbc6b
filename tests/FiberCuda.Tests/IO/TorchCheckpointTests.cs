using FiberCuda.IO;

namespace FiberCuda.Tests.IO;

[TestClass]
public sealed class TorchCheckpointTests
{
    [TestMethod]
    [DataRow("dtypes_zip.pt", "torch zip")]
    [DataRow("dtypes_legacy.pt", "torch legacy")]
    [DataRow("dtypes_p3.pt", "torch zip")]
    [DataRow("dtypes_p4.pt", "torch zip")]
    [DataRow("dtypes_p5.pt", "torch zip")]
    [DataRow("dtypes_bigendian.pt", "torch zip")]
    public void ReadsEveryDtypeViewAndLayout(string file, string format)
    {
        var exp = Fixture.ExpectedValues("dtypes_expected.json");
        using var ck = TorchCheckpoint.Open(Fixture.P(file));
        Assert.AreEqual(format, ck.Format);
        CollectionAssert.AreEqual(exp.Keys.ToList(), ck.Tensors.Select(t => t.Name).ToList(), "names in file order");
        foreach (var (name, e) in exp) Fixture.AssertTensor(e, ck.Read(name), $"{file}:{name}");
    }

    [TestMethod]
    public void BigEndianArchiveIsSwapped()
    {
        using var ck = TorchCheckpoint.Open(Fixture.P("dtypes_bigendian.pt"));
        Assert.IsTrue(ck.BigEndian);
    }

    [TestMethod]
    public void SharedStorageIsOneStorage()
    {
        using var ck = TorchCheckpoint.Open(Fixture.P("dtypes_zip.pt"));
        var full = ck.GetRef("shared_full"); var off = ck.GetRef("view_offset"); var tr = ck.GetRef("view_transposed");
        Assert.AreSame(full.Storage, off.Storage);
        Assert.AreSame(full.Storage, tr.Storage);
        Assert.AreEqual(20, off.Offset);
        CollectionAssert.AreEqual(new long[] { 1, 10 }, tr.Stride);
    }

    [TestMethod]
    public void OrderedDictStateDictKeepsMetadata()
    {
        var exp = Fixture.ExpectedValues("containers_expected.json");
        using var ck = TorchCheckpoint.Open(Fixture.P("statedict_ordered.pt"));
        var root = (PyDict)ck.Root!;
        Assert.IsTrue(root.IsOrderedDict);
        Assert.IsInstanceOfType<PyDict>(root.State, "BUILD {'_metadata': ...} is kept");
        Assert.IsTrue(((PyDict)root.State!).TryGet("_metadata", out var md) && md is PyDict);
        CollectionAssert.AreEqual(exp.Keys.ToList(), ck.Tensors.Select(t => t.Name).ToList());
        foreach (var (n, e) in exp) Fixture.AssertTensor(e, ck.Read(n), n);
    }

    [TestMethod]
    public void LightningCheckpointStateDictAndInertMetadata()
    {
        var exp = Fixture.ExpectedValues("containers_expected.json");
        using var ck = TorchCheckpoint.Open(Fixture.P("lightning.ckpt"));
        Assert.AreEqual("state_dict", ck.StateDictKey);
        CollectionAssert.AreEqual(exp.Keys.ToList(), ck.Tensors.Select(t => t.Name).ToList());
        foreach (var (n, e) in exp) Fixture.AssertTensor(e, ck.Read(n), n);
        var root = (PyDict)ck.Root!;
        Assert.AreEqual(3L, root["epoch"]);
        Assert.AreEqual("1.3.2", root["pytorch-lightning_version"]);
        var hp = (PyDict)root["hyper_parameters"]!;
        var ns = (PyObject)hp["config"]!;
        Assert.AreEqual("argparse.Namespace", ns.Type.FullName);
        Assert.AreEqual(1e-4, ((PyDict)ns.State!)["lr"]);
        Assert.AreEqual("numpy.core.multiarray.scalar", ((PyObject)hp["np_scalar"]!).Type.FullName);
        CollectionAssert.AreEqual(new byte[] { 0, 1, (byte)'b', (byte)'y', (byte)'t', (byte)'e', (byte)'s' }, (byte[])hp["blob"]!);
        // Optimizer state holds tensors too, outside the state dict.
        Assert.IsTrue(ck.AllTensors().Any(t => t.Name.StartsWith("optimizer_states.0.state.", StringComparison.Ordinal)));
        var meta = ck.Metadata().ToDictionary(m => m.Path, m => m.Value);
        Assert.AreEqual("<argparse.Namespace>", meta["hyper_parameters.config"]);
    }

    [TestMethod]
    public void MaskrcnnModelWithModulePrefix()
    {
        var exp = Fixture.ExpectedValues("containers_expected.json");
        using var ck = TorchCheckpoint.Open(Fixture.P("maskrcnn.pth"));
        Assert.AreEqual("model", ck.StateDictKey);
        Assert.IsTrue(ck.StrippedModulePrefix);
        CollectionAssert.AreEqual(exp.Keys.ToList(), ck.Tensors.Select(t => t.Name).ToList());
        foreach (var (n, e) in exp) Fixture.AssertTensor(e, ck.Read(n), n);
    }

    [TestMethod]
    public void ReadsOnlyTheTensorsAskedFor()
    {
        using var ck = TorchCheckpoint.Open(Fixture.P("tiny_coarse.ckpt"));
        Assert.AreEqual(0, ck.BytesRead, "opening reads no tensor data");
        var queue = ck.Tensors.Single(t => t.Name == "image_input_queue");
        long expected = 0;
        foreach (var t in ck.Tensors.Where(t => !t.Name.Contains("queue")))
        {
            ck.Read(t.Name);
            expected += t.Bytes;
        }
        Assert.AreEqual(expected, ck.BytesRead, "exactly the requested tensors' bytes are read");
        Assert.IsTrue(new FileInfo(ck.Path).Length - ck.BytesRead >= queue.Bytes, "the queue was never read");
    }

    [TestMethod]
    public void HfFilesAgree()
    {
        using var bin = WeightFiles.Open(Fixture.P("hf_roberta"));
        using var sh = WeightFiles.Open(Fixture.P("hf_roberta_sharded"));
        Assert.IsInstanceOfType<TorchCheckpoint>(bin);
        Assert.IsInstanceOfType<ShardedWeights>(sh);
        CollectionAssert.AreEquivalent(bin.Tensors.Select(t => t.Name).ToList(), sh.Tensors.Select(t => t.Name).ToList());
        foreach (var t in bin.Tensors)
        {
            var a = bin.Read(t.Name); var b = sh.Read(t.Name);
            CollectionAssert.AreEqual(a.Shape, b.Shape, t.Name);
            CollectionAssert.AreEqual(a.Data, b.Data, t.Name);
        }
    }
}
