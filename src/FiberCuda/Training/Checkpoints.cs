using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using FiberCuda.IO;
using FiberCuda.Optim;
using FiberCuda.Tensors;

namespace FiberCuda.Training;

/// <summary>
/// Training checkpoints of one run: <c>RUN/checkpoints/step-00000123.safetensors</c>, each ONE safetensors file with
/// <list type="bullet">
/// <item><c>model/&lt;param&gt;</c> — the parameters in their own dtype;</item>
/// <item><c>optim/&lt;param&gt;/exp_avg</c>, <c>/exp_avg_sq</c>, <c>/master</c> (bf16 params only) — AdamW state;</item>
/// <item><c>state/&lt;key&gt;</c> — extra trainer state (ITC queues, counters…), any engine dtype;</item>
/// <item><c>__metadata__</c>: <c>format</c>, <c>step</c>, <c>optim_step_count</c> (when an optimizer was saved),
/// <c>trainer</c> (the caller's JSON string) and <c>data_sha256</c> (SHA-256 of the byte buffer, so a corrupt body
/// is caught, not only a truncated one).</item>
/// </list>
/// Tensors are streamed from the backend in chunks (no host copy of the whole model), written to a temporary file
/// in the same folder, fsynced, renamed over the final name and the folder fsynced: a crash at any point leaves
/// either the previous set of checkpoints or the new one, never a torn file under a checkpoint name.
/// One writer per run folder.
/// </summary>
public sealed partial class CheckpointStore
{
    public const string Format = "fibercuda-train-checkpoint/1";
    internal const string ModelPrefix = "model/", OptimPrefix = "optim/", StatePrefix = "state/";
    internal const string ExpAvg = "/exp_avg", ExpAvgSq = "/exp_avg_sq", Master = "/master";

    /// <summary>Largest piece moved between a backend and the file at once; bigger tensors go by axis-0 slices.</summary>
    internal static long ChunkBytes = 64L << 20;

    /// <param name="runDir">The run folder; checkpoints go to its <c>checkpoints</c> subfolder.</param>
    /// <param name="keepLast">How many checkpoints to keep after a save (the newest ones); 0 keeps all.</param>
    public CheckpointStore(string runDir, int keepLast = 3)
    {
        if (keepLast < 0) throw new ArgumentOutOfRangeException(nameof(keepLast));
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("checkpoints are written little-endian from raw tensor bytes");
        RunDir = Path.GetFullPath(runDir);
        Folder = Path.Combine(RunDir, "checkpoints");
        KeepLast = keepLast;
    }

    public string RunDir { get; }
    public string Folder { get; }
    public int KeepLast { get; }

    public static string FileName(long step) => $"step-{step:D8}.safetensors";
    public string PathOf(long step) => Path.Combine(Folder, FileName(step));

    [GeneratedRegex(@"^step-(\d{8,19})\.safetensors$")]
    private static partial Regex NamePattern();

    /// <summary>Step of a checkpoint file name, or null for anything else (temporaries, foreign files).</summary>
    public static long? StepOf(string path)
    {
        var m = NamePattern().Match(Path.GetFileName(path));
        return m.Success && long.TryParse(m.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out long s) ? s : null;
    }

    /// <summary>The checkpoint files, oldest step first.</summary>
    public IReadOnlyList<string> List()
    {
        if (!Directory.Exists(Folder)) return [];
        return Directory.EnumerateFiles(Folder, "step-*.safetensors")
            .Select(p => (Path: p, Step: StepOf(p)))
            .Where(x => x.Step is not null)
            .OrderBy(x => x.Step!.Value)
            .Select(x => x.Path)
            .ToList();
    }

    /// <summary>
    /// The newest checkpoint that <see cref="Read"/> accepts (null when none); <paramref name="skipped"/> gets one
    /// message per newer file that failed, each naming the file and the problem.
    /// </summary>
    public string? LatestReadable(out List<string> skipped)
    {
        using var ck = OpenLatestReadable(out skipped);
        return ck?.Path;
    }

    /// <summary>As <see cref="LatestReadable"/>, but hands out the opened checkpoint (validated once, not twice).</summary>
    public TrainCheckpoint? OpenLatestReadable(out List<string> skipped)
    {
        skipped = [];
        foreach (var path in List().Reverse())
        {
            try { return Read(path); }
            catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException) { skipped.Add(e.Message); }
        }
        return null;
    }

    /// <summary>
    /// Writes the checkpoint of <paramref name="step"/> and prunes: keeps it plus the <see cref="KeepLast"/> − 1 newest
    /// older ones. Checkpoints with a HIGHER step than the one written belong to an abandoned continuation (the run
    /// resumed from an earlier checkpoint) and are removed too, so that the next resume cannot jump back to them.
    /// Leftover temporaries of killed writes are removed. Returns the path written.
    /// </summary>
    /// <param name="parameters">Named parameters (<see cref="Nn.Module.NamedParameters"/>); names must be unique.</param>
    /// <param name="opt">The optimizer whose state and step count are saved (every state it holds must belong to a named parameter).</param>
    /// <param name="extra">Extra state tensors, saved as <c>state/&lt;key&gt;</c>.</param>
    /// <param name="trainerJson">The trainer's own state (data position, rng, config…), stored verbatim.</param>
    public string Save(long step, IReadOnlyList<(string Name, Tensor Param)> parameters, AdamW? opt,
                       IReadOnlyDictionary<string, Tensor>? extra, string trainerJson)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step));
        ArgumentNullException.ThrowIfNull(trainerJson);
        var entries = new List<(string Key, Tensor T)>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, p) in parameters)
        {
            CheckName(name, "parameter");
            if (!names.Add(name)) throw new ArgumentException($"parameter '{name}' is listed twice", nameof(parameters));
            entries.Add((ModelPrefix + name, p));
        }
        var meta = new Dictionary<string, string>
        {
            ["format"] = Format,
            ["step"] = step.ToString(CultureInfo.InvariantCulture),
            ["trainer"] = trainerJson,
        };
        if (opt is not null)
        {
            meta["optim_step_count"] = opt.StepCount.ToString(CultureInfo.InvariantCulture);
            var named = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
            foreach (var (name, p) in parameters)
            {
                named.Add(p);
                if (opt.StateOf(p) is not { } s) continue;
                entries.Add((OptimPrefix + name + ExpAvg, s.M));
                entries.Add((OptimPrefix + name + ExpAvgSq, s.V));
                if (s.Master is { } m) entries.Add((OptimPrefix + name + Master, m));
            }
            var orphans = opt.State.Keys.Where(t => !named.Contains(t)).Select(t => t.ToString()).ToList();
            if (orphans.Count > 0)
                throw new ArgumentException($"the optimizer holds state for {orphans.Count} tensor(s) missing from the parameter list: {string.Join(", ", orphans.Take(10))}", nameof(parameters));
        }
        if (extra is not null)
            foreach (var (key, t) in extra.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                CheckName(key, "state key");
                entries.Add((StatePrefix + key, t));
            }

        Directory.CreateDirectory(Folder);
        string final = PathOf(step);
        string tmp = Path.Combine(Folder, $".{FileName(step)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            WriteFile(tmp, entries, meta);
            File.Move(tmp, final, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch { /* the write error is the one to report */ }
            throw;
        }
        FsyncDirectory(Folder);
        Prune(step, final);
        return final;
    }

    static void CheckName(string name, string what)
    {
        if (string.IsNullOrEmpty(name)) throw new ArgumentException($"empty {what}");
        if (name == "__metadata__") throw new ArgumentException($"'{name}' is reserved");
    }

    void Prune(long written, string writtenPath)
    {
        foreach (var f in Directory.EnumerateFiles(Folder, ".step-*.tmp"))
            try { File.Delete(f); } catch (IOException) { /* best effort */ }
        if (KeepLast == 0) return;
        var older = List().Where(p => StepOf(p)!.Value < written).Reverse().Skip(KeepLast - 1);
        var abandoned = List().Where(p => StepOf(p)!.Value > written);
        foreach (var f in older.Concat(abandoned).ToList())
            if (!string.Equals(Path.GetFullPath(f), writtenPath, StringComparison.Ordinal))
                try { File.Delete(f); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* the save itself succeeded; retried after the next save */ }
    }

    // ------------------------------------------------------------------ writing

    static void WriteFile(string path, List<(string Key, Tensor T)> entries, Dictionary<string, string> meta)
    {
        // Same layout as SafeTensorsFile.Write: widest dtype first, then by name; data 8-byte aligned.
        entries.Sort((a, b) =>
        {
            int c = b.T.DType.Size().CompareTo(a.T.DType.Size());
            return c != 0 ? c : string.CompareOrdinal(a.Key, b.Key);
        });
        string placeholder = new('0', 64);
        meta["data_sha256"] = placeholder;
        byte[] header = SafeTensorsFile.Header(
            entries.Select(e => (e.Key, WeightDTypeInfo.FromEngine(e.T.DType).SafetensorsName(), e.T.Shape.Select(d => (long)d), e.T.Bytes)), meta);
        // The key/value pair with raw quotes cannot occur inside another (escaped) JSON string, so this finds the metadata slot.
        int slot = IndexOf(header, Encoding.UTF8.GetBytes("\"data_sha256\":\"" + placeholder + "\""));
        if (slot < 0) throw new InvalidOperationException("checkpoint header: hash slot not found");
        slot += "\"data_sha256\":\"".Length;

        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using (var fs = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 20))
        {
            Span<byte> n8 = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(n8, (ulong)header.Length);
            fs.Write(n8);
            fs.Write(header);
            var buf = new byte[(int)Math.Min(ChunkBytes, Math.Max(1, entries.Count == 0 ? 1 : entries.Max(e => e.T.Bytes)))];
            foreach (var (key, t) in entries)
                TensorIo.Download(t, buf, chunk => { sha.AppendData(chunk); fs.Write(chunk); }, key);
            string hex = Convert.ToHexStringLower(sha.GetHashAndReset());
            fs.Position = 8 + slot;
            fs.Write(Encoding.ASCII.GetBytes(hex));
            fs.Flush(flushToDisk: true);
        }
    }

    static int IndexOf(byte[] hay, byte[] needle) => hay.AsSpan().IndexOf(needle);

    [DllImport("libc", EntryPoint = "open", SetLastError = true)] static extern int SysOpen(string path, int flags);
    [DllImport("libc", EntryPoint = "fsync", SetLastError = true)] static extern int SysFsync(int fd);
    [DllImport("libc", EntryPoint = "close", SetLastError = true)] static extern int SysClose(int fd);

    /// <summary>Makes the rename itself durable (POSIX: a rename lives in the directory, which has its own fsync).</summary>
    static void FsyncDirectory(string dir)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return;
        try
        {
            int fd = SysOpen(dir, 0 /* O_RDONLY */);
            if (fd < 0) return;
            SysFsync(fd);
            SysClose(fd);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { /* no libc: nothing to do */ }
    }

    // ------------------------------------------------------------------ reading

    /// <summary>
    /// Opens and fully validates a checkpoint (safetensors structure, names, metadata, the data hash); throws
    /// <see cref="InvalidDataException"/> naming the file and the problem. The result keeps the file open for <see cref="TrainCheckpoint.Restore"/>.
    /// </summary>
    public static TrainCheckpoint Read(string path) => TrainCheckpoint.Open(Path.GetFullPath(path));
}

/// <summary>An opened, validated training checkpoint. Dispose it after restoring.</summary>
public sealed class TrainCheckpoint : IDisposable
{
    internal sealed record Entry(string Key, DType DType, int[] Shape, long Begin, long End);

    readonly FileStream _fs;
    readonly long _dataStart;
    readonly Dictionary<string, Entry> _entries;

    TrainCheckpoint(string path, FileStream fs, long dataStart, Dictionary<string, Entry> entries, IReadOnlyDictionary<string, string> meta)
    {
        Path = path; _fs = fs; _dataStart = dataStart; _entries = entries; Metadata = meta;
        Step = long.Parse(meta["step"], NumberStyles.None, CultureInfo.InvariantCulture);
        TrainerJson = meta["trainer"];
        OptimizerStepCount = meta.TryGetValue("optim_step_count", out var s) ? int.Parse(s, NumberStyles.None, CultureInfo.InvariantCulture) : null;
        ParameterNames = Names(CheckpointStore.ModelPrefix);
        StateKeys = Names(CheckpointStore.StatePrefix);
    }

    List<string> Names(string prefix) => _entries.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal))
        .Select(k => k[prefix.Length..]).Order(StringComparer.Ordinal).ToList();

    public string Path { get; }
    /// <summary>The training step passed to <see cref="CheckpointStore.Save"/>.</summary>
    public long Step { get; }
    public string TrainerJson { get; }
    /// <summary>The optimizer's <see cref="AdamW.StepCount"/>; null when the checkpoint holds no optimizer.</summary>
    public int? OptimizerStepCount { get; }
    public IReadOnlyList<string> ParameterNames { get; }
    public IReadOnlyList<string> StateKeys { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    internal static TrainCheckpoint Open(string path)
    {
        InvalidDataException Bad(string problem, Exception? inner = null) => new($"checkpoint {path}: {problem}", inner);
        if (!File.Exists(path)) throw new FileNotFoundException($"checkpoint {path}: no such file", path);
        IReadOnlyDictionary<string, string> meta;
        long dataStart;
        // Structure first, with the strict safetensors reader (lengths, offsets, holes, overlaps, dtypes).
        try
        {
            using var st = SafeTensorsFile.Open(path);
            meta = new Dictionary<string, string>(st.Metadata);
            dataStart = st.DataStart;
        }
        catch (WeightFormatException e) { throw Bad(StripPath(e.Message, path), e); }

        if (!meta.TryGetValue("format", out var fmt) || fmt != CheckpointStore.Format)
            throw Bad($"not a training checkpoint (metadata format '{fmt ?? "(none)"}', expected '{CheckpointStore.Format}')");
        foreach (var k in new[] { "step", "trainer", "data_sha256" })
            if (!meta.ContainsKey(k)) throw Bad($"metadata lacks '{k}'");
        if (!long.TryParse(meta["step"], NumberStyles.None, CultureInfo.InvariantCulture, out _)) throw Bad($"bad step '{meta["step"]}'");
        if (meta.TryGetValue("optim_step_count", out var osc) && !int.TryParse(osc, NumberStyles.None, CultureInfo.InvariantCulture, out _))
            throw Bad($"bad optim_step_count '{osc}'");

        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        try
        {
            var entries = ParseEntries(fs, dataStart, Bad);
            // Hash of the whole byte buffer: catches a corrupt body that still has a valid layout.
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            var buf = new byte[1 << 20];
            long at = dataStart, len = fs.Length;
            while (at < len)
            {
                int n = RandomAccess.Read(fs.SafeFileHandle, buf.AsSpan(0, (int)Math.Min(buf.Length, len - at)), at);
                if (n <= 0) throw Bad("file shrank while reading");
                sha.AppendData(buf, 0, n);
                at += n;
            }
            string hex = Convert.ToHexStringLower(sha.GetHashAndReset());
            if (!string.Equals(hex, meta["data_sha256"], StringComparison.OrdinalIgnoreCase))
                throw Bad($"data hash mismatch (file {hex}, header {meta["data_sha256"]}): the tensor data is corrupt");
            return new TrainCheckpoint(path, fs, dataStart, entries, meta);
        }
        catch
        {
            fs.Dispose();
            throw;
        }
    }

    static string StripPath(string msg, string path) => msg.StartsWith(path + ": ", StringComparison.Ordinal) ? msg[(path.Length + 2)..] : msg;

    static Dictionary<string, Entry> ParseEntries(FileStream fs, long dataStart, Func<string, Exception?, InvalidDataException> bad)
    {
        var header = new byte[dataStart - 8];
        RandomAccess.Read(fs.SafeFileHandle, header, 8);
        var entries = new Dictionary<string, Entry>(StringComparer.Ordinal);
        using var doc = JsonDocument.Parse(header);
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (prop.Name == "__metadata__") continue;
            string key = prop.Name;
            bool known = key.StartsWith(CheckpointStore.ModelPrefix, StringComparison.Ordinal)
                      || key.StartsWith(CheckpointStore.StatePrefix, StringComparison.Ordinal)
                      || (key.StartsWith(CheckpointStore.OptimPrefix, StringComparison.Ordinal)
                          && (key.EndsWith(CheckpointStore.ExpAvg) || key.EndsWith(CheckpointStore.ExpAvgSq) || key.EndsWith(CheckpointStore.Master)));
            if (!known) throw bad($"unexpected tensor '{key}' (expected model/, optim/ or state/ entries)", null);
            if (!WeightDTypeInfo.TryParseSafetensors(prop.Value.GetProperty("dtype").GetString()!, out var wdt) || wdt.ToEngine() is not DType dt)
                throw bad($"tensor '{key}' has dtype {prop.Value.GetProperty("dtype").GetString()}, which the engine has no tensors of", null);
            var shape = new List<int>();
            foreach (var d in prop.Value.GetProperty("shape").EnumerateArray())
            {
                if (!d.TryGetInt32(out int x)) throw bad($"tensor '{key}': dimension {d} is out of range", null);
                shape.Add(x);
            }
            var off = prop.Value.GetProperty("data_offsets");
            entries[key] = new Entry(key, dt, shape.ToArray(), off[0].GetInt64(), off[1].GetInt64());
        }
        return entries;
    }

    /// <summary>One stored tensor on the host (for inspection; tensors up to 2 GiB).</summary>
    public HostTensor ReadHost(string key)
    {
        if (!_entries.TryGetValue(key, out var e)) throw new KeyNotFoundException($"checkpoint {Path}: no tensor '{key}'");
        var data = new byte[e.End - e.Begin];
        RandomAccess.Read(_fs.SafeFileHandle, data, _dataStart + e.Begin);
        return new HostTensor(WeightDTypeInfo.FromEngine(e.DType), Array.ConvertAll(e.Shape, d => (long)d), data);
    }

    /// <summary>
    /// Copies the stored values into the existing tensors (any backend), installs the AdamW state per parameter and
    /// the optimizer's step count. Strict: every listed parameter / extra key must be stored with the same dtype and
    /// shape and nothing stored may be left over (a mismatch throws <see cref="InvalidDataException"/> listing the
    /// names, before anything is modified). <paramref name="opt"/> null skips the optimizer section, and
    /// <paramref name="extra"/> null the state section (e.g. to evaluate a training checkpoint).
    /// </summary>
    public void Restore(IReadOnlyList<(string Name, Tensor Param)> parameters, AdamW? opt, IReadOnlyDictionary<string, Tensor>? extra)
    {
        var problems = new List<string>();
        var plan = new List<(Entry E, Tensor Dst)>();
        void Match(string key, Tensor dst)
        {
            if (!_entries.TryGetValue(key, out var e)) { problems.Add($"missing '{key}'"); return; }
            if (e.DType != dst.DType || !e.Shape.AsSpan().SequenceEqual(dst.Shape))
            { problems.Add($"'{key}' is {e.DType.Name()}{ShapeUtil.Format(e.Shape)} in the checkpoint but {dst.DType.Name()}{ShapeUtil.Format(dst.Shape)} here"); return; }
            plan.Add((e, dst));
        }
        void Leftovers(string prefix, HashSet<string> expected, string what)
        {
            var extraKeys = _entries.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal) && !expected.Contains(k)).Order(StringComparer.Ordinal).ToList();
            if (extraKeys.Count > 0) problems.Add($"{extraKeys.Count} {what} in the checkpoint but not here: {string.Join(", ", extraKeys.Take(20))}{(extraKeys.Count > 20 ? ", …" : "")}");
        }

        var expectedModel = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, p) in parameters)
        {
            string key = CheckpointStore.ModelPrefix + name;
            if (!expectedModel.Add(key)) problems.Add($"parameter '{name}' listed twice");
            Match(key, p);
        }
        Leftovers(CheckpointStore.ModelPrefix, expectedModel, "parameter(s)");

        // Optimizer state: created here (outside any TensorScope, as AdamW does) and installed only once all checks pass.
        var states = new List<(Tensor P, string Name, DType Moment, bool HasMaster)>();
        if (opt is not null)
        {
            if (OptimizerStepCount is null) problems.Add("the checkpoint holds no optimizer state but an optimizer was given");
            var expectedOptim = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (name, p) in parameters)
            {
                string k = CheckpointStore.OptimPrefix + name;
                bool stored = _entries.ContainsKey(k + CheckpointStore.ExpAvg) || _entries.ContainsKey(k + CheckpointStore.ExpAvgSq);
                if (!stored)
                {
                    // A parameter that never had a gradient has no state; the optimizer must not have any either.
                    if (opt.StateOf(p) is not null) problems.Add($"the optimizer has state for '{name}' but the checkpoint has none");
                    continue;
                }
                var mt = p.DType == DType.F64 ? DType.F64 : DType.F32;
                bool master = p.DType == DType.BF16;
                foreach (var suffix in master ? new[] { CheckpointStore.ExpAvg, CheckpointStore.ExpAvgSq, CheckpointStore.Master } : [CheckpointStore.ExpAvg, CheckpointStore.ExpAvgSq])
                    expectedOptim.Add(k + suffix);
                states.Add((p, name, mt, master));
            }
            Leftovers(CheckpointStore.OptimPrefix, expectedOptim, "optimizer tensor(s)");
            // Shapes/dtypes of the state, checked against what AdamW would create.
            foreach (var (p, name, mt, master) in states)
            {
                string k = CheckpointStore.OptimPrefix + name;
                foreach (var (suffix, dt) in master ? new[] { (CheckpointStore.ExpAvg, mt), (CheckpointStore.ExpAvgSq, mt), (CheckpointStore.Master, DType.F32) }
                                                    : [(CheckpointStore.ExpAvg, mt), (CheckpointStore.ExpAvgSq, mt)])
                {
                    if (!_entries.TryGetValue(k + suffix, out var e)) problems.Add($"missing '{k + suffix}'");
                    else if (e.DType != dt || !e.Shape.AsSpan().SequenceEqual(p.Shape))
                        problems.Add($"'{k + suffix}' is {e.DType.Name()}{ShapeUtil.Format(e.Shape)} in the checkpoint; AdamW needs {dt.Name()}{ShapeUtil.Format(p.Shape)}");
                }
            }
        }

        if (extra is not null)
        {
            var expectedState = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (key, t) in extra)
            {
                expectedState.Add(CheckpointStore.StatePrefix + key);
                Match(CheckpointStore.StatePrefix + key, t);
            }
            Leftovers(CheckpointStore.StatePrefix, expectedState, "state tensor(s)");
        }

        if (problems.Count > 0)
            throw new InvalidDataException($"checkpoint {Path} does not fit: {problems.Count} problem(s):\n  " + string.Join("\n  ", problems));

        var buf = new byte[(int)Math.Min(CheckpointStore.ChunkBytes, Math.Max(1, _entries.Values.Select(e => e.End - e.Begin).DefaultIfEmpty(1).Max()))];
        foreach (var (e, dst) in plan) Upload(e, dst, buf);
        if (opt is not null)
        {
            foreach (var (p, name, mt, master) in states)
            {
                string k = CheckpointStore.OptimPrefix + name;
                var be = p.Backend;
                Tensor m, v; Tensor? w = null;
                using (TensorScope.Suspend()) // optimizer state outlives any step scope
                {
                    m = be.Empty(p.Shape, mt); v = be.Empty(p.Shape, mt);
                    if (master) w = be.Empty(p.Shape, DType.F32);
                }
                Upload(_entries[k + CheckpointStore.ExpAvg], m, buf);
                Upload(_entries[k + CheckpointStore.ExpAvgSq], v, buf);
                if (w is not null) Upload(_entries[k + CheckpointStore.Master], w, buf);
                opt.SetState(p, new AdamWState(m, v, w));
            }
            opt.StepCount = OptimizerStepCount!.Value;
        }
    }

    void Upload(Entry e, Tensor dst, byte[] buf)
    {
        long at = _dataStart + e.Begin;
        TensorIo.Upload(dst, buf, chunk =>
        {
            int n = RandomAccess.Read(_fs.SafeFileHandle, chunk, at);
            if (n != chunk.Length) throw new InvalidDataException($"checkpoint {Path}: short read of '{e.Key}'");
            at += n;
        }, e.Key);
    }

    public void Dispose() => _fs.Dispose();
}

/// <summary>Moves tensor bytes between a backend and a byte stream in pieces of at most a buffer's size.</summary>
static class TensorIo
{
    public delegate void Chunk(Span<byte> bytes);

    /// <summary>Hands the tensor's bytes to <paramref name="sink"/>, in order, in pieces no larger than <paramref name="buf"/>.</summary>
    public static void Download(Tensor t, byte[] buf, Chunk sink, string what)
    {
        if (t.Bytes == 0) return;
        if (t.Bytes <= buf.Length)
        {
            var s = buf.AsSpan(0, (int)t.Bytes);
            t.Backend.Download(t, s);
            sink(s);
            return;
        }
        foreach (var (start, len, piece) in Pieces(t, buf, what))
            using (piece)
            {
                t.Backend.CopySlice(t, 0, start, piece, 0, len, accumulate: false);
                var s = buf.AsSpan(0, (int)piece.Bytes);
                t.Backend.Download(piece, s);
                sink(s);
            }
    }

    /// <summary>Fills the tensor from <paramref name="source"/>, which must fill each piece it is given, in order.</summary>
    public static void Upload(Tensor t, byte[] buf, Chunk source, string what)
    {
        if (t.Bytes == 0) return;
        if (t.Bytes <= buf.Length)
        {
            var s = buf.AsSpan(0, (int)t.Bytes);
            source(s);
            t.Backend.Upload(t, s);
            return;
        }
        foreach (var (start, len, piece) in Pieces(t, buf, what))
            using (piece)
            {
                var s = buf.AsSpan(0, (int)piece.Bytes);
                source(s);
                t.Backend.Upload(piece, s);
                t.Backend.CopySlice(piece, 0, 0, t, start, len, accumulate: false);
            }
    }

    /// <summary>Axis-0 slabs of <paramref name="t"/> that fit the buffer, each with a scratch tensor of its shape.</summary>
    static IEnumerable<(int Start, int Len, Tensor Piece)> Pieces(Tensor t, byte[] buf, string what)
    {
        if (t.Rank == 0) throw new NotSupportedException($"'{what}': a scalar larger than the transfer buffer");
        long rowBytes = t.Bytes / t.Shape[0];
        if (rowBytes > buf.Length)
            throw new NotSupportedException($"'{what}' ({t}): one axis-0 slice is {rowBytes} bytes, more than the {buf.Length}-byte transfer buffer");
        int rows = (int)(buf.Length / rowBytes);
        for (int start = 0; start < t.Shape[0]; start += rows)
        {
            int len = Math.Min(rows, t.Shape[0] - start);
            var shape = (int[])t.Shape.Clone(); shape[0] = len;
            Tensor piece;
            using (TensorScope.Suspend()) piece = t.Backend.Empty(shape, t.DType);
            yield return (start, len, piece);
        }
    }
}
