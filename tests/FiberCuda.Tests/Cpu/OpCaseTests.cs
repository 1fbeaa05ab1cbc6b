using FiberCuda.Backends;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;

namespace FiberCuda.Tests.Cpu;

/// <summary>Every op case on the CPU in f32 and bf16 against the CPU's own f64 run.</summary>
[TestClass]
public sealed class CpuOpCaseTests
{
    public static IEnumerable<object[]> Cases => OpCases.All.Select(c => new object[] { c.Name });

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void F32MatchesF64(string name)
    {
        var c = OpCases.Get(name);
        var reference = OpCases.Run(c, Backend.Cpu, DType.F64);
        var got = OpCases.Run(c, Backend.Cpu, DType.F32);
        var err = OpCases.Compare(got, reference, OpCases.Tolerance(DType.F32, c.Tol));
        if (err is not null) Assert.Fail($"{name} f32:\n{err}");
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void Bf16MatchesF64(string name)
    {
        var c = OpCases.Get(name);
        if (!c.Bf16) return;
        var reference = OpCases.Run(c, Backend.Cpu, DType.F64);
        var got = OpCases.Run(c, Backend.Cpu, DType.BF16);
        var err = OpCases.Compare(got, reference, OpCases.Tolerance(DType.BF16, c.Tol));
        if (err is not null) Assert.Fail($"{name} bf16:\n{err}");
    }

    [TestMethod]
    public void EveryCaseProducesValues()
    {
        foreach (var c in OpCases.All)
        {
            var r = OpCases.Run(c, Backend.Cpu, DType.F64);
            Assert.IsTrue(r.Count > 0, c.Name);
            if (c.Autograd) Assert.IsTrue(r.Keys.Any(k => k.StartsWith("grad.")), $"{c.Name} has no gradients");
        }
    }
}
