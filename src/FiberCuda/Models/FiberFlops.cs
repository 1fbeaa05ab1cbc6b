namespace FiberCuda.Models;

/// <summary>Multiply-accumulates of one forward, split the way fiber-coarse.md §7 reports them.</summary>
public sealed record ForwardMacs(double Swin, double SwinFusion, double Text, double TextFusion, double Heads)
{
    public double Total => Swin + SwinFusion + Text + TextFusion + Heads;
    public static ForwardMacs operator +(ForwardMacs a, ForwardMacs b) =>
        new(a.Swin + b.Swin, a.SwinFusion + b.SwinFusion, a.Text + b.Text, a.TextFusion + b.TextFusion, a.Heads + b.Heads);
    public ForwardMacs Times(double k) => new(Swin * k, SwinFusion * k, Text * k, TextFusion * k, Heads * k);
}

/// <summary>
/// Model FLOPs of the coarse FIBER, counted per GEMM and attention product (softmax, LayerNorm and element-wise work
/// excluded), the convention of MFU: a training step costs 3× its forwards (the backward computes two products per
/// forward product). Counts follow the modules as the engine runs them (padded text length, every window full).
/// </summary>
public static class FiberFlops
{
    /// <summary>One sample through the fused path (fused = true) or the two unfused towers, text padded to <paramref name="textLen"/>.</summary>
    public static ForwardMacs Forward(FiberConfig c, int textLen, bool fused = true, bool imageTower = true, bool textTower = true)
    {
        double swin = 0, swinFusion = 0, text = 0, textFusion = 0;
        int L = textLen, D = c.TextHidden, I = c.TextIntermediate;
        // Image states seen by each fused text layer: the state before the paired Swin block.
        var imageAtStep = new List<(double Tokens, int Dim)>();
        if (imageTower)
        {
            int p = c.PatchSize, g = c.ImageSize / p;
            swin += (double)g * g * 3 * p * p * c.EmbedDim;
            for (int s = 0; s < c.NumStages; s++)
            {
                double T = (double)c.StageGrid(s) * c.StageGrid(s);
                int C = c.StageDim(s), w = c.StageWindow(s), n = w * w;
                for (int b = 0; b < c.Depths[s]; b++)
                {
                    swin += T * C * 3 * C + 2 * T * n * C + T * C * C + 2 * T * C * c.MlpRatio * C;
                    if (fused && c.IsFusedBlock(s, b))
                    {
                        imageAtStep.Add((T, C));
                        // qkv_i2t (query) + qkv_text_i2t (keys, values from the text) + scores + P·V + proj_i2t
                        swinFusion += T * C * C + (double)L * D * 2 * C + 2 * T * L * C + T * C * C;
                    }
                }
                if (s < c.NumStages - 1) swin += T / 4 * 4 * C * 2 * C; // patch merging reduction
            }
        }
        if (textTower)
        {
            for (int l = 0; l < c.TextLayers; l++)
            {
                text += (double)L * D * 3 * D + 2.0 * L * L * D + (double)L * D * D + 2.0 * L * D * I;
                if (fused && c.IsFusedTextLayer(l) && imageTower)
                {
                    var (T, C) = imageAtStep[l - (c.TextLayers - c.NumFuse)];
                    // query + key/value from the image states + scores + P·V + output dense
                    textFusion += (double)L * D * D + T * C * 2 * D + 2 * L * T * D + (double)L * D * D;
                }
            }
        }
        // cross-modal transforms and poolers of the path taken
        int h = c.CrossHidden, Cf = c.FinalDim;
        double Tf = (double)c.StageGrid(c.NumStages - 1) * c.StageGrid(c.NumStages - 1);
        double heads = (imageTower ? Tf * Cf * h + (double)h * h : 0) + (textTower ? (double)L * D * h + (double)h * h : 0);
        return new ForwardMacs(swin, swinFusion, text, textFusion, heads);
    }

    /// <summary>
    /// One stage-1 training sample as the official recipe computes it (fiber-coarse.md §4.2): the fused path on masked
    /// text (MLM) and 3 fused pairs (ITM), the unfused image and text paths (ITC), the MLM head on the masked tokens
    /// (<paramref name="maskedPerSample"/>, ≈ 15% of the real tokens); forward only — multiply by 3 for a training step.
    /// </summary>
    public static ForwardMacs PretrainSample(FiberConfig c, int textLen, double maskedPerSample)
    {
        var fused = Forward(c, textLen).Times(4);
        var unfused = Forward(c, textLen, fused: false);
        int h = c.CrossHidden;
        var mlm = new ForwardMacs(0, 0, 0, 0, maskedPerSample * ((double)h * h + (double)h * c.VocabSize) + 3 * 2.0 * h * 2);
        return fused + unfused + mlm;
    }
}
