using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace FiberCuda.Data;

/// <summary>Limits applied before any pixel buffer is allocated (decompression-bomb defence).</summary>
public sealed record DecodeLimits
{
    /// <summary>Largest width·height accepted; PIL's default MAX_IMAGE_PIXELS warning threshold.</summary>
    public long MaxPixels { get; init; } = 89_478_485;

    /// <summary>Largest encoded file accepted.</summary>
    public long MaxEncodedBytes { get; init; } = 256L << 20;

    public static DecodeLimits Default { get; } = new();
}

/// <summary>An image that cannot be used; <see cref="Problem"/> says which counter it goes to.</summary>
public sealed class ImageLoadException : Exception
{
    public ImageLoadException(DataProblem problem, string message, Exception? inner = null) : base(message, inner) => Problem = problem;
    public DataProblem Problem { get; }
}

/// <summary>
/// Decodes encoded images to RGB through ImageSharp. The header is identified first and the image is refused when its
/// declared size exceeds <see cref="DecodeLimits.MaxPixels"/>, so a tiny file claiming a gigapixel image costs nothing.
/// Truncated PNG/JPEG files are refused like PIL does by default (LOAD_TRUNCATED_IMAGES = False) rather than decoded
/// into a partly grey image.
/// </summary>
public static class ImageDecoder
{
    // One configuration per process; decode parallelism comes from loader workers, not from ImageSharp.
    static readonly Configuration Config = CreateConfig();

    static Configuration CreateConfig()
    {
        var c = Configuration.Default.Clone();
        c.MaxDegreeOfParallelism = 1;
        // Only the first frame, like PIL's Image.open → convert("RGB"): an animation of many full-size frames would
        // otherwise multiply the memory the pixel limit allows. (ImageSharp 2.1's WebP decoder has no such switch.)
        c.ImageFormatsManager.SetDecoder(SixLabors.ImageSharp.Formats.Gif.GifFormat.Instance,
            new SixLabors.ImageSharp.Formats.Gif.GifDecoder { DecodingMode = SixLabors.ImageSharp.Metadata.FrameDecodingMode.First });
        c.ImageFormatsManager.SetDecoder(SixLabors.ImageSharp.Formats.Tiff.TiffFormat.Instance,
            new SixLabors.ImageSharp.Formats.Tiff.TiffDecoder { DecodingMode = SixLabors.ImageSharp.Metadata.FrameDecodingMode.First });
        return c;
    }

    /// <summary>Width and height from the header only; null when the format is not recognised.</summary>
    public static (int Width, int Height)? Identify(ReadOnlySpan<byte> data)
    {
        try
        {
            using var ms = new MemoryStream(data.ToArray(), writable: false);
            var info = Image.Identify(Config, ms);
            return info is null ? null : (info.Width, info.Height);
        }
        catch (Exception e) when (e is ImageFormatException or InvalidDataException or EndOfStreamException or NotSupportedException or ArgumentException)
        {
            return null;
        }
    }

    /// <summary>Decodes <paramref name="data"/> to RGB, enforcing <paramref name="limits"/>. Throws <see cref="ImageLoadException"/>.</summary>
    public static Image<Rgb24> Decode(byte[] data, string source, DecodeLimits? limits = null)
    {
        limits ??= DecodeLimits.Default;
        if (data.Length > limits.MaxEncodedBytes)
            throw new ImageLoadException(DataProblem.OversizedImage, $"{source}: encoded size {data.Length} bytes exceeds {limits.MaxEncodedBytes}");
        using var ms = new MemoryStream(data, writable: false);
        SixLabors.ImageSharp.Formats.IImageFormat? format;
        IImageInfo? info;
        try
        {
            info = Image.Identify(Config, ms, out format);
        }
        catch (Exception e) when (e is ImageFormatException or InvalidDataException or EndOfStreamException or NotSupportedException or ArgumentException)
        {
            throw new ImageLoadException(DataProblem.CorruptImage, $"{source}: unreadable header ({e.Message})", e);
        }
        if (info is null || format is null)
            throw new ImageLoadException(DataProblem.CorruptImage, $"{source}: unknown image format");
        if (info.Width <= 0 || info.Height <= 0)
            throw new ImageLoadException(DataProblem.CorruptImage, $"{source}: empty image {info.Width}x{info.Height}");
        long pixels = (long)info.Width * info.Height;
        if (pixels > limits.MaxPixels)
            throw new ImageLoadException(DataProblem.OversizedImage, $"{source}: {info.Width}x{info.Height} = {pixels} pixels exceeds the limit {limits.MaxPixels}");
        string? truncated = CheckComplete(data, format.Name);
        if (truncated is not null)
            throw new ImageLoadException(DataProblem.CorruptImage, $"{source}: {truncated}");
        ms.Position = 0;
        try
        {
            return Image.Load<Rgb24>(Config, ms);
        }
        catch (Exception e) when (e is ImageFormatException or InvalidDataException or EndOfStreamException or NotSupportedException or ArgumentException or IndexOutOfRangeException)
        {
            throw new ImageLoadException(DataProblem.CorruptImage, $"{source}: decode failed ({e.GetType().Name}: {e.Message})", e);
        }
    }

    /// <summary>Reads and decodes a file; a missing file is <see cref="DataProblem.MissingImage"/>.</summary>
    public static Image<Rgb24> DecodeFile(string path, DecodeLimits? limits = null)
    {
        limits ??= DecodeLimits.Default;
        byte[] data;
        try
        {
            var fi = new FileInfo(path);
            if (!fi.Exists) throw new ImageLoadException(DataProblem.MissingImage, $"{path}: no such file");
            if (fi.Length > limits.MaxEncodedBytes)
                throw new ImageLoadException(DataProblem.OversizedImage, $"{path}: encoded size {fi.Length} bytes exceeds {limits.MaxEncodedBytes}");
            data = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new ImageLoadException(DataProblem.MissingImage, $"{path}: no such file", e);
        }
        catch (IOException e)
        {
            throw new ImageLoadException(DataProblem.MissingImage, $"{path}: cannot read ({e.Message})", e);
        }
        return Decode(data, path);
    }

    /// <summary>
    /// Null when the stream looks complete. PNG must reach its IEND chunk; a JPEG must have an end-of-image marker
    /// after its last start-of-scan (entropy-coded data byte-stuffs 0xFF, so neither marker occurs by accident).
    /// </summary>
    static string? CheckComplete(byte[] d, string formatName)
    {
        if (formatName.Equals("PNG", StringComparison.OrdinalIgnoreCase))
        {
            // Walk the chunk list: length(4) type(4) data crc(4).
            long pos = 8;
            while (pos + 8 <= d.Length)
            {
                uint len = (uint)(d[pos] << 24 | d[pos + 1] << 16 | d[pos + 2] << 8 | d[pos + 3]);
                bool iend = d[pos + 4] == 'I' && d[pos + 5] == 'E' && d[pos + 6] == 'N' && d[pos + 7] == 'D';
                long next = pos + 12 + len;
                if (next > d.Length) return "truncated PNG (chunk runs past the end of the file)";
                if (iend) return null;
                pos = next;
            }
            return "truncated PNG (no IEND chunk)";
        }
        if (formatName.Equals("JPEG", StringComparison.OrdinalIgnoreCase))
        {
            int lastSos = -1;
            for (int i = d.Length - 2; i >= 2; i--)
                if (d[i] == 0xFF && d[i + 1] == 0xDA) { lastSos = i; break; }
            if (lastSos < 0) return "truncated JPEG (no start of scan)";
            for (int i = lastSos + 2; i + 1 < d.Length; i++)
                if (d[i] == 0xFF && d[i + 1] == 0xD9) return null;
            return "truncated JPEG (no end-of-image marker)";
        }
        return null;
    }
}
