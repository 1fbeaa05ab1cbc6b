using FiberCuda.Backends.Cpu;
using FiberCuda.IO;
using FiberCuda.Models;

namespace FiberCuda.Tests.IO;

[TestClass]
public sealed class EngineLoadTests
{
    static string Converted(out FiberConfig cfg)
    {
        var dir = Fixture.TempDir();
        var r = FiberConverter.Convert(new ConvertOptions { Inputs = [Fixture.P("tiny_coarse.ckpt")] });
        FiberConverter.Write(r, dir);
        cfg = r.Config;
        return dir;
    }

    [TestMethod]
    public void StrictLoadOntoTheCpuBackend()
    {
        var dir = Converted(out var cfg);
        try
        {
            using var f = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
            using var cpu = new CpuBackend();
            var loaded = EngineWeights.Load(EngineWeights.ReadConfig(f), f, cpu);
            var stored = FiberParameters.Enumerate(cfg).Where(p => p.Stored).ToList();
            Assert.AreEqual(stored.Count, loaded.Count);
            using var ck = TorchCheckpoint.Open(Fixture.P("tiny_coarse.ckpt"));
            foreach (var p in stored)
            {
                var t = loaded[p.Name];
                CollectionAssert.AreEqual(p.Shape, t.Shape, p.Name);
                CollectionAssert.AreEqual(ck.Read(p.Name).ToFloats(), t.ToFloatArray(), p.Name);
            }
            foreach (var t in loaded.Values) t.Dispose();
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void StrictLoadNamesEveryProblem()
    {
        var dir = Converted(out var cfg);
        try
        {
            using var f = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
            using var cpu = new CpuBackend();
            var other = cfg with { Heads = ["itm", "vqa"], VqaLabels = 7 };
            var e = Assert.ThrowsExactly<WeightLoadException>(() => EngineWeights.Load(other, f, cpu));
            CollectionAssert.Contains(e.Report.Unexpected, "temp");
            Assert.IsTrue(e.Report.Mismatched.Any(m => m.StartsWith("vqa_classifier.3.weight (file [5,32], model [7,32])")), string.Join("; ", e.Report.Mismatched));
            StringAssert.Contains(e.Message, "vqa_classifier.3.weight");
            // Non-strict tolerates unexpected names but never a shape mismatch.
            Assert.ThrowsExactly<WeightLoadException>(() => EngineWeights.Load(other, f, cpu, strict: false));
            var fewer = cfg with { Heads = ["itm"] };
            var part = EngineWeights.Load(fewer, f, cpu, strict: false);
            Assert.IsFalse(part.ContainsKey("temp"));
            foreach (var t in part.Values) t.Dispose();
            // A safetensors file of another origin is refused with a clear message.
            var plain = Path.Combine(dir, "plain.safetensors");
            SafeTensorsFile.Write(plain, [new("x", HostTensor.FromFloats([1], 1))]);
            using var p = SafeTensorsFile.Open(plain);
            StringAssert.Contains(Assert.ThrowsExactly<WeightFormatException>(() => EngineWeights.ReadConfig(p)).Message, "not a FiberCuda weight file");
        }
        finally { Directory.Delete(dir, true); }
    }
}
