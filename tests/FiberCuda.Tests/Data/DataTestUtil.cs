using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace FiberCuda.Tests.Data;

/// <summary>A temporary folder removed on dispose.</summary>
sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"fibercuda-data-{Guid.NewGuid():N}"));
    public string Path { get; }
    public string P(string rel) => System.IO.Path.Combine(Path, rel);
    public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
}

static class DataTestUtil
{
    /// <summary>Deterministic noise image (System.Random with a fixed seed is stable across runs).</summary>
    public static Image<Rgb24> NoiseImage(int w, int h, int seed)
    {
        var rnd = new Random(seed);
        var img = new Image<Rgb24>(w, h);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                img[x, y] = new Rgb24((byte)rnd.Next(256), (byte)rnd.Next(256), (byte)rnd.Next(256));
        return img;
    }

    public static byte[] Png(Image<Rgb24> img)
    {
        using var ms = new MemoryStream();
        img.SaveAsPng(ms);
        return ms.ToArray();
    }

    public static byte[] Jpeg(Image<Rgb24> img)
    {
        using var ms = new MemoryStream();
        img.SaveAsJpeg(ms);
        return ms.ToArray();
    }

    public static byte[] Rgb(Image<Rgb24> img)
    {
        var b = new byte[img.Width * img.Height * 3];
        img.CopyPixelDataTo(b);
        return b;
    }

    static readonly uint[] CrcTable = Enumerable.Range(0, 256).Select(n =>
    {
        uint c = (uint)n;
        for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        return c;
    }).ToArray();

    public static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFFu;
        foreach (var b in data) c = CrcTable[(c ^ b) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }

    static void Chunk(MemoryStream ms, string type, byte[] data)
    {
        void U32(uint v) { ms.WriteByte((byte)(v >> 24)); ms.WriteByte((byte)(v >> 16)); ms.WriteByte((byte)(v >> 8)); ms.WriteByte((byte)v); }
        U32((uint)data.Length);
        var td = System.Text.Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
        ms.Write(td);
        U32(Crc32(td));
    }

    /// <summary>A valid-looking PNG whose header claims <paramref name="w"/>×<paramref name="h"/> RGB pixels, with a tiny IDAT.</summary>
    public static byte[] PngHeaderOnly(uint w, uint h)
    {
        var ms = new MemoryStream();
        ms.Write(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A });
        var ihdr = new byte[13];
        ihdr[0] = (byte)(w >> 24); ihdr[1] = (byte)(w >> 16); ihdr[2] = (byte)(w >> 8); ihdr[3] = (byte)w;
        ihdr[4] = (byte)(h >> 24); ihdr[5] = (byte)(h >> 16); ihdr[6] = (byte)(h >> 8); ihdr[7] = (byte)h;
        ihdr[8] = 8; ihdr[9] = 2; // 8-bit truecolour
        Chunk(ms, "IHDR", ihdr);
        Chunk(ms, "IDAT", new byte[] { 0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01 });
        Chunk(ms, "IEND", Array.Empty<byte>());
        return ms.ToArray();
    }

    /// <summary>
    /// A tiny byte-level BPE vocabulary in HF format. "cat sat cat" pre-tokenises to "cat", "Ġsat", "Ġcat"; the merges
    /// build "cat" and "Ġsat" but not "Ġcat", so the expected ids are [cat, Ġsat, Ġ, cat]. "é" is UTF-8 C3 A9, which
    /// GPT-2's byte-to-unicode table writes "Ã©"; the last merge joins them.
    /// </summary>
    public static (string Vocab, string Merges) TinyRoberta(TempDir dir)
    {
        string v = dir.P("vocab.json"), m = dir.P("merges.txt");
        File.WriteAllText(v, """
            {"<s>":0,"<pad>":1,"</s>":2,"<unk>":3,"c":4,"a":5,"t":6,"s":7,"\u0120":8,"ca":9,"cat":10,"sa":11,"sat":12,"\u0120sat":13,"<mask>":14,"\u00c3":15,"\u00a9":16,"\u00c3\u00a9":17}
            """);
        File.WriteAllText(m, "#version: 0.2\nc a\nca t\ns a\nsa t\n\u0120 sat\n\u00c3 \u00a9\n");
        return (v, m);
    }
}
