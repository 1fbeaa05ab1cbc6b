using System.Text;
using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Support;

/// <summary>
/// A named op test: <see cref="Body"/> builds inputs through the <see cref="CaseRun"/>, runs ops on the
/// run's backend and records outputs. Autograd cases then get loss = Σ_outputs Σ(out ⊙ w) with fixed
/// random w, run backward, and record "grad.&lt;input&gt;" for every input. <see cref="Tol"/> scales the
/// per-dtype tolerance; <see cref="Bf16"/> false skips the bf16 run; <see cref="GradCheckable"/> false marks
/// cases finite differences cannot see (piecewise-constant roundings).
/// </summary>
public sealed record OpCase(string Name, Action<CaseRun> Body, bool Autograd = true, double Tol = 1, bool Bf16 = true, bool GradCheckable = true)
{
    public override string ToString() => Name;
}

/// <summary>
/// Every op on every backend: run a case on any IBackend and dtype, compare with the CPU f64 run.
/// <code>
/// var reference = OpCases.Run(c, Backend.Cpu, DType.F64);
/// var got = OpCases.Run(c, myBackend, DType.F32);
/// var err = OpCases.Compare(got, reference, OpCases.Tolerance(DType.F32, c.Tol));
/// if (err is not null) Assert.Fail(c.Name + ": " + err);
/// </code>
/// </summary>
public static partial class OpCases
{
    public static IReadOnlyList<OpCase> All => _all.Value;
    static readonly Lazy<List<OpCase>> _all = new(BuildAll);

    public static OpCase Get(string name) => All.First(c => c.Name == name);

    /// <summary>Runs the case (forward, and backward for autograd cases) and returns every recorded value by name.</summary>
    public static Dictionary<string, double[]> Run(OpCase c, IBackend backend, DType dtype)
    {
        using var run = new CaseRun(c.Name, backend, dtype, c.Autograd);
        c.Body(run);
        if (c.Autograd)
        {
            using (var loss = Loss(run)) loss.Backward();
            foreach (var (name, t) in run.GradInputs)
                run.Values["grad." + name] = t.Grad is null ? new double[t.Numel] : t.Grad.ToDoubleArray();
        }
        return new Dictionary<string, double[]>(run.Values);
    }

    /// <summary>Σ_i Σ(out_i ⊙ w_i), w_i fixed per (case, output name).</summary>
    static Tensor Loss(CaseRun run)
    {
        Tensor? total = null;
        foreach (var (name, y) in run.Outputs)
        {
            var w = run.Input("w." + name, y.Shape, -1, 1, grad: false, dtype: y.DType);
            var term = F.Sum(F.Mul(y, w));
            total = total is null ? term : F.Add(total, term);
        }
        return total ?? throw new InvalidOperationException($"case {run} recorded no output");
    }

    /// <summary>fp64 gradcheck of an autograd case on the CPU: the case body is replayed for every finite difference.</summary>
    public static GradCheck.Report GradCheck(OpCase c, double atol = 1e-7, double rtol = 1e-5)
    {
        if (!c.Autograd) throw new ArgumentException($"{c.Name} is not an autograd case");
        using var run = new CaseRun(c.Name, Backends.Backend.Cpu, DType.F64, autograd: true);
        c.Body(run); run.ResetOutputs();
        var inputs = run.GradInputs.Select(x => x.T).ToArray();
        var names = run.GradInputs.Select(x => x.Name).ToArray();
        return FiberCuda.Autograd.GradCheck.Check(_ =>
        {
            run.ResetOutputs();
            c.Body(run);
            return Loss(run);
        }, inputs, atol: atol, rtol: rtol, names: names);
    }

    /// <summary>(atol, rtol) for a run of dtype <paramref name="dt"/>; atol is relative to the output's largest magnitude.</summary>
    public static (double Atol, double Rtol) Tolerance(DType dt, double factor = 1) => dt switch
    {
        DType.F64 => (1e-12 * factor, 1e-10 * factor),
        DType.F32 => (2e-5 * factor, 2e-4 * factor),
        DType.BF16 => (3e-2 * factor, 3e-2 * factor),
        _ => throw new ArgumentException(dt.ToString()),
    };

    /// <summary>
    /// Null when every value named in <paramref name="reference"/> matches: |got − ref| ≤ atol·max(1, max|ref|) + rtol·|ref|.
    /// Otherwise a report of the worst element of each failing output.
    /// </summary>
    public static string? Compare(IReadOnlyDictionary<string, double[]> got, IReadOnlyDictionary<string, double[]> reference, (double Atol, double Rtol) tol)
    {
        var sb = new StringBuilder();
        foreach (var (name, r) in reference)
        {
            if (!got.TryGetValue(name, out var g)) { sb.AppendLine($"{name}: missing"); continue; }
            if (g.Length != r.Length) { sb.AppendLine($"{name}: {g.Length} values, expected {r.Length}"); continue; }
            double scale = 1; foreach (double v in r) if (double.IsFinite(v)) scale = Math.Max(scale, Math.Abs(v));
            int worst = -1, bad = 0; double worstExcess = double.NegativeInfinity;
            for (int i = 0; i < r.Length; i++)
            {
                double bound = tol.Atol * scale + tol.Rtol * Math.Abs(r[i]);
                double excess = (double.IsNaN(g[i]) != double.IsNaN(r[i])) ? double.PositiveInfinity
                              : double.IsNaN(r[i]) ? double.NegativeInfinity : Math.Abs(g[i] - r[i]) - bound;
                if (excess > 0) bad++;
                if (excess > worstExcess) { worstExcess = excess; worst = i; }
            }
            if (bad > 0)
                sb.AppendLine($"{name}: {bad}/{r.Length} elements off; worst [{worst}] got {g[worst]:g9} expected {r[worst]:g9} (|diff| {Math.Abs(g[worst] - r[worst]):g3}, atol {tol.Atol * scale:g3}, rtol {tol.Rtol:g3})");
        }
        return sb.Length == 0 ? null : sb.ToString().TrimEnd();
    }
}
