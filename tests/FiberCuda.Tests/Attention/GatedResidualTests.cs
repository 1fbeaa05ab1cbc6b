using FiberCuda.Tests.Support;
using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Backends.Cpu;
using FiberCuda.Backends.Cuda;
using FiberCuda.Nn;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

using static FiberCuda.Tests.Attention.KernelCheck;

namespace FiberCuda.Tests.Attention;

/// <summary>The fused gated residual y = r + α·x on the CPU against the model's composition F.Add(r, Fx.ScaleBy(x, α)) and finite differences.</summary>
[TestClass]
public sealed class GatedResidualCpuTests
{
    static CpuBackend Cpu => Backend.Cpu;

    [TestMethod]
    public void EqualsModelCompositionValuesAndGradients()
    {
        var rnd = new Random(21);
        using var r = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, 2 * 5 * 6), [2, 5, 6], DType.F64);
        using var x = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, 2 * 5 * 6), [2, 5, 6], DType.F64);
        using var a = Cpu.FromDoubles([0.37], [1], DType.F64);
        using var w = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, 2 * 5 * 6), [2, 5, 6], DType.F64);
        r.RequiresGrad = true; x.RequiresGrad = true; a.RequiresGrad = true;
        double[][] Run(Func<Tensor> f)
        {
            r.Grad = null; x.Grad = null; a.Grad = null;
            var y = f(); var yv = y.ToDoubleArray();
            using (var loss = F.Sum(F.Mul(y, w))) loss.Backward();
            return [yv, r.Grad!.ToDoubleArray(), x.Grad!.ToDoubleArray(), a.Grad!.ToDoubleArray()];
        }
        var fused = Run(() => GatedResidualOp.Apply(r, x, a));
        var comp = Run(() => F.Add(r, Fx.ScaleBy(x, a)));
        string[] what = ["y", "dr", "dx", "dalpha"];
        for (int i = 0; i < 4; i++) Assert.IsLessThan(1e-12, WindowAttentionCpuTests.MaxDiff(fused[i], comp[i]), what[i]);
        Assert.IsGreaterThan(1e-3, Math.Abs(fused[3][0]), "dalpha is zero");
    }

    [TestMethod]
    public void GradientsMatchFiniteDifferences()
    {
        var rnd = new Random(22);
        using var r = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, 12), [3, 4], DType.F64);
        using var x = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, 12), [3, 4], DType.F64);
        using var a = Cpu.FromDoubles([-0.8], [1], DType.F64);
        using var w = Cpu.FromDoubles(WindowAttentionCpuTests.Rand(rnd, 12), [3, 4], DType.F64);
        r.RequiresGrad = true; x.RequiresGrad = true; a.RequiresGrad = true;
        var rep = GradCheck.Check(t => F.Sum(F.Mul(GatedResidualOp.Apply(t[0], t[1], t[2]), w)), [r, x, a], names: ["r", "x", "alpha"]);
        Assert.IsTrue(rep.Ok, rep.Text);
    }
}

/// <summary>kernels/gated_residual.cu against the CPU reference, with pre-filled gradient buffers (`+=`), many blocks and a ragged tail.</summary>
public abstract class GatedResidualCudaTestBase
{
    protected abstract CudaBackend Gpu { get; }
    static CpuBackend Cpu => Backend.Cpu;

    [TestInitialize]
    public void RequireDevice() => _ = Gpu;

    [TestMethod]
    [DataRow(DType.F32, DType.F32, 70001)]
    [DataRow(DType.BF16, DType.BF16, 1000)]
    [DataRow(DType.BF16, DType.F32, 257)]
    public void MatchesCpu(DType dt, DType adt, int n)
    {
        var rnd = new Random(n);
        using var rc = Cpu.FromFloats(Rand(rnd, n, 1), [n], dt); using var xc = Cpu.FromFloats(Rand(rnd, n, 1), [n], dt);
        using var ac = Cpu.FromFloats([0.73f], [1], adt); using var dyc = Cpu.FromFloats(Rand(rnd, n, 1), [n], dt);
        using var drc = Cpu.FromFloats(Rand(rnd, n, 0.1), [n], dt); using var dxc = Cpu.FromFloats(Rand(rnd, n, 0.1), [n], dt);
        using var dac = Cpu.FromFloats([0.25f], [1], adt);
        using var rg = Gpu.CopyFrom(rc); using var xg = Gpu.CopyFrom(xc); using var ag = Gpu.CopyFrom(ac); using var dyg = Gpu.CopyFrom(dyc);
        using var drg = Gpu.CopyFrom(drc); using var dxg = Gpu.CopyFrom(dxc); using var dag = Gpu.CopyFrom(dac);
        using var yc = Cpu.Empty([n], dt); using var yg = Gpu.Empty([n], dt);
        GatedResidualOps.For(Cpu).Forward(rc, xc, ac, yc);
        GatedResidualOps.For(Gpu).Forward(rg, xg, ag, yg);
        bool bf = dt == DType.BF16;
        Close(yc, yg, bf ? 1.0 / 128 : 1e-6, "y");
        GatedResidualOps.For(Cpu).Backward(xc, ac, dyc, drc, dxc, dac);
        GatedResidualOps.For(Gpu).Backward(xg, ag, dyg, drg, dxg, dag);
        Close(drc, drg, bf ? 1.0 / 128 : 1e-6, "dr");
        Close(dxc, dxg, bf ? 1.0 / 128 : 1e-6, "dx");
        Close(dac, dag, adt == DType.BF16 ? 1.0 / 64 : 1e-4, "dalpha");
    }

    [TestMethod]
    public void AutogradOpMatchesCpu()
    {
        var rnd = new Random(3);
        int n = 999;
        var r = Rand(rnd, n, 1); var x = Rand(rnd, n, 1); var w = Rand(rnd, n, 1);
        float[][] Grads(IBackend be)
        {
            using var tr = be.FromFloats(r, [n]); using var tx = be.FromFloats(x, [n]); using var ta = be.FromFloats([1.5f], [1]); using var tw = be.FromFloats(w, [n]);
            tx.RequiresGrad = true; ta.RequiresGrad = true;
            using (var loss = F.Sum(F.Mul(GatedResidualOp.Apply(tr, tx, ta), tw))) loss.Backward();
            return [tx.Grad!.ToFloatArray(), ta.Grad!.ToFloatArray()];
        }
        var c = Grads(Cpu); var g = Grads(Gpu);
        for (int i = 0; i < 2; i++)
            Assert.IsLessThan(1e-4 * Math.Max(1, c[i].Max(Math.Abs)), WindowAttentionCpuTests.MaxDiff(Array.ConvertAll(c[i], v => (double)v), Array.ConvertAll(g[i], v => (double)v)));
    }
}

[TestClass]
[TestCategory("Emulated")]
public sealed class GatedResidualEmulatedTests : GatedResidualCudaTestBase
{
    static readonly Lazy<CudaBackend> Shared = new(() => new CudaBackend(new EmulatedDevice { Schedule = EmuSchedule.Random, ScheduleSeed = 5 }, ownsDevice: true));
    protected override CudaBackend Gpu => Shared.Value;
}

[TestClass]
[TestCategory("Gpu")]
public sealed class GatedResidualGpuTests : GatedResidualCudaTestBase
{
    protected override CudaBackend Gpu => TestDevices.Gpu;
}
