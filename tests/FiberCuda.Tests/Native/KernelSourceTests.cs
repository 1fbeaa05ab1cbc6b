using FiberCuda.Kernels;

namespace FiberCuda.Tests.Native;

[TestClass]
public sealed class KernelSourceTests
{
    [TestMethod]
    public void EveryListedKernelIsReadable()
    {
        foreach (var f in KernelSource.ListKernelFiles())
        {
            Assert.EndsWith(".cu", f);
            Assert.IsFalse(f.StartsWith("kernels/", StringComparison.Ordinal), f);
            Assert.IsTrue(KernelSource.Exists(f), f);
            Assert.IsGreaterThan(0, KernelSource.Read(f).Length, f);
        }
        Assert.ThrowsExactly<FileNotFoundException>(() => KernelSource.Read("no_such_kernel.cu"));
    }

    [TestMethod]
    public void HeadersResolveTransitivelyByIncludeName()
    {
        var files = new Dictionary<string, string>
        {
            ["common.cuh"] = "#pragma once\n#include \"ptx.cuh\"\n",
            ["ptx.cuh"] = "#pragma once\n",
            ["attn/window.cuh"] = "#include \"../common.cuh\"\n",
            ["attn/fwd.cu"] = "#include \"window.cuh\"\n  #  include \"common.cuh\"\n#include <not_ours.h>\n#include \"missing.cuh\"\n",
        };
        var h = KernelSource.ResolveHeaders("attn/fwd.cu", files["attn/fwd.cu"], f => files[f], files.ContainsKey);
        CollectionAssert.AreEquivalent(new[] { "window.cuh", "common.cuh", "../common.cuh", "ptx.cuh" }, h.Keys.ToArray());
        Assert.AreEqual(files["attn/window.cuh"], h["window.cuh"]);
        Assert.AreEqual(files["common.cuh"], h["../common.cuh"]);
        Assert.AreEqual(files["ptx.cuh"], h["ptx.cuh"]);
    }

    [TestMethod]
    public void CacheKeyCoversSourceHeadersOptionsArchAndVersion()
    {
        var hdr = new Dictionary<string, string> { ["common.cuh"] = "a" };
        string[] opts = ["--gpu-architecture=sm_90", "-default-device"];
        var k0 = NvrtcCompiler.CacheKey("f.cu", "src", hdr, opts, "sm_90", (12, 4));
        Assert.AreEqual(k0, NvrtcCompiler.CacheKey("f.cu", "src", new Dictionary<string, string>(hdr), opts, "sm_90", (12, 4)));
        Assert.AreNotEqual(k0, NvrtcCompiler.CacheKey("f.cu", "src2", hdr, opts, "sm_90", (12, 4)));
        Assert.AreNotEqual(k0, NvrtcCompiler.CacheKey("f.cu", "src", new Dictionary<string, string> { ["common.cuh"] = "b" }, opts, "sm_90", (12, 4)));
        Assert.AreNotEqual(k0, NvrtcCompiler.CacheKey("f.cu", "src", hdr, ["--gpu-architecture=sm_90"], "sm_90", (12, 4)));
        Assert.AreNotEqual(k0, NvrtcCompiler.CacheKey("f.cu", "src", hdr, opts, "sm_80", (12, 4)));
        Assert.AreNotEqual(k0, NvrtcCompiler.CacheKey("f.cu", "src", hdr, opts, "sm_90", (13, 0)));
        Assert.AreEqual(64, k0.Length);
    }
}
