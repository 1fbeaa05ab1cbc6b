namespace FiberCuda.IO;

/// <summary>
/// Replaces a file so that a reader (or a crash) sees either the old content or the new, never a torn mix: the new
/// content goes to a hidden temp file in the same folder (same file system, so the rename is atomic), is flushed to
/// disk, then renamed over the target. A failed write deletes the temp file and leaves the target untouched.
/// </summary>
public static class AtomicFile
{
    /// <summary>Calls <paramref name="write"/> with the temp path to fill, then renames it to <paramref name="path"/>.</summary>
    public static void Replace(string path, Action<string> write)
    {
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        string tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            write(tmp);
            using (var fs = new FileStream(tmp, FileMode.Open, FileAccess.ReadWrite)) fs.Flush(flushToDisk: true);
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch { /* report the original error */ }
            throw;
        }
    }

    public static void WriteAllBytes(string path, byte[] content) => Replace(path, tmp => File.WriteAllBytes(tmp, content));

    public static void WriteAllText(string path, string text) => Replace(path, tmp => File.WriteAllText(tmp, text));
}
