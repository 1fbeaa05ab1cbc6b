using FiberCuda.Backends;
using FiberCuda.Ops;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Cpu;

[TestClass]
public sealed class PhiloxDropoutTests
{
    // Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
    [TestMethod]
    [DataRow(0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u)]
    [DataRow(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu)]
    [DataRow(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u, 0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u)]
    public void KnownAnswers(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1, uint r0, uint r1, uint r2, uint r3)
    {
        var r = Philox.Generate(c0, c1, c2, c3, k0, k1);
        Assert.AreEqual((r0, r1, r2, r3), r, $"got {r.R0:x8} {r.R1:x8} {r.R2:x8} {r.R3:x8}");
    }

    [TestMethod]
    public void ElementCounterAndKeyLayout()
    {
        // counter = (lo32(offset+e), hi32(offset+e), 0, 0), key = (lo32(seed), hi32(seed))
        ulong seed = 0x0123456789abcdefUL, offset = 0xfffffffeUL; long e = 3; // offset+e crosses the 32-bit boundary
        ulong ctr = offset + (ulong)e;
        var r = Philox.Generate((uint)ctr, (uint)(ctr >> 32), 0, 0, 0x89abcdefu, 0x01234567u);
        Assert.AreEqual(r.R0, Philox.Word(seed, offset, e));
        Assert.AreEqual((r.R0 >> 8) / 16777216f, Philox.Uniform(seed, offset, e));
    }

    [TestMethod]
    public void VectorWordsMatchScalar()
    {
        // Ranges with tails, and counters crossing the 32-bit boundary of the low word.
        foreach (var (seed, offset, start, n) in new[] { (0UL, 0UL, 0L, 37), (0xdeadbeefcafef00dUL, 0xfffffff0UL, 3L, 41), (ulong.MaxValue, ulong.MaxValue - 20, 0L, 19) })
        {
            var w = new uint[n];
            Philox.Words(seed, offset, start, w);
            for (int i = 0; i < n; i++) Assert.AreEqual(Philox.Word(seed, offset, start + i), w[i], $"seed {seed:x} offset {offset:x} element {start + i}");
        }
    }

    [TestMethod]
    [DataRow(0.1f)]
    [DataRow(0.5f)]
    [DataRow(0.9f)]
    public void DropoutKeepRateAndScale(float p)
    {
        var be = Backend.Cpu;
        const int n = 200_000;
        using var x = be.Empty([n], DType.F32); be.Fill(x, 1.0);
        using var y = be.Empty([n], DType.F32);
        be.Dropout(x, p, 20240601UL, 12345UL, y);
        var v = y.ToArray<float>();
        float scale = 1f / (1f - p);
        int kept = 0;
        for (int i = 0; i < n; i++)
        {
            if (v[i] != 0) { Assert.AreEqual(scale, v[i], $"kept value at {i}"); kept++; }
            Assert.AreEqual(Philox.Keep(20240601UL, 12345UL, i, p), v[i] != 0, $"mask at {i}");
        }
        double rate = kept / (double)n, sd = Math.Sqrt((1 - p) * p / n);
        Assert.IsTrue(Math.Abs(rate - (1 - p)) < 5 * sd, $"keep rate {rate} vs {1 - p} (±{5 * sd:g3})");
        double mean = v.Average(f => (double)f);
        Assert.IsTrue(Math.Abs(mean - 1) < 5 * sd * scale, $"mean {mean}");
    }

    [TestMethod]
    public void MasksDependOnSeedAndOffsetOnly()
    {
        var be = Backend.Cpu;
        using var x = be.FromDoubles(Enumerable.Range(1, 1000).Select(i => (double)i).ToArray(), [10, 100], DType.F64);
        using var a = be.Empty([10, 100], DType.F64); using var b = be.Empty([10, 100], DType.F64);
        using var c = be.Empty([10, 100], DType.F64); using var d = be.Empty([10, 100], DType.F64);
        be.Dropout(x, 0.5f, 7, 0, a); be.Dropout(x, 0.5f, 7, 0, b); be.Dropout(x, 0.5f, 8, 0, c); be.Dropout(x, 0.5f, 7, 1000, d);
        var av = a.ToDoubleArray();
        CollectionAssert.AreEqual(av, b.ToDoubleArray());
        Assert.IsTrue(av.Zip(c.ToDoubleArray()).Count(z => (z.First == 0) != (z.Second == 0)) > 300, "another seed gives another mask");
        Assert.IsTrue(av.Zip(d.ToDoubleArray()).Count(z => (z.First == 0) != (z.Second == 0)) > 300, "another offset gives another mask");
        // offset shifts the counter: element e with offset k is element e+k with offset 0
        using var big = be.Empty([2000], DType.F64); using var ones = be.Empty([2000], DType.F64); be.Fill(ones, 1);
        be.Dropout(ones, 0.5f, 7, 0, big);
        var bv = big.ToDoubleArray();
        var dv = d.ToDoubleArray();
        for (int i = 0; i < 1000; i++) Assert.AreEqual(bv[1000 + i] != 0, dv[i] != 0, $"element {i}");
        // p = 0 keeps everything; p = 1 drops everything
        be.Dropout(x, 0f, 7, 0, a); CollectionAssert.AreEqual(x.ToDoubleArray(), a.ToDoubleArray());
        be.Dropout(x, 1f, 7, 0, a); Assert.IsTrue(a.ToDoubleArray().All(v => v == 0));
    }
}
