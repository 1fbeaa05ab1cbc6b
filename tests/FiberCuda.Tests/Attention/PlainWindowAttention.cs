namespace FiberCuda.Tests.Attention;

/// <summary>
/// Swin window attention written the way the official PyTorch code does it, step by step, in fp64 and
/// independently of the engine: explicit torch.roll, window_partition, relative_position_index from the
/// coordinate grids, the attn_mask from the 9 labelled slices, softmax, ·v, window_reverse, roll back.
/// Arrays: qkv [B][H·W][3C] flat, table [(2w−1)²][nH] flat; returns y [B][H·W][C] flat and the per-row
/// logsumexp in window order [B·nW][nH][w²].
/// </summary>
internal static class PlainWindowAttention
{
    public static (double[] Y, double[] Lse) Run(double[] qkv, double[] table, int B, int H, int W, int nH, int d, int w, int s, double scale)
    {
        int C = nH * d, N = w * w, nWh = H / w, nWw = W / w, nW = nWh * nWw;

        // x[b, y, x, ch] = qkv; torch.roll(x, shifts=(-s,-s), dims=(1,2)): out[i] = in[(i + s) mod n]
        var rolled = new double[B, H, W, 3 * C];
        for (int b = 0; b < B; b++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                {
                    int sy = ((y + s) % H + H) % H, sx = ((x + s) % W + W) % W;
                    for (int c = 0; c < 3 * C; c++) rolled[b, y, x, c] = qkv[((long)b * H * W + sy * W + sx) * 3 * C + c];
                }

        // window_partition: [B, H/w, w, W/w, w, ch] -> [B, H/w, W/w, w, w, ch] -> [B·nW, N, ch]
        var win = new double[B * nW, N, 3 * C];
        for (int b = 0; b < B; b++)
            for (int wr = 0; wr < nWh; wr++)
                for (int wc = 0; wc < nWw; wc++)
                    for (int r = 0; r < w; r++)
                        for (int q = 0; q < w; q++)
                            for (int c = 0; c < 3 * C; c++)
                                win[b * nW + wr * nWw + wc, r * w + q, c] = rolled[b, wr * w + r, wc * w + q, c];

        // relative_position_index: coords [2, N], relative = coords[:, :, None] - coords[:, None, :], shifted, flattened
        var relIndex = new int[N, N];
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++)
            {
                int dh = i / w - j / w + (w - 1), dw = i % w - j % w + (w - 1);
                relIndex[i, j] = dh * (2 * w - 1) + dw;
            }

        // attn_mask: img_mask labelled by slices (0,-w), (-w,-s), (-s,None) on both axes, partitioned like the features
        var mask = new double[nW, N, N];
        if (s > 0)
        {
            var img = new int[H, W];
            var hs = new[] { (0, H - w), (H - w, H - s), (H - s, H) };
            var ws = new[] { (0, W - w), (W - w, W - s), (W - s, W) };
            int cnt = 0;
            foreach (var (h0, h1) in hs)
                foreach (var (w0, w1) in ws)
                {
                    for (int y = h0; y < h1; y++) for (int x = w0; x < w1; x++) img[y, x] = cnt;
                    cnt++;
                }
            for (int wr = 0; wr < nWh; wr++)
                for (int wc = 0; wc < nWw; wc++)
                    for (int i = 0; i < N; i++)
                        for (int j = 0; j < N; j++)
                        {
                            int li = img[wr * w + i / w, wc * w + i % w], lj = img[wr * w + j / w, wc * w + j % w];
                            mask[wr * nWw + wc, i, j] = li != lj ? -100.0 : 0.0;
                        }
        }

        var outWin = new double[B * nW, N, C];
        var lse = new double[B * nW * nH * N];
        var attn = new double[N];
        for (int bw = 0; bw < B * nW; bw++)
            for (int h = 0; h < nH; h++)
                for (int i = 0; i < N; i++)
                {
                    for (int j = 0; j < N; j++)
                    {
                        double acc = 0;
                        for (int c = 0; c < d; c++) acc += (win[bw, i, h * d + c] * scale) * win[bw, j, C + h * d + c];
                        attn[j] = acc + table[relIndex[i, j] * nH + h] + mask[bw % nW, i, j];
                    }
                    double mx = attn.Max(), sum = 0;
                    for (int j = 0; j < N; j++) sum += Math.Exp(attn[j] - mx);
                    lse[(bw * nH + h) * N + i] = mx + Math.Log(sum);
                    for (int c = 0; c < d; c++)
                    {
                        double o = 0;
                        for (int j = 0; j < N; j++) o += Math.Exp(attn[j] - mx) / sum * win[bw, j, 2 * C + h * d + c];
                        outWin[bw, i, h * d + c] = o;
                    }
                }

        // window_reverse, then torch.roll(shifts=(s,s)): out[(i + s) mod n] = in[i]
        var y2 = new double[(long)B * H * W * C];
        for (int b = 0; b < B; b++)
            for (int wr = 0; wr < nWh; wr++)
                for (int wc = 0; wc < nWw; wc++)
                    for (int i = 0; i < N; i++)
                    {
                        int yy = (wr * w + i / w + s) % H, xx = (wc * w + i % w + s) % W;
                        for (int c = 0; c < C; c++) y2[((long)b * H * W + yy * W + xx) * C + c] = outWin[b * nW + wr * nWw + wc, i, c];
                    }
        return (y2, lse);
    }
}
