using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Backends.Cuda;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Attention;

/// <summary>
/// Timing of the fused cross-attention at FIBER-B shapes (bf16), printed for the performance notes:
/// milliseconds and attention-core TFLOP/s (4·Lq·Lk·d per batch·head forward, 2.5× that backward with the
/// recompute), next to the forward of the F-op composition the model used before (unmasked there, as the
/// expanded mask would be built on the host). The assertions only guard the numbers (finite outputs, a
/// positive time).
/// </summary>
[TestClass]
[TestCategory("Gpu")]
public sealed class CrossAttentionGpuBench
{
    [TestMethod]
    [Timeout(180_000)]
    public void FusedCrossAttentionTimings()
    {
        if (!CudaDevice.TryCreate(out var dev, out var reason)) { Assert.Inconclusive("no GPU: " + reason); return; }
        using var b = new CudaBackend(dev!, ownsDevice: true);
        float s32 = 1 / MathF.Sqrt(32), s64 = 1 / MathF.Sqrt(64);
        Bench(b, new (string Name, CrossAttentionShape A, bool Masked)[]
        {
            ("384 i2t stage3", new(8, 576, 40, 16, 32, s32), true),
            ("384 i2t stage4", new(8, 144, 40, 32, 32, s32), true),
            ("384 t2i stage3", new(8, 40, 576, 12, 64, s64), false),
            ("384 t2i stage4", new(8, 40, 144, 12, 64, s64), false),
            ("fine t2i 3400", new(2, 256, 3400, 12, 64, s64), false),
            ("fine i2t 3400", new(2, 3400, 256, 16, 32, s32), true),
            ("384 t2i drop0.1", new(8, 40, 576, 12, 64, s64, 0.1f, 7, 0), false),
        });
    }

    internal static void Bench(CudaBackend b, (string Name, CrossAttentionShape A, bool Masked)[] cases)
    {
        var dev = b.Device;
        var op = CrossAttentionOps.For(b);
        var r = new Random(1);
        Tensor Rand(int[] shape) => b.FromFloats(Array.ConvertAll(new float[ShapeUtil.Numel(shape)], _ => (float)(r.NextDouble() * 2 - 1)), shape, DType.BF16);
        foreach (var (name, a, masked) in cases)
        {
            using var q = Rand(a.QShape); using var k = Rand(a.KvShape); using var v = Rand(a.KvShape); using var dy = Rand(a.OutShape);
            var mh = new double[a.Batch * a.Lk];
            for (int i = 0; i < mh.Length; i++) mh[i] = i % a.Lk >= a.Lk * 3 / 4 ? -10000 : 0;
            using var mask = masked ? b.FromDoubles(mh, a.MaskShape, DType.BF16) : null;
            using var y = b.Empty(a.OutShape, DType.BF16);
            using var lse = b.Empty(a.LseShape, DType.F32);
            using var dq = b.Zeros(a.QShape, DType.BF16); using var dk = b.Zeros(a.KvShape, DType.BF16); using var dv = b.Zeros(a.KvShape, DType.BF16);
            double Time(Action f)
            {
                f(); b.Synchronize();
                using var t = dev.CreateTimer();
                t.Start(); for (int i = 0; i < 5; i++) f(); t.Stop();
                return t.ElapsedMs() / 5;
            }
            double fwd = Time(() => op.Forward(q, k, v, mask, a, y, lse));
            double bwd = Time(() => op.Backward(q, k, v, mask, a, y, lse, dy, dq, dk, dv));
            double composed;
            using (Grad.NoGrad())
                composed = Time(() =>
                {
                    using var scope = new TensorScope();
                    CrossAttentionCpuTests.Composed(q, k, v, null, a.Heads, a.Scale);
                });
            double flop = 4.0 * a.Lq * a.Lk * a.HeadDim * a.Batch * a.Heads;
            Console.WriteLine($"{name,-16} B={a.Batch} Lq={a.Lq} Lk={a.Lk} nH={a.Heads} d={a.HeadDim} fwd {fwd:F3} ms ({flop / fwd / 1e9:F1} TFLOP/s)  bwd {bwd:F3} ms ({2.5 * flop / bwd / 1e9:F1} TFLOP/s)  composed F-op fwd {composed:F3} ms");
            BenchLog.Append("cross_attention", name.Trim(), fwd, bwd);
            Assert.IsTrue(fwd > 0 && bwd > 0, name);
            Assert.IsTrue(y.ToFloatArray().All(float.IsFinite), $"{name}: non-finite y");
            Assert.IsTrue(dk.ToFloatArray().All(float.IsFinite), $"{name}: non-finite dk");
        }
    }
}

[TestClass]
[TestCategory("Emulated")]
public sealed class CrossAttentionBenchEmulatedTests
{
    /// <summary>The bench code on the emulator at a toy size, so the GPU run does not fail on a bench bug.</summary>
    [TestMethod]
    public void BenchRunsOnTheEmulator()
    {
        using var b = new CudaBackend(new EmulatedDevice(), ownsDevice: true);
        CrossAttentionGpuBench.Bench(b, [("toy", new(1, 5, 9, 1, 32, 0.2f), true), ("toy drop", new(1, 3, 7, 1, 64, 0.1f, 0.2f, 3, 0), false)]);
    }
}
