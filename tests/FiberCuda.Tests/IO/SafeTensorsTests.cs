using System.Buffers.Binary;
using System.Text;
using FiberCuda.IO;

namespace FiberCuda.Tests.IO;

[TestClass]
public sealed class SafeTensorsTests
{
    static HostTensor Make(WeightDType t, params long[] shape)
    {
        var n = HostTensor.CountElements(shape) * t.Size();
        var b = new byte[n];
        for (int i = 0; i < b.Length; i++) b[i] = (byte)(i * 37 + (int)t);
        return new HostTensor(t, shape, b);
    }

    [TestMethod]
    public void RoundTripEveryDtypeWithMetadataAndAlignment()
    {
        var dir = Fixture.TempDir();
        var path = Path.Combine(dir, "m.safetensors");
        var ts = new Dictionary<string, HostTensor>
        {
            ["a.f32"] = Make(WeightDType.F32, 3, 4), ["b.bf16"] = Make(WeightDType.BF16, 5), ["c.f16"] = Make(WeightDType.F16, 2, 2),
            ["d.i64"] = Make(WeightDType.I64, 3), ["e.i8"] = Make(WeightDType.I8, 7), ["f.bool"] = Make(WeightDType.Bool, 3),
            ["g.u8"] = Make(WeightDType.U8, 1), ["h.f64"] = Make(WeightDType.F64, 2), ["i.i32"] = Make(WeightDType.I32, 1, 1),
            ["j.i16"] = Make(WeightDType.I16, 3), ["scalar"] = Make(WeightDType.F32), ["empty"] = Make(WeightDType.F32, 0, 4),
        };
        var meta = new Dictionary<string, string> { ["format"] = "x", ["config"] = "{\"a\":1}" };
        SafeTensorsFile.Write(path, ts, meta);
        Assert.AreEqual(1, Directory.GetFiles(dir).Length, "no temporary file is left behind");
        using var f = SafeTensorsFile.Open(path);
        Assert.AreEqual(0, f.DataStart % 8, "data starts 8-byte aligned");
        CollectionAssert.AreEquivalent(meta.ToList(), f.Metadata.ToList());
        foreach (var (n, t) in ts)
        {
            var r = f.Read(n);
            Assert.AreEqual(t.DType, r.DType, n);
            CollectionAssert.AreEqual(t.Shape, r.Shape, n);
            CollectionAssert.AreEqual(t.Data, r.Data, n);
        }
        // Descending alignment, then name: the 8-byte types come first.
        var order = f.Tensors.Select(t => t.Name).ToList();
        Assert.IsTrue(order.IndexOf("d.i64") < order.IndexOf("a.f32") && order.IndexOf("a.f32") < order.IndexOf("b.bf16"));
        Directory.Delete(dir, true);
    }

    [TestMethod]
    public void WriteReplacesAnExistingFileAtomically()
    {
        var dir = Fixture.TempDir();
        var path = Path.Combine(dir, "m.safetensors");
        SafeTensorsFile.Write(path, [new("x", HostTensor.FromFloats([1, 2], 2))]);
        SafeTensorsFile.Write(path, [new("y", HostTensor.FromFloats([3], 1))]);
        using (var f = SafeTensorsFile.Open(path)) CollectionAssert.AreEqual(new[] { "y" }, f.Tensors.Select(t => t.Name).ToArray());
        Assert.AreEqual(1, Directory.GetFiles(dir).Length);
        Directory.Delete(dir, true);
    }

    [TestMethod]
    public void ReadsFilesWrittenByPython()
    {
        // Written by the fixture script's own writer, with torch's bicubic tables.
        using var f = SafeTensorsFile.Open(Fixture.P("tiny_coarse_96_tables.safetensors"));
        Assert.AreEqual(8, f.Tensors.Count);
        Assert.IsTrue(f.Tensors.All(t => t.DType == WeightDType.F32 && t.Shape[0] == 25));
    }

    static string Build(string headerJson, int dataBytes, ulong? n, out byte[] bytes)
    {
        var h = Encoding.UTF8.GetBytes(headerJson);
        bytes = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, n ?? (ulong)h.Length);
        h.CopyTo(bytes, 8);
        var path = Path.Combine(Path.GetTempPath(), $"fibercuda-st-{Guid.NewGuid():N}.safetensors");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [TestMethod]
    [DataRow("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12, "overlap")]
    [DataRow("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}""", 16, "hole")]
    [DataRow("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 4, "past")]
    [DataRow("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 12, "trailing")]
    [DataRow("""{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", 8, "needs 12 bytes")]
    [DataRow("""{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}""", 8, "unknown or unsupported dtype")]
    [DataRow("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8, "duplicate")]
    [DataRow("""{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", 8, "non-negative")]
    [DataRow("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}""", 8, "invalid data_offsets")]
    [DataRow("""{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}""", 8, "too large")]
    [DataRow("""[1,2]""", 0, "does not start with '{'")]
    [DataRow(""" {"a":1}""", 0, "does not start with '{'")]
    [DataRow("""{"a":""", 0, "not valid UTF-8 JSON")]
    [DataRow("""{"__metadata__":{"k":1}}""", 0, "not a string")]
    public void CorruptHeadersAreRejectedClearly(string header, int data, string expect)
    {
        var path = Build(header, data, null, out _);
        try
        {
            var e = Assert.ThrowsExactly<WeightFormatException>(() => SafeTensorsFile.Open(path).Dispose());
            StringAssert.Contains(e.Message, expect);
            StringAssert.Contains(e.Message, path);
        }
        finally { File.Delete(path); }
    }

    [TestMethod]
    [DataRow(1UL << 63, "exceeds")]
    [DataRow(100_000_001UL, "exceeds")]
    [DataRow(1000UL, "runs past the end")]
    [DataRow(ulong.MaxValue, "exceeds")]
    public void HugeHeaderLengthsAreRejected(ulong n, string expect)
    {
        var path = Build("{}", 0, n, out _);
        try { StringAssert.Contains(Assert.ThrowsExactly<WeightFormatException>(() => SafeTensorsFile.Open(path).Dispose()).Message, expect); }
        finally { File.Delete(path); }
    }

    [TestMethod]
    public void TooShortAndMissingFiles()
    {
        var path = Path.Combine(Path.GetTempPath(), $"fibercuda-st-{Guid.NewGuid():N}");
        File.WriteAllBytes(path, [1, 2, 3]);
        try { StringAssert.Contains(Assert.ThrowsExactly<WeightFormatException>(() => SafeTensorsFile.Open(path).Dispose()).Message, "too short"); }
        finally { File.Delete(path); }
        Assert.ThrowsExactly<FileNotFoundException>(() => SafeTensorsFile.Open(path));
    }

    [TestMethod]
    public void EmptyAndScalarTensorsAreValid()
    {
        var path = Build("""{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}""", 8, null, out _);
        try
        {
            using var f = SafeTensorsFile.Open(path);
            Assert.AreEqual(0, f.Read("e").Numel);
            Assert.AreEqual(1, f.Read("s").Numel);
        }
        finally { File.Delete(path); }
    }
}
