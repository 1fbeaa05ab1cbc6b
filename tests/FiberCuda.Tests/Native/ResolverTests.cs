using FiberCuda.Native;

namespace FiberCuda.Tests.Native;

/// <summary>Library search order and stub exclusion, on temp folders with empty fake files (never dlopened).</summary>
[TestClass]
public sealed class ResolverTests
{
    string _root = "";

    [TestInitialize]
    public void Init() => _root = Directory.CreateTempSubdirectory("fiber-resolver-").FullName;

    [TestCleanup]
    public void Cleanup() => Directory.Delete(_root, recursive: true);

    string Touch(string rel)
    {
        var p = Path.Combine(_root, rel);
        Directory.CreateDirectory(Path.GetDirectoryName(p)!);
        File.WriteAllBytes(p, []);
        return p;
    }

    static Func<string, string?> Env(params (string k, string v)[] kv)
    {
        var d = kv.ToDictionary(x => x.k, x => x.v);
        return k => d.TryGetValue(k, out var v) ? v : null;
    }

    [TestMethod]
    public void SonamesAreVersionedNewestFirst()
    {
        CollectionAssert.AreEqual(new[] { "libcuda.so.1" }, CudaLibraryResolver.Sonames("cuda").ToArray());
        CollectionAssert.AreEqual(new[] { "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2" }, CudaLibraryResolver.Sonames("nvrtc").ToArray());
        CollectionAssert.AreEqual(new[] { "libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11" }, CudaLibraryResolver.Sonames("cublasLt").ToArray());
        CollectionAssert.AreEqual(new[] { "libcublas.so.13", "libcublas.so.12", "libcublas.so.11" }, CudaLibraryResolver.Sonames("cublas").ToArray());
        Assert.ThrowsExactly<ArgumentException>(() => CudaLibraryResolver.Sonames("cudnn"));
    }

    [TestMethod]
    public void SearchOrderIsOverrideThenCudaHomeThenSystemThenPythonWheels()
    {
        var over1 = Path.Combine(_root, "over1");
        var over2 = Path.Combine(_root, "over2");
        var cudaHome = Path.Combine(_root, "cuda-12.4");
        var site = Path.Combine(_root, "site-packages");
        Directory.CreateDirectory(Path.Combine(site, "nvidia/cublas/lib"));
        Directory.CreateDirectory(Path.Combine(site, "nvidia/cu13/lib"));
        var dirs = CudaLibraryResolver.SearchDirectories(
            Env(("FIBER_CUDA_LIB_DIR", $"{over1}:{over2}"), ("CUDA_HOME", cudaHome)), pythonRoots: [site]);

        Assert.AreEqual(over1, dirs[0]);
        Assert.AreEqual(over2, dirs[1]);
        Assert.AreEqual(Path.Combine(cudaHome, "lib64"), dirs[2]);
        int sys = dirs.ToList().IndexOf("/usr/local/cuda/lib64");
        int cublasWheel = dirs.ToList().IndexOf(Path.Combine(site, "nvidia/cublas/lib"));
        int cu13Wheel = dirs.ToList().IndexOf(Path.Combine(site, "nvidia/cu13/lib"));
        Assert.IsGreaterThan(2, sys);
        Assert.IsGreaterThan(sys, cublasWheel);
        Assert.IsGreaterThan(sys, cu13Wheel);
        Assert.AreEqual(dirs.Count, dirs.Distinct().Count(), "duplicate folders");
    }

    [TestMethod]
    public void CandidatesFollowFolderOrderThenNewestSoname()
    {
        var a = Path.GetDirectoryName(Touch("a/libnvrtc.so.11.2"))!;
        Touch("a/libnvrtc.so.12");
        var b = Path.GetDirectoryName(Touch("b/libnvrtc.so.13"))!;
        Touch("b/libnvrtc.so"); // unversioned dev symlink: never a candidate
        var c = CudaLibraryResolver.CandidatePaths("nvrtc", [a, b]);
        CollectionAssert.AreEqual(new[]
        {
            Path.Combine(a, "libnvrtc.so.12"), Path.Combine(a, "libnvrtc.so.11.2"), Path.Combine(b, "libnvrtc.so.13"),
        }, c.ToArray());
    }

    [TestMethod]
    public void StubsAreNeverCandidates()
    {
        var stubDir = Path.GetDirectoryName(Touch("cuda/lib64/stubs/libcuda.so.1"))!;
        var real = Path.GetDirectoryName(Touch("driver/libcuda.so.1"))!;
        Assert.IsTrue(CudaLibraryResolver.IsStubPath(Path.Combine(stubDir, "libcuda.so.1")));
        var c = CudaLibraryResolver.CandidatePaths("cuda", [stubDir, real]);
        CollectionAssert.AreEqual(new[] { Path.Combine(real, "libcuda.so.1") }, c.ToArray());

        // A stubs folder named in the override is dropped from the search list altogether.
        var dirs = CudaLibraryResolver.SearchDirectories(Env(("FIBER_CUDA_LIB_DIR", stubDir + ":" + real)), pythonRoots: []);
        Assert.IsFalse(dirs.Any(d => d.Contains("/stubs")), string.Join(", ", dirs));
        Assert.AreEqual(real, dirs[0]);
    }

    [TestMethod]
    public void NvrtcBuiltinsComeFromTheSameFolder()
    {
        var nvrtc = Touch("n/libnvrtc.so.12");
        Touch("n/libnvrtc-builtins.so.12.4.127");
        var want = Touch("n/libnvrtc-builtins.so.12.4");
        Touch("other/libnvrtc-builtins.so.11.8");
        Assert.AreEqual(want, CudaLibraryResolver.FindNvrtcBuiltins(nvrtc));
        Assert.IsNull(CudaLibraryResolver.FindNvrtcBuiltins(Touch("empty/libnvrtc.so.13")));
    }

    [TestMethod]
    public void MissingLibraryGivesInstallHint()
    {
        var hint = FiberCuda.Runtime.GpuNotAvailableException.InstallHint("nvrtc");
        Assert.Contains("nvidia-cuda-nvrtc-cu12", hint);
        Assert.Contains("libnvrtc11.2", hint);
        Assert.Contains("nvidia-cublas-cu12", FiberCuda.Runtime.GpuNotAvailableException.InstallHint("cublasLt"));
        Assert.Contains("driver", FiberCuda.Runtime.GpuNotAvailableException.InstallHint("cuda"));
    }
}
