using System.Diagnostics;
using FiberCuda.Backends;
using FiberCuda.Backends.Cuda;
using FiberCuda.Models;
using FiberCuda.Runtime;
using FiberCuda.Tensors;
using FiberCuda.Training;

namespace FiberCuda.Profile;

public sealed record TrainBenchResult(string Config, string Device, string DType, int Batch, bool SharedLower, int Steps, double StepMs,
    double SamplesPerSecond, double PeakMiB, double ModelTFlopsPerStep, double AchievedTFlops, double? MfuPct, double? GemmCeilingTFlops,
    double LastLoss);

/// <summary>
/// Stage-1 training throughput (`--train CONFIG`): the real trainer (objectives, backward, AdamW) on synthetic data at
/// the config's image size; warm-up steps first, then timed steps. Reports samples/s, the allocator's peak, and MFU =
/// model FLOPs (<see cref="FiberFlops"/>: 3× the recipe's forward GEMM and attention products) per second over the
/// measured bf16 GEMM ceiling.
/// </summary>
public static class TrainBench
{
    public static TrainBenchResult Run(FiberConfig config, string deviceKind, DType dtype, int batch, int warmup, int steps, bool sharedLower,
        Ceilings? ceilings, IGpuDevice? device)
    {
        CachingAllocator? alloc = null;
        IBackend be;
        string devName;
        if (deviceKind == "cpu") { be = Backend.Cpu; devName = "cpu"; }
        else
        {
            alloc = new CachingAllocator(device!);
            be = new CudaBackend(device!, ownsDevice: false, allocator: alloc);
            devName = device!.ToString() ?? "gpu";
        }
        string dir = Path.Combine(Path.GetTempPath(), "fiber-prof-train-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            var options = new CoarseTrainOptions
            {
                Config = config, Data = $"synthetic:{(warmup + steps + 2) * batch}:0:{config.ImageSize}", DType = dtype, BatchSize = batch,
                Steps = warmup + steps, Lr = 1e-5f, CheckpointEvery = int.MaxValue, Workers = Math.Max(1, Environment.ProcessorCount - 1),
                Objectives = new CoarseObjectiveOptions { SharedLower = sharedLower },
            };
            using var trainer = CoarseTrainer.Create(dir, options, be);
            trainer.Run(stopAfter: warmup, finalCheckpoint: false);
            alloc?.ResetPeak();
            var clock = Stopwatch.StartNew();
            trainer.Run(stopAfter: steps, finalCheckpoint: false);
            be.Synchronize();
            double secs = clock.Elapsed.TotalSeconds;
            var recs = MetricsLog.ReadAll(trainer.MetricsPath);
            // ≈15% of the real tokens are masked; the synthetic captions fill about a third of a 40-token row.
            double masked = 0.15 * config.MaxTextLen / 3;
            double flopsPerStep = 3 * 2 * FiberFlops.PretrainSample(config, config.MaxTextLen, masked).Total * batch;
            double achieved = flopsPerStep * steps / secs / 1e12;
            double? mfu = ceilings is null ? null : 100 * achieved / ceilings.GemmTFlops;
            double peak = alloc is null ? double.NaN : alloc.Stats.PeakBytesInUse / (1024.0 * 1024);
            return new TrainBenchResult(config.Name, devName, dtype == DType.BF16 ? "bf16" : "f32", batch, sharedLower, steps, 1000 * secs / steps,
                steps * batch / secs, peak, flopsPerStep / 1e12, achieved, mfu, ceilings?.GemmTFlops, recs[^1]["loss"]);
        }
        finally
        {
            if (be is CudaBackend cb) cb.Dispose();
            alloc?.Dispose();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
