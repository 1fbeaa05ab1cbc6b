using FiberCuda.Optim;

namespace FiberCuda.Training;

/// <summary>
/// FIBER's learning-rate schedule (spec fiber-coarse.md §4.3): HF transformers'
/// <c>get_polynomial_decay_schedule_with_warmup</c> with power 1 and lr_end 0, i.e. a linear warm-up over W steps
/// followed by a linear decay to 0 at <see cref="TotalSteps"/>:
/// <code>
/// factor(s) = s / max(1, W)                         for s &lt; W
///           = 1 − (s − W) / max(1, total − W)       for W ≤ s ≤ total   (= (total − s)/(total − W))
///           = 0                                     for s &gt; total
/// </code>
/// The official trainer wraps it in a LambdaLR that is stepped after every optimizer step, so optimizer step k
/// (0-based) runs with factor(k). In particular the very first step runs with lr 0 whenever W &gt; 0 — the
/// official behaviour, kept on purpose so that a run matches the reference step for step.
/// </summary>
public sealed class LrSchedule
{
    /// <param name="totalSteps">Total optimizer steps of the run (max_steps).</param>
    /// <param name="warmup">
    /// A value in (0, 1) is a fraction of <paramref name="totalSteps"/>: W = (int)(total · fraction), truncated as
    /// fiber_utils does; any other value must be a whole number of steps ≥ 0 (so 1.0 means one step, not 100 %).
    /// </param>
    public LrSchedule(long totalSteps, double warmup)
    {
        if (totalSteps < 0) throw new ArgumentOutOfRangeException(nameof(totalSteps), totalSteps, "total steps must be ≥ 0");
        if (double.IsNaN(warmup) || warmup < 0) throw new ArgumentOutOfRangeException(nameof(warmup), warmup, "warm-up must be ≥ 0");
        TotalSteps = totalSteps;
        if (warmup > 0 && warmup < 1) WarmupSteps = (long)(totalSteps * warmup);
        else if (warmup == Math.Floor(warmup) && warmup <= long.MaxValue) WarmupSteps = (long)warmup;
        else throw new ArgumentOutOfRangeException(nameof(warmup), warmup, "warm-up is either a fraction in (0,1) or a whole number of steps");
    }

    /// <summary>A warm-up given directly in steps.</summary>
    public LrSchedule(long totalSteps, long warmupSteps) : this(totalSteps, (double)warmupSteps)
    {
        if (warmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(warmupSteps));
        WarmupSteps = warmupSteps; // exact even past 2^53
    }

    public long TotalSteps { get; }
    public long WarmupSteps { get; }

    /// <summary>The multiplier of the base lr for 0-based optimizer step <paramref name="step"/>.</summary>
    public double Factor(long step)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step), step, "steps are 0-based");
        long w = WarmupSteps, total = TotalSteps;
        if (step < w) return (double)step / Math.Max(1, w);
        if (step > total || total <= w) return 0; // total ≤ W: the decay has no steps (HF would divide by zero)
        // HF's pct_remaining, computed the same way. (HF then forms lr_init·pct / lr_init, which can move the
        // last bit of a double; the lr itself is rounded to f32 anyway.)
        double pct = 1 - (double)(step - w) / Math.Max(1, total - w);
        return Math.Max(0, pct);
    }

    /// <summary>Sets every group's lr to base · factor(step); <paramref name="baseLrs"/> holds one base lr per group.</summary>
    public void Apply(AdamW opt, IReadOnlyList<float> baseLrs, long step)
    {
        if (baseLrs.Count != opt.Groups.Count)
            throw new ArgumentException($"{baseLrs.Count} base learning rates for {opt.Groups.Count} parameter groups", nameof(baseLrs));
        double f = Factor(step);
        for (int i = 0; i < baseLrs.Count; i++) opt.Groups[i].Lr = (float)(baseLrs[i] * f);
    }

    /// <summary>The groups' current lrs, to keep as the base lrs before the first <see cref="Apply"/>.</summary>
    public static float[] BaseLrsOf(AdamW opt) => opt.Groups.Select(g => g.Lr).ToArray();
}
