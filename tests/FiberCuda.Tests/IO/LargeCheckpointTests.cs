using System.Buffers.Binary;
using System.Text;
using FiberCuda.IO;

namespace FiberCuda.Tests.IO;

/// <summary>
/// A checkpoint with a 3 GiB `image_input_queue` storage (a sparse file, so the disk cost is nil): opening it and
/// reading the state dict's weights must neither read nor allocate the queue.
/// </summary>
[TestClass]
public sealed class LargeCheckpointTests
{
    static class P
    {
        public static void Str(List<byte> b, string s)
        {
            var u = Encoding.UTF8.GetBytes(s);
            b.Add((byte)'X'); Span<byte> n = stackalloc byte[4]; BinaryPrimitives.WriteInt32LittleEndian(n, u.Length); b.AddRange(n.ToArray()); b.AddRange(u);
        }
        public static void Int(List<byte> b, int v)
        {
            b.Add((byte)'J'); Span<byte> n = stackalloc byte[4]; BinaryPrimitives.WriteInt32LittleEndian(n, v); b.AddRange(n.ToArray());
        }
        public static void Global(List<byte> b, string mod, string name) => b.AddRange(Encoding.ASCII.GetBytes($"c{mod}\n{name}\n"));

        /// <summary>_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), 0, (n,), (1,), False, OrderedDict())</summary>
        public static void Tensor1D(List<byte> b, string key, int n)
        {
            Global(b, "torch._utils", "_rebuild_tensor_v2");
            b.Add((byte)'(');
            b.Add((byte)'('); Str(b, "storage"); Global(b, "torch", "FloatStorage"); Str(b, key); Str(b, "cpu"); Int(b, n); b.Add((byte)'t');
            b.Add((byte)'Q');
            Int(b, 0);
            Int(b, n); b.Add(0x85);
            Int(b, 1); b.Add(0x85);
            b.Add(0x89);
            Global(b, "collections", "OrderedDict"); b.Add((byte)')'); b.Add((byte)'R');
            b.Add((byte)'t'); b.Add((byte)'R');
        }
    }

    [TestMethod]
    public void HugeQueueIsNeverRead()
    {
        const int queueElems = 768 * 1024 * 1024; // 3 GiB of f32
        var pk = new List<byte> { 0x80, 2, (byte)'}', (byte)'(' };
        P.Str(pk, "epoch"); P.Int(pk, 1);
        P.Str(pk, "state_dict"); pk.Add((byte)'}'); pk.Add((byte)'(');
        P.Str(pk, "w"); P.Tensor1D(pk, "0", 4);
        P.Str(pk, "image_input_queue"); P.Tensor1D(pk, "1", queueElems);
        pk.Add((byte)'u'); pk.Add((byte)'u'); pk.Add((byte)'.');

        var path = Path.Combine(Path.GetTempPath(), $"fibercuda-big-{Guid.NewGuid():N}.ckpt");
        try
        {
            // Zip the small records normally, then append the queue as a stored record whose body is a sparse hole.
            using (var fs = new FileStream(path, FileMode.CreateNew))
            {
                var entries = new List<(string Name, long Offset, long Size, uint Crc)>();
                void Add(string name, byte[]? data, long size)
                {
                    long off = fs.Position;
                    var nb = Encoding.ASCII.GetBytes(name);
                    var h = new byte[30];
                    BinaryPrimitives.WriteUInt32LittleEndian(h, 0x04034b50);
                    BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(4), 20);
                    BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(18), (uint)size);
                    BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(22), (uint)size);
                    BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(26), (ushort)nb.Length);
                    fs.Write(h); fs.Write(nb);
                    if (data is not null) fs.Write(data); else fs.SetLength(fs.Position + size);
                    fs.Position = off + 30 + nb.Length + size;
                    entries.Add((name, off, size, 0));
                }
                Add("big/data.pkl", pk.ToArray(), pk.Count);
                var w = new byte[16]; for (int i = 0; i < 4; i++) BinaryPrimitives.WriteSingleLittleEndian(w.AsSpan(i * 4), i + 0.5f);
                Add("big/data/0", w, 16);
                Add("big/version", "3\n"u8.ToArray(), 2);
                Add("big/data/1", null, 4L * queueElems);
                long cd = fs.Position;
                foreach (var (name, off, size, _) in entries)
                {
                    var nb = Encoding.ASCII.GetBytes(name);
                    var h = new byte[46];
                    BinaryPrimitives.WriteUInt32LittleEndian(h, 0x02014b50);
                    BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(20), (uint)size);
                    BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(24), (uint)size);
                    BinaryPrimitives.WriteUInt16LittleEndian(h.AsSpan(28), (ushort)nb.Length);
                    BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(42), (uint)off);
                    fs.Write(h); fs.Write(nb);
                }
                long cdEnd = fs.Position;
                var e = new byte[22];
                BinaryPrimitives.WriteUInt32LittleEndian(e, 0x06054b50);
                BinaryPrimitives.WriteUInt16LittleEndian(e.AsSpan(8), (ushort)entries.Count);
                BinaryPrimitives.WriteUInt16LittleEndian(e.AsSpan(10), (ushort)entries.Count);
                BinaryPrimitives.WriteUInt32LittleEndian(e.AsSpan(12), (uint)(cdEnd - cd));
                BinaryPrimitives.WriteUInt32LittleEndian(e.AsSpan(16), (uint)cd);
                fs.Write(e);
            }
            long before = GC.GetAllocatedBytesForCurrentThread();
            using var ck = TorchCheckpoint.Open(path);
            var q = ck.Tensors.Single(t => t.Name == "image_input_queue");
            Assert.AreEqual(4L * queueElems, q.Bytes);
            var wt = ck.Read("w");
            CollectionAssert.AreEqual(new[] { 0.5f, 1.5f, 2.5f, 3.5f }, wt.ToFloats());
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.AreEqual(16, ck.BytesRead);
            Assert.IsTrue(allocated < 16 << 20, $"allocated {allocated} bytes");
        }
        finally { File.Delete(path); }
    }
}
