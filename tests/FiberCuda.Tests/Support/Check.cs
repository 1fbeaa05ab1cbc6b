namespace FiberCuda.Tests.Support;

/// <summary>Element-wise closeness with a report of the worst element.</summary>
public static class Check
{
    public static void Close(double[] expected, double[] actual, double atol, double rtol, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length, $"{what}: length");
        int worst = -1; double worstExcess = double.NegativeInfinity; int bad = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            double excess = double.IsNaN(e) || double.IsNaN(a) ? (double.IsNaN(e) && double.IsNaN(a) ? double.NegativeInfinity : double.PositiveInfinity)
                          : Math.Abs(a - e) - (atol + rtol * Math.Abs(e));
            if (excess > 0) bad++;
            if (excess > worstExcess) { worstExcess = excess; worst = i; }
        }
        if (bad > 0)
            Assert.Fail($"{what}: {bad}/{expected.Length} off; worst [{worst}] expected {expected[worst]:g12} got {actual[worst]:g12} (atol {atol:g3}, rtol {rtol:g3})");
    }

    public static double[] Rand(int seed, int n, double lo = -1, double hi = 1)
    {
        var r = new Random(seed);
        var v = new double[n];
        for (int i = 0; i < n; i++) v[i] = lo + (hi - lo) * r.NextDouble();
        return v;
    }
}
