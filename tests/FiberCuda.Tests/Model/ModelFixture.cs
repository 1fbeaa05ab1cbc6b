using System.Text;
using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.IO;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Model;

/// <summary>
/// The tensors written by tools/fixtures/make_model_fixtures.py (torch 1.13, reference computed in fp64):
/// `param.*` / `buffer.*` (official state_dict names), `input.*`, `out.{case}.*`, `weight.{case}.*` (the random
/// weights of the scalar loss Σ out·weight), `grad.{case}.*` (parameters that received a gradient), `tap.*`.
/// </summary>
sealed class ModelFixture
{
    public static string PathOf => File("tiny_coarse_model.safetensors");
    static string File(string name) => System.IO.Path.Combine(AppContext.BaseDirectory, "Fixtures", "model", name);

    static readonly Lazy<ModelFixture> _instance = new(() => new ModelFixture(PathOf));
    public static ModelFixture Instance => _instance.Value;

    /// <summary>The tiny fine backbones (tools/fixtures/make_fine_fixtures.py), fusion v2 and v3.</summary>
    static readonly Lazy<ModelFixture> _fineV2 = new(() => new ModelFixture(File("tiny_fine_v2.safetensors"))), _fineV3 = new(() => new ModelFixture(File("tiny_fine_v3.safetensors")));
    public static ModelFixture Fine(int version) => version switch { 2 => _fineV2.Value, 3 => _fineV3.Value, _ => throw new ArgumentOutOfRangeException(nameof(version)) };

    public readonly Dictionary<string, HostTensor> T = [];

    ModelFixture(string path)
    {
        using var f = SafeTensorsFile.Open(path);
        foreach (var info in f.Tensors) T[info.Name] = f.Read(info.Name);
    }

    public static readonly FiberConfig Config = FiberConfig.Tiny();

    public IEnumerable<string> Names(string prefix) => T.Keys.Where(k => k.StartsWith(prefix)).Select(k => k[prefix.Length..]);

    public Tensor Tensor(string name, IBackend be, DType dtype)
    {
        var h = T[name];
        return be.FromDoubles(h.ToDoubles(), h.IntShape, dtype);
    }

    public int[] Ints(string name) => Array.ConvertAll(T[name].ToDoubles(), d => (int)d);

    public TextBatch Text()
    {
        var shape = T["input.ids"].IntShape;
        return new TextBatch(Ints("input.ids"), Ints("input.mask"), shape[0], shape[1]);
    }

    /// <summary>A tiny coarse FIBER with the fixture's parameters, eval mode.</summary>
    public FiberCoarseModel Model(DType dtype, IBackend? backend = null)
    {
        var be = backend ?? Backend.Cpu;
        var ctx = new NnContext(be, dtype);
        var m = new FiberCoarseModel(ctx, Config);
        var sd = Names("param.").ToDictionary(n => n, n => Tensor("param." + n, be, dtype));
        Assert.IsTrue(m.LoadBackbone(sd).Ok);
        m.Eval();
        return m;
    }

    /// <summary>Scalar Σ outᵢ·weightᵢ, as the generator's loss.</summary>
    public Tensor Loss(string @case, IReadOnlyDictionary<string, Tensor> outs)
    {
        Tensor? loss = null;
        foreach (var (k, v) in outs)
        {
            var w = Tensor($"weight.{@case}.{k}", v.Backend, v.DType);
            var term = F.Sum(F.Mul(v, w));
            loss = loss is null ? term : F.Add(loss, term);
        }
        return loss!;
    }

    /// <summary>max|a − r| / (max|r| + floor): a per-tensor relative error with an absolute floor.</summary>
    public static double Err(double[] actual, double[] reference, double floor)
    {
        if (actual.Length != reference.Length) return double.PositiveInfinity;
        double e = 0, m = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double d = Math.Abs(actual[i] - reference[i]);
            if (double.IsNaN(d)) return double.PositiveInfinity;
            e = Math.Max(e, d); m = Math.Max(m, Math.Abs(reference[i]));
        }
        return e / (m + floor);
    }

    public void AssertOutput(string name, Tensor actual, double tol, StringBuilder? log = null)
    {
        var r = T[name];
        CollectionAssert.AreEqual(r.IntShape, actual.Shape, name + " shape");
        double err = Err(actual.ToDoubleArray(), r.ToDoubles(), 1e-6);
        log?.AppendLine($"{name}: rel err {err:g3}");
        Assert.IsTrue(err <= tol, $"{name}: relative error {err:g3} > {tol:g3}");
    }

    /// <summary>
    /// Every parameter's gradient against `grad.{case}.*`: present ones within <paramref name="tol"/> (relative to the
    /// tensor's max, floored at 1e-4 of the case's largest gradient: the attention key biases' exact zeros are rounding
    /// noise), absent ones must be null or zero.
    /// </summary>
    public void AssertGrads(string @case, Module m, double tol, StringBuilder? log = null) => AssertGrads(@case, m.NamedParameters(), tol, log);

    public void AssertGrads(string @case, IEnumerable<(string Name, Tensor Tensor)> parameters, double tol, StringBuilder? log = null)
    {
        string pre = $"grad.{@case}.";
        double global = Names(pre).Max(n => T[pre + n].ToDoubles().Max(Math.Abs));
        int n = 0;
        var failures = new List<string>();
        foreach (var (name, p) in parameters)
        {
            var g = p.Grad?.ToDoubleArray();
            if (!T.TryGetValue(pre + name, out var r))
            {
                if (g is not null && g.Any(x => x != 0)) failures.Add($"{name}: gradient where torch has none (max {g.Max(Math.Abs):g3})");
                continue;
            }
            n++;
            var rv = r.ToDoubles();
            double err = Err(g ?? new double[rv.Length], rv, 1e-4 * global);
            log?.AppendLine($"{pre}{name}: rel err {err:g3}");
            if (err > tol) failures.Add($"{name}: relative error {err:g3} > {tol:g3}");
        }
        Assert.AreEqual(Names(pre).Count(), n, $"{@case}: gradients in the fixture for parameters the model lacks");
        if (failures.Count > 0) Assert.Fail($"{@case}: {failures.Count} gradients off:\n" + string.Join("\n", failures));
    }
}
