using FiberCuda.Kernels;

namespace FiberCuda.Tests.Emulator;

[TestClass]
[TestCategory("Emulated")]
public sealed class EmuCompilerTests
{
    static string TempCache() => Path.Combine(Path.GetTempPath(), "fibercuda-emu-test-" + Guid.NewGuid().ToString("N"));

    static Dictionary<string, string> SourcesWith(string file, string text)
    {
        var s = new Dictionary<string, string>(EmuCompiler.EmbeddedKernelSources()) { [file] = text };
        return s;
    }

    [TestMethod]
    public void FindsExternCGlobalKernelsOnly()
    {
        const string src = """
            // extern "C" __global__ void commented_out(int x)
            /* extern "C" __global__ void also_commented(int x) */
            extern "C" __global__ void plain(const float* x, int n) {}
            extern "C" __global__ __launch_bounds__(256) void bounded(float* y) {}
            extern "C"   __global__   void
              spaced (int a) {}
            __global__ void not_extern_c(int a) {}
            __device__ void helper() {}
            """;
        CollectionAssert.AreEqual(new[] { "plain", "bounded", "spaced" }, EmuCompiler.FindKernels(src).ToArray());
    }

    [TestMethod]
    public void SecondCompileIsACacheHit()
    {
        var dir = TempCache();
        try
        {
            var src = SourcesWith("tests/cache_probe.cu", "extern \"C\" __global__ void cache_probe(int* x) { x[threadIdx.x] = 1; }\n");
            var first = new EmuCompiler(dir, src).Compile("tests/cache_probe.cu");
            Assert.IsFalse(first.FromCache);
            Assert.IsTrue(File.Exists(first.Path));
            var second = new EmuCompiler(dir, src).Compile("tests/cache_probe.cu");
            Assert.IsTrue(second.FromCache);
            Assert.AreEqual(first.Path, second.Path);
            CollectionAssert.AreEqual(new[] { "cache_probe" }, second.Kernels.ToArray());
            // A changed source is a different key.
            var changed = SourcesWith("tests/cache_probe.cu", "extern \"C\" __global__ void cache_probe(int* x) { x[threadIdx.x] = 2; }\n");
            var third = new EmuCompiler(dir, changed).Compile("tests/cache_probe.cu");
            Assert.IsFalse(third.FromCache);
            Assert.AreNotEqual(first.Path, third.Path);
            Assert.AreEqual(0, Directory.GetDirectories(dir).Length, "build directories are removed");
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void CacheKeyFollowsIncludesOnly()
    {
        var dir = TempCache();
        try
        {
            Dictionary<string, string> Tree(string header, string other)
            {
                var s = SourcesWith("tests/inc_probe.cu", "#include \"inc_probe.cuh\"\nextern \"C\" __global__ void inc_probe(int* x) { x[0] = VALUE; }\n");
                s["tests/inc_probe.cuh"] = header;
                s["tests/unrelated.cu"] = other;
                return s;
            }
            var first = new EmuCompiler(dir, Tree("#define VALUE 1\n", "// a\n")).Compile("tests/inc_probe.cu");
            Assert.IsFalse(first.FromCache);
            Assert.IsTrue(new EmuCompiler(dir, Tree("#define VALUE 1\n", "// b\n")).Compile("tests/inc_probe.cu").FromCache,
                "an unrelated kernel file is not part of the key");
            Assert.IsFalse(new EmuCompiler(dir, Tree("#define VALUE 2\n", "// a\n")).Compile("tests/inc_probe.cu").FromCache,
                "an included header is part of the key");
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void CompileErrorNamesFileAndLine()
    {
        var dir = TempCache();
        try
        {
            var src = SourcesWith("tests/broken.cu", "extern \"C\" __global__ void broken(float* x)\n{\n    x[0] = undefined_name;\n}\n");
            var e = Assert.ThrowsExactly<EmuCompileException>(() => new EmuCompiler(dir, src).Compile("tests/broken.cu"));
            Assert.AreEqual("kernels/tests/broken.cu", e.File);
            Assert.AreEqual(3, e.Line);
            StringAssert.Contains(e.CompilerOutput, "undefined_name");
            Assert.IsFalse(e.CompilerOutput.Contains(dir), "temporary build paths are not shown");
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void UnmodelledFeaturesFailToCompile()
    {
        var dir = TempCache();
        try
        {
            foreach (var body in new[] { "__nanosleep(100);", "x[0] = (float)clock64();", "extern __shared__ float s[]; x[0] = s[0];" })
            {
                var src = SourcesWith("tests/unmodelled.cu", "extern \"C\" __global__ void k(float* x)\n{\n    " + body + "\n}\n");
                var e = Assert.ThrowsExactly<EmuCompileException>(() => new EmuCompiler(dir, src).Compile("tests/unmodelled.cu"), body);
                Assert.AreEqual(3, e.Line, body);
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [TestMethod]
    public void MissingCompilerIsATypedError()
    {
        var c = new EmuCompiler(TempCache(), compiler: "fibercuda-no-such-gxx");
        var e = Assert.ThrowsExactly<EmuToolchainMissingException>(() => c.Compile("tests/emu_selftest.cu"));
        StringAssert.Contains(e.Message, "fibercuda-no-such-gxx");
    }
}
