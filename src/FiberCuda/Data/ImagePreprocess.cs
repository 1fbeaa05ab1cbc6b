using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace FiberCuda.Data;

/// <summary>
/// PIL's <c>Image.resize(..., BICUBIC)</c> for 8-bit RGB (Pillow Resample.c): separable, horizontal pass first, Keys
/// cubic with a = −0.5, support scaled by the downscale factor (antialias), weights normalised per output pixel and
/// turned into 22-bit fixed point, each pass rounded and clipped to a byte. Reproducing this (instead of ImageSharp's
/// resampler) keeps our pixels equal to what the original torchvision/PIL pipeline fed the checkpoints (§4.3 "albef").
/// </summary>
public static class PilBicubic
{
    const int PrecisionBits = 32 - 8 - 2;
    const double Support = 2.0;

    static double Filter(double x)
    {
        const double a = -0.5;
        if (x < 0) x = -x;
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
        return 0.0;
    }

    /// <summary>Per output index: first source index, tap count, and ksize fixed-point weights.</summary>
    static (int[] Bounds, int[] Weights, int KSize) Coeffs(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = Support * filterScale;
        int ksize = (int)Math.Ceiling(support) * 2 + 1;
        var bounds = new int[outSize * 2];
        var kk = new int[outSize * ksize];
        var k = new double[ksize];
        for (int xx = 0; xx < outSize; xx++)
        {
            double center = (xx + 0.5) * scale;
            double ss = 1.0 / filterScale;
            int xmin = (int)(center - support + 0.5);
            if (xmin < 0) xmin = 0;
            int xmax = (int)(center + support + 0.5);
            if (xmax > inSize) xmax = inSize;
            xmax -= xmin;
            double ww = 0;
            for (int x = 0; x < xmax; x++)
            {
                double w = Filter((x + xmin - center + 0.5) * ss);
                k[x] = w;
                ww += w;
            }
            for (int x = 0; x < ksize; x++)
            {
                double v = x < xmax ? (ww != 0.0 ? k[x] / ww : k[x]) : 0.0;
                kk[xx * ksize + x] = v < 0 ? (int)(-0.5 + v * (1 << PrecisionBits)) : (int)(0.5 + v * (1 << PrecisionBits));
            }
            bounds[xx * 2] = xmin;
            bounds[xx * 2 + 1] = xmax;
        }
        return (bounds, kk, ksize);
    }

    static byte Clip8(int v)
    {
        v >>= PrecisionBits;
        return (byte)(v < 0 ? 0 : v > 255 ? 255 : v);
    }

    /// <summary>Resizes interleaved 8-bit pixels [inH, inW, channels] to [outH, outW, channels].</summary>
    public static byte[] Resize(ReadOnlySpan<byte> src, int inW, int inH, int channels, int outW, int outH)
    {
        if (src.Length != inW * inH * channels) throw new ArgumentException("source size does not match its shape");
        if (outW <= 0 || outH <= 0) throw new ArgumentOutOfRangeException(nameof(outW));
        if (channels is < 1 or > 4) throw new ArgumentOutOfRangeException(nameof(channels));
        byte[] cur = src.ToArray();
        if (outW != inW) cur = Horizontal(cur, inW, inH, channels, outW);
        if (outH != inH) cur = Vertical(cur, outW, inH, channels, outH);
        return cur;
    }

    static unsafe byte[] Horizontal(byte[] src, int inW, int h, int channels, int outW)
    {
        var (b, w, ks) = Coeffs(inW, outW);
        var dst = new byte[h * outW * channels];
        fixed (byte* ps = src, pd = dst)
        fixed (int* pw = w, pb = b)
        {
            for (int y = 0; y < h; y++)
            {
                byte* row = ps + (long)y * inW * channels;
                byte* orow = pd + (long)y * outW * channels;
                for (int xx = 0; xx < outW; xx++)
                {
                    int xmin = pb[xx * 2], xmax = pb[xx * 2 + 1];
                    int* k = pw + xx * ks;
                    byte* p = row + xmin * channels;
                    // All channels of a pixel in one pass over the taps.
                    int s0 = 1 << (PrecisionBits - 1), s1 = s0, s2 = s0, s3 = s0;
                    if (channels == 3)
                    {
                        for (int x = 0; x < xmax; x++, p += 3)
                        {
                            int kx = k[x];
                            s0 += p[0] * kx; s1 += p[1] * kx; s2 += p[2] * kx;
                        }
                    }
                    else
                    {
                        for (int x = 0; x < xmax; x++, p += channels)
                        {
                            int kx = k[x];
                            s0 += p[0] * kx;
                            if (channels > 1) s1 += p[1] * kx;
                            if (channels > 2) s2 += p[2] * kx;
                            if (channels > 3) s3 += p[3] * kx;
                        }
                    }
                    byte* o = orow + xx * channels;
                    o[0] = Clip8(s0);
                    if (channels > 1) o[1] = Clip8(s1);
                    if (channels > 2) o[2] = Clip8(s2);
                    if (channels > 3) o[3] = Clip8(s3);
                }
            }
        }
        return dst;
    }

    static unsafe byte[] Vertical(byte[] src, int width, int inH, int channels, int outH)
    {
        var (b, w, ks) = Coeffs(inH, outH);
        int stride = width * channels;
        var dst = new byte[outH * stride];
        var acc = new int[stride];
        fixed (byte* ps = src, pd = dst)
        fixed (int* pw = w, pb = b, pa = acc)
        {
            for (int yy = 0; yy < outH; yy++)
            {
                int ymin = pb[yy * 2], ymax = pb[yy * 2 + 1];
                int* k = pw + yy * ks;
                new Span<int>(pa, stride).Fill(1 << (PrecisionBits - 1));
                // Taps outermost so every source row is read sequentially; integer sums do not depend on the order.
                for (int y = 0; y < ymax; y++)
                {
                    byte* row = ps + (long)(y + ymin) * stride;
                    int ky = k[y];
                    for (int i = 0; i < stride; i++) pa[i] += row[i] * ky;
                }
                byte* orow = pd + (long)yy * stride;
                for (int i = 0; i < stride; i++) orow[i] = Clip8(pa[i]);
            }
        }
        return dst;
    }
}

/// <summary>Pre-training image transform (spec §4.3 "albef"): bicubic resize to S×S, aspect not kept, ToTensor, ImageNet normalisation.</summary>
public static class ImagePreprocess
{
    public static readonly float[] ImageNetMean = { 0.485f, 0.456f, 0.406f };
    public static readonly float[] ImageNetStd = { 0.229f, 0.224f, 0.225f };

    /// <summary>Interleaved RGB bytes [H, W, 3] of an image.</summary>
    public static byte[] ToRgbBytes(Image<Rgb24> img)
    {
        var bytes = new byte[img.Width * img.Height * 3];
        img.CopyPixelDataTo(bytes);
        return bytes;
    }

    /// <summary>Writes the planar normalised tensor [3, S, S] for <paramref name="img"/> into <paramref name="dst"/>.</summary>
    public static void ToPixelValues(Image<Rgb24> img, int size, Span<float> dst)
        => ToPixelValues(ToRgbBytes(img), img.Width, img.Height, size, dst);

    public static void ToPixelValues(ReadOnlySpan<byte> rgb, int width, int height, int size, Span<float> dst)
    {
        if (dst.Length != 3 * size * size) throw new ArgumentException("destination must hold 3·S·S floats");
        byte[] r = width == size && height == size ? rgb.ToArray() : PilBicubic.Resize(rgb, width, height, 3, size, size);
        int plane = size * size;
        for (int c = 0; c < 3; c++)
        {
            float m = ImageNetMean[c], s = ImageNetStd[c];
            // Same float ops as torchvision: ToTensor divides by 255, Normalize subtracts and divides.
            for (int i = 0; i < plane; i++) dst[c * plane + i] = (r[i * 3 + c] / 255f - m) / s;
        }
    }
}
