using FiberCuda.Kernels;

namespace FiberCuda.Tests.Cuda;

/// <summary>
/// Every op kernel file compiles with NVRTC alone (no toolkit headers) for Ampere and Hopper, to a
/// CUBIN holding each kernel the CUDA backend launches. Runs wherever libnvrtc is installed; no GPU needed.
/// </summary>
[TestClass]
[TestCategory("Nvrtc")]
public sealed class CudaKernelsNvrtcTests
{
    static readonly string[] Files =
    [
        "elementwise.cu", "gelu.cu", "layernorm.cu", "softmax.cu", "crossentropy.cu", "embedding.cu",
        "dropout.cu", "reduce.cu", "layout.cu", "adamw.cu",
    ];

    static NvrtcCompiler Compiler()
    {
        try { return new NvrtcCompiler(Path.Combine(Path.GetTempPath(), "fiber-nvrtc-test-" + Environment.ProcessId)); }
        catch (Exception e) { Assert.Inconclusive("no NVRTC: " + e.Message); throw; }
    }

    [TestMethod]
    [DataRow(80)]
    [DataRow(90)]
    public void OpKernelsCompile(int sm)
    {
        var nvrtc = Compiler();
        if (nvrtc.SupportedArchs.Count > 0 && !nvrtc.SupportedArchs.Contains(sm)) Assert.Inconclusive($"NVRTC {nvrtc.Version} has no sm_{sm}");
        foreach (var f in Files)
        {
            var k = nvrtc.CompileForArch(f, sm, wantCubin: true);
            Assert.IsTrue(k.Image.Length > 1000, $"{f}: empty image");
            // Each extern "C" kernel of the source is in the CUBIN's symbol table under its plain name.
            var text = System.Text.Encoding.ASCII.GetString(k.Image);
            foreach (var name in EmuCompiler.FindKernels(KernelSource.Read(f)))
                StringAssert.Contains(text, name + "\0", $"{f}: kernel {name} missing from the sm_{sm} CUBIN");
        }
    }
}
