namespace FiberCuda.Data;

/// <summary>Why a sample or a manifest record was dropped.</summary>
public enum DataProblem
{
    BadManifestLine,
    MissingImage,
    CorruptImage,
    OversizedImage,
}

/// <summary>
/// Thread-safe counters plus a log sink shared by manifests and loaders. Problems are never fatal: each one is
/// logged once with where it came from (file and line, shard and key, image path) and counted.
/// </summary>
public sealed class DataStats
{
    readonly long[] _counts = new long[Enum.GetValues<DataProblem>().Length];
    readonly object _logLock = new();
    readonly List<string> _recent = new();

    /// <summary>Receives every problem message. Default: standard error.</summary>
    public Action<string> Log { get; set; } = msg => Console.Error.WriteLine(msg);

    /// <summary>How many messages <see cref="Recent"/> keeps (oldest dropped first).</summary>
    public int KeepRecent { get; set; } = 256;

    public long this[DataProblem p] => Interlocked.Read(ref _counts[(int)p]);

    public long BadManifestLines => this[DataProblem.BadManifestLine];
    public long MissingImages => this[DataProblem.MissingImage];
    public long CorruptImages => this[DataProblem.CorruptImage];
    public long OversizedImages => this[DataProblem.OversizedImage];

    /// <summary>Images skipped for any reason.</summary>
    public long SkippedImages => MissingImages + CorruptImages + OversizedImages;

    public IReadOnlyList<string> Recent { get { lock (_logLock) return _recent.ToArray(); } }

    public void Report(DataProblem p, string where, string reason)
    {
        Interlocked.Increment(ref _counts[(int)p]);
        string msg = $"[data] {p}: {where}: {reason}";
        lock (_logLock)
        {
            _recent.Add(msg);
            if (_recent.Count > KeepRecent) _recent.RemoveAt(0);
        }
        Log(msg);
    }

    public override string ToString() =>
        $"bad manifest lines {BadManifestLines}, missing images {MissingImages}, corrupt images {CorruptImages}, oversized images {OversizedImages}";
}
