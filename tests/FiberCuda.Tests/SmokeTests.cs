using FiberCuda.Tensors;

namespace FiberCuda.Tests;

[TestClass]
public sealed class BFloat16Tests
{
    [TestMethod]
    public void RoundsToNearestEven()
    {
        // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1+2^-7: ties go to the even mantissa (1.0).
        Assert.AreEqual(1.0f, BFloat16.Round(1f + MathF.Pow(2, -8)));
        // 1 + 3·2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even): rounds up.
        Assert.AreEqual(1f + MathF.Pow(2, -6), BFloat16.Round(1f + 3 * MathF.Pow(2, -8)));
        Assert.IsTrue(float.IsNaN(BFloat16.Round(float.NaN)));
        Assert.AreEqual(float.PositiveInfinity, BFloat16.Round(float.PositiveInfinity));
    }
}
