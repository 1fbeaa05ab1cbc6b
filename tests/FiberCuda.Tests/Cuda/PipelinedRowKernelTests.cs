using FiberCuda.Backends;
using FiberCuda.Backends.Cuda;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Cuda;

/// <summary>
/// The cp.async-pipelined forward row kernels (LayerNorm, softmax) are chosen only at FIBER sizes
/// (≥ 32k rows), too big for the emulator; forced on here at small sizes, with more rows than the
/// persistent grid has row groups so every lane runs several pipeline steps, against the CPU reference.
/// </summary>
[TestClass, TestCategory("Emulated")]
public sealed class PipelinedRowKernelTests
{
    static readonly Lazy<CudaBackend> Pipelined = new(() => new CudaBackend(new EmulatedDevice(), ownsDevice: true) { PipelinedRowKernels = true });

    static double[] Rand(Random r, long n, double shift = 0) => Enumerable.Range(0, (int)n).Select(_ => r.NextDouble() * 2 - 1 + shift).ToArray();

    [TestMethod]
    [DataRow(300, 128, "bf16")] // one pack per lane (KP = 1)
    [DataRow(150, 256, "bf16")] // KP = 2
    [DataRow(200, 64, "f32")]
    public void LayerNormAndSoftmaxForwardMatchTheCpu(int rows, int c, string dt)
    {
        var gpu = Pipelined.Value;
        var cpu = Backend.Cpu;
        var t = dt == "bf16" ? DType.BF16 : DType.F32;
        double tol = t == DType.BF16 ? 2e-2 : 1e-5;
        var r = new Random(rows * 31 + c);
        var x = Rand(r, (long)rows * c, 0.3);
        var g = Rand(r, c, 1.5);
        var b = Rand(r, c);

        (float[] Y, float[] Mean, float[] Rstd, float[] P) Run(IBackend be)
        {
            using var tx = be.FromDoubles(x, [rows, c], t);
            using var tg = be.FromDoubles(g, [c], DType.F32);
            using var tb = be.FromDoubles(b, [c], DType.F32);
            using var y = be.Empty([rows, c], t);
            using var mean = be.Empty([rows], DType.F32);
            using var rstd = be.Empty([rows], DType.F32);
            using var p = be.Empty([rows, c], t);
            be.LayerNorm(tx, null, tg, tb, 1e-5f, y, null, mean, rstd);
            be.Softmax(tx, 0.7f, p);
            return (y.ToFloatArray(), mean.ToFloatArray(), rstd.ToFloatArray(), p.ToFloatArray());
        }

        var want = Run(cpu);
        var got = Run(gpu);
        Close(want.Y, got.Y, tol, "layernorm y");
        Close(want.Mean, got.Mean, 1e-5, "layernorm mean");
        Close(want.Rstd, got.Rstd, 1e-4, "layernorm rstd");
        Close(want.P, got.P, tol, "softmax");
    }

    static void Close(float[] want, float[] got, double tol, string what)
    {
        Assert.HasCount(want.Length, got);
        for (int i = 0; i < want.Length; i++)
            Assert.IsTrue(Math.Abs(want[i] - got[i]) <= tol * (1 + Math.Abs(want[i])), $"{what}[{i}]: cpu {want[i]}, gpu {got[i]}");
    }
}
