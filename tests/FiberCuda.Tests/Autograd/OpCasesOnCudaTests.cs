using FiberCuda.Backends;
using FiberCuda.Backends.Cuda;
using FiberCuda.Runtime;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;

namespace FiberCuda.Tests.Autograd;

/// <summary>
/// One test runs every op on every backend: each <see cref="OpCases"/> case (autograd forward+backward,
/// and the raw IBackend cases) on the CUDA backend, in f32 and bf16, against the CPU's f64 run.
/// </summary>
public abstract class OpCasesOnCudaTestBase
{
    protected abstract IBackend Gpu { get; }

    public static IEnumerable<object[]> Cases => OpCases.All.Select(c => new object[] { c.Name });

    protected void RunCase(string name, DType dt)
    {
        var c = OpCases.Get(name);
        if (dt == DType.BF16 && !c.Bf16) return;
        var reference = OpCases.Run(c, Backend.Cpu, DType.F64);
        var got = OpCases.Run(c, Gpu, dt);
        var err = OpCases.Compare(got, reference, OpCases.Tolerance(dt, c.Tol));
        if (err is not null) Assert.Fail($"{name} {dt.Name()} on {Gpu.Name}:\n{err}");
    }
}

[TestClass]
[TestCategory("Emulated")]
public sealed class OpCasesOnEmulatedCudaTests : OpCasesOnCudaTestBase
{
    protected override IBackend Gpu => TestDevices.Emulated;

    [TestMethod, DynamicData(nameof(Cases))] public void F32(string name) => RunCase(name, DType.F32);
    [TestMethod, DynamicData(nameof(Cases))] public void Bf16(string name) => RunCase(name, DType.BF16);
}

[TestClass]
[TestCategory("Gpu")]
public sealed class OpCasesOnGpuTests : OpCasesOnCudaTestBase
{
    protected override IBackend Gpu => TestDevices.Gpu;

    [TestMethod, DynamicData(nameof(Cases))] public void F32(string name) => RunCase(name, DType.F32);
    [TestMethod, DynamicData(nameof(Cases))] public void Bf16(string name) => RunCase(name, DType.BF16);
}
