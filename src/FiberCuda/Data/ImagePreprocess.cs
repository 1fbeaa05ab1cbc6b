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
        byte[] cur = src.ToArray();
        int curW = inW, curH = inH;
        if (outW != inW)
        {
            var (b, w, ks) = Coeffs(inW, outW);
            var dst = new byte[curH * outW * channels];
            for (int y = 0; y < curH; y++)
            {
                int row = y * curW * channels;
                for (int xx = 0; xx < outW; xx++)
                {
                    int xmin = b[xx * 2], xmax = b[xx * 2 + 1], kb = xx * ks;
                    for (int c = 0; c < channels; c++)
                    {
                        int ss = 1 << (PrecisionBits - 1);
                        for (int x = 0; x < xmax; x++) ss += cur[row + (x + xmin) * channels + c] * w[kb + x];
                        dst[(y * outW + xx) * channels + c] = Clip8(ss);
                    }
                }
            }
            cur = dst; curW = outW;
        }
        if (outH != inH)
        {
            var (b, w, ks) = Coeffs(inH, outH);
            var dst = new byte[outH * curW * channels];
            int stride = curW * channels;
            for (int yy = 0; yy < outH; yy++)
            {
                int ymin = b[yy * 2], ymax = b[yy * 2 + 1], kb = yy * ks;
                for (int i = 0; i < stride; i++)
                {
                    int ss = 1 << (PrecisionBits - 1);
                    for (int y = 0; y < ymax; y++) ss += cur[(y + ymin) * stride + i] * w[kb + y];
                    dst[yy * stride + i] = Clip8(ss);
                }
            }
            cur = dst; curH = outH;
        }
        return cur;
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
