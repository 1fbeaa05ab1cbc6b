using System.Buffers.Binary;
using System.Text;

namespace FiberCuda.IO;

/// <summary>
/// Central-directory reader for the (ZIP64) archives torch.save writes (anchors.md §C2): records are stored
/// uncompressed, so each is a byte range of the file. The data offset comes from the *local* header (its extra
/// field holds torch's 64-byte alignment padding). Every offset and size is checked against the file length.
/// </summary>
public sealed class ZipDirectory
{
    public sealed record Entry(string Name, long DataOffset, long Size, int Method);

    public IReadOnlyList<Entry> Entries { get; }
    readonly Dictionary<string, Entry> _byName = new();

    ZipDirectory(List<Entry> entries)
    {
        Entries = entries;
        foreach (var e in entries) _byName.TryAdd(e.Name, e);
    }

    public Entry? Find(string name) => _byName.GetValueOrDefault(name);

    public static ZipDirectory Read(Stream s, string where)
    {
        long len = s.Length;
        WeightFormatException Bad(string m) => new($"{where}: {m}");
        if (len < 22) throw Bad("too short for a zip archive");
        // End of central directory: last 22 bytes + up to 64 KiB of comment.
        int tail = (int)Math.Min(len, 22 + 65535);
        var buf = new byte[tail];
        s.Position = len - tail; s.ReadExactly(buf);
        int eocd = -1;
        for (int i = tail - 22; i >= 0; i--)
            if (BinaryPrimitives.ReadUInt32LittleEndian(buf.AsSpan(i)) == 0x06054b50) { eocd = i; break; }
        if (eocd < 0) throw Bad("no zip end-of-central-directory record (truncated or not a zip archive)");
        long eocdPos = len - tail + eocd;
        var e = buf.AsSpan(eocd);
        long count = BinaryPrimitives.ReadUInt16LittleEndian(e[10..]);
        long cdSize = BinaryPrimitives.ReadUInt32LittleEndian(e[12..]);
        long cdOff = BinaryPrimitives.ReadUInt32LittleEndian(e[16..]);
        if (count == 0xFFFF || cdSize == 0xFFFFFFFF || cdOff == 0xFFFFFFFF)
        {
            // ZIP64 locator sits right before the EOCD.
            if (eocdPos < 20) throw Bad("ZIP64 locator missing");
            var loc = new byte[20];
            s.Position = eocdPos - 20; s.ReadExactly(loc);
            if (BinaryPrimitives.ReadUInt32LittleEndian(loc) != 0x07064b50) throw Bad("ZIP64 locator missing");
            long z64 = (long)BinaryPrimitives.ReadUInt64LittleEndian(loc.AsSpan(8));
            if (z64 < 0 || z64 > len - 56) throw Bad($"ZIP64 end record offset {z64} out of range");
            var z = new byte[56];
            s.Position = z64; s.ReadExactly(z);
            if (BinaryPrimitives.ReadUInt32LittleEndian(z) != 0x06064b50) throw Bad("bad ZIP64 end-of-central-directory signature");
            count = (long)BinaryPrimitives.ReadUInt64LittleEndian(z.AsSpan(32));
            cdSize = (long)BinaryPrimitives.ReadUInt64LittleEndian(z.AsSpan(40));
            cdOff = (long)BinaryPrimitives.ReadUInt64LittleEndian(z.AsSpan(48));
        }
        if (cdOff < 0 || cdSize < 0 || cdOff > len || cdSize > len - cdOff) throw Bad($"central directory [{cdOff}, +{cdSize}] lies outside the {len}-byte file");
        if (count < 0 || count > cdSize / 46) throw Bad($"central directory claims {count} entries in {cdSize} bytes");
        if (cdSize > int.MaxValue) throw Bad("central directory too large");
        var cd = new byte[cdSize];
        s.Position = cdOff; s.ReadExactly(cd);
        var list = new List<Entry>((int)count);
        int p = 0;
        var local = new byte[30];
        for (long i = 0; i < count; i++)
        {
            if (p + 46 > cd.Length || BinaryPrimitives.ReadUInt32LittleEndian(cd.AsSpan(p)) != 0x02014b50)
                throw Bad($"central directory entry {i} is corrupt (bad signature at offset {cdOff + p})");
            var h = cd.AsSpan(p);
            int method = BinaryPrimitives.ReadUInt16LittleEndian(h[10..]);
            long csize = BinaryPrimitives.ReadUInt32LittleEndian(h[20..]);
            long usize = BinaryPrimitives.ReadUInt32LittleEndian(h[24..]);
            int nlen = BinaryPrimitives.ReadUInt16LittleEndian(h[28..]);
            int xlen = BinaryPrimitives.ReadUInt16LittleEndian(h[30..]);
            int clen = BinaryPrimitives.ReadUInt16LittleEndian(h[32..]);
            long lho = BinaryPrimitives.ReadUInt32LittleEndian(h[42..]);
            if (p + 46 + nlen + xlen + clen > cd.Length) throw Bad($"central directory entry {i} runs past the directory");
            string name = Encoding.UTF8.GetString(h.Slice(46, nlen));
            // ZIP64 extra field: the 0xFFFFFFFF fields, in order usize, csize, offset.
            var x = h.Slice(46 + nlen, xlen);
            while (x.Length >= 4)
            {
                int id = BinaryPrimitives.ReadUInt16LittleEndian(x), sz = BinaryPrimitives.ReadUInt16LittleEndian(x[2..]);
                if (4 + sz > x.Length) break;
                if (id == 1)
                {
                    var f = x.Slice(4, sz);
                    if (usize == 0xFFFFFFFF && f.Length >= 8) { usize = (long)BinaryPrimitives.ReadUInt64LittleEndian(f); f = f[8..]; }
                    if (csize == 0xFFFFFFFF && f.Length >= 8) { csize = (long)BinaryPrimitives.ReadUInt64LittleEndian(f); f = f[8..]; }
                    if (lho == 0xFFFFFFFF && f.Length >= 8) { lho = (long)BinaryPrimitives.ReadUInt64LittleEndian(f); }
                }
                x = x[(4 + sz)..];
            }
            p += 46 + nlen + xlen + clen;
            if (lho < 0 || lho > len - 30) throw Bad($"record '{name}': local header offset {lho} out of range");
            s.Position = lho; s.ReadExactly(local);
            if (BinaryPrimitives.ReadUInt32LittleEndian(local) != 0x04034b50) throw Bad($"record '{name}': bad local header signature at {lho}");
            long data = lho + 30 + BinaryPrimitives.ReadUInt16LittleEndian(local.AsSpan(26)) + BinaryPrimitives.ReadUInt16LittleEndian(local.AsSpan(28));
            if (csize < 0 || usize < 0 || data > len || csize > len - data) throw Bad($"record '{name}' [{data}, +{csize}] runs past the end of the {len}-byte file (truncated?)");
            if (method == 0 && csize != usize) throw Bad($"record '{name}': stored sizes disagree ({csize} vs {usize})");
            list.Add(new Entry(name, data, method == 0 ? usize : csize, method));
        }
        return new ZipDirectory(list);
    }
}
