using FiberCuda.Training;
using Spectre.Console;

namespace FiberCuda.Cli.Commands;

/// <summary>
/// Runs a trainer with a live progress display (Spectre.Console) on a terminal, or one line every few seconds when
/// the output is redirected (CI logs), and with Ctrl-C mapped to a clean stop: the first press lets the step in flight
/// finish and the trainer write its checkpoint; a second press terminates at once.
/// </summary>
public static class TrainProgress
{
    public static TrainOutcome Run(CoarseTrainer trainer, long? stopAfter = null)
    {
        using var cts = new CancellationTokenSource();
        ConsoleCancelEventHandler handler = (_, e) =>
        {
            if (cts.IsCancellationRequested) return; // second Ctrl-C: let the process die
            e.Cancel = true;
            cts.Cancel();
            Console.Error.WriteLine("fiber: stopping after this step (Ctrl-C again to abort without a checkpoint)");
        };
        Console.CancelKeyPress += handler;
        try
        {
            if (!Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive)
                return Live(trainer, cts.Token, stopAfter);
            var last = DateTime.MinValue;
            return trainer.Run(cts.Token, r =>
            {
                if (r.Step == 1 || r.Step == r.TotalSteps || (DateTime.UtcNow - last).TotalSeconds >= 5)
                {
                    last = DateTime.UtcNow;
                    Console.WriteLine(Line(r));
                }
            }, stopAfter);
        }
        finally { Console.CancelKeyPress -= handler; }
    }

    public static string Line(StepReport r) =>
        $"step {r.Step}/{r.TotalSteps}  loss {r.Loss:F4} (mlm {r.Mlm:F3} itc {r.Itc:F3} itm {r.Itm:F3})  lr {r.Lr:E2}  " +
        $"{r.SamplesPerSecond:F1} samples/s  elapsed {r.Elapsed:hh\\:mm\\:ss}  eta {r.Eta:hh\\:mm\\:ss}{(r.Skipped ? "  SKIPPED (non-finite)" : "")}";

    static TrainOutcome Live(CoarseTrainer trainer, CancellationToken cancel, long? stopAfter)
    {
        TrainOutcome? outcome = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask($"step {trainer.Step}/{trainer.Options.Steps}", maxValue: trainer.Options.Steps);
                task.Value = trainer.Step;
                outcome = trainer.Run(cancel, r =>
                {
                    task.Value = r.Step;
                    task.Description = Markup.Escape(
                        $"step {r.Step}/{r.TotalSteps} loss {r.Loss:F3} mlm {r.Mlm:F3} itc {r.Itc:F3} itm {r.Itm:F3} lr {r.Lr:E1} {r.SamplesPerSecond:F1}/s" +
                        (r.Skipped ? " SKIPPED" : ""));
                }, stopAfter);
            });
        return outcome!;
    }
}
