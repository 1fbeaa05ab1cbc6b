using System.Formats.Tar;
using System.Text;
using System.Text.Json;

namespace FiberCuda.Data;

/// <summary>
/// Readers for the caption manifests we accept. Every reader skips and counts bad records (with file and line or
/// entry) in a <see cref="DataStats"/> instead of failing; image files are not touched here (they are checked lazily
/// by the loader, where missing ones are counted).
/// </summary>
public static class Manifests
{
    static readonly string[] ImageKeys = { "image", "image_path", "file_name", "filename", "path" };
    static readonly string[] CaptionKeys = { "captions", "caption", "text", "sentences" };

    /// <summary>
    /// JSON Lines: one object per line, with an image path (<c>image</c>, <c>image_path</c>, <c>file_name</c>, ...;
    /// relative paths are taken from <paramref name="imageRoot"/> or else from the manifest's folder) and either
    /// <c>caption</c> (string) or <c>captions</c> (array of strings). Optional <c>split</c>, and <c>phrases</c>
    /// (per caption, an array of {start,end,box:[x0,y0,x1,y1]}) as written by <see cref="SyntheticShapes"/>.
    /// Blank lines are ignored.
    /// </summary>
    public static ListCaptionDataset ReadJsonl(string path, DataStats stats, string? imageRoot = null)
    {
        string root = imageRoot ?? Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".";
        var items = new List<CaptionedImage>();
        int lineNo = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            string where = $"{path}:{lineNo}";
            try
            {
                using var doc = JsonDocument.Parse(line);
                var o = doc.RootElement;
                if (o.ValueKind != JsonValueKind.Object) { stats.Report(DataProblem.BadManifestLine, where, "not a JSON object"); continue; }
                string? image = FirstString(o, ImageKeys);
                if (string.IsNullOrWhiteSpace(image)) { stats.Report(DataProblem.BadManifestLine, where, "no image path"); continue; }
                var captions = ReadCaptions(o);
                if (captions is null || captions.Count == 0) { stats.Report(DataProblem.BadManifestLine, where, "no caption"); continue; }
                string? split = o.TryGetProperty("split", out var sp) && sp.ValueKind == JsonValueKind.String ? sp.GetString() : null;
                var phrases = ReadPhrases(o, captions);
                items.Add(new CaptionedImage(new FileImageRef(Path.Combine(root, image)), captions, split, phrases));
            }
            catch (JsonException e)
            {
                stats.Report(DataProblem.BadManifestLine, where, "invalid JSON (" + e.Message.Split('\n')[0] + ")");
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException or KeyNotFoundException or IndexOutOfRangeException)
            {
                stats.Report(DataProblem.BadManifestLine, where, e.Message);
            }
        }
        return new ListCaptionDataset(items);
    }

    static string? FirstString(JsonElement o, string[] keys)
    {
        foreach (var k in keys)
            if (o.TryGetProperty(k, out var v) && v.ValueKind == JsonValueKind.String) return v.GetString();
        return null;
    }

    /// <summary>Captions from a string, an array of strings, or an array of {raw} objects (Karpathy style).</summary>
    static List<string>? ReadCaptions(JsonElement o)
    {
        foreach (var k in CaptionKeys)
        {
            if (!o.TryGetProperty(k, out var v)) continue;
            var list = new List<string>();
            if (v.ValueKind == JsonValueKind.String) { Add(list, v.GetString()); return list; }
            if (v.ValueKind == JsonValueKind.Array)
            {
                foreach (var e in v.EnumerateArray())
                {
                    if (e.ValueKind == JsonValueKind.String) Add(list, e.GetString());
                    else if (e.ValueKind == JsonValueKind.Object && e.TryGetProperty("raw", out var raw) && raw.ValueKind == JsonValueKind.String) Add(list, raw.GetString());
                    else return null;
                }
                return list;
            }
            return null;
        }
        return null;
    }

    static void Add(List<string> list, string? s)
    {
        if (!string.IsNullOrWhiteSpace(s)) list.Add(s.Trim());
    }

    static IReadOnlyList<IReadOnlyList<GroundedPhrase>>? ReadPhrases(JsonElement o, List<string> captions)
    {
        if (!o.TryGetProperty("phrases", out var ps) || ps.ValueKind != JsonValueKind.Array) return null;
        if (ps.GetArrayLength() != captions.Count) throw new FormatException("phrases: one array per caption expected");
        var all = new List<IReadOnlyList<GroundedPhrase>>();
        int ci = 0;
        foreach (var perCaption in ps.EnumerateArray())
        {
            var list = new List<GroundedPhrase>();
            foreach (var p in perCaption.EnumerateArray())
            {
                int s = p.GetProperty("start").GetInt32(), e = p.GetProperty("end").GetInt32();
                var b = p.GetProperty("box");
                if (b.GetArrayLength() != 4) throw new FormatException("phrases: box must be [x0,y0,x1,y1]");
                if (s < 0 || e > captions[ci].Length || s >= e) throw new FormatException("phrases: span outside the caption");
                list.Add(new GroundedPhrase(s, e, captions[ci][s..e],
                    new PixelBox(b[0].GetInt32(), b[1].GetInt32(), b[2].GetInt32(), b[3].GetInt32())));
            }
            all.Add(list);
            ci++;
        }
        return all;
    }

    /// <summary>
    /// COCO captions. Accepts the Karpathy split file (<c>dataset_coco.json</c>: images[] with filepath, filename, split,
    /// sentences[].raw) and the official annotation file (<c>captions_*.json</c>: images[] with id/file_name plus
    /// annotations[] with image_id/caption). Image paths are <paramref name="imageRoot"/>/[filepath/]filename.
    /// <paramref name="splits"/> filters Karpathy splits (e.g. "train", "restval", "val", "test"); null keeps all.
    /// </summary>
    public static ListCaptionDataset ReadCoco(string path, string imageRoot, DataStats stats, IReadOnlyCollection<string>? splits = null)
    {
        using var fs = File.OpenRead(path);
        JsonDocument doc;
        try { doc = JsonDocument.Parse(fs, new JsonDocumentOptions { AllowTrailingCommas = true }); }
        catch (JsonException e)
        {
            stats.Report(DataProblem.BadManifestLine, $"{path}:{(e.LineNumber ?? 0) + 1}", "invalid JSON (" + e.Message.Split('\n')[0] + ")");
            return new ListCaptionDataset(Array.Empty<CaptionedImage>());
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("images", out var images) || images.ValueKind != JsonValueKind.Array)
            {
                stats.Report(DataProblem.BadManifestLine, path, "no images[] array");
                return new ListCaptionDataset(Array.Empty<CaptionedImage>());
            }
            return root.TryGetProperty("annotations", out var anns) && anns.ValueKind == JsonValueKind.Array
                ? ReadCocoAnnotations(path, images, anns, imageRoot, stats)
                : ReadKarpathy(path, images, imageRoot, stats, splits);
        }
    }

    static ListCaptionDataset ReadKarpathy(string path, JsonElement images, string imageRoot, DataStats stats, IReadOnlyCollection<string>? splits)
    {
        var items = new List<CaptionedImage>();
        int i = -1;
        foreach (var im in images.EnumerateArray())
        {
            i++;
            string where = $"{path}: images[{i}]";
            if (im.ValueKind != JsonValueKind.Object) { stats.Report(DataProblem.BadManifestLine, where, "not an object"); continue; }
            string? file = FirstString(im, new[] { "filename", "file_name" });
            if (string.IsNullOrWhiteSpace(file)) { stats.Report(DataProblem.BadManifestLine, where, "no filename"); continue; }
            string? split = im.TryGetProperty("split", out var sp) && sp.ValueKind == JsonValueKind.String ? sp.GetString() : null;
            if (splits is not null && (split is null || !splits.Contains(split))) continue;
            var captions = ReadCaptions(im);
            if (captions is null || captions.Count == 0) { stats.Report(DataProblem.BadManifestLine, where, "no sentences"); continue; }
            string? dir = im.TryGetProperty("filepath", out var fp) && fp.ValueKind == JsonValueKind.String ? fp.GetString() : null;
            string full = dir is null ? Path.Combine(imageRoot, file) : Path.Combine(imageRoot, dir, file);
            items.Add(new CaptionedImage(new FileImageRef(full), captions, split));
        }
        return new ListCaptionDataset(items);
    }

    static ListCaptionDataset ReadCocoAnnotations(string path, JsonElement images, JsonElement anns, string imageRoot, DataStats stats)
    {
        var order = new List<long>();
        var files = new Dictionary<long, string>();
        var caps = new Dictionary<long, List<string>>();
        int i = -1;
        foreach (var im in images.EnumerateArray())
        {
            i++;
            if (im.ValueKind != JsonValueKind.Object || !im.TryGetProperty("id", out var id) || id.ValueKind != JsonValueKind.Number
                || FirstString(im, new[] { "file_name", "filename" }) is not { Length: > 0 } file)
            {
                stats.Report(DataProblem.BadManifestLine, $"{path}: images[{i}]", "needs id and file_name");
                continue;
            }
            long key = id.GetInt64();
            if (files.TryAdd(key, file)) order.Add(key);
        }
        i = -1;
        foreach (var a in anns.EnumerateArray())
        {
            i++;
            string where = $"{path}: annotations[{i}]";
            if (a.ValueKind != JsonValueKind.Object || !a.TryGetProperty("image_id", out var iid) || iid.ValueKind != JsonValueKind.Number
                || !a.TryGetProperty("caption", out var c) || c.ValueKind != JsonValueKind.String || string.IsNullOrWhiteSpace(c.GetString()))
            {
                stats.Report(DataProblem.BadManifestLine, where, "needs image_id and caption");
                continue;
            }
            long key = iid.GetInt64();
            if (!files.ContainsKey(key)) { stats.Report(DataProblem.BadManifestLine, where, $"image_id {key} not in images[]"); continue; }
            if (!caps.TryGetValue(key, out var list)) caps[key] = list = new List<string>();
            list.Add(c.GetString()!.Trim());
        }
        var items = new List<CaptionedImage>();
        foreach (var key in order)
            if (caps.TryGetValue(key, out var list))
                items.Add(new CaptionedImage(new FileImageRef(Path.Combine(imageRoot, files[key])), list));
        return new ListCaptionDataset(items);
    }

    static readonly HashSet<string> ImageExtensions = new(StringComparer.OrdinalIgnoreCase) { "jpg", "jpeg", "png", "webp", "bmp", "gif", "tga", "tiff" };

    /// <summary>
    /// WebDataset-style tar shards: members sharing a key (the path up to the first dot of the file name) form one
    /// sample; the image is the member with an image extension, the caption comes from <c>txt</c> (one caption;
    /// several lines give several captions) or <c>json</c> (caption/captions). Only the byte range of each image
    /// is recorded, so the shards are read lazily by the workers. Samples without image or caption are counted.
    /// </summary>
    public static ListCaptionDataset ReadWebDataset(IEnumerable<string> shardPaths, DataStats stats)
    {
        var items = new List<CaptionedImage>();
        foreach (var shard in shardPaths)
        {
            try { ReadShard(shard, items, stats); }
            catch (Exception e) when (e is InvalidDataException or FormatException or EndOfStreamException or IOException or ArgumentException)
            {
                stats.Report(DataProblem.BadManifestLine, shard, $"unreadable tar ({e.Message}); samples after this point skipped");
            }
        }
        return new ListCaptionDataset(items);
    }

    sealed class Pending
    {
        public required string Key;
        public TarMemberImageRef? Image;
        public List<string>? Captions;
        public int Member;
    }

    static void ReadShard(string shard, List<CaptionedImage> items, DataStats stats)
    {
        using var fs = new FileStream(shard, FileMode.Open, FileAccess.Read, FileShare.Read);
        using var reader = new TarReader(fs, leaveOpen: true);
        Pending? cur = null;
        int member = 0;

        void Flush()
        {
            if (cur is null) return;
            string where = $"{shard}: sample '{cur.Key}' (member {cur.Member})";
            if (cur.Image is null) stats.Report(DataProblem.BadManifestLine, where, "no image member");
            else if (cur.Captions is null || cur.Captions.Count == 0) stats.Report(DataProblem.BadManifestLine, where, "no caption (txt/json)");
            else items.Add(new CaptionedImage(cur.Image, cur.Captions));
            cur = null;
        }

        TarEntry? entry;
        while ((entry = reader.GetNextEntry(copyData: false)) is not null)
        {
            member++;
            if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile)) continue;
            string name = entry.Name;
            int slash = name.LastIndexOf('/');
            int dot = name.IndexOf('.', slash + 1);
            if (dot < 0) { stats.Report(DataProblem.BadManifestLine, $"{shard}: member {member} '{name}'", "no extension"); continue; }
            string key = name[..dot], ext = name[(dot + 1)..].ToLowerInvariant();
            if (cur is not null && cur.Key != key) Flush();
            cur ??= new Pending { Key = key, Member = member };
            if (ImageExtensions.Contains(ext))
            {
                cur.Image = new TarMemberImageRef(shard, name, DataOffset(fs, entry), entry.Length);
            }
            else if (ext is "txt" or "caption" or "json")
            {
                string text;
                using (var sr = new StreamReader(entry.DataStream ?? Stream.Null, Encoding.UTF8))
                    text = sr.ReadToEnd();
                if (ext == "json")
                {
                    try
                    {
                        using var doc = JsonDocument.Parse(text);
                        var caps = doc.RootElement.ValueKind == JsonValueKind.Object ? ReadCaptions(doc.RootElement) : null;
                        if (caps is null || caps.Count == 0) { stats.Report(DataProblem.BadManifestLine, $"{shard}: member {member} '{name}'", "json without caption"); continue; }
                        (cur.Captions ??= new()).AddRange(caps);
                    }
                    catch (JsonException e)
                    {
                        stats.Report(DataProblem.BadManifestLine, $"{shard}: member {member} '{name}'", "invalid JSON (" + e.Message.Split('\n')[0] + ")");
                    }
                }
                else
                {
                    foreach (var l in text.Split('\n')) Add(cur.Captions ??= new(), l);
                }
            }
        }
        Flush();
    }

    /// <summary>
    /// Offset of a member's data in the archive. TarReader on a seekable stream returns with the stream just past the
    /// member's data and its padding to a 512-byte record, so the data starts one padded length back. That is not a
    /// documented contract, so the first bytes are checked against the entry's own data stream.
    /// </summary>
    static long DataOffset(FileStream fs, TarEntry entry)
    {
        long end = fs.Position;
        long offset = end - ((entry.Length + 511) & ~511L);
        int n = (int)Math.Min(16, entry.Length);
        if (n > 0)
        {
            Span<byte> viaEntry = stackalloc byte[16], direct = stackalloc byte[16];
            entry.DataStream!.ReadExactly(viaEntry[..n]);
            fs.Position = offset;
            fs.ReadExactly(direct[..n]);
            fs.Position = end;
            if (!viaEntry[..n].SequenceEqual(direct[..n]))
                throw new InvalidDataException($"cannot locate the data of member '{entry.Name}'");
        }
        return offset;
    }
}
