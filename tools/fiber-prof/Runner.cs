using System.Runtime.InteropServices;
using FiberCuda.Backends;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Profile;

public sealed record CaseResult(
    string Name, string Op, string Shape, string DType, bool Valid, double MaxError, string? Error,
    double MedianMs, double WarmMs, double GBps, double TFlops, double PctCopy, double PctGemm,
    double PctSameSizeCopy = 0);

/// <summary>
/// Validates each case against the CPU reference, then (on a real GPU) times it: warm-up, the L2
/// flushed before every timed run, median of N; plus a warm figure (back-to-back launches, L2 hot).
/// </summary>
public sealed class Runner(IBackend dev, IGpuDevice? gpu, IBackend cpu, int iters, Ceilings? ceilings)
{
    const int ValidateRows = 64; // big GEMMs are validated on their first rows only

    public CaseResult Run(BenchCase c)
    {
        var rng = new Random(1234);
        var hostIn = c.Inputs.Select(s => MakeHost(s, rng)).ToArray();
        var hostOut = c.Outputs.Select(s => MakeHost(s, rng)).ToArray();

        bool sample = c.Op.StartsWith("gemm") && c.Flops > 2e10;
        var devIn = Upload(dev, c.Inputs, hostIn);
        var devOut = Upload(dev, c.Outputs, hostOut);
        try
        {
            double err; string? error = null; bool valid;
            try
            {
                c.Run(dev, devIn, devOut);
                dev.Synchronize();
                err = sample ? ValidateGemmRows(c, hostIn, devOut[0]) : ValidateAll(c, hostIn, hostOut, devOut);
                valid = err <= c.Tolerance;
                if (!valid) error = $"max scaled error {err:G3} > tolerance {c.Tolerance:G3}";
            }
            catch (Exception ex)
            {
                return new(c.Name, c.Op, c.Shape, c.DType.Name(), false, double.NaN, ex.Message, 0, 0, 0, 0, 0, 0);
            }
            if (gpu is null || gpu.IsEmulated || !valid)
                return new(c.Name, c.Op, c.Shape, c.DType.Name(), valid, err, error, 0, 0, 0, 0, 0, 0);

            var (median, warm) = Time(c, devIn, devOut);
            double gbps = c.Bytes / (median * 1e-3) / 1e9, tflops = c.Flops / (median * 1e-3) / 1e12;
            double pctCopy = ceilings is null ? 0 : 100 * gbps / ceilings.CopyGBps;
            double pctGemm = ceilings is null ? 0 : 100 * tflops / ceilings.GemmTFlops;
            // Small tensors cannot reach the 1 GiB copy ceiling (launch latency, ramp-up), so also compare with a
            // device-to-device copy moving the same bytes, timed the same way.
            double pctSame = 100 * SameSizeCopyMs(c.Bytes) / median;
            return new(c.Name, c.Op, c.Shape, c.DType.Name(), valid, err, null, median, warm, gbps, tflops, pctCopy, pctGemm, pctSame);
        }
        finally
        {
            foreach (var t in devIn.Concat(devOut)) t.Dispose();
        }
    }

    (double Median, double Warm) Time(BenchCase c, Tensor[] i, Tensor[] o)
    {
        using var flush = dev.Empty([64 << 20], DType.F32); // 256 MB > the H200's 60 MB L2
        using var timer = gpu!.CreateTimer();
        for (int w = 0; w < 3; w++) c.Run(dev, i, o);
        var ms = new List<double>();
        for (int r = 0; r < iters; r++)
        {
            gpu.Memset(flush.Address, (byte)r, flush.Bytes);
            timer.Start(); c.Run(dev, i, o); timer.Stop();
            ms.Add(timer.ElapsedMs());
        }
        ms.Sort();
        const int Burst = 20;
        timer.Start();
        for (int r = 0; r < Burst; r++) c.Run(dev, i, o);
        timer.Stop();
        return (ms[ms.Count / 2], timer.ElapsedMs() / Burst);
    }

    readonly Dictionary<long, double> _copyMs = [];

    double SameSizeCopyMs(double bytesMoved)
    {
        long half = (long)(bytesMoved / 2) & ~255L;
        if (_copyMs.TryGetValue(half, out var cached)) return cached;
        using var src = dev.Empty([(int)(half / 4)], DType.F32);
        using var dst = dev.Empty([(int)(half / 4)], DType.F32);
        using var flush = dev.Empty([64 << 20], DType.F32);
        using var timer = gpu!.CreateTimer();
        var ms = new List<double>();
        for (int r = 0; r < iters + 3; r++)
        {
            gpu.Memset(flush.Address, (byte)r, flush.Bytes);
            timer.Start(); gpu.CopyDeviceToDevice(dst.Address, src.Address, half); timer.Stop();
            if (r >= 3) ms.Add(timer.ElapsedMs());
        }
        ms.Sort();
        return _copyMs[half] = ms[ms.Count / 2];
    }

    double ValidateAll(BenchCase c, Tensor[] hostIn, Tensor[] hostOut, Tensor[] devOut)
    {
        var refIn = hostIn;
        var refOut = hostOut.Select(t => Clone(cpu, t)).ToArray();
        c.Run(cpu, refIn, refOut);
        double worst = 0;
        for (int k = 0; k < refOut.Length; k++) worst = Math.Max(worst, ScaledError(devOut[k].ToFloatArray(), refOut[k].ToFloatArray()));
        foreach (var t in refOut) t.Dispose();
        return worst;
    }

    /// <summary>Runs the GEMM on the CPU for the first rows of A only and compares those rows.</summary>
    double ValidateGemmRows(BenchCase c, Tensor[] hostIn, Tensor devC)
    {
        var a = hostIn[0];
        int k = a.Dim(1), n = devC.Dim(1), rows = Math.Min(ValidateRows, a.Dim(0));
        using var aPart = cpu.Empty([rows, k], a.DType);
        cpu.CopySlice(a, 0, 0, aPart, 0, rows, accumulate: false);
        using var cPart = cpu.Zeros([rows, n], devC.DType);
        cpu.Gemm(new GemmArgs(aPart, hostIn[1], cPart, rows, n, k, TransB: true, Bias: hostIn.Length > 2 ? hostIn[2] : null));
        var got = devC.ToFloatArray().AsSpan(0, rows * n).ToArray();
        return ScaledError(got, cPart.ToFloatArray());
    }

    /// <summary>max |a − b| / (1 + |b|): relative for large values, absolute near zero.</summary>
    public static double ScaledError(float[] a, float[] b)
    {
        if (a.Length != b.Length) return double.PositiveInfinity;
        double worst = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double d = Math.Abs((double)a[i] - b[i]) / (1 + Math.Abs((double)b[i]));
            if (double.IsNaN(d)) return double.PositiveInfinity;
            worst = Math.Max(worst, d);
        }
        return worst;
    }

    Tensor MakeHost(TensorSpec s, Random rng)
    {
        var t = cpu.Empty(s.Shape, s.DType);
        long n = t.Numel;
        switch (s.DType)
        {
            case DType.I32:
            case DType.I64:
            {
                var v = new long[n];
                for (long i = 0; i < n; i++) v[i] = s.Init is Init.Ids or Init.Targets ? rng.Next(Math.Max(1, s.Range)) : 0;
                if (s.DType == DType.I64) cpu.Upload(t, MemoryMarshal.AsBytes(v.AsSpan()));
                else cpu.Upload(t, MemoryMarshal.AsBytes(Array.ConvertAll(v, x => (int)x).AsSpan()));
                return t;
            }
        }
        var f = new float[n];
        for (long i = 0; i < n; i++)
            f[i] = s.Init switch
            {
                Init.Zeros => 0f,
                Init.Ones => 1f,
                Init.Positive => 0.5f + (float)rng.NextDouble(),
                _ => (float)(rng.NextDouble() * 2 - 1),
            };
        using var f32 = cpu.Empty(s.Shape, DType.F32);
        cpu.Upload(f32, MemoryMarshal.AsBytes(f.AsSpan()));
        cpu.Cast(f32, t);
        return t;
    }

    static Tensor[] Upload(IBackend be, TensorSpec[] specs, Tensor[] host) =>
        host.Select(h => Clone(be, h)).ToArray();

    static Tensor Clone(IBackend be, Tensor h)
    {
        var bytes = new byte[h.Bytes];
        h.Backend.Download(h, bytes);
        var t = be.Empty(h.Shape, h.DType);
        be.Upload(t, bytes);
        return t;
    }
}
