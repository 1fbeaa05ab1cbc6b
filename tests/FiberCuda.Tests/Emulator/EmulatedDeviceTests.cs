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
}
