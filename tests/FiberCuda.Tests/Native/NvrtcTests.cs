using FiberCuda.Kernels;
using FiberCuda.Runtime;

namespace FiberCuda.Tests.Native;

/// <summary>Kernels compile with the real NVRTC (no GPU needed).</summary>
[TestClass]
[TestCategory("Nvrtc")]
public sealed class NvrtcTests
{
    /// <summary>Self-contained test kernels (our headers may not exist in every checkout).</summary>
    internal const string TestKernels = """
        extern "C" __global__ void axpb(float* y, const float* x, float a, float b, int n)
        {
            int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) y[i] = a * x[i] + b;
        }

        // Needs more than 48 KB of dynamic shared memory when n is large.
        extern "C" __global__ void smem_sum(unsigned int* out, int n)
        {
            extern __shared__ unsigned int buf[];
            for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = (unsigned int)i;
            __syncthreads();
            if (threadIdx.x == 0)
            {
                unsigned int s = 0;
                for (int i = 0; i < n; i++) s += buf[i];
                out[0] = s;
            }
        }

        extern "C" __global__ void exact_erf(float* y, const float* x, int n)
        {
            int i = blockIdx.x * blockDim.x + threadIdx.x;
            if (i < n) y[i] = erff(x[i]);
        }
        """;

    static string _cacheDir = "";

    [ClassInitialize]
    public static void ClassInit(TestContext _) => _cacheDir = Directory.CreateTempSubdirectory("fiber-nvrtc-cache-").FullName;

    [ClassCleanup]
    public static void ClassCleanup() { try { Directory.Delete(_cacheDir, true); } catch (IOException) { } }

    internal static NvrtcCompiler RequireNvrtc(string? cacheDir)
    {
        try { return new NvrtcCompiler(cacheDir); }
        catch (GpuNotAvailableException e)
        {
            if (Environment.GetEnvironmentVariable("FIBER_REQUIRE_NVRTC") == "1") Assert.Fail("NVRTC required but missing: " + e.Message);
            Assert.Inconclusive("no NVRTC: " + e.Message);
            throw; // unreachable
        }
    }

    [TestMethod]
    public void EveryEmbeddedKernelCompilesForSm80AndSm90()
    {
        // The persistent cache (keyed by source+headers+options+arch+NVRTC version) keeps reruns fast; an entry only
        // exists if exactly this input compiled before.
        var nvrtc = RequireNvrtc(null);
        var files = KernelSource.ListKernelFiles();
        Assert.IsTrue(files.Count >= 10, $"only {files.Count} kernel files embedded: the build lost kernels/*.cu");
        var jobs = files.SelectMany(f => new[] { 80, 90 }.Select(sm => (f, sm))).ToArray();
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        Parallel.ForEach(jobs, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, job =>
        {
            try
            {
                var k = nvrtc.CompileForArch(job.f, job.sm, wantCubin: true);
                if (k.Image.Length == 0) { failures.Add($"{job.f} sm_{job.sm}: empty CUBIN"); return; }
                // Every extern "C" kernel of the source (as the emulator finds them) is in the CUBIN's symbol table.
                var symbols = System.Text.Encoding.ASCII.GetString(k.Image);
                foreach (var name in EmuCompiler.FindKernels(KernelSource.Read(job.f)))
                    if (!symbols.Contains(name + "\0")) failures.Add($"{job.f} sm_{job.sm}: kernel {name} missing from the CUBIN");
            }
            catch (KernelCompileException e) { failures.Add(e.Message); }
        });
        Assert.IsEmpty(failures, $"NVRTC {nvrtc.Version}: {failures.Count} failed compiles:\n\n" + string.Join("\n\n", failures.Order()));
    }

    [TestMethod]
    public void TestKernelsCompileToCubinAndPtx()
    {
        var nvrtc = RequireNvrtc(_cacheDir);
        var none = new Dictionary<string, string>();
        foreach (var sm in new[] { 80, 90 })
        {
            var cubin = nvrtc.CompileSource("native_test.cu", TestKernels, none, sm, wantCubin: true);
            Assert.IsTrue(cubin.IsCubin);
            Assert.AreEqual($"sm_{sm}", cubin.Arch);
            // CUBINs are ELF files.
            CollectionAssert.AreEqual(new byte[] { 0x7f, (byte)'E', (byte)'L', (byte)'F' }, cubin.Image[..4]);

            var ptx = nvrtc.CompileSource("native_test.cu", TestKernels, none, sm, wantCubin: false);
            Assert.IsFalse(ptx.IsCubin);
            Assert.AreEqual(0, ptx.Image[^1], "PTX must be NUL-terminated for cuModuleLoadData");
            var text = System.Text.Encoding.ASCII.GetString(ptx.Image, 0, ptx.Image.Length - 1);
            Assert.Contains($".target sm_{sm}", text);
            Assert.Contains(".entry axpb", text);
            Assert.Contains(".entry smem_sum", text);
        }
    }

    [TestMethod]
    public void DeviceCompileUsesCubinWhenTheArchIsKnown()
    {
        var nvrtc = RequireNvrtc(_cacheDir);
        if (nvrtc.SupportedArchs.Count == 0) Assert.Inconclusive($"NVRTC {nvrtc.Version} cannot list its architectures");
        Assert.Contains(90, nvrtc.SupportedArchs);
        // An SM newer than this NVRTC knows must fall back to PTX for the newest known compute_XX.
        int future = nvrtc.SupportedArchs.Max() + 1;
        var opts = nvrtc.Options(future, wantCubin: false);
        Assert.Contains($"--gpu-architecture=compute_{future}", opts);
        Assert.DoesNotContain("--use_fast_math", opts);
        Assert.Contains("-default-device", opts);
    }

    [TestMethod]
    public void CompileErrorNamesFileLineAndLog()
    {
        var nvrtc = RequireNvrtc(_cacheDir);
        const string broken = "extern \"C\" __global__ void k(float* y)\n{\n    y[0] = undefined_thing;\n}\n";
        var e = Assert.ThrowsExactly<KernelCompileException>(() =>
            nvrtc.CompileSource("broken_kernel.cu", broken, new Dictionary<string, string>(), 90, wantCubin: true));
        Assert.AreEqual("broken_kernel.cu", e.File);
        Assert.AreEqual(3, e.Line, e.Message);
        Assert.Contains("broken_kernel.cu:3", e.Message);
        Assert.Contains("undefined_thing", e.Message);
        Assert.Contains("--- NVRTC log ---", e.Message);
    }

    [TestMethod]
    public void HeaderErrorPointsIntoTheHeader()
    {
        var nvrtc = RequireNvrtc(_cacheDir);
        var headers = new Dictionary<string, string> { ["helpers.cuh"] = "#pragma once\n__device__ float twice(float x) { return 2 * x }\n" };
        var src = "#include \"helpers.cuh\"\nextern \"C\" __global__ void k(float* y) { y[0] = twice(y[0]); }\n";
        var e = Assert.ThrowsExactly<KernelCompileException>(() => nvrtc.CompileSource("uses_header.cu", src, headers, 80, true));
        Assert.AreEqual("helpers.cuh", e.ErrorFile, e.Message);
        Assert.AreEqual(2, e.Line, e.Message);
    }

    [TestMethod]
    public void SecondCompileIsADiskCacheHit()
    {
        var dir = Directory.CreateTempSubdirectory("fiber-nvrtc-hit-").FullName;
        try
        {
            var nvrtc = RequireNvrtc(dir);
            var none = new Dictionary<string, string>();
            var first = nvrtc.CompileSource("cache_probe.cu", TestKernels, none, 80, true);
            Assert.IsFalse(first.FromCache);
            Assert.HasCount(1, Directory.GetFiles(dir, "*.cubin"));
            var second = new NvrtcCompiler(dir).CompileSource("cache_probe.cu", TestKernels, none, 80, true);
            Assert.IsTrue(second.FromCache);
            CollectionAssert.AreEqual(first.Image, second.Image);
            // Any change in the source is a miss.
            var third = nvrtc.CompileSource("cache_probe.cu", TestKernels + "\n// changed\n", none, 80, true);
            Assert.IsFalse(third.FromCache);
            Assert.HasCount(2, Directory.GetFiles(dir, "*.cubin"));
        }
        finally { Directory.Delete(dir, true); }
    }
}
