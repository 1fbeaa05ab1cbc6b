using FiberCuda.Autograd;
using FiberCuda.Backends;
using FiberCuda.Models;
using FiberCuda.Nn;
using FiberCuda.Tensors;
using FiberCuda.Tests.Support;

namespace FiberCuda.Tests.Model;

/// <summary>
/// Issue 3's whole-model GPU check: the fused coarse FIBER-B at 384 px, batch 8, in bf16 on the GPU (every custom kernel
/// at its real shapes: fused window attention, cross-attention, gated residual, patch merging, drop path in eval = off)
/// against the CPU fp32 reference, forward outputs and every parameter gradient of a scalar loss; and the fine v2
/// backbone the same way at 512×640 (padded windows at every stage).
///
/// The CPU reference runs only the first <c>refBatch</c> items: batch elements are independent, so the GPU's loss
/// weights the other items by zero and its gradients equal those of the reference batch. Weights: the catalog's fresh
/// initialisation with every α set to 0.3 (so both fusion directions matter). Criteria, per tensor: outputs' max error
/// ≤ 5% of the tensor's largest value; gradients' cosine similarity ≥ 0.98 (bf16 rounds every activation and GEMM
/// input, so element-wise relative errors of small gradient entries are meaningless). Category GpuLong: it takes
/// minutes (the CPU reference) and runs in `tools/gpu-check.sh OUT --model`, not in the default check.
/// </summary>
[TestClass]
public sealed class FiberBGpuCheck
{
    [TestMethod]
    [TestCategory("GpuLong")]
    [Timeout(900_000)]
    public void CoarseB384Batch8Bf16MatchesTheCpuF32Reference() =>
        Run(FiberConfig.CoarseB(384), 384, 384, 8, 2, TestDevices.Gpu, 40, std: 0.02, DType.BF16, outTol: 0.05, minCos: 0.98);

    /// <summary>The fine v2 backbone likewise, at 512×640 (every stage pads partial windows of 12), batch 2, 64 tokens.</summary>
    [TestMethod]
    [TestCategory("GpuLong")]
    [Timeout(900_000)]
    public void FineB512x640Bf16MatchesTheCpuF32Reference() =>
        Run(FiberConfig.FineB(2), 512, 640, 2, 1, TestDevices.Gpu, 64, std: 0.02, DType.BF16, outTol: 0.05, minCos: 0.98);

    /// <summary>
    /// The same code at toy size on the emulator in f32, with f32 tolerances, so a GPU session does not fail on a bug of
    /// the check itself (the batch split, the weight transfer, the comparisons). bf16 at toy widths says nothing about
    /// FIBER-B: with 16 channels a few roundings move a softmax or a pooled tanh by tens of percent.
    /// </summary>
    [TestMethod]
    [TestCategory("Emulated")]
    public void TheCheckRunsOnTheEmulatedGpuAtToySize() =>
        Run(FiberConfig.Tiny(), 64, 64, 3, 2, TestDevices.Emulated, 7, std: 0.3, DType.F32, outTol: 1e-4, minCos: 0.99999);

    [TestMethod]
    [TestCategory("Emulated")]
    public void TheFineCheckRunsOnTheEmulatedGpuAtToySize() =>
        Run(FiberConfig.Tiny(FiberStage.Fine, window: 3), 64, 96, 3, 2, TestDevices.Emulated, 7, std: 0.3, DType.F32, outTol: 1e-4, minCos: 0.99999);

    /// <summary>The model of config <paramref name="c"/>'s stage, its backbone loader and its outputs by name.</summary>
    static (Module M, Action<Dictionary<string, Tensor>> Load, Func<Tensor, TextBatch, (string, Tensor)[]> Forward) Build(FiberConfig c, NnContext ctx)
    {
        if (c.Stage == FiberStage.Coarse)
        {
            var m = new FiberCoarseModel(ctx, c);
            return (m, sd => m.LoadBackbone(sd), (img, t) =>
            {
                var o = m.Forward(img, t);
                return [("text_feats", o.TextFeats), ("image_feats", o.ImageFeats), ("cls_feats", o.ClsFeats)];
            });
        }
        var f = new FiberFineModel(ctx, c);
        return (f, sd => f.LoadBackbone(sd), (img, t) =>
        {
            var o = f.Forward(img, t);
            return [.. o.Features.Select((x, s) => ($"c{s + 2}", x.Tokens)), ("hidden", o.TextHidden)];
        });
    }

    internal static void Run(FiberConfig c, int H, int W, int batch, int refBatch, IBackend gpu, int textLen, double std, DType dt, double outTol, double minCos)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var rng = new Random(42);

        // Weights: fresh init in f32 on the CPU, α = 0.3; the GPU model loads them cast to its dtype.
        var (cpu, _, cpuForward) = Build(c, new NnContext(Backend.Cpu, DType.F32));
        FiberInit.Apply(cpu, c, seed: 3, std: std);
        foreach (var (n, p) in cpu.NamedParameters())
            if (n.EndsWith("alpha_i2t") || n.EndsWith("alpha_t2i")) p.Backend.Fill(p, 0.3);
        cpu.Eval();
        var (dev, devLoad, devForward) = Build(c, new NnContext(gpu, dt));
        devLoad(cpu.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor));
        dev.Eval();

        // Inputs: normalised-image-like pixels; texts of random ids with 0..L/4 pad tokens at the end.
        var pix = new double[batch * 3 * H * W];
        for (int i = 0; i < pix.Length; i++) pix[i] = 2 * rng.NextDouble() - 1;
        var ids = new int[batch * textLen];
        var mask = new int[batch * textLen];
        for (int b = 0; b < batch; b++)
        {
            int real = textLen - rng.Next(textLen / 4 + 1);
            for (int t = 0; t < textLen; t++)
            {
                bool on = t < real;
                ids[b * textLen + t] = !on ? c.PadTokenId : t == 0 ? 0 : t == real - 1 ? 2 : rng.Next(3, c.VocabSize);
                mask[b * textLen + t] = on ? 1 : 0;
            }
        }
        var text = new TextBatch(ids, mask, batch, textLen);

        var gOut = devForward(gpu.FromDoubles(pix, [batch, 3, H, W], dt), text);
        var cOut = cpuForward(Backend.Cpu.FromDoubles(pix[..(refBatch * 3 * H * W)], [refBatch, 3, H, W], DType.F32), text.Rows(0, refBatch));
        var outs = gOut.Zip(cOut, (g, r) => (Name: g.Item1, Gpu: g.Item2, Cpu: r.Item2)).ToArray();

        // Loss Σ out·w; w is zero on the GPU's items ≥ refBatch.
        Tensor? gLoss = null, cLoss = null;
        var report = new List<string>();
        var failures = new List<string>();
        foreach (var (name, g, r) in outs)
        {
            long per = g.Numel / batch;
            var w = new double[g.Numel];
            for (long i = 0; i < refBatch * per; i++) w[i] = 2 * rng.NextDouble() - 1;
            var gt = F.Sum(F.Mul(g, gpu.FromDoubles(w, g.Shape, g.DType)));
            var ct = F.Sum(F.Mul(r, Backend.Cpu.FromDoubles(w[..(int)(refBatch * per)], r.Shape, DType.F32)));
            gLoss = gLoss is null ? gt : F.Add(gLoss, gt);
            cLoss = cLoss is null ? ct : F.Add(cLoss, ct);

            var gv = g.ToDoubleArray()[..(int)(refBatch * per)];
            double err = ModelFixture.Err(gv, r.ToDoubleArray(), 1e-6);
            report.Add($"output {name}: max err / max |ref| = {err:g3}");
            if (!(err <= outTol)) failures.Add($"output {name}: {err:g3} > {outTol:g3}");
        }
        double fwdS = sw.Elapsed.TotalSeconds;
        gLoss!.Backward();
        cLoss!.Backward();

        var cpuGrads = cpu.NamedParameters().ToDictionary(p => p.Name, p => p.Tensor.Grad?.ToDoubleArray());
        double global = cpuGrads.Values.Where(v => v is not null).Max(v => v!.Max(Math.Abs));
        var worst = new List<(double Cos, double Err, string Name)>();
        int zero = 0;
        foreach (var (n, p) in dev.NamedParameters())
        {
            var r = cpuGrads[n];
            var g = p.Grad?.ToDoubleArray();
            if (r is null || r.All(x => x == 0)) continue; // no path from the loss (e.g. unused poolers)
            // Attention key biases: softmax ignores a score shift shared by all keys, so their exact gradient is 0 and
            // both sides hold rounding noise; nothing to compare.
            if (r.Max(Math.Abs) < 1e-6 * global) { zero++; continue; }
            if (g is null) { failures.Add($"{n}: no gradient on the GPU"); continue; }
            double dot = 0, ng = 0, nr = 0;
            for (int i = 0; i < r.Length; i++) { dot += g[i] * r[i]; ng += g[i] * g[i]; nr += r[i] * r[i]; }
            double cos = dot / Math.Sqrt(ng * nr + 1e-300);
            worst.Add((cos, ModelFixture.Err(g, r, 1e-12), n));
            if (!(cos >= minCos)) failures.Add($"{n}: gradient cosine {cos:F6} < {minCos}");
        }
        foreach (var (cos, err, n) in worst.OrderBy(x => x.Cos).Take(8)) report.Add($"grad {n}: cosine {cos:F5}, max err / max |ref| {err:g3}");
        report.Add($"{worst.Count} parameter gradients compared ({zero} exactly-zero ones skipped); min cosine {worst.Min(x => x.Cos):F5}; median max-err {worst.Select(x => x.Err).OrderBy(x => x).ElementAt(worst.Count / 2):g3}");
        report.Add($"{c.Name} {dt.Name()}, batch {batch} (reference {refBatch}), text {textLen}: {sw.Elapsed.TotalSeconds:F1} s (forwards {fwdS:F1} s)");
        foreach (var line in report) Console.WriteLine(line);
        if (failures.Count > 0) Assert.Fail(string.Join("\n", failures.Take(20)) + "\n" + string.Join("\n", report));
    }
}
