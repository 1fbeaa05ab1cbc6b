using FiberCuda.Kernels;
using FiberCuda.Runtime;
using static FiberCuda.Tests.Emulator.EmuHarness;

namespace FiberCuda.Tests.Emulator;

/// <summary>Each primitive of kernels/emu/cuda_emu.h, through kernels/tests/emu_selftest.cu, against C# values.</summary>
[TestClass]
[TestCategory("Emulated")]
public sealed class EmulatorTests
{
    const string File = "tests/emu_selftest.cu";

    [TestMethod]
    public void BlockReductionThroughSharedMemoryAndBarriers()
    {
        // More blocks than workers, so workers reuse their thread-local shared memory across blocks.
        const int threads = 256, blocks = 37;
        int n = threads * blocks - 5;
        var rng = new Random(1);
        var x = Enumerable.Range(0, n).Select(_ => (float)rng.Next(-1000, 1000) / 8).ToArray(); // exact in fp32 sums
        var dx = Upload(x);
        var dout = Zeros<float>(blocks);
        Launch(File, "block_sum_tree", (uint)blocks, threads, 0, dx, dout, n);
        var got = Download<float>(dout, blocks);
        for (int b = 0; b < blocks; b++)
        {
            double want = 0;
            for (int i = b * threads; i < Math.Min(n, (b + 1) * threads); i++) want += x[i];
            Assert.AreEqual(want, got[b], 0.0, $"block {b}");
        }
        Device.Free(dx); Device.Free(dout);
    }

    [TestMethod]
    public void WarpSumsByXorAndDownShuffles()
    {
        const int threads = 128, blocks = 3, n = threads * blocks;
        var rng = new Random(2);
        var x = Enumerable.Range(0, n).Select(_ => (float)rng.Next(-64, 64)).ToArray();
        var dx = Upload(x);
        var dout = Zeros<float>(2 * n / 32);
        Launch(File, "warp_sums", blocks, threads, 0, dx, dout);
        var got = Download<float>(dout, 2 * n / 32);
        for (int w = 0; w < n / 32; w++)
        {
            float want = x.Skip(w * 32).Take(32).Sum();
            Assert.AreEqual(want, got[2 * w], $"xor warp {w}");
            Assert.AreEqual(want, got[2 * w + 1], $"down warp {w}");
        }
        Device.Free(dx); Device.Free(dout);
    }

    [TestMethod]
    public void EarlyReturnBeforeBarrierIsReportedAsDeadlock()
    {
        var dout = Zeros<float>(64);
        var e = Assert.ThrowsExactly<EmuLaunchException>(() => Launch(File, "deadlock_early_return", 2, 64, 0, dout));
        StringAssert.Contains(e.Message, "deadlock");
        StringAssert.Contains(e.Message, "deadlock_early_return");
        StringAssert.Contains(e.Message, "32 threads exited");
        Device.Free(dout);
    }

    [TestMethod]
    public void WarpCollectiveAgainstBarrierIsReportedAsDeadlock()
    {
        var dout = Zeros<float>(64);
        var e = Assert.ThrowsExactly<EmuLaunchException>(() => Launch(File, "deadlock_warp", 1, 64, 0, dout));
        StringAssert.Contains(e.Message, "deadlock");
        StringAssert.Contains(e.Message, "__shfl_sync");
        Device.Free(dout);
    }

    [TestMethod]
    public void OversizedBlockFailsTheLaunch()
    {
        var dout = Zeros<float>(1);
        var e = Assert.ThrowsExactly<EmuLaunchException>(() => Launch(File, "block_sum_tree", 1, 2048, 0, dout, dout, 1));
        StringAssert.Contains(e.Message, "invalid block dimensions (2048,1,1)");
        Assert.ThrowsExactly<EmuLaunchException>(() => Launch(File, "block_sum_tree", 1, new Dim3(32, 32, 2), 0, dout, dout, 1));
        Device.Free(dout);
    }
}
