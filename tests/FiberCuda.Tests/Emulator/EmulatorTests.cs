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

    [TestMethod]
    public void BuiltInIndicesCoverThreeDimensionalGridsAndBlocks()
    {
        var grid = new Dim3(3, 2, 2);
        var block = new Dim3(4, 3, 2);
        int blocks = 12, threads = 24;
        nint dout = Zeros<int>(blocks * threads * 6), ddims = Zeros<int>(6);
        Launch(File, "index_probe", grid, block, 0, dout, ddims);
        var got = Download<int>(dout, blocks * threads * 6);
        CollectionAssert.AreEqual(new[] { 4, 3, 2, 3, 2, 2 }, Download<int>(ddims, 6));
        for (int bz = 0; bz < 2; bz++) for (int by = 0; by < 2; by++) for (int bx = 0; bx < 3; bx++)
        for (int tz = 0; tz < 2; tz++) for (int ty = 0; ty < 3; ty++) for (int tx = 0; tx < 4; tx++)
        {
            int bl = bx + 3 * (by + 2 * bz), tl = tx + 4 * (ty + 3 * tz);
            CollectionAssert.AreEqual(new[] { tx, ty, tz, bx, by, bz }, got.AsSpan((bl * threads + tl) * 6, 6).ToArray(), $"block {bl} thread {tl}");
        }
        Device.Free(dout); Device.Free(ddims);
    }

    // CUDA Programming Guide, warp shuffle functions: lanes are split into groups of `width`.
    static int ShflSource(int kind, int lane, int b, int width)
    {
        int group = lane / width * width, li = lane % width;
        return kind switch
        {
            0 => group + (lane * b + 3) % width,                                  // __shfl_sync: srcLane modulo width, within the group
            1 => li >= b ? lane - b : lane,                                       // __shfl_up_sync: own value below delta
            2 => li + b < width ? lane + b : lane,                                // __shfl_down_sync: own value past the group end
            _ => (lane ^ b) < group + width ? lane ^ b : lane,                    // __shfl_xor_sync: later groups are out of reach
        };
    }

    [TestMethod]
    [DataRow(1, 32)]
    [DataRow(3, 8)]
    [DataRow(5, 16)]
    [DataRow(16, 32)]
    [DataRow(2, 4)]
    [DataRow(7, 32)]
    [DataRow(16, 8)]
    [DataRow(9, 8)]
    public void ShufflesOfEveryKindAndTypeMatchTheCudaRules(int b, int width)
    {
        const int threads = 64;
        var rng = new Random(b * 100 + width);
        var input = Enumerable.Range(0, threads).Select(_ => rng.Next(-100000, 100000)).ToArray();
        nint din = Upload(input), dout = Zeros<long>(16 * threads);
        Launch(File, "shfl_probe", 1, threads, 0, din, dout, b, width);
        var got = Download<long>(dout, 16 * threads);
        for (int t = 0; t < threads; t++)
            for (int kind = 0; kind < 4; kind++)
            {
                int s = (t & ~31) + ShflSource(kind, t & 31, b, width);
                int v = input[s];
                long[] want = [v, BitConverter.SingleToInt32Bits(v + 0.5f), BitConverter.DoubleToInt64Bits(v * 1099511627776.0 + 0.25), ((long)v << 33) + 7];
                for (int type = 0; type < 4; type++)
                    Assert.AreEqual(want[type], got[(kind * 4 + type) * threads + t], $"thread {t} kind {kind} type {type} (b={b}, width={width})");
            }
        Device.Free(din); Device.Free(dout);
    }

    [TestMethod]
    public void ShuffleFromAnExitedLaneIsPoisoned()
    {
        var x = Enumerable.Range(0, 32).Select(i => i + 0.5f).ToArray();
        nint dx = Upload(x), dout = Zeros<float>(16);
        Launch(File, "shfl_from_exited", 1, 32, 0, dx, dout);
        foreach (var v in Download<float>(dout, 16)) Assert.IsTrue(float.IsNaN(v), $"read {v} from an exited lane");
        Device.Free(dx); Device.Free(dout);
    }

    [TestMethod]
    public void VotesAndBarrierPredicates()
    {
        const int threads = 96;
        var rng = new Random(5);
        var pred = Enumerable.Range(0, threads).Select(_ => rng.Next(3) == 0 ? 0 : rng.Next(1, 5)).ToArray();
        pred[32..64].AsSpan().Fill(1);  // one warp where __all_sync is true
        nint dp = Upload(pred), dout = Zeros<uint>(threads * 9);
        Launch(File, "vote_probe", 1, threads, 0, dp, dout);
        var got = Download<uint>(dout, threads * 9);
        int count = pred.Count(p => p != 0);
        for (int t = 0; t < threads; t++)
        {
            int w = t / 32;
            uint ballot = 0, even = 0;
            for (int l = 0; l < 32; l++)
                if (pred[w * 32 + l] != 0) { ballot |= 1u << l; if (l % 2 == 0) even |= 1u << l; }
            bool isEven = t % 2 == 0;
            uint[] want =
            [
                ballot, ballot == 0xffffffffu ? 1u : 0u, ballot != 0 ? 1u : 0u,
                isEven ? even : 0u, isEven && even == 0x55555555u ? 1u : 0u, isEven && even != 0 ? 1u : 0u,
            ];
            CollectionAssert.AreEqual(want, got.AsSpan(t * 6, 6).ToArray(), $"thread {t}");
            CollectionAssert.AreEqual(new uint[] { (uint)count, count == threads ? 1u : 0u, count > 0 ? 1u : 0u },
                got.AsSpan(threads * 6 + t * 3, 3).ToArray(), $"__syncthreads_count/and/or, thread {t}");
        }
        Device.Free(dp); Device.Free(dout);
    }

    [TestMethod]
    public void AtomicsFromManyConcurrentBlocks()
    {
        const int threads = 128, blocks = 64, n = threads * blocks - 77;
        var rng = new Random(9);
        var vals = Enumerable.Range(0, n).Select(_ => rng.Next(-1000, 1000)).ToArray();
        nint dv = Upload(vals);
        nint dacc = Upload(new[] { 0, int.MinValue, int.MaxValue, 0, -1, -1, 0, 0, 0 });
        nint du = Zeros<uint>(1), dull = Zeros<ulong>(1), df = Zeros<float>(1), dd = Zeros<double>(1), dorder = Zeros<int>(n);
        Launch(File, "atomics_probe", blocks, threads, 0, dv, dacc, du, dull, df, dd, dorder, n);
        var acc = Download<int>(dacc, 9);
        Assert.AreEqual(vals.Sum(), acc[0], "atomicAdd int");
        Assert.AreEqual(vals.Max(), acc[1], "atomicMax");
        Assert.AreEqual(vals.Min(), acc[2], "atomicMin");
        Assert.AreEqual(n, acc[3], "atomicCAS increments");
        Assert.IsTrue(acc[4] >= 0 && acc[4] < n, "atomicExch leaves one thread's value");
        Assert.AreEqual(vals.Aggregate(-1, (a, v) => a & (v | 0x0F0F0000)), acc[5], "atomicAnd");
        Assert.AreEqual(vals.Aggregate(0, (a, v) => a | v), acc[6], "atomicOr");
        Assert.AreEqual(vals.Aggregate(0, (a, v) => a ^ v), acc[7], "atomicXor");
        Assert.AreEqual(n, acc[8], "ticket counter");
        Assert.AreEqual(vals.Aggregate(0u, (a, v) => unchecked(a + (uint)v)), Download<uint>(du, 1)[0], "atomicAdd unsigned");
        Assert.AreEqual(vals.Aggregate(0ul, (a, v) => unchecked(a + ((ulong)(uint)v << 20))), Download<ulong>(dull, 1)[0], "atomicAdd u64");
        Assert.AreEqual((float)n, Download<float>(df, 1)[0], "atomicAdd float");
        Assert.AreEqual(vals.Sum(v => v * 0.5), Download<double>(dd, 1)[0], "atomicAdd double");
        var order = Download<int>(dorder, n);
        CollectionAssert.AreEqual(Enumerable.Range(0, n).ToArray(), order.Order().ToArray(), "every ticket handed out once");
        foreach (var p in new[] { dv, dacc, du, dull, df, dd, dorder }) Device.Free(p);
    }

    [TestMethod]
    public void DynamicSharedMemoryIsPerBlockAndChecked()
    {
        const int threads = 256, blocks = 23;
        var rng = new Random(3);
        var x = Enumerable.Range(0, threads * blocks).Select(_ => (float)rng.NextDouble()).ToArray();
        nint dx = Upload(x), dy = Zeros<float>(x.Length), dclash = Zeros<int>(1);
        var k = Device.GetKernel(File, "dyn_smem_reverse");
        LaunchKernel(k, blocks, threads, threads * 4, dx, dy, dclash);
        var y = Download<float>(dy, x.Length);
        for (int b = 0; b < blocks; b++)
            for (int t = 0; t < threads; t++)
                Assert.AreEqual(x[b * threads + threads - 1 - t], y[b * threads + t], $"block {b} thread {t}");
        Assert.AreEqual(0, Download<int>(dclash, 1)[0], "another block wrote this block's dynamic shared memory");

        // Past 48 KB needs the attribute raised, as on CUDA; past the device limit it cannot be.
        var e = Assert.ThrowsExactly<EmuLaunchException>(() => LaunchKernel(k, 1, threads, 64 * 1024, dx, dy, dclash));
        StringAssert.Contains(e.Message, "exceeds the kernel's configured maximum");
        k.MaxDynamicSharedBytes = 100 * 1024;
        LaunchKernel(k, 1, threads, 64 * 1024, dx, dy, dclash);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => k.MaxDynamicSharedBytes = EmulatedDevice.MaxDynamicSharedBytesLimit + 1);
        foreach (var p in new[] { dx, dy, dclash }) Device.Free(p);
    }

    // Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), so the check does not lean on the emulator's libm.
    static double Erf(double x)
    {
        double t = 1 / (1 + 0.3275911 * Math.Abs(x));
        double y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.Exp(-x * x);
        return x < 0 ? -y : y;
    }

    [TestMethod]
    public void MathIntrinsics()
    {
        const int n = 300;
        var rng = new Random(4);
        var x = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 6 - 3)).ToArray();
        x[0] = 0.25f; x[1] = -0.05f; x[2] = 0.15f;  // ties for the rounding conversions (×10 = 2.5, -0.5, 1.5)
        nint dx = Upload(x), dout = Zeros<float>(n * 16);
        Launch(File, "math_probe", (n + 127) / 128, 128, 0, dx, dout, n);
        var got = Download<float>(dout, n * 16);
        for (int i = 0; i < n; i++)
        {
            double v = x[i];
            double[] want =
            [
                Math.Exp(v), Math.Exp(v), Math.Log(Math.Abs(v) + 1), Erf(v), 1 / Math.Sqrt(Math.Abs(v) + 0.5), Math.Sqrt(Math.Abs(v)),
                Math.Max(v, 0.25), Math.Min(v, 0.25), Math.Tanh(v), Math.Abs(v), v / 3, -v,
                Math.Round(x[i] * 10f, MidpointRounding.ToEven), Math.Min(Math.Truncate(x[i] * 10f), 7), Math.Max(v, -0.5), 2 * v,
            ];
            for (int k = 0; k < 16; k++)
                Assert.AreEqual(want[k], got[i * 16 + k], 2e-6 * Math.Max(1, Math.Abs(want[k])), $"x={x[i]} function {k}");
        }
        Device.Free(dx); Device.Free(dout);
    }

    [TestMethod]
    public void WarpReduceAndActiveMaskWithAPartialWarp()
    {
        const int threads = 80;  // the third warp has 16 lanes; absent lanes count as exited
        var rng = new Random(8);
        var x = Enumerable.Range(0, threads).Select(_ => rng.Next(-500, 500)).ToArray();
        nint dx = Upload(x), dout = Zeros<int>(12);
        Launch(File, "reduce_probe", 1, threads, 0, dx, dout);
        var got = Download<int>(dout, 12);
        for (int w = 0; w < 3; w++)
        {
            var lanes = x.Skip(w * 32).Take(32).ToArray();
            CollectionAssert.AreEqual(new[] { lanes.Sum(), lanes.Min(), lanes.Max(), w < 2 ? -1 : 0xFFFF }, got.AsSpan(w * 4, 4).ToArray(), $"warp {w}");
        }
        Device.Free(dx); Device.Free(dout);
    }

    [TestMethod]
    public void ScalarSharedVariableIsSeenByAllThreadsAfterABarrier()
    {
        const int threads = 96, rounds = 40;
        var rng = new Random(6);
        var x = Enumerable.Range(0, rounds).Select(_ => rng.Next()).ToArray();
        nint dx = Upload(x), dout = Zeros<int>(rounds * threads);
        Launch(File, "shared_scalar_broadcast", 2, threads, 0, dx, dout, rounds);
        var got = Download<int>(dout, rounds * threads);
        for (int r = 0; r < rounds; r++)
            for (int t = 0; t < threads; t++)
                Assert.AreEqual(x[r], got[r * threads + t], $"round {r} thread {t}");
        Device.Free(dx); Device.Free(dout);
    }

    [TestMethod]
    public void UnknownKernelNameListsTheFilesKernels()
    {
        var e = Assert.ThrowsExactly<ArgumentException>(() => Device.GetKernel(File, "no_such_kernel"));
        StringAssert.Contains(e.Message, "block_sum_tree");
    }
}
