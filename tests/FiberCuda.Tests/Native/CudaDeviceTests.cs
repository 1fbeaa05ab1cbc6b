using FiberCuda.Backends.Cpu;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Native;

/// <summary>Real-GPU checks of the driver bindings, cuBLASLt GEMM and launches; inconclusive without a GPU.</summary>
[TestClass]
[TestCategory("Gpu")]
[DoNotParallelize]
public sealed unsafe class CudaDeviceTests
{
    static CudaDevice? _dev;
    static string _reason = "";

    [ClassInitialize]
    public static void ClassInit(TestContext _)
    {
        if (!CudaDevice.TryCreate(out _dev, out _reason)) _dev = null;
    }

    [ClassCleanup]
    public static void ClassCleanup()
    {
        _dev?.Dispose();
        _dev = null;
    }

    static CudaDevice Dev
    {
        get
        {
            if (_dev is null) Assert.Inconclusive("no GPU: " + _reason);
            return _dev!;
        }
    }

    [TestMethod]
    public void ReportsDevice()
    {
        var d = Dev;
        Assert.IsGreaterThanOrEqualTo(50, d.ComputeCapability);
        Assert.IsGreaterThan(0L, d.TotalMemory);
        Assert.IsGreaterThan(0, d.MultiprocessorCount);
        Assert.IsGreaterThanOrEqualTo(48 * 1024, d.MaxSharedMemoryPerBlockOptin);
        var (free, total) = d.MemoryInfo();
        Assert.IsGreaterThan(0L, free);
        Assert.AreEqual(d.TotalMemory, total);
        Console.WriteLine($"{d}; libcuda: {FiberCuda.Native.CuDriver.LibraryPath}");
        Console.WriteLine($"NVRTC {FiberCuda.Kernels.NvrtcCompiler.Shared.Version} at {FiberCuda.Native.Nvrtc.LibraryPath}, " +
                          $"archs [{string.Join(",", FiberCuda.Kernels.NvrtcCompiler.Shared.SupportedArchs)}]");
        Console.WriteLine($"cuBLASLt {FiberCuda.Native.CublasLtGemm.Version} at {FiberCuda.Native.CublasLt.LibraryPath}");
    }

    [TestMethod]
    public void CopyRoundTripAndMemset()
    {
        var d = Dev;
        const int n = 1 << 20;
        var src = new float[n];
        var rng = new Random(3);
        for (int i = 0; i < n; i++) src[i] = (float)rng.NextDouble();
        nint a = d.Malloc(n * 4), b = d.Malloc(n * 4);
        try
        {
            fixed (float* p = src) d.CopyHostToDevice(a, p, n * 4L);
            d.CopyDeviceToDevice(b, a, n * 4L);
            var back = new float[n];
            fixed (float* p = back) d.CopyDeviceToHost(p, b, n * 4L);
            CollectionAssert.AreEqual(src, back);

            d.Memset(b + 4 * 100, 0x3f, 4 * 10); // bytes 0x3f3f3f3f in 10 floats
            fixed (float* p = back) d.CopyDeviceToHost(p, b, n * 4L);
            for (int i = 0; i < n; i++)
            {
                float want = i is >= 100 and < 110 ? BitConverter.UInt32BitsToSingle(0x3f3f3f3f) : src[i];
                if (back[i] != want) Assert.Fail($"element {i}: {back[i]} != {want}");
            }
        }
        finally { d.Free(a); d.Free(b); }
    }

    [TestMethod]
    public void PinnedHostMemoryRoundTrip()
    {
        var d = Dev;
        const int n = 4096;
        nint h = d.MallocHost(n * 4), g = d.Malloc(n * 4);
        try
        {
            var hp = (int*)h;
            for (int i = 0; i < n; i++) hp[i] = i * 7;
            d.CopyHostToDevice(g, hp, n * 4L);
            for (int i = 0; i < n; i++) hp[i] = -1;
            d.CopyDeviceToHost(hp, g, n * 4L);
            for (int i = 0; i < n; i++) Assert.AreEqual(i * 7, hp[i]);
        }
        finally { d.Free(g); d.FreeHost(h); }
    }

    [TestMethod]
    public void CachingAllocatorReusesDeviceBlocks()
    {
        var d = Dev;
        using var a = new CachingAllocator(d);
        for (int step = 0; step < 5; step++)
        {
            var p = new[] { a.Alloc(1000), a.Alloc(1 << 20), a.Alloc(77_777) };
            d.Memset(p[1], 1, 1 << 20);
            foreach (var x in p) a.Free(x);
        }
        Assert.AreEqual(3, (int)a.Stats.RawMallocs);
        a.EmptyCache();
        Assert.AreEqual(3, (int)a.Stats.RawFrees);
    }

    [TestMethod]
    public void ContextIsBoundOnOtherThreads()
    {
        var d = Dev;
        // Thread-pool threads have no current context until the device binds it.
        var t = Task.Run(() =>
        {
            nint p = d.Malloc(256);
            d.Memset(p, 0, 256);
            d.Free(p);
        });
        t.Wait();
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void LaunchKernelAndReadResult(bool ptx)
    {
        var d = Dev;
        var k = d.GetKernelFromSource("native_test", NvrtcTests.TestKernels, "axpb", forcePtx: ptx);
        const int n = 10_000;
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = i * 0.5f - 7;
        nint dx = d.Malloc(n * 4), dy = d.Malloc(n * 4);
        try
        {
            fixed (float* p = x) d.CopyHostToDevice(dx, p, n * 4L);
            ulong py = (ulong)dy, px = (ulong)dx;
            float a = 3f, b = -1.25f;
            int nn = n;
            void** args = stackalloc void*[5];
            args[0] = &py; args[1] = &px; args[2] = &a; args[3] = &b; args[4] = &nn;
            d.Launch(k, (uint)((n + 255) / 256), 256u, 0, args);
            var y = new float[n];
            fixed (float* p = y) d.CopyDeviceToHost(p, dy, n * 4L);
            for (int i = 0; i < n; i++) Assert.AreEqual(3f * x[i] - 1.25f, y[i], $"element {i}");
        }
        finally { d.Free(dx); d.Free(dy); }
    }

    [TestMethod]
    public void EveryEmbeddedKernelLoadsOnTheDevice()
    {
        var d = Dev;
        var files = FiberCuda.Kernels.KernelSource.ListKernelFiles();
        Assert.IsTrue(files.Count >= 10, $"only {files.Count} kernel files embedded: the build lost kernels/*.cu");
        var failures = new List<string>();
        foreach (var f in files)
        {
            try { d.Preload(f); }
            catch (Exception e) { failures.Add($"{f}: {e.Message}"); }
        }
        Assert.IsEmpty(failures, string.Join("\n\n", failures));
    }

    [TestMethod]
    public void LaunchWithMoreThan48KbDynamicSharedMemory()
    {
        var d = Dev;
        var k = d.GetKernelFromSource("native_test", NvrtcTests.TestKernels, "smem_sum");
        int n = Math.Min(30_000, (d.MaxSharedMemoryPerBlockOptin - 1024) / 4); // 120 KB on Hopper
        Assert.IsGreaterThan(48 * 1024, n * 4, "device cannot opt in past 48 KB");
        nint o = d.Malloc(4);
        try
        {
            ulong po = (ulong)o;
            int nn = n;
            void** args = stackalloc void*[2];
            args[0] = &po; args[1] = &nn;
            d.Launch(k, 1u, 256u, n * 4, args);
            uint got;
            d.CopyDeviceToHost(&got, o, 4);
            uint want = 0;
            for (int i = 0; i < n; i++) want += (uint)i;
            Assert.AreEqual(want, got);
        }
        finally { d.Free(o); }
    }

    [TestMethod]
    public void EventTimerMeasuresQueuedWork()
    {
        var d = Dev;
        nint p = d.Malloc(256L << 20);
        try
        {
            using var t = d.CreateTimer();
            t.Start();
            for (int i = 0; i < 10; i++) d.Memset(p, (byte)i, 256L << 20);
            t.Stop();
            float ms = t.ElapsedMs();
            Assert.IsGreaterThan(0f, ms);
            Assert.IsLessThan(10_000f, ms);
            Console.WriteLine($"10 × 256 MiB memset: {ms:F3} ms ({10 * 256.0 / 1024 / (ms / 1000):F0} GiB/s)");
        }
        finally { d.Free(p); }
    }

    // ---------------- GEMM vs the C# reference ----------------

    public static IEnumerable<object[]> GemmCases() =>
    [
        // name, ab, c, bias, M, N, K, transA, transB, alpha, beta, batch
        ["f32 plain", DType.F32, DType.F32, null!, 37, 53, 29, false, false, 1f, 0f, 1],
        ["f32 transA transB bias beta", DType.F32, DType.F32, DType.F32, 64, 40, 33, true, true, 0.5f, 0.75f, 1],
        ["bf16->f32 linear (transB) f32 bias", DType.BF16, DType.F32, DType.F32, 96, 64, 128, false, true, 1f, 0f, 1],
        ["bf16->bf16 bf16 bias batched transA", DType.BF16, DType.BF16, DType.BF16, 48, 72, 40, true, false, 1f, 0f, 3],
        ["bf16->f32 bf16 bias beta batched", DType.BF16, DType.F32, DType.BF16, 32, 48, 64, false, false, 1f, 1f, 2],
        ["bf16->bf16 odd shape", DType.BF16, DType.BF16, null!, 7, 9, 5, false, false, 2f, 0f, 1],
        ["bf16->bf16 f32 bias (may be unsupported)", DType.BF16, DType.BF16, DType.F32, 64, 64, 64, false, true, 1f, 0f, 1],
    ];

    [TestMethod]
    [DynamicData(nameof(GemmCases))]
    public void GemmMatchesCpuReference(string name, DType ab, DType c, DType? bias, int m, int n, int k,
                                        bool ta, bool tb, float alpha, float beta, int batch)
    {
        var d = Dev;
        var rng = new Random(name.GetHashCode() & 0xffff);
        long sa = (long)m * k, sb = (long)k * n, sc = (long)m * n;
        byte[] A = Rand(rng, ab, sa * batch), B = Rand(rng, ab, sb * batch), C0 = Rand(rng, c, sc * batch);
        byte[]? Bias = bias is { } bt ? Rand(rng, bt, n) : null;

        // Reference on host copies.
        var Cref = (byte[])C0.Clone();
        fixed (byte* pa = A) fixed (byte* pb = B) fixed (byte* pc = Cref) fixed (byte* pbias = Bias)
            CpuGemm.Gemm(new GemmDesc((nint)pa, (nint)pb, (nint)pc, (nint)pbias, ab, c, bias ?? c, m, n, k, ta, tb, alpha, beta,
                                      batch, sa, sb, sc));

        nint dA = Upload(d, A), dB = Upload(d, B), dC = Upload(d, C0), dBias = Bias is null ? 0 : Upload(d, Bias);
        try
        {
            var g = new GemmDesc(dA, dB, dC, dBias, ab, c, bias ?? c, m, n, k, ta, tb, alpha, beta, batch, sa, sb, sc);
            if (c == DType.BF16 && bias == DType.F32)
            {
                // Documented limit: neither the epilogue nor the rank-1 fallback covers f32 bias into bf16 C.
                try { d.Gemm(g); }
                catch (NotSupportedException e) { Console.WriteLine($"{name}: NotSupported: {e.Message}"); return; }
            }
            else d.Gemm(g);
            var got = new byte[C0.Length];
            fixed (byte* p = got) d.CopyDeviceToHost(p, dC, got.Length);
            Compare(name, c, Cref, got, k);

            // Same shape again: served from the plan cache, same answer.
            int plans = d.Lt.CachedPlans;
            fixed (byte* p = C0) d.CopyHostToDevice(dC, p, C0.Length);
            d.Gemm(g);
            Assert.AreEqual(plans, d.Lt.CachedPlans, "second identical GEMM built a new plan");
            fixed (byte* p = got) d.CopyDeviceToHost(p, dC, got.Length);
            Compare(name + " (cached)", c, Cref, got, k);

            // The direct, uncached cuBLASLt path agrees too (when the epilogue is supported directly).
            if (d.Lt.BiasFallbackPlans == 0)
            {
                fixed (byte* p = C0) d.CopyHostToDevice(dC, p, C0.Length);
                d.GemmUncached(g);
                fixed (byte* p = got) d.CopyDeviceToHost(p, dC, got.Length);
                Compare(name + " (uncached)", c, Cref, got, k);
            }
            Console.WriteLine($"{name}: ok, {d.Lt.CachedPlans} plans, {d.Lt.BiasFallbackPlans} with rank-1 bias fallback");
        }
        finally { d.Free(dA); d.Free(dB); d.Free(dC); if (dBias != 0) d.Free(dBias); }
    }

    [TestMethod]
    public void GemmOnMisalignedViews()
    {
        // Tensor views start anywhere: the heuristic must be told the real alignment (2 bytes here).
        var d = Dev;
        const int m = 24, n = 40, k = 16;
        var rng = new Random(11);
        byte[] A = Rand(rng, DType.BF16, m * k), B = Rand(rng, DType.BF16, k * n), Bias = Rand(rng, DType.BF16, n);
        var Cref = new byte[m * n * 4];
        fixed (byte* pa = A) fixed (byte* pb = B) fixed (byte* pc = Cref) fixed (byte* pbias = Bias)
            CpuGemm.Gemm(new GemmDesc((nint)pa, (nint)pb, (nint)pc, (nint)pbias, DType.BF16, DType.F32, DType.BF16, m, n, k,
                                      false, false, 1f, 0f, 1, 0, 0, 0));
        nint bufA = d.Malloc(A.Length + 256), bufB = d.Malloc(B.Length + 256), bufC = d.Malloc(Cref.Length + 256), dBias = Upload(d, Bias);
        try
        {
            nint dA = bufA + 2, dB = bufB + 6, dC = bufC + 4;
            fixed (byte* p = A) d.CopyHostToDevice(dA, p, A.Length);
            fixed (byte* p = B) d.CopyHostToDevice(dB, p, B.Length);
            d.Gemm(new GemmDesc(dA, dB, dC, dBias, DType.BF16, DType.F32, DType.BF16, m, n, k, false, false, 1f, 0f, 1, 0, 0, 0));
            var got = new byte[Cref.Length];
            fixed (byte* p = got) d.CopyDeviceToHost(p, dC, got.Length);
            Compare("misaligned", DType.F32, Cref, got, k);
        }
        finally { d.Free(bufA); d.Free(bufB); d.Free(bufC); d.Free(dBias); }
    }

    [TestMethod]
    public void GemmThroughputCachedVersusDirect()
    {
        var d = Dev;
        const int s = 4096;
        nint a = d.Malloc((long)s * s * 2), b = d.Malloc((long)s * s * 2), c = d.Malloc((long)s * s * 2);
        try
        {
            // Non-zero data (bf16 0x3c00 ≈ 0.0078): zeros flatter tensor-core throughput.
            d.Memset(a, 0x3c, (long)s * s * 2);
            d.Memset(b, 0x3c, (long)s * s * 2);
            var g = new GemmDesc(a, b, c, 0, DType.BF16, DType.BF16, DType.BF16, s, s, s, false, true, 1f, 0f, 1, 0, 0, 0);
            double Time(Action run)
            {
                run(); d.Synchronize();
                using var t = d.CreateTimer();
                t.Start();
                for (int i = 0; i < 20; i++) run();
                t.Stop();
                return t.ElapsedMs() / 20;
            }
            double cached = Time(() => d.Gemm(g)), direct = Time(() => d.GemmUncached(g));
            double tf = 2.0 * s * s * s / 1e12;
            Console.WriteLine($"4096³ bf16 GEMM: engine {cached:F3} ms ({tf / (cached / 1000):F0} TFLOP/s), " +
                              $"direct cuBLASLt {direct:F3} ms ({tf / (direct / 1000):F0} TFLOP/s)");
            if (d.ComputeCapability >= 90) Assert.IsGreaterThan(100.0, tf / (cached / 1000), "bf16 GEMM far below Hopper tensor-core rates");
        }
        finally { d.Free(a); d.Free(b); d.Free(c); }
    }

    static byte[] Rand(Random rng, DType t, long count)
    {
        var bytes = new byte[count * t.Size()];
        fixed (byte* p = bytes)
            for (long i = 0; i < count; i++)
            {
                float v = (float)(rng.NextDouble() * 2 - 1);
                if (t == DType.F32) ((float*)p)[i] = v;
                else ((ushort*)p)[i] = BFloat16.FromFloat(v);
            }
        return bytes;
    }

    static nint Upload(CudaDevice d, byte[] data)
    {
        nint p = d.Malloc(data.Length);
        fixed (byte* s = data) d.CopyHostToDevice(p, s, data.Length);
        return p;
    }

    static void Compare(string name, DType t, byte[] want, byte[] got, int k)
    {
        int n = want.Length / t.Size();
        // fp32 accumulation differs from the reference only in summation order; bf16 output adds one rounding (2^-8 relative).
        double rtol = t == DType.BF16 ? 1.0 / 64 : 1e-5, atol = (t == DType.BF16 ? 1e-2 : 1e-5) * Math.Sqrt(k);
        fixed (byte* pw = want) fixed (byte* pg = got)
            for (int i = 0; i < n; i++)
            {
                double w = CpuGemm.Load((nint)pw, t, i), g = CpuGemm.Load((nint)pg, t, i);
                if (!(Math.Abs(w - g) <= atol + rtol * Math.Abs(w)))
                    Assert.Fail($"{name}: element {i}: got {g}, want {w} (atol {atol}, rtol {rtol})");
            }
    }
}
