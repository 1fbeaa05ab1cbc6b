using FiberCuda.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace FiberCuda.Tests.Data;

[TestClass]
public sealed class ImagePipelineTests
{
    static readonly double[] Mean = { 0.485, 0.456, 0.406 }, Std = { 0.229, 0.224, 0.225 };

    /// <summary>Keys cubic, a = −0.5 (PIL's BICUBIC).</summary>
    static double Cubic(double x)
    {
        x = Math.Abs(x);
        const double a = -0.5;
        return x < 1 ? (a + 2) * x * x * x - (a + 3) * x * x + 1 : x < 2 ? a * x * x * x - 5 * a * x * x + 8 * a * x - 4 * a : 0;
    }

    /// <summary>
    /// Independent reference: the continuous antialiased resampling PIL describes (kernel stretched by the
    /// downscale factor, taps where the kernel is non-zero inside the image, weights normalised), evaluated as a
    /// sum in double precision (horizontal, clip to the byte range, vertical) without fixed point or rounding.
    /// </summary>
    static double[,] Weights(int inSize, int outSize)
    {
        var w = new double[outSize, inSize];
        double scale = (double)inSize / outSize, fs = Math.Max(1, scale);
        for (int o = 0; o < outSize; o++)
        {
            double center = (o + 0.5) * scale, sum = 0;
            for (int i = 0; i < inSize; i++) { w[o, i] = Cubic((i + 0.5 - center) / fs); sum += w[o, i]; }
            for (int i = 0; i < inSize; i++) w[o, i] /= sum;
        }
        return w;
    }

    static void CheckAgainstReference(int w, int h, int s, int seed)
    {
        using var img = DataTestUtil.NoiseImage(w, h, seed);
        var rgb = DataTestUtil.Rgb(img);
        var got = new float[3 * s * s];
        ImagePreprocess.ToPixelValues(img, s, got);
        var wx = Weights(w, s); var wy = Weights(h, s);
        double worst = 0;
        for (int c = 0; c < 3; c++)
            for (int oy = 0; oy < s; oy++)
                for (int ox = 0; ox < s; ox++)
                {
                    double acc = 0;
                    for (int y = 0; y < h; y++)
                    {
                        if (wy[oy, y] == 0) continue;
                        double row = 0;
                        for (int x = 0; x < w; x++) row += wx[ox, x] * rgb[(y * w + x) * 3 + c];
                        // PIL stores the horizontal pass as 8-bit, so cubic overshoot is clipped before the vertical pass.
                        acc += wy[oy, y] * Math.Clamp(row, 0, 255);
                    }
                    double refByte = Math.Clamp(acc, 0, 255);
                    double gotByte = (got[(c * s + oy) * s + ox] * Std[c] + Mean[c]) * 255;
                    worst = Math.Max(worst, Math.Abs(gotByte - refByte));
                }
        // PIL rounds to bytes after each pass; the vertical pass can amplify the first rounding by ≤ Σ|w| ≈ 1.3.
        Assert.IsTrue(worst <= 1.3, $"{w}x{h}->{s}: worst difference {worst} grey levels");
    }

    [TestMethod] public void DownscaleMatchesReference() => CheckAgainstReference(53, 37, 16, 1);
    [TestMethod] public void UpscaleMatchesReference() => CheckAgainstReference(9, 12, 20, 2);
    [TestMethod] public void MixedScaleMatchesReference() => CheckAgainstReference(40, 11, 24, 3);

    [TestMethod]
    public void SameSizeIsExactNormalisation()
    {
        using var img = DataTestUtil.NoiseImage(12, 12, 4);
        var rgb = DataTestUtil.Rgb(img);
        var got = new float[3 * 12 * 12];
        ImagePreprocess.ToPixelValues(img, 12, got);
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < 144; i++)
                Assert.AreEqual((rgb[i * 3 + c] / 255.0 - Mean[c]) / Std[c], got[c * 144 + i], 2e-6);
    }

    [TestMethod]
    public void UniformColourSurvivesResize()
    {
        using var img = new Image<Rgb24>(31, 17, new Rgb24(200, 10, 77));
        var got = new float[3 * 8 * 8];
        ImagePreprocess.ToPixelValues(img, 8, got);
        byte[] c = { 200, 10, 77 };
        for (int ch = 0; ch < 3; ch++)
            for (int i = 0; i < 64; i++)
                Assert.AreEqual((c[ch] / 255.0 - Mean[ch]) / Std[ch], got[ch * 64 + i], 2e-6);
    }

    [TestMethod]
    public void DecodeLimitRefusesHugeHeaderWithoutAllocating()
    {
        var bomb = DataTestUtil.PngHeaderOnly(100_000, 100_000);
        Assert.AreEqual((100_000, 100_000), ImageDecoder.Identify(bomb));
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.ThrowsExactly<ImageLoadException>(() => ImageDecoder.Decode(bomb, "bomb.png"));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.AreEqual(DataProblem.OversizedImage, e.Problem);
        StringAssert.Contains(e.Message, "100000x100000");
        // 10^10 RGB pixels would be 30 GB; header parsing costs kilobytes.
        Assert.IsTrue(allocated < 4 << 20, $"allocated {allocated} bytes");

        // A real image over a tight limit is refused the same way; under it, decoded.
        using var img = DataTestUtil.NoiseImage(40, 30, 5);
        var png = DataTestUtil.Png(img);
        Assert.AreEqual(DataProblem.OversizedImage,
            Assert.ThrowsExactly<ImageLoadException>(() => ImageDecoder.Decode(png, "x", new DecodeLimits { MaxPixels = 1199 })).Problem);
        using var ok = ImageDecoder.Decode(png, "x", new DecodeLimits { MaxPixels = 1200 });
        CollectionAssert.AreEqual(DataTestUtil.Rgb(img), DataTestUtil.Rgb(ok));
    }

    [TestMethod]
    public void AnimatedGifDecodesOnlyTheFirstFrame()
    {
        using var gif = new Image<Rgb24>(10, 6, new Rgb24(255, 0, 0));
        for (int f = 0; f < 3; f++) gif.Frames.AddFrame(new Image<Rgb24>(10, 6, new Rgb24(0, 0, 255)).Frames.RootFrame);
        using var ms = new MemoryStream();
        gif.SaveAsGif(ms);
        using var got = ImageDecoder.Decode(ms.ToArray(), "anim.gif");
        Assert.AreEqual(1, got.Frames.Count);
        Assert.AreEqual(new Rgb24(255, 0, 0), got[3, 3]);
    }

    [TestMethod]
    public void CorruptTruncatedAndMissingAreClassified()
    {
        using var dir = new TempDir();
        using var img = DataTestUtil.NoiseImage(32, 32, 6);
        var png = DataTestUtil.Png(img);
        var jpg = DataTestUtil.Jpeg(img);
        DataProblem Problem(byte[] b) => Assert.ThrowsExactly<ImageLoadException>(() => ImageDecoder.Decode(b, "t")).Problem;
        Assert.AreEqual(DataProblem.CorruptImage, Problem(png[..(png.Length / 2)]));
        Assert.AreEqual(DataProblem.CorruptImage, Problem(png[..(png.Length - 6)]));
        Assert.AreEqual(DataProblem.CorruptImage, Problem(jpg[..(jpg.Length * 2 / 3)]));
        Assert.AreEqual(DataProblem.CorruptImage, Problem(new Random(1).GetItems<byte>(Enumerable.Range(0, 256).Select(i => (byte)i).ToArray(), 500)));
        Assert.AreEqual(DataProblem.CorruptImage, Problem(png[..20]));
        Assert.AreEqual(DataProblem.MissingImage,
            Assert.ThrowsExactly<ImageLoadException>(() => ImageDecoder.DecodeFile(dir.P("nope.png"))).Problem);
        // Complete files with trailing bytes still decode (PIL accepts those too).
        using (ImageDecoder.Decode(png.Concat(new byte[] { 1, 2, 3 }).ToArray(), "t")) { }
        using (ImageDecoder.Decode(jpg, "t")) { }
    }
}
