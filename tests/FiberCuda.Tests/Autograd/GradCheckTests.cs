using FiberCuda.Tests.Support;

namespace FiberCuda.Tests.Autograd;

/// <summary>Every autograd op case: autograd's gradients against fp64 central differences.</summary>
[TestClass]
public sealed class OpCaseGradCheckTests
{
    public static IEnumerable<object[]> Cases => OpCases.All.Where(c => c.Autograd && c.GradCheckable).Select(c => new object[] { c.Name });

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void GradientsMatchFiniteDifferences(string name)
    {
        var report = OpCases.GradCheck(OpCases.Get(name));
        Assert.IsTrue(report.Ok, $"{name}: {report}");
        Assert.IsTrue(report.Checked > 0, $"{name}: nothing checked");
    }
}
