using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace FiberCuda.Training;

/// <summary>One line of a metrics log: the step and the values in the order they were logged.</summary>
public sealed class MetricsRecord(long step, OrderedDictionary<string, double> values)
{
    public long Step { get; } = step;
    /// <summary>The logged values, in logging order (enumeration keeps it).</summary>
    public IReadOnlyDictionary<string, double> Values { get; } = values;
    public double this[string key] => Values[key];
    public bool TryGet(string key, out double value) => Values.TryGetValue(key, out value);
}

/// <summary>
/// Training metrics as JSON lines: one object per record, <c>{"step":12,"epoch":0,"lr":…,"loss":…}</c>, keys in the
/// order given, appended and flushed one line at a time so a crash loses at most the line being written.
/// Non-finite values (a diverged loss) are written as the strings "NaN", "Infinity", "-Infinity" (JSON has no such
/// numbers) and read back as doubles.
/// </summary>
public sealed class MetricsLog : IDisposable
{
    readonly FileStream _fs;
    readonly Lock _lock = new();

    MetricsLog(string path, FileStream fs) { Path = path; _fs = fs; }

    public string Path { get; }

    /// <summary>
    /// Opens <paramref name="path"/> for appending (creating it and its folder). Existing records with a step above
    /// <paramref name="resumeFromStep"/> are dropped, so a run resumed from a checkpoint does not log those steps twice,
    /// and a torn last line (a write cut short by a crash) is dropped too. Any other malformed line is an
    /// <see cref="InvalidDataException"/>.
    /// </summary>
    public static MetricsLog Open(string path, long resumeFromStep = long.MaxValue)
    {
        path = System.IO.Path.GetFullPath(path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        if (File.Exists(path))
        {
            var bytes = File.ReadAllBytes(path);
            var kept = new MemoryStream(bytes.Length);
            bool changed = false;
            foreach (var (line, rec) in Lines(path, bytes))
            {
                if (rec is null || rec.Step > resumeFromStep) { changed = true; continue; }
                kept.Write(line); kept.WriteByte((byte)'\n');
            }
            if (changed || (bytes.Length > 0 && bytes[^1] != (byte)'\n')) ReplaceFile(path, kept.ToArray());
        }
        var fs = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read);
        return new MetricsLog(path, fs);
    }

    /// <summary>Appends one record and flushes it to the OS.</summary>
    public void Append(long step, IReadOnlyDictionary<string, double> values) => Append(step, (IEnumerable<KeyValuePair<string, double>>)values);

    /// <summary>Appends one record (keys in enumeration order) and flushes it to the OS.</summary>
    public void Append(long step, IEnumerable<KeyValuePair<string, double>> values)
    {
        var buf = new ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buf))
        {
            w.WriteStartObject();
            w.WriteNumber("step", step);
            var seen = new HashSet<string>(StringComparer.Ordinal) { "step" };
            foreach (var (k, v) in values)
            {
                if (!seen.Add(k)) throw new ArgumentException(k == "step" ? "'step' is written from the step argument" : $"duplicate key '{k}'", nameof(values));
                if (double.IsFinite(v)) w.WriteNumber(k, v);
                else w.WriteString(k, double.IsNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
            }
            w.WriteEndObject();
        }
        lock (_lock)
        {
            _fs.Write(buf.WrittenSpan);
            _fs.WriteByte((byte)'\n');
            _fs.Flush();
        }
    }

    /// <summary>All complete records of a log (a torn last line is ignored).</summary>
    public static List<MetricsRecord> ReadAll(string path)
    {
        var bytes = File.ReadAllBytes(path);
        return Lines(path, bytes).Where(l => l.Record is not null).Select(l => l.Record!).ToList();
    }

    /// <summary>The lines of a log with their records; a torn (unterminated, unparsable) last line yields a null record.</summary>
    static IEnumerable<(byte[] Line, MetricsRecord? Record)> Lines(string path, byte[] bytes)
    {
        int at = 0, lineNo = 0;
        var result = new List<(byte[], MetricsRecord?)>();
        while (at < bytes.Length)
        {
            int nl = Array.IndexOf(bytes, (byte)'\n', at);
            bool last = nl < 0 || nl == bytes.Length - 1;
            int end = nl < 0 ? bytes.Length : nl;
            var line = bytes.AsSpan(at, end - at).TrimEnd((byte)'\r').ToArray();
            lineNo++;
            at = nl < 0 ? bytes.Length : nl + 1;
            if (line.AsSpan().Trim((byte)' ').IsEmpty) continue;
            MetricsRecord? rec;
            try { rec = Parse(line); }
            catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException)
            {
                // Only the final line can be torn: lines are written whole and flushed one by one.
                if (last) { result.Add((line, null)); break; }
                throw new InvalidDataException($"{path}: line {lineNo} is not a metrics record: {e.Message}", e);
            }
            result.Add((line, rec));
        }
        return result;
    }

    static MetricsRecord Parse(byte[] line)
    {
        using var doc = JsonDocument.Parse(line);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new FormatException("not a JSON object");
        long? step = null;
        var values = new OrderedDictionary<string, double>(StringComparer.Ordinal);
        foreach (var p in root.EnumerateObject())
        {
            if (p.Name == "step") { step = p.Value.GetInt64(); continue; }
            double v = p.Value.ValueKind switch
            {
                JsonValueKind.Number => p.Value.GetDouble(),
                JsonValueKind.String => p.Value.GetString() switch
                {
                    "NaN" => double.NaN, "Infinity" => double.PositiveInfinity, "-Infinity" => double.NegativeInfinity,
                    var s => throw new FormatException($"'{p.Name}': unexpected string '{s}'"),
                },
                _ => throw new FormatException($"'{p.Name}': not a number"),
            };
            if (!values.TryAdd(p.Name, v)) throw new FormatException($"duplicate key '{p.Name}'");
        }
        if (step is null) throw new FormatException("no 'step'");
        return new MetricsRecord(step.Value, values);
    }

    static void ReplaceFile(string path, byte[] content) => IO.AtomicFile.WriteAllBytes(path, content);

    public void Dispose()
    {
        lock (_lock) _fs.Dispose();
    }
}
