using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Models;
using FiberCuda.Backends.Cuda;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Attention;

/// <summary>
/// Timing of the fused window attention at FIBER shapes (bf16), printed for the B1 performance notes:
/// milliseconds, attention-core TFLOP/s (4·N²·d per window·head forward, 2.5× that backward incl. the
/// recompute) for the fp32-math forward and the tensor-core forward (with their max output differences), the
/// fp32-math backward and the tensor-core backward (with their max gradient differences) and the qkv/y traffic in GB/s, next to the forward of the F-op composition the model uses
/// today (square images only). The assertion only guards the numbers (finite outputs,
/// a positive time); speed targets are for a person reading the table.
/// </summary>
[TestClass]
[TestCategory("Gpu")]
public sealed class WindowAttentionGpuBench
{
    [TestMethod]
    [Timeout(180_000)]
    public void FusedWindowAttentionTimings()
    {
        if (!CudaDevice.TryCreate(out var dev, out var reason)) { Assert.Inconclusive("no GPU: " + reason); return; }
        using var b = new CudaBackend(dev!, ownsDevice: true);
        Bench(b, new (string Name, WindowAttentionShape A)[]
        {
            ("384 stage1 w12", new(8, 96, 96, 4, 32, 12, 6, 1 / MathF.Sqrt(32))),
            ("384 stage3 w12", new(8, 24, 24, 16, 32, 12, 6, 1 / MathF.Sqrt(32))),
            ("576 stage1 w18", new(8, 144, 144, 4, 32, 18, 9, 1 / MathF.Sqrt(32))),
            ("224 stage1 w7", new(8, 56, 56, 4, 32, 7, 3, 1 / MathF.Sqrt(32))),
            // The fine model on a Flickr image (1066×800 padded to 1088×800): maps padded to the window inside the op.
            ("fine stage1 w12", WindowAttentionShape.ForMap(2, 272, 200, 4, 32, 12, 6, 1 / MathF.Sqrt(32))),
            ("fine stage3 w12", WindowAttentionShape.ForMap(2, 68, 50, 16, 32, 12, 6, 1 / MathF.Sqrt(32))),
        });
    }

    internal static void Bench(CudaBackend b, (string Name, WindowAttentionShape A)[] cases)
    {
        var dev = b.Device;
        var op = WindowAttentionOps.For(b);
        var r = new Random(1);
        foreach (var (name, a) in cases)
        {
            using var qkv = b.FromFloats(Array.ConvertAll(new float[ShapeUtil.Numel(a.QkvShape)], _ => (float)(r.NextDouble() * 2 - 1)), a.QkvShape, DType.BF16);
            using var table = b.FromFloats(Array.ConvertAll(new float[ShapeUtil.Numel(a.TableShape)], _ => (float)(r.NextDouble() - 0.5)), a.TableShape, DType.F32);
            using var y = b.Empty(a.OutShape, DType.BF16);
            using var lse = b.Empty(a.LseShape, DType.F32);
            using var dy = b.FromFloats(Array.ConvertAll(new float[ShapeUtil.Numel(a.OutShape)], _ => (float)(r.NextDouble() * 2 - 1)), a.OutShape, DType.BF16);
            using var dqkv = b.Zeros(a.QkvShape, DType.BF16);
            using var dtab = b.Zeros(a.TableShape, DType.F32);
            double Time(Action f)
            {
                f(); b.Synchronize();
                using var t = dev.CreateTimer();
                t.Start(); for (int i = 0; i < 5; i++) f(); t.Stop();
                return t.ElapsedMs() / 5;
            }
            // bf16 forwards: the fp32-math kernel and the tensor-core kernel, timed separately (the default op
            // picks the tensor-core one unless FIBER_WINDOW_ATTENTION_TC=0); their outputs are compared too.
            var f32Op = new CudaWindowAttention(b) { UseTensorCores = false };
            var tcOp = new CudaWindowAttention(b) { UseTensorCores = true };
            using var yTc = b.Empty(a.OutShape, DType.BF16);
            using var lseTc = b.Empty(a.LseShape, DType.F32);
            double fwd = Time(() => f32Op.Forward(qkv, table, a, y, lse));
            double fwdTc = Time(() => tcOp.Forward(qkv, table, a, yTc, lseTc));
            float[] yA = y.ToFloatArray(), yB = yTc.ToFloatArray(), lA = lse.ToFloatArray(), lB = lseTc.ToFloatArray();
            double dy_ = 0, dl = 0;
            for (int i = 0; i < yA.Length; i++) dy_ = Math.Max(dy_, Math.Abs(yA[i] - yB[i]));
            for (int i = 0; i < lA.Length; i++) dl = Math.Max(dl, Math.Abs(lA[i] - lB[i]));
            // bf16 backwards: the fp32-math kernel and the tensor-core kernel (the default unless
            // FIBER_WINDOW_ATTENTION_TC=0; the fp32-math one when its shared memory does not fit), both from the
            // TC forward's y and lse; one call each into zeroed buffers is compared, then each is timed.
            bool tcBwd = tcOp.TensorCoreBackward(a, DType.BF16);
            using var dqkvTc = b.Zeros(a.QkvShape, DType.BF16);
            using var dtabTc = b.Zeros(a.TableShape, DType.F32);
            f32Op.Backward(qkv, table, a, yTc, lseTc, dy, dqkv, dtab);
            tcOp.Backward(qkv, table, a, yTc, lseTc, dy, dqkvTc, dtabTc);
            float[] gA = dqkv.ToFloatArray(), gB = dqkvTc.ToFloatArray(), tA = dtab.ToFloatArray(), tB = dtabTc.ToFloatArray();
            double gmax = gA.Max(v => Math.Abs((double)v)), tmax = tA.Max(v => Math.Abs((double)v)), dg = 0, dt = 0;
            for (int i = 0; i < gA.Length; i++) dg = Math.Max(dg, Math.Abs(gA[i] - gB[i]));
            for (int i = 0; i < tA.Length; i++) dt = Math.Max(dt, Math.Abs(tA[i] - tB[i]));
            double bwdF = Time(() => f32Op.Backward(qkv, table, a, yTc, lseTc, dy, dqkv, dtab));
            double bwdTc = Time(() => tcOp.Backward(qkv, table, a, yTc, lseTc, dy, dqkvTc, dtabTc));
            bool defaultTc = ((CudaWindowAttention)op).TensorCoreBackward(a, DType.BF16);
            double bwd = defaultTc ? bwdTc : bwdF;
            // The F-op composition the model uses today (materialised scores, gathered bias, mask), forward only.
            using var relIndex = b.FromInts(WindowAttention.RelativePositionIndex(a.Window), [a.N * a.N]);
            using var tableBf = b.Empty(a.TableShape, DType.BF16);
            b.Cast(table, tableBf);
            int r0 = a.Height;
            using var mask = a.Shift > 0 ? b.FromDoubles(SwinBlock.ShiftMask(r0, a.Window, a.Shift, a.Heads), [a.WindowsPerImage * a.Heads * a.N * a.N], DType.BF16) : null;
            double composed = double.NaN; // the composition below takes square, unpadded maps only
            if (!a.Padded && a.Height == a.Width)
            using (Grad.NoGrad())
                composed = Time(() =>
                {
                    using var scope = new TensorScope(); // each call's temporaries go back at once
                    WindowAttentionComposedTests.Composed(qkv, tableBf, relIndex, mask, a.Batch, r0, a.Window, a.Shift, a.Heads, a.HeadDim, a.Scale);
                });
            double flop = 4.0 * a.N * a.N * a.HeadDim * a.Windows * a.Heads;
            double bytes = (qkv.Bytes + y.Bytes);
            Console.WriteLine($"{name,-16} B={a.Batch} fwd {fwd:F3} ms ({flop / fwd / 1e9:F1} TFLOP/s, {bytes / fwd / 1e6:F0} GB/s)  " +
                              $"TC fwd {fwdTc:F3} ms ({flop / fwdTc / 1e9:F1} TFLOP/s, {bytes / fwdTc / 1e6:F0} GB/s, max|Δy| {dy_:g3}, max|Δlse| {dl:g3})  " +
                              $"bwd {bwdF:F3} ms ({2.5 * flop / bwdF / 1e9:F1} TFLOP/s)  " +
                              $"TC bwd{(tcBwd ? "" : " (fp32-math fallback: shared memory)")} {bwdTc:F3} ms ({2.5 * flop / bwdTc / 1e9:F1} TFLOP/s, " +
                              $"max|Δdqkv| {dg / gmax:g3}·max, max|Δdtable| {dt / tmax:g3}·max)  composed F-op fwd {composed:F3} ms");
            // The forward the model runs (the default op's choice) for tools/bench/compare_torch.py.
            BenchLog.Append("window_attention", name.Trim(), ((CudaWindowAttention)op).UseTensorCores ? fwdTc : fwd, bwd);
            Assert.IsTrue(fwdTc > 0 && yB.All(float.IsFinite), $"{name}: TC forward");
            Assert.IsLessThan(0.05, dy_, $"{name}: TC forward y differs from the fp32-math forward"); // |y| ≤ 1 here: a few bf16 ulps
            Assert.IsLessThan(1e-3, dl, $"{name}: TC forward lse differs from the fp32-math forward");
            Assert.IsTrue(fwd > 0 && bwd > 0 && bwdF > 0 && bwdTc > 0, name);
            Assert.IsTrue(gB.All(float.IsFinite) && tB.All(float.IsFinite), $"{name}: non-finite TC backward gradients");
            // bf16 P and dS operands and bf16 storage: a few bf16 ulps of the largest gradient (tests: < 1/64).
            Assert.IsLessThan(1.0 / 32, dg / gmax, $"{name}: TC backward dqkv differs from the fp32-math backward");
            Assert.IsLessThan(1.0 / 32, dt / tmax, $"{name}: TC backward dtable differs from the fp32-math backward");
            Assert.IsTrue(y.ToFloatArray().All(float.IsFinite), $"{name}: non-finite y");
            Assert.IsTrue(dtab.ToFloatArray().All(float.IsFinite), $"{name}: non-finite dtable");
        }
    }
}

[TestClass]
[TestCategory("Emulated")]
public sealed class WindowAttentionBenchEmulatedTests
{
    /// <summary>The bench code on the emulator at a toy size, so the GPU run does not fail on a bench bug.</summary>
    [TestMethod]
    public void BenchRunsOnTheEmulator()
    {
        using var b = new CudaBackend(new EmulatedDevice(), ownsDevice: true);
        WindowAttentionGpuBench.Bench(b, [("toy w4", new(1, 8, 8, 1, 32, 4, 2, 1 / MathF.Sqrt(32))), ("toy w4 padded", WindowAttentionShape.ForMap(1, 6, 7, 1, 32, 4, 2, 1 / MathF.Sqrt(32)))]);
    }
}
