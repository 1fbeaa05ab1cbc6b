using FiberCuda.Tensors;

namespace FiberCuda.Tests.Attention;

/// <summary>Shared helpers of the kernel-vs-CPU-reference tests (window attention, cross-attention, gated residual).</summary>
internal static class KernelCheck
{
    public static float[] Rand(Random r, long n, double scale) => Array.ConvertAll(WindowAttentionCpuTests.Rand(r, n, scale), v => (float)v);

    /// <summary>|gpu − cpu| ≤ tol·max|cpu| (sums lose absolute precision relative to their largest terms).</summary>
    public static void Close(Tensor cpu, Tensor gpu, double tol, string what)
    {
        var e = cpu.ToFloatArray(); var a = gpu.ToFloatArray();
        Assert.HasCount(e.Length, a, what);
        double max = e.Max(v => Math.Abs((double)v));
        double worst = 0; int at = -1;
        for (int i = 0; i < e.Length; i++)
        {
            double d = Math.Abs((double)e[i] - a[i]);
            if (double.IsNaN(a[i])) d = double.PositiveInfinity;
            if (d > worst) { worst = d; at = i; }
        }
        Assert.IsTrue(worst <= tol * Math.Max(max, 1e-6),
            $"{what}: worst |diff| {worst:g4} at {at} (cpu {(at >= 0 ? e[at] : 0)}, gpu {(at >= 0 ? a[at] : 0)}), max |cpu| {max:g4}, tol {tol}");
    }
}
