using FiberCuda.Runtime;

namespace FiberCuda.Tests.Native;

[TestClass]
public sealed class CachingAllocatorTests
{
    [TestMethod]
    public void SizeClassesAreMonotoneAndBounded()
    {
        Assert.AreEqual(512, CachingAllocator.RoundSize(0));
        Assert.AreEqual(512, CachingAllocator.RoundSize(1));
        Assert.AreEqual(512, CachingAllocator.RoundSize(512));
        Assert.AreEqual(1024, CachingAllocator.RoundSize(513));
        long prev = 0;
        var rng = new Random(1);
        for (int i = 0; i < 20000; i++)
        {
            long n = i < 10000 ? i * 37L : (long)(rng.NextDouble() * (1L << 34));
            long r = CachingAllocator.RoundSize(n);
            Assert.IsGreaterThanOrEqualTo(n, r, $"class {r} < request {n}");
            Assert.AreEqual(0, r % 512, $"class {r} not a multiple of 512");
            Assert.IsLessThanOrEqualTo(Math.Max(512, n * 1.25 + 512), (double)r, $"class {r} wastes too much for {n}");
            if (i < 10000) { Assert.IsGreaterThanOrEqualTo(prev, r); prev = r; }
        }
    }

    [TestMethod]
    public void FreedBlocksAreReusedAndSteadyStateHasNoRawMallocs()
    {
        using var dev = new HostFakeDevice();
        using var a = new CachingAllocator(dev);
        long[] sizes = [100, 4096, 70_000, 1 << 20, 3_000_000, 100, 12345];
        for (int step = 0; step < 10; step++)
        {
            var ptrs = sizes.Select(s => a.Alloc(s)).ToArray();
            Assert.AreEqual(ptrs.Length, ptrs.Distinct().Count(), "two live allocations share a pointer");
            foreach (var p in ptrs) a.Free(p);
            if (step == 0) Assert.AreEqual(sizes.Length, (int)a.Stats.RawMallocs);
        }
        var st = a.Stats;
        Assert.AreEqual(sizes.Length, (int)st.RawMallocs, "steady-state loop allocated from the device");
        Assert.AreEqual(9 * sizes.Length, (int)st.CacheHits);
        Assert.AreEqual(0, st.BytesInUse);
        Assert.AreEqual(sizes.Sum(CachingAllocator.RoundSize), st.BytesCached);
        Assert.AreEqual(sizes.Sum(CachingAllocator.RoundSize), st.PeakBytesInUse);
        Assert.AreEqual(sizes.Length, dev.LiveBlocks);

        a.EmptyCache();
        Assert.AreEqual(0, dev.LiveBlocks);
        Assert.AreEqual(0, a.Stats.BytesCached);
        Assert.AreEqual(sizes.Length, (int)a.Stats.RawFrees);
    }

    [TestMethod]
    public void SameClassReusesSamePointer()
    {
        using var dev = new HostFakeDevice();
        using var a = new CachingAllocator(dev);
        var p = a.Alloc(1000);
        a.Free(p);
        var q = a.Alloc(1020); // same 1024-byte class
        Assert.AreEqual(p, q);
        var r = a.Alloc(1000); // p is live again: must be a new block
        Assert.AreNotEqual(q, r);
        Assert.AreEqual(2, (int)a.Stats.RawMallocs);
    }

    [TestMethod]
    public void DoubleFreeThrows()
    {
        using var dev = new HostFakeDevice();
        using var a = new CachingAllocator(dev);
        var p = a.Alloc(10);
        a.Free(p);
        Assert.ThrowsExactly<InvalidOperationException>(() => a.Free(p));
    }

    [TestMethod]
    public void OutOfMemoryFlushesCacheAndRetries()
    {
        using var dev = new HostFakeDevice(capacity: 64 * 1024);
        using var a = new CachingAllocator(dev);
        var p = a.Alloc(40 * 1024);
        a.Free(p); // cached, still held on the device
        var q = a.Alloc(48 * 1024); // does not fit beside the cached block
        Assert.AreEqual(0, a.Stats.BytesCached);
        Assert.AreEqual(1, (int)a.Stats.RawFrees);
        a.Free(q);
    }

    [TestMethod]
    public void ThreadSafeUnderConcurrentAllocAndFree()
    {
        using var dev = new HostFakeDevice();
        using var a = new CachingAllocator(dev);
        Parallel.For(0, 8, t =>
        {
            var rng = new Random(t);
            var mine = new List<nint>();
            for (int i = 0; i < 2000; i++)
            {
                if (mine.Count > 0 && rng.Next(2) == 0)
                {
                    int k = rng.Next(mine.Count);
                    a.Free(mine[k]);
                    mine.RemoveAt(k);
                }
                else mine.Add(a.Alloc(rng.Next(1, 20000)));
            }
            foreach (var p in mine) a.Free(p);
        });
        var st = a.Stats;
        Assert.AreEqual(0, st.BytesInUse);
        Assert.AreEqual(0, st.LiveBlocks);
        Assert.AreEqual(st.BytesCached, dev.Used, "cache accounting disagrees with the device");
    }
}
