using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Backends.Cuda;
using FiberCuda.Optim;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Cuda;

/// <summary>
/// A training step (forward, backward, AdamW) repeated on the CUDA backend over the emulated GPU must,
/// after its first steps, take every buffer from the caching allocator: no device allocation per op.
/// </summary>
[TestClass, TestCategory("Emulated")]
public sealed class SteadyStateAllocationTests
{
    [TestMethod]
    public void TrainingStepAllocatesNothingNewFromTheDeviceOnceWarm()
    {
        using var dev = new EmulatedDevice();
        var alloc = new CachingAllocator(dev);
        using var be = new CudaBackend(dev, ownsDevice: false, allocator: alloc);
        var rng = new Random(7);
        Tensor Param(int[] shape, double scale)
        {
            var t = be.FromDoubles(Enumerable.Range(0, (int)ShapeUtil.Numel(shape)).Select(_ => (rng.NextDouble() - 0.5) * scale).ToArray(), shape);
            t.RequiresGrad = true;
            return t;
        }
        var w1 = Param([32, 16], 0.5); var b1 = Param([32], 0.1);
        var g = Param([32], 0.1); be.Fill(g, 1.0); var beta = Param([32], 0.1);
        var w2 = Param([5, 32], 0.5); var b2 = Param([5], 0.1);
        Tensor[] ps = [w1, b1, g, beta, w2, b2];
        using var opt = new AdamW(ps, lr: 1e-2f);
        using var x = be.FromDoubles(Enumerable.Range(0, 8 * 16).Select(_ => rng.NextDouble() - 0.5).ToArray(), [8, 16]);
        using var y = be.FromInts(Enumerable.Range(0, 8).Select(i => i % 5).ToArray(), [8]);

        var losses = new List<float>();
        long warmMallocs = 0;
        for (int step = 0; step < 8; step++)
        {
            using (var scope = new TensorScope())
            {
                var h = F.LayerNorm(F.BiasGelu(F.Linear(x, w1), b1), g, beta);
                var loss = F.CrossEntropy(F.Linear(h, w2, b2), y, keptRows: 8);
                losses.Add(loss.ToFloatArray()[0]);
                opt.ZeroGrad();
                loss.Backward();
                opt.Step();
            }
            if (step == 2) warmMallocs = alloc.Stats.RawMallocs;
        }
        Assert.IsTrue(losses[^1] < losses[0], $"the loss should go down: {string.Join(", ", losses)}");
        Assert.AreEqual(warmMallocs, alloc.Stats.RawMallocs, "steps after the warm-up allocated device memory");
    }
}
