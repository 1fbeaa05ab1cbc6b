using System.Text;
using System.Text.Json;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;

namespace FiberCuda.Data;

public enum ShapeKind { Circle, Square, Triangle }

public sealed record SyntheticOptions
{
    public int ImageSize { get; init; } = 96;
    public int MinShapes { get; init; } = 1;
    public int MaxShapes { get; init; } = 3;
    public int MaxCaptionsPerImage { get; init; } = 3;
    /// <summary>Single-object captions also say where the shape is, on a 3×3 grid ("there is a small red circle in the top left").</summary>
    public bool SayWhere { get; init; }
}

/// <summary>One drawn shape; <see cref="Box"/> is the tight box of its painted pixels.</summary>
public sealed record SyntheticShape(ShapeKind Kind, string Colour, bool Large, PixelBox Box, int PlacedX, int PlacedY, int Extent)
{
    public string Phrase => $"a {(Large ? "large" : "small")} {Colour} {Kind.ToString().ToLowerInvariant()}";
}

/// <summary>A generated scene: what is drawn, the captions, and per caption the phrases grounded to boxes.</summary>
public sealed record SyntheticScene(int Index, Rgb24 Background, IReadOnlyList<SyntheticShape> Shapes,
    IReadOnlyList<string> Captions, IReadOnlyList<IReadOnlyList<GroundedPhrase>> Phrases);

/// <summary>
/// Built-in synthetic captioning data, so the engine can be demonstrated and tested with no downloads: solid shapes
/// (circle, square, triangle) of several colours, two sizes and random non-overlapping positions on a grey
/// background, captioned like "a small red circle left of a large blue square", with the box of every phrase.
/// Scene i depends only on (seed, i); the drawing is plain pixel loops, so the PNG bytes are reproducible.
/// </summary>
public sealed class SyntheticShapes
{
    public static readonly IReadOnlyList<(string Name, Rgb24 Rgb)> Palette = new[]
    {
        ("red", new Rgb24(220, 40, 40)),
        ("green", new Rgb24(40, 180, 60)),
        ("blue", new Rgb24(40, 80, 230)),
        ("yellow", new Rgb24(235, 215, 40)),
        ("purple", new Rgb24(150, 60, 200)),
        ("orange", new Rgb24(245, 140, 30)),
        ("cyan", new Rgb24(40, 210, 220)),
        ("white", new Rgb24(240, 240, 240)),
    };

    public SyntheticShapes(ulong seed, SyntheticOptions? options = null)
    {
        Seed = seed;
        Options = options ?? new SyntheticOptions();
        if (Options.ImageSize < 32 || Options.MinShapes < 1 || Options.MaxShapes < Options.MinShapes || Options.MaxCaptionsPerImage < 1)
            throw new ArgumentException("invalid synthetic options");
    }

    public ulong Seed { get; }
    public SyntheticOptions Options { get; }

    public static Rgb24 ColourOf(string name) => Palette.First(p => p.Name == name).Rgb;

    /// <summary>Scene <paramref name="index"/>.</summary>
    public SyntheticScene Scene(int index)
    {
        var rng = new DataRng(DataRng.Hash(Seed, (ulong)index, 0x5348415045UL));
        int s = Options.ImageSize;
        byte g = (byte)rng.NextInt(30, 81);
        var bg = new Rgb24(g, g, g);
        int want = rng.NextInt(Options.MinShapes, Options.MaxShapes + 1);
        var shapes = new List<SyntheticShape>();
        var used = new HashSet<string>();
        for (int n = 0; n < want; n++)
        {
            for (int attempt = 0; attempt < 40; attempt++)
            {
                var kind = (ShapeKind)rng.NextInt(3);
                var (colour, _) = Palette[rng.NextInt(Palette.Count)];
                bool large = rng.NextInt(2) == 1;
                int d = (int)Math.Round(s * (large ? 0.26 + 0.08 * rng.NextDouble() : 0.12 + 0.05 * rng.NextDouble()));
                int margin = 2;
                int x0 = rng.NextInt(margin, s - d - margin + 1), y0 = rng.NextInt(margin, s - d - margin + 1);
                var placed = new PixelBox(x0, y0, x0 + d, y0 + d);
                // Distinct descriptions keep every phrase unambiguous; a 3-pixel gap keeps boxes apart.
                string desc = $"{large}/{colour}/{kind}";
                if (used.Contains(desc) || shapes.Any(o => Near(o, placed, 3))) continue;
                used.Add(desc);
                var tight = TightBox(kind, x0, y0, d);
                shapes.Add(new SyntheticShape(kind, colour, large, tight, x0, y0, d));
                break;
            }
        }
        var (captions, phrases) = Describe(shapes, ref rng);
        return new SyntheticScene(index, bg, shapes, captions, phrases);
    }

    static bool Near(SyntheticShape o, PixelBox b, int gap) =>
        b.X0 < o.PlacedX + o.Extent + gap && o.PlacedX < b.X1 + gap && b.Y0 < o.PlacedY + o.Extent + gap && o.PlacedY < b.Y1 + gap;

    /// <summary>Relation of a to b as seen in the image (y grows downwards), from the box centres.</summary>
    public static string Relation(PixelBox a, PixelBox b)
    {
        double dx = b.CenterX - a.CenterX, dy = b.CenterY - a.CenterY;
        if (Math.Abs(dx) >= Math.Abs(dy)) return dx > 0 ? "left of" : "right of";
        return dy > 0 ? "above" : "below";
    }

    /// <summary>The cell of the box centre on a 3×3 grid: "top left" … "bottom right", "centre" for the middle cell.</summary>
    public static string Where(PixelBox b, int imageSize)
    {
        int col = Math.Clamp((int)(3 * b.CenterX / imageSize), 0, 2), row = Math.Clamp((int)(3 * b.CenterY / imageSize), 0, 2);
        if (row == 1 && col == 1) return "centre";
        string r = row switch { 0 => "top", 1 => "middle", _ => "bottom" }, c = col switch { 0 => "left", 1 => "centre", _ => "right" };
        return $"{r} {c}";
    }

    (List<string>, List<IReadOnlyList<GroundedPhrase>>) Describe(List<SyntheticShape> shapes, ref DataRng rng)
    {
        var captions = new List<string>();
        var phrases = new List<IReadOnlyList<GroundedPhrase>>();
        void AddCaption(params (string Text, SyntheticShape? Shape)[] parts)
        {
            var sb = new StringBuilder();
            var ps = new List<GroundedPhrase>();
            foreach (var (text, shape) in parts)
            {
                int start = sb.Length;
                sb.Append(text);
                if (shape is not null) ps.Add(new GroundedPhrase(start, sb.Length, text, shape.Box));
            }
            captions.Add(sb.ToString());
            phrases.Add(ps);
        }
        // Every ordered pair gives a relational caption, every shape a single-object one; pick a seeded subset.
        var candidates = new List<Action>();
        for (int i = 0; i < shapes.Count; i++)
            for (int j = 0; j < shapes.Count; j++)
                if (i != j)
                {
                    var (a, b) = (shapes[i], shapes[j]);
                    candidates.Add(() => AddCaption((a.Phrase, a), (" " + Relation(a.Box, b.Box) + " ", null), (b.Phrase, b)));
                }
        foreach (var sh in shapes)
        {
            var s2 = sh;
            candidates.Add(() => AddCaption(("there is ", null), (s2.Phrase, s2), (Options.SayWhere ? " in the " + Where(s2.Box, Options.ImageSize) : "", null)));
        }
        if (shapes.Count == 0) { AddCaption(("an empty grey picture", null)); return (captions, phrases); }
        var perm = DataRng.Permutation(candidates.Count, rng.NextU64());
        for (int i = 0; i < Math.Min(Options.MaxCaptionsPerImage, perm.Length); i++) candidates[perm[i]]();
        return (captions, phrases);
    }

    static bool Inside(ShapeKind kind, int x0, int y0, int d, int x, int y)
    {
        double px = x + 0.5 - x0, py = y + 0.5 - y0;
        if (px < 0 || py < 0 || px > d || py > d) return false;
        switch (kind)
        {
            case ShapeKind.Square: return true;
            case ShapeKind.Circle:
                double r = d / 2.0, cx = px - r, cy = py - r;
                return cx * cx + cy * cy <= r * r;
            default:
                // Apex at the top middle, base along the bottom: half-width grows linearly with depth.
                return Math.Abs(px - d / 2.0) <= py / 2.0;
        }
    }

    static PixelBox TightBox(ShapeKind kind, int x0, int y0, int d)
    {
        int minX = int.MaxValue, minY = int.MaxValue, maxX = -1, maxY = -1;
        for (int y = y0; y < y0 + d; y++)
            for (int x = x0; x < x0 + d; x++)
                if (Inside(kind, x0, y0, d, x, y))
                {
                    minX = Math.Min(minX, x); maxX = Math.Max(maxX, x);
                    minY = Math.Min(minY, y); maxY = Math.Max(maxY, y);
                }
        return new PixelBox(minX, minY, maxX + 1, maxY + 1);
    }

    public Image<Rgb24> Render(int index) => Render(Scene(index));

    public Image<Rgb24> Render(SyntheticScene scene)
    {
        int s = Options.ImageSize;
        var img = new Image<Rgb24>(s, s);
        var px = new Rgb24[s * s];
        Array.Fill(px, scene.Background);
        foreach (var sh in scene.Shapes)
        {
            var c = ColourOf(sh.Colour);
            for (int y = sh.PlacedY; y < sh.PlacedY + sh.Extent; y++)
                for (int x = sh.PlacedX; x < sh.PlacedX + sh.Extent; x++)
                    if (Inside(sh.Kind, sh.PlacedX, sh.PlacedY, sh.Extent, x, y)) px[y * s + x] = c;
        }
        img.ProcessPixelRows(a =>
        {
            for (int y = 0; y < s; y++) px.AsSpan(y * s, s).CopyTo(a.GetRowSpan(y));
        });
        return img;
    }

    /// <summary>Scene <paramref name="index"/> as PNG bytes.</summary>
    public byte[] EncodePng(int index)
    {
        using var img = Render(index);
        using var ms = new MemoryStream();
        img.Save(ms, new PngEncoder { CompressionLevel = PngCompressionLevel.DefaultCompression, ColorType = PngColorType.Rgb, BitDepth = PngBitDepth.Bit8 });
        return ms.ToArray();
    }

    /// <summary>Scenes [start, start+count) served from memory (rendered on the loader workers, never encoded).</summary>
    public ListCaptionDataset InMemory(int start, int count, string split = "train")
    {
        var items = new List<CaptionedImage>(count);
        for (int i = start; i < start + count; i++)
        {
            var scene = Scene(i);
            int idx = i;
            items.Add(new CaptionedImage(new RenderedImageRef($"synthetic:{Seed}:{i}", () => Render(idx)), scene.Captions, split, scene.Phrases));
        }
        return new ListCaptionDataset(items);
    }

    /// <summary>
    /// Writes <paramref name="dir"/>/images/*.png plus <c>train.jsonl</c> (scenes 0..train-1) and the held-out
    /// <c>val.jsonl</c> (the next <paramref name="valCount"/> scenes). Returns the two manifest paths.
    /// </summary>
    public (string Train, string Val) WriteDataset(string dir, int trainCount, int valCount) =>
        WriteDataset(dir, Enumerable.Range(0, trainCount).ToList(), Enumerable.Range(trainCount, valCount).ToList());

    /// <summary>The same with chosen scene indices per split (e.g. a held-out set filtered to distinct captions).</summary>
    public (string Train, string Val) WriteDataset(string dir, IReadOnlyList<int> trainScenes, IReadOnlyList<int> valScenes)
    {
        Directory.CreateDirectory(Path.Combine(dir, "images"));
        string train = Path.Combine(dir, "train.jsonl"), val = Path.Combine(dir, "val.jsonl");
        WriteSplit(dir, train, "train", trainScenes);
        WriteSplit(dir, val, "val", valScenes);
        return (train, val);
    }

    void WriteSplit(string dir, string manifest, string split, IReadOnlyList<int> scenes)
    {
        using var fs = new FileStream(manifest, FileMode.Create, FileAccess.Write);
        foreach (int i in scenes)
        {
            string rel = $"images/{i:D6}.png";
            File.WriteAllBytes(Path.Combine(dir, rel), EncodePng(i));
            var scene = Scene(i);
            using (var w = new Utf8JsonWriter(fs))
            {
                w.WriteStartObject();
                w.WriteString("image", rel);
                w.WriteString("split", split);
                w.WriteStartArray("captions");
                foreach (var c in scene.Captions) w.WriteStringValue(c);
                w.WriteEndArray();
                w.WriteStartArray("phrases");
                foreach (var list in scene.Phrases)
                {
                    w.WriteStartArray();
                    foreach (var p in list)
                    {
                        w.WriteStartObject();
                        w.WriteNumber("start", p.Start);
                        w.WriteNumber("end", p.End);
                        w.WriteStartArray("box");
                        w.WriteNumberValue(p.Box.X0); w.WriteNumberValue(p.Box.Y0); w.WriteNumberValue(p.Box.X1); w.WriteNumberValue(p.Box.Y1);
                        w.WriteEndArray();
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            fs.WriteByte((byte)'\n');
        }
    }
}
