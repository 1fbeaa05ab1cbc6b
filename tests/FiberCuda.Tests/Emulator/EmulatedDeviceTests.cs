using FiberCuda.Backends.Cpu;
using FiberCuda.Kernels;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Emulator;

/// <summary>The IGpuDevice surface of <see cref="EmulatedDevice"/> (memory, copies, GEMM, timer).</summary>
[TestClass]
[TestCategory("Emulated")]
public sealed unsafe class EmulatedDeviceTests
{
    [TestMethod]
    public void ReportsItselfAsAnEmulatedSm80()
    {
        using var d = new EmulatedDevice();
        Assert.IsTrue(d.IsEmulated);
        Assert.AreEqual(80, d.ComputeCapability);
        Assert.IsTrue(d.TotalMemory > 0);
    }

    [TestMethod]
    public void AllocationsAreAlignedAndCopiesRoundTrip()
    {
        using var d = new EmulatedDevice();
        var a = d.Malloc(1000);
        var b = d.Malloc(1000);
        Assert.AreEqual(0, a % 256);
        Assert.AreEqual(0, b % 256);
        var src = Enumerable.Range(0, 250).Select(i => i * 3 - 100).ToArray();
        var back = new int[250];
        fixed (int* s = src) d.CopyHostToDevice(a, s, 1000);
        d.CopyDeviceToDevice(b, a, 1000);
        d.Memset(a, 0, 1000);
        fixed (int* r = back) d.CopyDeviceToHost(r, b, 1000);
        CollectionAssert.AreEqual(src, back);
        fixed (int* r = back) d.CopyDeviceToHost(r, a, 1000);
        Assert.IsTrue(back.All(v => v == 0));
        Assert.AreEqual(2000, d.AllocatedBytes);
        d.Free(a);
        d.Free(b);
        Assert.AreEqual(0, d.AllocatedBytes);
        Assert.AreEqual(0, d.Malloc(0));
    }

    [TestMethod]
    public void OutOfRangeCopiesAndDoubleFreesThrow()
    {
        using var d = new EmulatedDevice();
        var a = d.Malloc(64);
        var host = (byte*)System.Runtime.InteropServices.NativeMemory.Alloc(128);
        try
        {
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => d.CopyHostToDevice(a, host, 65));
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => d.CopyDeviceToHost(host, a + 8, 64));
            d.CopyDeviceToHost(host, a + 8, 56);
        }
        finally { System.Runtime.InteropServices.NativeMemory.Free(host); }
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => d.Memset(a + 64, 0, 1));
        d.Free(a);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => d.Memset(a, 0, 1), "freed memory is not a live allocation");
        Assert.ThrowsExactly<InvalidOperationException>(() => d.Free(a));
    }

    [TestMethod]
    public void GemmIsTheCpuReference()
    {
        using var d = new EmulatedDevice();
        const int M = 5, N = 7, K = 3;
        var rng = new Random(1);
        var a = Enumerable.Range(0, M * K).Select(_ => (float)rng.NextDouble()).ToArray();
        var b = Enumerable.Range(0, K * N).Select(_ => (float)rng.NextDouble()).ToArray();
        nint da = d.Malloc(a.Length * 4), db = d.Malloc(b.Length * 4), dc = d.Malloc(M * N * 4);
        fixed (float* p = a) d.CopyHostToDevice(da, p, a.Length * 4);
        fixed (float* p = b) d.CopyHostToDevice(db, p, b.Length * 4);
        d.Gemm(new GemmDesc(da, db, dc, 0, DType.F32, DType.F32, DType.F32, M, N, K, false, false, 1f, 0f, 1, 0, 0, 0));
        var c = new float[M * N];
        fixed (float* p = c) d.CopyDeviceToHost(p, dc, c.Length * 4);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
            {
                double want = 0;
                for (int k = 0; k < K; k++) want += (double)a[i * K + k] * b[k * N + j];
                Assert.AreEqual(want, c[i * N + j], 1e-6);
            }
    }

    [TestMethod]
    public void TimerMeasuresWallClock()
    {
        using var d = new EmulatedDevice();
        using var t = d.CreateTimer();
        t.Start();
        Thread.Sleep(20);
        t.Stop();
        Assert.IsTrue(t.ElapsedMs() >= 15, $"{t.ElapsedMs()} ms");
    }

    [TestMethod]
    public void LaunchErrorsNameTheKernel()
    {
        using var d = new EmulatedDevice();
        var k = d.GetKernel("tests/emu_selftest.cu", "deadlock_early_return");
        var buf = d.Malloc(256);
        var e = Assert.ThrowsExactly<EmuLaunchException>(() =>
        {
            nint p = buf;
            void* arg = &p;
            d.Launch(k, 1, 64, 0, &arg);
        });
        Assert.AreEqual("deadlock_early_return", e.Kernel);
        Assert.AreEqual("tests/emu_selftest.cu", e.KernelFile);
        d.Free(buf);
    }

    [TestMethod]
    public void ManagedNullReferencesStillWorkBesideTheCrashHandler()
    {
        // Launching starts the kernel library's workers and installs its SIGSEGV reporter, which must
        // pass the runtime's own null-reference faults through untouched.
        using var d = new EmulatedDevice();
        var buf = d.Malloc(64 * 4);
        Launch(d, d.GetKernel("tests/emu_selftest.cu", "block_sum_tree"), 0, buf, buf, 0);
        string? s = Environment.GetEnvironmentVariable("FIBERCUDA_SURELY_UNSET_" + Guid.NewGuid().ToString("N"));
        Assert.ThrowsExactly<NullReferenceException>(() => _ = s!.Length);
        Assert.ThrowsExactly<NullReferenceException>(() => Task.Run(() => s!.Length).GetAwaiter().GetResult());
        d.Free(buf);
    }

    [TestMethod]
    public void ScheduleOrderExposesAMissingBarrier()
    {
        using var d = new EmulatedDevice();
        const int n = 128;
        var x = Enumerable.Range(0, n).Select(i => i + 1f).ToArray();
        nint dx = d.Malloc(n * 4), dy = d.Malloc(n * 4), dsum = d.Malloc(4);
        fixed (float* p = x) d.CopyHostToDevice(dx, p, n * 4);
        var bad = d.GetKernel("tests/emu_selftest.cu", "missing_barrier");
        var good = d.GetKernel("tests/emu_selftest.cu", "block_sum_tree");
        var wrong = new Dictionary<EmuSchedule, int>();
        foreach (var order in new[] { EmuSchedule.Forward, EmuSchedule.Reverse, EmuSchedule.Random })
        {
            d.Schedule = order;
            Launch(d, bad, n * 4, dx, dy);
            var y = new float[n];
            fixed (float* p = y) d.CopyDeviceToHost(p, dy, n * 4);
            wrong[order] = Enumerable.Range(0, n).Count(t => y[t] != x[(t + 1) % n]);
            // A kernel with its barriers is order-independent.
            Launch(d, good, 0, dx, dsum, n);
            float sum;
            d.CopyDeviceToHost(&sum, dsum, 4);
            Assert.AreEqual(x.Sum(), sum, $"block_sum_tree in {order} order");
        }
        // Forward: every thread but the last reads before its neighbour wrote; reverse: only the last does.
        Assert.AreEqual(n - 1, wrong[EmuSchedule.Forward]);
        Assert.AreEqual(1, wrong[EmuSchedule.Reverse]);
        Assert.IsTrue(wrong[EmuSchedule.Random] > 1 && wrong[EmuSchedule.Random] < n - 1, $"random order: {wrong[EmuSchedule.Random]} wrong");
        d.Free(dx); d.Free(dy); d.Free(dsum);
    }

    static void Launch(EmulatedDevice d, IKernel k, int smem, params object[] args)
    {
        var vals = new long[args.Length];
        var ptrs = stackalloc void*[args.Length];
        fixed (long* v = vals)
        {
            for (int i = 0; i < args.Length; i++)
            {
                if (args[i] is nint p) v[i] = p; else v[i] = (int)args[i];
                ptrs[i] = v + i;
            }
            d.Launch(k, 1, 128, smem, ptrs);
        }
    }
}
