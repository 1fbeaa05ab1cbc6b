namespace FiberCuda.Runtime;

/// <summary>Allocator counters; <see cref="RawMallocs"/> lets tests assert that a steady-state loop allocates nothing new.</summary>
public readonly record struct AllocatorStats(
    long BytesInUse, long PeakBytesInUse, long BytesCached, long BytesReserved,
    long RawMallocs, long RawFrees, long CacheHits, long LiveBlocks);

/// <summary>
/// Caches device blocks by size class over any <see cref="IGpuDevice"/> (real or emulated). A freed block goes to
/// the free list of its class and is handed out again for any request of the same class, so a training step with
/// fixed shapes stops calling the device allocator after the first step. Thread-safe: tensors may be released from
/// finalizer or thread-pool threads (the device binds its context itself).
/// All work is on the device's single stream, so a block freed here is safe to reuse by later work in stream order.
/// </summary>
public sealed class CachingAllocator : IDisposable
{
    /// <summary>Every block is a multiple of this (and at least this), which also keeps 512-byte alignment of sub-views simple.</summary>
    public const long MinBlock = 512;
    /// <summary>Up to this size classes are multiples of 512; above it, 4 classes per power of two (≤ 25 % slack).</summary>
    public const long SmallLimit = 1 << 16;

    readonly IGpuDevice _dev;
    readonly object _lock = new();
    readonly Dictionary<long, Stack<nint>> _free = new();
    readonly Dictionary<nint, long> _live = new();
    long _inUse, _peak, _cached, _rawMallocs, _rawFrees, _hits;
    bool _disposed;

    public IGpuDevice Device => _dev;

    public CachingAllocator(IGpuDevice device) => _dev = device ?? throw new ArgumentNullException(nameof(device));

    /// <summary>The size class a request of <paramref name="bytes"/> is served from.</summary>
    public static long RoundSize(long bytes)
    {
        if (bytes < 0) throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "negative allocation size");
        if (bytes <= MinBlock) return MinBlock;
        if (bytes <= SmallLimit) return (bytes + MinBlock - 1) / MinBlock * MinBlock;
        long pow = 1L << (63 - System.Numerics.BitOperations.LeadingZeroCount((ulong)bytes)); // highest power of two ≤ bytes
        long step = pow / 4;
        return (bytes + step - 1) / step * step;
    }

    public nint Alloc(long bytes)
    {
        long size = RoundSize(bytes);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            nint p;
            if (_free.TryGetValue(size, out var stack) && stack.Count > 0)
            {
                p = stack.Pop();
                _cached -= size;
                _hits++;
            }
            else
            {
                p = RawMalloc(size);
            }
            _live.Add(p, size);
            _inUse += size;
            if (_inUse > _peak) _peak = _inUse;
            return p;
        }
    }

    nint RawMalloc(long size)
    {
        nint p;
        try { p = _dev.Malloc(size); }
        catch (Exception) when (_cached > 0)
        {
            // Out of memory (or fragmentation): give cached blocks back and try once more.
            ReleaseCached();
            p = _dev.Malloc(size);
        }
        if (p == 0) throw new OutOfMemoryException($"device allocation of {size} bytes returned null");
        _rawMallocs++;
        return p;
    }

    public void Free(nint ptr)
    {
        if (ptr == 0) return;
        lock (_lock)
        {
            if (_disposed) return; // late finalizers after shutdown: memory went with the device
            if (!_live.Remove(ptr, out var size))
                throw new InvalidOperationException($"CachingAllocator.Free: 0x{ptr:x} is not a live block (double free or foreign pointer)");
            _inUse -= size;
            if (!_free.TryGetValue(size, out var stack)) _free[size] = stack = new Stack<nint>();
            stack.Push(ptr);
            _cached += size;
        }
    }

    /// <summary>Size class of a live block (0 when not live).</summary>
    public long BlockSize(nint ptr)
    {
        lock (_lock) return _live.TryGetValue(ptr, out var s) ? s : 0;
    }

    /// <summary>Returns every cached (free) block to the device.</summary>
    public void EmptyCache()
    {
        lock (_lock)
        {
            if (_disposed) return;
            ReleaseCached();
        }
    }

    void ReleaseCached()
    {
        foreach (var (size, stack) in _free)
            while (stack.Count > 0)
            {
                _dev.Free(stack.Pop());
                _cached -= size;
                _rawFrees++;
            }
        _free.Clear();
    }

    public void ResetPeak()
    {
        lock (_lock) _peak = _inUse;
    }

    public AllocatorStats Stats
    {
        get
        {
            lock (_lock)
                return new AllocatorStats(_inUse, _peak, _cached, _inUse + _cached, _rawMallocs, _rawFrees, _hits, _live.Count);
        }
    }

    /// <summary>Frees cached and live blocks (live ones are the caller's leak; the device is about to go anyway).</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            ReleaseCached();
            foreach (var p in _live.Keys) { _dev.Free(p); _rawFrees++; }
            _live.Clear();
            _inUse = 0;
            _disposed = true;
        }
    }
}
