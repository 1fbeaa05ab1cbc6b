using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace FiberCuda.Ops;

/// <summary>
/// The error function (.NET has none). erfc for x ≥ 0.5 uses the Chebyshev fit
/// erfc(z) = t·exp(−z² + P(t)), t = 2/(2+z) (the form of Numerical Recipes 3rd ed., §6.2), accurate
/// to ~1e-16 relative; erf for |x| &lt; 0.5 uses its Taylor series, which keeps full relative precision
/// near zero where 1 − erfc would cancel.
/// </summary>
public static class SpecialMath
{
    static readonly double[] Cof =
    {
        -1.3026537197817094, 6.4196979235649026e-1, 1.9476473204185836e-2, -9.561514786808631e-3,
        -9.46595344482036e-4, 3.66839497852761e-4, 4.2523324806907e-5, -2.0278578112534e-5,
        -1.624290004647e-6, 1.303655835580e-6, 1.5626441722e-8, -8.5238095915e-8,
        6.529054439e-9, 5.059343495e-9, -9.91364156e-10, -2.27365122e-10,
        9.6467911e-11, 2.394038e-12, -6.886027e-12, 8.94487e-13,
        3.13092e-13, -1.12708e-13, 3.81e-16, 7.106e-15,
        -1.523e-15, -9.4e-17, 1.21e-16, -2.8e-17,
    };

    public const double TwoOverSqrtPi = 1.1283791670955126;
    public const double InvSqrt2 = 0.70710678118654752;
    public const double InvSqrt2Pi = 0.39894228040143268;

    public static double Erf(double x)
    {
        if (double.IsNaN(x)) return x;
        double a = Math.Abs(x);
        if (a < 0.5)
        {
            // erf(x) = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
            double x2 = x * x, term = x, sum = x;
            for (int n = 1; n < 30; n++)
            {
                term *= -x2 / n;
                double add = term / (2 * n + 1);
                sum += add;
                if (Math.Abs(add) < 1e-17 * Math.Abs(sum)) break;
            }
            return TwoOverSqrtPi * sum;
        }
        double r = 1.0 - ErfcPositive(a);
        return x < 0 ? -r : r;
    }

    public static double Erfc(double x)
    {
        if (double.IsNaN(x)) return x;
        if (Math.Abs(x) < 0.5) return 1.0 - Erf(x);
        return x >= 0 ? ErfcPositive(x) : 2.0 - ErfcPositive(-x);
    }

    static double ErfcPositive(double z) => ErfcPositive(z, Cof.Length);

    /// <summary>
    /// The Chebyshev sum with the first <paramref name="terms"/> coefficients: all 28 for double; 18 for
    /// float results (the dropped tail is below 1e-11, far under a float ulp).
    /// </summary>
    static double ErfcPositive(double z, int terms)
    {
        double t = 2.0 / (2.0 + z), ty = 4.0 * t - 2.0;
        double d = 0.0, dd = 0.0;
        for (int j = terms - 1; j > 0; j--)
        {
            double tmp = d;
            d = ty * d - dd + Cof[j];
            dd = tmp;
        }
        return t * Math.Exp(-z * z + 0.5 * (Cof[0] + ty * d) - dd);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Erf(float x) => (float)Erf((double)x);

    /// <summary>Exact GELU: 0.5·x·(1 + erf(x/√2)) = 0.5·x·erfc(−x/√2) (the erfc form keeps precision for x ≪ 0).</summary>
    public static double Gelu(double x) => 0.5 * x * Erfc(-x * InvSqrt2);

    const int FloatTerms = 18;

    static double ErfcForFloat(double x)
    {
        if (Math.Abs(x) < 0.5) return 1.0 - Erf(x);
        return x >= 0 ? ErfcPositive(x, FloatTerms) : 2.0 - ErfcPositive(-x, FloatTerms);
    }

    /// <summary>GELU for fp32 math: evaluated in double with the shorter erfc, rounded once to float.</summary>
    public static float GeluF(float x) => (float)(0.5 * x * ErfcForFloat(-x * InvSqrt2));

    /// <summary>GELU' for fp32 math (see <see cref="GeluF"/>).</summary>
    public static float GeluGradF(float x)
    {
        double xd = x;
        return (float)(0.5 * ErfcForFloat(-xd * InvSqrt2) + xd * InvSqrt2Pi * Math.Exp(-0.5 * xd * xd));
    }

    /// <summary>
    /// GELU (or GELU' when <paramref name="grad"/>) of a span of floats: <see cref="GeluF"/>/<see cref="GeluGradF"/>
    /// with the Chebyshev sum four lanes at a time and the exponentials through TensorPrimitives.
    /// Agrees with the scalar versions to within a float ulp (the vector exp may differ in its last bit).
    /// </summary>
    public static void GeluF(ReadOnlySpan<float> x, Span<float> y, bool grad = false)
    {
        const int Block = 256;
        Span<double> arg = stackalloc double[Block], tt = stackalloc double[Block], ex = stackalloc double[Block];
        for (int b0 = 0; b0 < x.Length; b0 += Block)
        {
            int n = Math.Min(Block, x.Length - b0);
            var xs = x.Slice(b0, n); var ys = y.Slice(b0, n);
            int i = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                var two = Vector256.Create(2.0); var four = Vector256.Create(4.0); var half = Vector256.Create(0.5);
                for (; i <= n - 4; i += 4)
                {
                    var a = Vector256.Abs(Vector256.Create((double)xs[i], xs[i + 1], xs[i + 2], xs[i + 3]) * InvSqrt2);
                    var t = two / (two + a);
                    var ty = four * t - two;
                    var d = Vector256<double>.Zero; var dd = Vector256<double>.Zero;
                    for (int j = FloatTerms - 1; j > 0; j--)
                    {
                        var tmp = d;
                        d = ty * d - dd + Vector256.Create(Cof[j]);
                        dd = tmp;
                    }
                    (-a * a + half * (Vector256.Create(Cof[0]) + ty * d) - dd).CopyTo(arg.Slice(i));
                    t.CopyTo(tt.Slice(i));
                }
            }
            for (; i < n; i++)
            {
                double a = Math.Abs(xs[i] * InvSqrt2);
                double t = 2.0 / (2.0 + a), ty = 4.0 * t - 2.0, d = 0, dd = 0;
                for (int j = FloatTerms - 1; j > 0; j--) { double tmp = d; d = ty * d - dd + Cof[j]; dd = tmp; }
                arg[i] = -a * a + 0.5 * (Cof[0] + ty * d) - dd;
                tt[i] = t;
            }
            TensorPrimitives.Exp(arg[..n], arg[..n]);
            if (grad)
            {
                for (int k = 0; k < n; k++) { double xd = xs[k]; ex[k] = -0.5 * xd * xd; }
                TensorPrimitives.Exp(ex[..n], ex[..n]);
            }
            for (int k = 0; k < n; k++)
            {
                double xd = xs[k], z = -xd * InvSqrt2;
                double erfcPos = tt[k] * arg[k]; // erfc(|z|)
                double erfc = Math.Abs(z) < 0.5 ? 1.0 - Erf(z) : z >= 0 ? erfcPos : 2.0 - erfcPos;
                ys[k] = grad ? (float)(0.5 * erfc + xd * InvSqrt2Pi * ex[k]) : (float)(0.5 * xd * erfc);
            }
        }
    }

    /// <summary>d/dx GELU = Φ(x) + x·φ(x).</summary>
    public static double GeluGrad(double x) => 0.5 * Erfc(-x * InvSqrt2) + x * InvSqrt2Pi * Math.Exp(-0.5 * x * x);
}
