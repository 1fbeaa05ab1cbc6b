namespace FiberCuda.IO;

/// <summary>
/// PyTorch's `F.interpolate(mode="bicubic", align_corners=False)` on the CPU (ATen UpSampleKernel): source index
/// (dst + 0.5)·(in/out) − 0.5 without clamping, Keys cubic with A = −0.75, taps clamped to the edge, no antialias;
/// arithmetic in float like ATen's opmath for float input. Used to resize Swin relative-position tables
/// (fiber-coarse.md §1.5).
/// </summary>
public static class Bicubic
{
    const float A = -0.75f;

    static void Coeffs(float t, Span<float> w)
    {
        float x1 = t;
        w[0] = ((A * (x1 + 1) - 5 * A) * (x1 + 1) + 8 * A) * (x1 + 1) - 4 * A;
        w[1] = ((A + 2) * x1 - (A + 3)) * x1 * x1 + 1;
        float x2 = 1 - t;
        w[2] = ((A + 2) * x2 - (A + 3)) * x2 * x2 + 1;
        w[3] = ((A * (x2 + 1) - 5 * A) * (x2 + 1) + 8 * A) * (x2 + 1) - 4 * A;
    }

    /// <summary>Resizes <paramref name="src"/> [planes, inH, inW] to [planes, outH, outW].</summary>
    public static float[] Resize(float[] src, int planes, int inH, int inW, int outH, int outW)
    {
        if (src.Length != planes * inH * inW) throw new ArgumentException("source size does not match its shape");
        var dst = new float[planes * outH * outW];
        float sh = (float)inH / outH, sw = (float)inW / outW;
        Span<float> wy = stackalloc float[4], wx = stackalloc float[4];
        for (int oy = 0; oy < outH; oy++)
        {
            float ry = (oy + 0.5f) * sh - 0.5f;
            int iy = (int)MathF.Floor(ry);
            Coeffs(ry - iy, wy);
            for (int ox = 0; ox < outW; ox++)
            {
                float rx = (ox + 0.5f) * sw - 0.5f;
                int ix = (int)MathF.Floor(rx);
                Coeffs(rx - ix, wx);
                for (int p = 0; p < planes; p++)
                {
                    int b = p * inH * inW;
                    float acc = 0;
                    for (int i = 0; i < 4; i++)
                    {
                        int y = Math.Clamp(iy - 1 + i, 0, inH - 1);
                        float row = 0;
                        for (int j = 0; j < 4; j++)
                        {
                            int x = Math.Clamp(ix - 1 + j, 0, inW - 1);
                            row += src[b + y * inW + x] * wx[j];
                        }
                        acc += row * wy[i];
                    }
                    dst[(p * outH + oy) * outW + ox] = acc;
                }
            }
        }
        return dst;
    }

    /// <summary>
    /// `swin_adapt_position_encoding` for one table: [(2g−1)², nH] → [nH, 2g−1, 2g−1] → bicubic → [(2g'−1)², nH].
    /// </summary>
    public static float[] ResizeRelativePositionTable(float[] table, int rows, int heads, int newSide)
    {
        int side = (int)Math.Round(Math.Sqrt(rows));
        if (side * side != rows) throw new ArgumentException($"a relative-position table has a square row count, not {rows}");
        var planes = new float[heads * rows];
        for (int r = 0; r < rows; r++) for (int h = 0; h < heads; h++) planes[h * rows + r] = table[r * heads + h];
        var res = Resize(planes, heads, side, side, newSide, newSide);
        int nr = newSide * newSide;
        var outT = new float[nr * heads];
        for (int r = 0; r < nr; r++) for (int h = 0; h < heads; h++) outT[r * heads + h] = res[h * nr + r];
        return outT;
    }
}
