using System.Diagnostics;
using FiberCuda.IO;

namespace FiberCuda.Tests.IO;

/// <summary>Damaged files must give a clear <see cref="IOException"/> (usually <see cref="WeightFormatException"/>):
/// never another exception type, a crash or a hang.</summary>
[TestClass]
public sealed class CorruptInputTests
{
    static string Write(byte[] b, string ext = ".pt")
    {
        var p = Path.Combine(Path.GetTempPath(), $"fibercuda-corrupt-{Guid.NewGuid():N}{ext}");
        File.WriteAllBytes(p, b);
        return p;
    }

    /// <summary>Open and read every tensor; returns null on success or the (acceptable) exception.</summary>
    static Exception? OpenAndReadAll(string path)
    {
        try
        {
            using var s = WeightFiles.Open(path);
            foreach (var t in s.Tensors) s.Read(t.Name);
            if (s is TorchCheckpoint ck) { _ = ck.Metadata().ToList(); foreach (var (_, r) in ck.AllTensors()) ck.ReadRef(r); }
            return null;
        }
        catch (IOException e) { return e; }
    }

    [TestMethod]
    public void TruncatedZipAtEveryLength()
    {
        var full = File.ReadAllBytes(Fixture.P("dtypes_zip.pt"));
        for (int len = 0; len < full.Length; len += 61)
        {
            var p = Write(full[..len]);
            try
            {
                var e = OpenAndReadAll(p);
                Assert.IsNotNull(e, $"a {len}-byte prefix was accepted");
                StringAssert.Contains(e.Message, p);
            }
            finally { File.Delete(p); }
        }
    }

    [TestMethod]
    public void TruncatedLegacyAtEveryLength()
    {
        var full = File.ReadAllBytes(Fixture.P("dtypes_legacy.pt"));
        for (int len = 1; len < full.Length; len += 37)
        {
            var p = Write(full[..len]);
            try { Assert.IsNotNull(OpenAndReadAll(p), $"a {len}-byte prefix was accepted"); }
            finally { File.Delete(p); }
        }
    }

    [TestMethod]
    public void WrongCentralDirectory()
    {
        var full = File.ReadAllBytes(Fixture.P("dtypes_zip.pt"));
        // Find the first central directory header and break it three ways.
        int cd = -1;
        for (int i = 0; i + 4 <= full.Length; i++)
            if (full[i] == 'P' && full[i + 1] == 'K' && full[i + 2] == 1 && full[i + 3] == 2) { cd = i; break; }
        Assert.IsTrue(cd > 0);
        var sig = (byte[])full.Clone(); sig[cd + 2] = 9;
        var off = (byte[])full.Clone(); off[cd + 42] = 0xFF; off[cd + 43] = 0xFF; off[cd + 44] = 0xFF; off[cd + 45] = 0x7F;
        var size = (byte[])full.Clone(); size[cd + 20] = 0xFF; size[cd + 21] = 0xFF; size[cd + 22] = 0xFF; size[cd + 23] = 0x7F;
        foreach (var (name, bytes) in new[] { ("signature", sig), ("offset", off), ("size", size) })
        {
            var p = Write(bytes);
            try { Assert.IsInstanceOfType<WeightFormatException>(OpenAndReadAll(p), name); }
            finally { File.Delete(p); }
        }
    }

    [TestMethod]
    public void NotACheckpoint()
    {
        var p = Write("hello, world, this is text"u8.ToArray());
        try { Assert.IsInstanceOfType<WeightFormatException>(OpenAndReadAll(p)); }
        finally { File.Delete(p); }
    }

    /// <summary>Mutation fuzzing of valid files: byte flips, overwrites with boundary values, truncation, insertion.</summary>
    [TestMethod]
    public void FuzzMutatedFiles()
    {
        var st = Path.Combine(Path.GetTempPath(), $"fibercuda-fuzz-seed-{Guid.NewGuid():N}.safetensors");
        SafeTensorsFile.Write(st, [new("a", HostTensor.FromFloats([1, 2, 3, 4, 5, 6], 2, 3)), new("b", HostTensor.FromLongs([7, 8], 2))],
            new Dictionary<string, string> { ["k"] = "v" });
        var seeds = new (string Name, byte[] Bytes)[]
        {
            ("dtypes_zip.pt", File.ReadAllBytes(Fixture.P("dtypes_zip.pt"))),
            ("dtypes_legacy.pt", File.ReadAllBytes(Fixture.P("dtypes_legacy.pt"))),
            ("dtypes_p4.pt", File.ReadAllBytes(Fixture.P("dtypes_p4.pt"))),
            ("lightning.ckpt", File.ReadAllBytes(Fixture.P("lightning.ckpt"))),
            ("seed.safetensors", File.ReadAllBytes(st)),
        };
        File.Delete(st);
        var rng = new Random(12345);
        byte[] boundary = [0x00, 0xFF, 0x7F, 0x80, 0x01, (byte)'(', (byte)'R', (byte)'.', 0x8a, 0x95];
        int cases = 0, accepted = 0;
        var sw = Stopwatch.StartNew();
        var path = Path.Combine(Path.GetTempPath(), $"fibercuda-fuzz-{Guid.NewGuid():N}");
        try
        {
            foreach (var (name, seed) in seeds)
                for (int k = 0; k < 600; k++)
                {
                    var b = (byte[])seed.Clone();
                    int muts = 1 + rng.Next(4);
                    for (int m = 0; m < muts; m++)
                    {
                        switch (rng.Next(5))
                        {
                            case 0: b[rng.Next(b.Length)] ^= (byte)(1 << rng.Next(8)); break;
                            case 1: b[rng.Next(b.Length)] = boundary[rng.Next(boundary.Length)]; break;
                            case 2: b = b[..rng.Next(b.Length)]; break;
                            case 3: { int at = rng.Next(b.Length + 1); b = [.. b[..at], (byte)rng.Next(256), .. b[at..]]; break; }
                            default:
                                {
                                    // Overwrite 4 bytes with a large little-endian integer (sizes, offsets, lengths).
                                    if (b.Length < 8) break;
                                    int at = rng.Next(b.Length - 4);
                                    BitConverter.GetBytes(rng.Next(2) == 0 ? int.MaxValue : rng.Next()).CopyTo(b, at);
                                    break;
                                }
                        }
                        if (b.Length == 0) break;
                    }
                    File.WriteAllBytes(path, b);
                    var t0 = sw.ElapsedMilliseconds;
                    Exception? e;
                    try { e = OpenAndReadAll(path); }
                    catch (Exception other) { throw new AssertFailedException($"{name} mutation {k}: {other.GetType().Name}: {other.Message}", other); }
                    Assert.IsTrue(sw.ElapsedMilliseconds - t0 < 5000, $"{name} mutation {k} took too long");
                    if (e is null) accepted++;
                    cases++;
                }
        }
        finally { File.Delete(path); }
        Assert.AreEqual(3000, cases);
        Assert.IsTrue(accepted < cases, "some mutations must be detected");
    }
}
