namespace FiberCuda.Training;

/// <summary>Line plots of metrics series against the step (ScottPlot), for a run's loss curves.</summary>
public static class LossPlot
{
    /// <summary>
    /// Writes a PNG of <paramref name="series"/> (metric names) against the step. Records lacking a series, or with a
    /// non-finite value (a diverged loss), leave a gap; a series with no points is left out of the legend. Written via
    /// a temporary file renamed over <paramref name="pngPath"/>, so a viewer never sees a half-written image.
    /// </summary>
    public static void Write(string pngPath, IReadOnlyList<MetricsRecord> records, string[] series, int width = 1200, int height = 700, string? title = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 16);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 16);
        using var plot = new ScottPlot.Plot();
        int plotted = 0;
        foreach (var name in series)
        {
            var xs = new List<double>(); var ys = new List<double>();
            foreach (var r in records)
                if (r.TryGet(name, out double v) && double.IsFinite(v)) { xs.Add(r.Step); ys.Add(v); }
            if (xs.Count == 0) continue;
            var line = plot.Add.Scatter(xs.ToArray(), ys.ToArray());
            line.LegendText = name;
            line.MarkerSize = xs.Count == 1 ? 5 : 0;
            line.LineWidth = 1.5f;
            plotted++;
        }
        plot.XLabel("step");
        if (series.Length == 1) plot.YLabel(series[0]);
        if (title is not null) plot.Title(title);
        if (plotted > 0) plot.ShowLegend(ScottPlot.Alignment.UpperRight);

        IO.AtomicFile.Replace(pngPath, tmp => plot.SavePng(tmp, width, height));
    }
}
