using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace FiberCuda.Data;

/// <summary>Where an image comes from. Loading is lazy and happens on loader workers.</summary>
public abstract class ImageRef
{
    /// <summary>Stable identity, used in logs and to remember images that already failed.</summary>
    public abstract string Key { get; }

    /// <summary>Decodes the image; throws <see cref="ImageLoadException"/> for anything unusable.</summary>
    public abstract Image<Rgb24> Load(DecodeLimits limits);

    public override string ToString() => Key;
}

/// <summary>An image file on disk.</summary>
public sealed class FileImageRef(string path) : ImageRef
{
    public string Path { get; } = path;
    public override string Key => Path;
    public override Image<Rgb24> Load(DecodeLimits limits) => ImageDecoder.DecodeFile(Path, limits);
}

/// <summary>An encoded image held in memory.</summary>
public sealed class BytesImageRef(string key, byte[] data) : ImageRef
{
    public byte[] Data { get; } = data;
    public override string Key { get; } = key;
    public override Image<Rgb24> Load(DecodeLimits limits) => ImageDecoder.Decode(Data, Key, limits);
}

/// <summary>A member of a tar shard, addressed by the byte range of its data.</summary>
public sealed class TarMemberImageRef(string shardPath, string memberName, long dataOffset, long length) : ImageRef
{
    public string ShardPath { get; } = shardPath;
    public string MemberName { get; } = memberName;
    public long DataOffset { get; } = dataOffset;
    public long Length { get; } = length;
    public override string Key => $"{ShardPath}:{MemberName}";

    public override Image<Rgb24> Load(DecodeLimits limits)
    {
        if (Length > limits.MaxEncodedBytes)
            throw new ImageLoadException(DataProblem.OversizedImage, $"{Key}: encoded size {Length} bytes exceeds {limits.MaxEncodedBytes}");
        var data = new byte[Length];
        try
        {
            using var fs = new FileStream(ShardPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.RandomAccess);
            fs.Position = DataOffset;
            fs.ReadExactly(data);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ImageLoadException(DataProblem.MissingImage, $"{Key}: cannot read ({e.Message})", e);
        }
        return ImageDecoder.Decode(data, Key, limits);
    }
}

/// <summary>An image produced in memory by a function (synthetic data); no encoding round trip.</summary>
public sealed class RenderedImageRef(string key, Func<Image<Rgb24>> render) : ImageRef
{
    public override string Key { get; } = key;
    public override Image<Rgb24> Load(DecodeLimits limits) => render();
}

/// <summary>Axis-aligned box in pixels of the original image; X1/Y1 exclusive.</summary>
public readonly record struct PixelBox(int X0, int Y0, int X1, int Y1)
{
    public int Width => X1 - X0;
    public int Height => Y1 - Y0;
    public int Area => Width * Height;
    public double CenterX => (X0 + X1) / 2.0;
    public double CenterY => (Y0 + Y1) / 2.0;
}

/// <summary>A phrase of a caption (character span [Start, End)) grounded to a box; for the fine-grained stage.</summary>
public sealed record GroundedPhrase(int Start, int End, string Text, PixelBox Box);

/// <summary>One image with one or more captions (and, optionally, per caption the grounded phrases).</summary>
public sealed record CaptionedImage(ImageRef Image, IReadOnlyList<string> Captions, string? Split = null,
    IReadOnlyList<IReadOnlyList<GroundedPhrase>>? Phrases = null);

/// <summary>Random-access collection of captioned images: what a loader reads.</summary>
public interface ICaptionDataset
{
    int Count { get; }
    CaptionedImage this[int index] { get; }
}

/// <summary>A dataset backed by a list.</summary>
public sealed class ListCaptionDataset(IReadOnlyList<CaptionedImage> items) : ICaptionDataset
{
    public IReadOnlyList<CaptionedImage> Items { get; } = items;
    public int Count => Items.Count;
    public CaptionedImage this[int index] => Items[index];

    /// <summary>Items whose split is in <paramref name="splits"/>.</summary>
    public ListCaptionDataset WhereSplit(params string[] splits) =>
        new(Items.Where(i => i.Split is not null && splits.Contains(i.Split)).ToList());

    /// <summary>Concatenation, e.g. of several manifests.</summary>
    public static ListCaptionDataset Concat(params ICaptionDataset[] parts)
    {
        var all = new List<CaptionedImage>();
        foreach (var p in parts)
            for (int i = 0; i < p.Count; i++) all.Add(p[i]);
        return new(all);
    }
}
