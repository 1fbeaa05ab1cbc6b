using System.CommandLine;
using System.Text.Json;
using FiberCuda.Backends;
using FiberCuda.Profile;
using FiberCuda.Runtime;
using FiberCuda.Tensors;
using Spectre.Console;

var deviceOpt = new Option<string>("--device") { Description = "auto, gpu or emu (with --train also cpu)", DefaultValueFactory = _ => "auto" };
var shapesOpt = new Option<string>("--shapes") { Description = "fiber (the FIBER activation shapes) or small", DefaultValueFactory = _ => "small" };
var opsOpt = new Option<string?>("--ops") { Description = "comma-separated op names to run (default: all)" };
var dtypeOpt = new Option<string>("--dtype") { Description = "bf16 or f32 for the memory-bound kernels", DefaultValueFactory = _ => "bf16" };
var itersOpt = new Option<int>("--iters") { Description = "timed runs per case (median reported)", DefaultValueFactory = _ => 20 };
var jsonOpt = new Option<string?>("--json") { Description = "also write the results as JSON to this file" };
var trainOpt = new Option<string?>("--train") { Description = "instead of the kernels: stage-1 training throughput, peak memory and MFU of this config (preset or config.json)" };
var batchOpt = new Option<int>("--batch") { Description = "with --train: per-device batch", DefaultValueFactory = _ => 8 };
var stepsOpt = new Option<int>("--steps") { Description = "with --train: timed steps (after 2 warm-up steps)", DefaultValueFactory = _ => 5 };
var sharedOpt = new Option<bool>("--shared-lower") { Description = "with --train: the shared-lower-tower option" };

var root = new RootCommand("fiber-prof: validates FiberCuda kernels against the CPU reference, then times them on a GPU")
{
    deviceOpt, shapesOpt, opsOpt, dtypeOpt, itersOpt, jsonOpt, trainOpt, batchOpt, stepsOpt, sharedOpt,
};
root.SetAction(pr =>
{
    if (pr.GetValue(trainOpt) is { } trainConfig) return Train(pr, trainConfig);
    var (backend, device, note) = Devices.Open(pr.GetValue(deviceOpt)!);
    using var _ = backend;
    bool fiber = pr.GetValue(shapesOpt) == "fiber";
    var dt = pr.GetValue(dtypeOpt) == "f32" ? DType.F32 : DType.BF16;
    var only = pr.GetValue(opsOpt)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
    if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200; // logs keep whole rows
    AnsiConsole.MarkupLine($"[bold]device[/]: {Markup.Escape(note)}");

    Ceilings? ceilings = null;
    if (!device.IsEmulated)
    {
        ceilings = Ceilings.Measure(device, backend, DirectGemm.For(device));
        AnsiConsole.MarkupLine($"[bold]ceilings[/]: copy {ceilings.CopyGBps:F0} GB/s (read+write), bf16 GEMM 8192³ {ceilings.GemmTFlops:F1} TFLOP/s ({ceilings.GemmHow})");
    }

    var runner = new Runner(backend, device, Backend.Cpu, pr.GetValue(itersOpt), ceilings);
    var results = new List<CaseResult>();
    var table = new Table().AddColumns("case", "valid", "max err", "ms (L2 cold)", "ms (warm)", "GB/s", "TFLOP/s", "% copy", "% same-size copy", "% GEMM");
    foreach (var c in Cases.All(fiber, dt))
    {
        if (only is not null && !only.Contains(c.Op)) continue;
        var r = runner.Run(c);
        results.Add(r);
        bool timed = r.MedianMs > 0;
        table.AddRow(Markup.Escape(r.Name), r.Valid ? "[green]yes[/]" : $"[red]NO[/] {Markup.Escape(r.Error ?? "")}",
            r.MaxError.ToString("G2"),
            timed ? r.MedianMs.ToString("F4") : "-", timed ? r.WarmMs.ToString("F4") : "-",
            timed ? r.GBps.ToString("F0") : "-", timed ? r.TFlops.ToString("F2") : "-",
            timed ? r.PctCopy.ToString("F0") : "-", timed ? r.PctSameSizeCopy.ToString("F0") : "-", timed ? r.PctGemm.ToString("F0") : "-");
    }
    foreach (var extra in DirectGemm.Compare(device, backend, fiber, pr.GetValue(itersOpt)))
    {
        results.Add(extra);
        // engine ms | direct ms in the two time columns; % GEMM = engine speed as a percentage of the direct call's
        table.AddRow(Markup.Escape(extra.Name), extra.Valid ? "[green]yes[/]" : "[red]NO[/]", "-", extra.MedianMs.ToString("F4"), extra.WarmMs.ToString("F4"), "-",
            extra.TFlops.ToString("F1"), "-", "-", extra.PctGemm.ToString("F1"));
    }
    table.Caption("gemm engine vs direct rows: time columns are engine | direct cuBLASLt; % GEMM = direct time / engine time");
    AnsiConsole.Write(table);

    if (pr.GetValue(jsonOpt) is { } path)
    {
        var doc = new { device = note, ceilings, results };
        File.WriteAllText(path, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals }));
    }
    return results.All(r => r.Valid) ? 0 : 1;
});
return root.Parse(args).Invoke();

int Train(ParseResult pr, string configArg)
{
    var config = File.Exists(configArg) ? FiberCuda.Models.FiberConfig.FromJson(File.ReadAllText(configArg)) : FiberCuda.Models.FiberConfig.Preset(configArg);
    string kind = pr.GetValue(deviceOpt)!;
    var dt = pr.GetValue(dtypeOpt) == "f32" ? DType.F32 : DType.BF16;
    IGpuDevice? dev = null; IBackend? owner = null; Ceilings? ceilings = null; string note = "cpu";
    if (kind != "cpu")
    {
        (owner, dev, note) = Devices.Open(kind);
        if (!dev.IsEmulated) ceilings = Ceilings.Measure(dev, owner, DirectGemm.For(dev));
    }
    try
    {
        if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 200;
        AnsiConsole.MarkupLine($"[bold]device[/]: {Markup.Escape(note)}");
        var r = TrainBench.Run(config, kind == "cpu" ? "cpu" : "gpu", dt, pr.GetValue(batchOpt), 2, pr.GetValue(stepsOpt), pr.GetValue(sharedOpt), ceilings, dev);
        var table = new Table().AddColumns("config", "dtype", "batch", "shared lower", "ms/step", "samples/s", "peak MiB", "model TFLOP/step", "TFLOP/s", "MFU %", "loss");
        table.AddRow(r.Config, r.DType, r.Batch.ToString(), r.SharedLower ? "yes" : "no", r.StepMs.ToString("F1"), r.SamplesPerSecond.ToString("F2"),
            double.IsNaN(r.PeakMiB) ? "-" : r.PeakMiB.ToString("F0"), r.ModelTFlopsPerStep.ToString("G3"), r.AchievedTFlops.ToString("G3"),
            r.MfuPct is { } m ? m.ToString("F1") : "-", r.LastLoss.ToString("F3"));
        if (dev?.IsEmulated == true) table.Caption("emulated GPU: the timings are the emulator's, not a GPU's");
        AnsiConsole.Write(table);
        if (pr.GetValue(jsonOpt) is { } path)
            File.WriteAllText(path, JsonSerializer.Serialize(new { device = note, ceilings, train = r }, new JsonSerializerOptions { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals }));
        return double.IsFinite(r.LastLoss) ? 0 : 1;
    }
    finally { owner?.Dispose(); }
}
