using System.Runtime.InteropServices;
using System.Text;
using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Autograd;

/// <summary>
/// Checks autograd's gradients against fp64 central finite differences: for every element of every
/// input that requires grad, (f(x+h) − f(x−h)) / 2h, with f evaluated under NoGrad. Inputs must be f64
/// tensors (use the CPU backend); f must return a one-element tensor.
/// </summary>
public static class GradCheck
{
    public sealed record Worst(string Input, int Index, double Analytic, double Numeric, double Excess);

    public sealed class Report
    {
        public bool Ok { get; init; }
        public int Checked { get; init; }
        public Worst? WorstElement { get; init; }
        public string Text { get; init; } = "";
        public override string ToString() => Text;
    }

    /// <summary>
    /// Element passes when |analytic − numeric| ≤ atol + rtol·|numeric|. The report names the element with
    /// the largest excess over that bound (or the closest call when all pass).
    /// </summary>
    public static Report Check(Func<Tensor[], Tensor> f, Tensor[] inputs, double h = 1e-6, double atol = 1e-7, double rtol = 1e-5, string[]? names = null)
    {
        foreach (var t in inputs)
            if (t.RequiresGrad && t.DType != DType.F64) throw new ArgumentException($"gradcheck needs f64 inputs, got {t}");
        names ??= inputs.Select((_, i) => $"input{i}").ToArray();

        foreach (var t in inputs) { t.Grad?.Dispose(); t.Grad = null; }
        using (var y = f(inputs))
        {
            if (y.Numel != 1) throw new ArgumentException($"gradcheck: f must return one element, got {y}");
            y.Backward();
        }

        var sb = new StringBuilder();
        Worst? worst = null; int n = 0; bool ok = true;
        for (int i = 0; i < inputs.Length; i++)
        {
            var x = inputs[i];
            if (!x.RequiresGrad) continue;
            var analytic = x.Grad is null ? new double[x.Numel] : x.Grad.ToDoubleArray();
            var vals = x.ToArray<double>();
            for (int e = 0; e < vals.Length; e++)
            {
                double orig = vals[e];
                vals[e] = orig + h; Upload(x, vals); double fp = Eval(f, inputs);
                vals[e] = orig - h; Upload(x, vals); double fm = Eval(f, inputs);
                vals[e] = orig; Upload(x, vals);
                double num = (fp - fm) / (2 * h);
                double excess = Math.Abs(analytic[e] - num) - (atol + rtol * Math.Abs(num));
                if (double.IsNaN(analytic[e]) || double.IsNaN(num)) excess = double.PositiveInfinity;
                n++;
                if (excess > 0) ok = false;
                if (worst is null || excess > worst.Excess) worst = new Worst(names[i], e, analytic[e], num, excess);
            }
        }
        sb.Append(ok ? "gradcheck passed" : "gradcheck FAILED").Append($" ({n} elements, atol {atol:g3}, rtol {rtol:g3})");
        if (worst is not null)
            sb.Append($"; worst: {worst.Input}[{worst.Index}] analytic {worst.Analytic:g10} vs numeric {worst.Numeric:g10} (|diff| {Math.Abs(worst.Analytic - worst.Numeric):g3}, excess over tolerance {worst.Excess:g3})");
        return new Report { Ok = ok, Checked = n, WorstElement = worst, Text = sb.ToString() };
    }

    static double Eval(Func<Tensor[], Tensor> f, Tensor[] inputs)
    {
        using (Grad.NoGrad())
        using (var y = f(inputs))
            return y.ToDoubleArray()[0];
    }

    static void Upload(Tensor x, double[] vals) => x.Backend.Upload(x, MemoryMarshal.AsBytes(vals.AsSpan()));
}
