using FiberCuda.Tests.Support;
using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Backends.Cpu;
using FiberCuda.Backends.Cuda;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

using static FiberCuda.Tests.Attention.KernelCheck;

namespace FiberCuda.Tests.Attention;

/// <summary>
/// kernels/cross_attention.cu against the CPU reference (same input bits on both), forward and backward:
/// head dim 32 and 64, f32 and bf16, Lq and Lk not multiples of the 16-row blocks or 32-key tiles, Lk over
/// 256 (several tiles, the online softmax rescales), the text padding mask, B = 2 and 2 heads. Gradient
/// buffers are pre-filled so `+=` is checked.
/// </summary>
public abstract class CrossAttentionCudaTestBase
{
    protected abstract CudaBackend Gpu { get; }
    static CpuBackend Cpu => Backend.Cpu;

    [TestInitialize]
    public void RequireDevice() => _ = Gpu;

    void Run(int B, int Lq, int Lk, int nH, int d, bool masked, DType dt, float dropP = 0f)
    {
        var r = new Random(Lq * 1000 + Lk * 10 + d + (int)dt);
        var a = new CrossAttentionShape(B, Lq, Lk, nH, d, (float)(1 / Math.Sqrt(d)), dropP, 99, 1UL << 40);
        using var qc = Cpu.FromFloats(Rand(r, ShapeUtil.Numel(a.QShape), 1.5), a.QShape, dt);
        using var kc = Cpu.FromFloats(Rand(r, ShapeUtil.Numel(a.KvShape), 1.5), a.KvShape, dt);
        using var vc = Cpu.FromFloats(Rand(r, ShapeUtil.Numel(a.KvShape), 1.5), a.KvShape, dt);
        using var mc = masked ? Cpu.FromDoubles(CrossAttentionCpuTests.PaddingMask(B, Lk, r), a.MaskShape, dt) : null;
        using var dyc = Cpu.FromFloats(Rand(r, ShapeUtil.Numel(a.OutShape), 1), a.OutShape, dt);
        using var dqc = Cpu.FromFloats(Rand(r, ShapeUtil.Numel(a.QShape), 0.1), a.QShape, dt);
        using var dkc = Cpu.FromFloats(Rand(r, ShapeUtil.Numel(a.KvShape), 0.1), a.KvShape, dt);
        using var dvc = Cpu.FromFloats(Rand(r, ShapeUtil.Numel(a.KvShape), 0.1), a.KvShape, dt);
        using var qg = Gpu.CopyFrom(qc); using var kg = Gpu.CopyFrom(kc); using var vg = Gpu.CopyFrom(vc);
        using var mg = mc is null ? null : Gpu.CopyFrom(mc);
        using var dyg = Gpu.CopyFrom(dyc); using var dqg = Gpu.CopyFrom(dqc); using var dkg = Gpu.CopyFrom(dkc); using var dvg = Gpu.CopyFrom(dvc);

        using var yc = Cpu.Empty(a.OutShape, dt); using var lc = Cpu.Empty(a.LseShape, DType.F32);
        using var yg = Gpu.Empty(a.OutShape, dt); using var lg = Gpu.Empty(a.LseShape, DType.F32);
        var cpuOp = CrossAttentionOps.For(Cpu); var gpuOp = CrossAttentionOps.For(Gpu);
        cpuOp.Forward(qc, kc, vc, mc, a, yc, lc);
        gpuOp.Forward(qg, kg, vg, mg, a, yg, lg);
        bool bf = dt == DType.BF16;
        string tag = $"B={B} Lq={Lq} Lk={Lk} nH={nH} d={d} mask={masked} p={dropP} {dt.Name()}";
        Close(yc, yg, bf ? 1.0 / 64 : 1e-5, "y " + tag);
        Close(lc, lg, 1e-5, "lse " + tag);

        // Backward from the same saved tensors on both sides (the CPU's y and lse uploaded), so only the backward differs.
        using var yg2 = Gpu.CopyFrom(yc); using var lg2 = Gpu.CopyFrom(lc);
        cpuOp.Backward(qc, kc, vc, mc, a, yc, lc, dyc, dqc, dkc, dvc);
        gpuOp.Backward(qg, kg, vg, mg, a, yg2, lg2, dyg, dqg, dkg, dvg);
        Close(dqc, dqg, bf ? 1.0 / 64 : 1e-4, "dq " + tag);
        Close(dkc, dkg, bf ? 1.0 / 64 : 1e-4, "dk " + tag);
        Close(dvc, dvg, bf ? 1.0 / 64 : 1e-4, "dv " + tag);
    }

    /// <summary>Image queries over text keys (d = 32, padding mask), several key tiles.</summary>
    [TestMethod]
    [DataRow(DType.F32)]
    [DataRow(DType.BF16)]
    public void ImageToText(DType dt) { Run(2, 19, 45, 2, 32, true, dt); }

    /// <summary>Text queries over image tokens (d = 64, no mask), Lk over 256 and not a tile multiple.</summary>
    [TestMethod]
    [DataRow(DType.F32)]
    [DataRow(DType.BF16)]
    public void TextToImage(DType dt) { Run(1, 11, 289, 1, 64, false, dt); }

    /// <summary>Probability dropout: the kernels regenerate the CPU reference's Philox decisions in all three passes.</summary>
    [TestMethod]
    public void Dropout() { Run(2, 18, 70, 2, 64, false, DType.F32, 0.25f); Run(1, 9, 40, 2, 32, true, DType.BF16, 0.1f); }

    [TestMethod]
    public void MaskedHeadDim64AndUnmaskedHeadDim32() { Run(2, 17, 33, 2, 64, true, DType.F32); Run(2, 5, 70, 2, 32, false, DType.F32); }

    /// <summary>The autograd op on the GPU backend gives the CPU backend's gradients (graph, saved lse, registered rule).</summary>
    [TestMethod]
    public void AutogradOpMatchesCpu()
    {
        var r = new Random(11);
        int B = 2, Lq = 6, Lk = 37, nH = 2, C = nH * 32;
        var q = Rand(r, B * Lq * C, 1); var k = Rand(r, B * Lk * C, 1); var v = Rand(r, B * Lk * C, 1); var w = Rand(r, B * Lq * C, 1);
        var m = CrossAttentionCpuTests.PaddingMask(B, Lk, r);
        float[][] Grads(IBackend be)
        {
            using var tq = be.FromFloats(q, [B, Lq, C]); using var tk = be.FromFloats(k, [B, Lk, C]); using var tv = be.FromFloats(v, [B, Lk, C]);
            using var tw = be.FromFloats(w, [B, Lq, C]); using var tm = be.FromDoubles(m, [B, Lk]);
            tq.RequiresGrad = true; tk.RequiresGrad = true; tv.RequiresGrad = true;
            using (var loss = F.Sum(F.Mul(CrossAttentionOp.Apply(tq, tk, tv, tm, nH), tw))) loss.Backward();
            return [tq.Grad!.ToFloatArray(), tk.Grad!.ToFloatArray(), tv.Grad!.ToFloatArray()];
        }
        var gc = Grads(Cpu); var gg = Grads(Gpu);
        for (int i = 0; i < 3; i++)
            Assert.IsLessThan(1e-4 * gc[i].Max(Math.Abs), WindowAttentionCpuTests.MaxDiff(Array.ConvertAll(gc[i], x => (double)x), Array.ConvertAll(gg[i], x => (double)x)), $"grad {i}");
    }
}

[TestClass]
[TestCategory("Emulated")]
public sealed class CrossAttentionEmulatedTests : CrossAttentionCudaTestBase
{
    // Pseudo-random thread resume order: a missing __syncthreads/__syncwarp shows up.
    static readonly Lazy<CudaBackend> Shared = new(() => new CudaBackend(new EmulatedDevice { Schedule = EmuSchedule.Random, ScheduleSeed = 7 }, ownsDevice: true));
    protected override CudaBackend Gpu => Shared.Value;
}

/// <summary>The same cases with threads resumed in forward order (a wrong barrier may hide in one order only).</summary>
[TestClass]
[TestCategory("Emulated")]
public sealed class CrossAttentionEmulatedForwardTests : CrossAttentionCudaTestBase
{
    static readonly Lazy<CudaBackend> Shared = new(() => new CudaBackend(new EmulatedDevice { Schedule = EmuSchedule.Forward }, ownsDevice: true));
    protected override CudaBackend Gpu => Shared.Value;
}

/// <summary>The same cases with threads resumed in reverse order.</summary>
[TestClass]
[TestCategory("Emulated")]
public sealed class CrossAttentionEmulatedReverseTests : CrossAttentionCudaTestBase
{
    static readonly Lazy<CudaBackend> Shared = new(() => new CudaBackend(new EmulatedDevice { Schedule = EmuSchedule.Reverse }, ownsDevice: true));
    protected override CudaBackend Gpu => Shared.Value;
}

[TestClass]
[TestCategory("Gpu")]
public sealed class CrossAttentionGpuTests : CrossAttentionCudaTestBase
{
    protected override CudaBackend Gpu => TestDevices.Gpu;
}
