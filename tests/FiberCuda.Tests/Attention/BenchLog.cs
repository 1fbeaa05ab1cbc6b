using System.Text.Json;

namespace FiberCuda.Tests.Attention;

/// <summary>
/// The GPU benches' machine-readable output: with FIBER_BENCH_JSONL=file each timed case appends one JSON line
/// {kernel, case, fwd_ms, bwd_ms}, which tools/bench/compare_torch.py sets beside PyTorch's eager times
/// (tools/bench/torch_model_kernels.py, same case names) to give the ratios of the same run.
/// </summary>
static class BenchLog
{
    static readonly object Gate = new();

    public static void Append(string kernel, string @case, double fwdMs, double bwdMs)
    {
        if (Environment.GetEnvironmentVariable("FIBER_BENCH_JSONL") is not { Length: > 0 } path) return;
        var line = JsonSerializer.Serialize(new Dictionary<string, object> { ["kernel"] = kernel, ["case"] = @case, ["fwd_ms"] = fwdMs, ["bwd_ms"] = bwdMs });
        lock (Gate) File.AppendAllText(path, line + "\n");
    }
}
