using FiberCuda.Backends;
using FiberCuda.Nn;

namespace FiberCuda.Models;

/// <summary>
/// Fresh initialisation of a model's parameters from the catalog's <see cref="ParamInit"/> (fiber-coarse.md §1.1,
/// §2, §4.1): fusion layers trunc-normal/normal 0.02 with α = 0, heads normal 0.02. Parameters the official model
/// takes from pretrained towers get the towers' own initialisers (Linear/Embedding/table 0.02, biases 0,
/// norms 1/0), for from-scratch runs and tests. Deterministic in <paramref name="seed"/>.
/// <paramref name="std"/> replaces 0.02 for a model trained from scratch whose widths are far below FIBER-B's: at width
/// 64, 0.02 ≪ 1/√64 and the fresh towers map every input to nearly the same feature (cosine ≈ 0.9999), a plateau
/// that contrastive training needs many steps to leave.
/// </summary>
public static class FiberInit
{
    public static void Apply(Module model, FiberConfig config, int seed = 0, double std = 0.02)
    {
        var cat = FiberParameters.ByName(config);
        int i = 0;
        foreach (var (name, p) in model.NamedParameters())
        {
            if (!cat.TryGetValue(name, out var spec)) throw new InvalidOperationException($"{name} is not in the {config.Name} catalog");
            var init = spec.Init;
            if (init == ParamInit.Pretrained)
                init = name.EndsWith(".bias") ? ParamInit.Zeros
                     : p.Rank == 1 && (name.Contains("norm") || name.Contains("LayerNorm")) ? ParamInit.Ones
                     : ParamInit.TruncNormal002;
            var rng = new Random(unchecked(seed * 7919 + i++));
            var v = new double[p.Numel];
            switch (init)
            {
                case ParamInit.Zeros: break;
                case ParamInit.Ones: Array.Fill(v, 1.0); break;
                case ParamInit.Temperature: Array.Fill(v, 0.07); break;
                case ParamInit.Normal002:
                    for (int k = 0; k < v.Length; k++) v[k] = std * Gaussian(rng);
                    break;
                case ParamInit.TruncNormal002:
                    // timm trunc_normal_(std=.02) cuts at ±2 absolute, i.e. at 100σ: a plain normal in practice.
                    for (int k = 0; k < v.Length; k++) v[k] = Math.Clamp(std * Gaussian(rng), -2.0, 2.0);
                    break;
                default: throw new NotSupportedException(init.ToString());
            }
            using var t = p.Backend.FromDoubles(v, p.Shape, p.DType);
            p.Backend.Cast(t, p);
        }
    }

    static double Gaussian(Random r)
    {
        double u1 = 1.0 - r.NextDouble(), u2 = r.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }
}
