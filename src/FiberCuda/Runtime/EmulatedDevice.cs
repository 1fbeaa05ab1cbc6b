using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using FiberCuda.Backends.Cpu;
using FiberCuda.Kernels;

namespace FiberCuda.Runtime;

/// <summary>
/// The order in which the emulator resumes a block's runnable threads (at the start, after each barrier
/// and each warp collective). A kernel that is missing a __syncthreads/__syncwarp usually gives different
/// results in <see cref="Forward"/> and <see cref="Reverse"/> order, while a correct kernel cannot.
/// </summary>
public enum EmuSchedule { Forward = 0, Reverse = 1, Random = 2 }

/// <summary>
/// A GPU emulated on the host: "device" memory is aligned host memory, kernels are the real
/// kernels/*.cu compiled by g++ against kernels/emu/cuda_emu.h (threads as fibers, blocks on a pool of
/// OS threads), GEMM is the C# reference. Launches are synchronous, so the stream is always idle.
/// What the emulation does not model is listed at the top of cuda_emu.h.
/// Copies and memsets are checked against the live allocations (an out-of-range device range throws),
/// which the real GPU would only report as a fault or not at all; kernels' own accesses are unchecked.
/// </summary>
public sealed unsafe class EmulatedDevice : IGpuDevice
{
    /// <summary>Default dynamic shared memory limit of a kernel until raised (as CUDA's 48 KB).</summary>
    public const int DefaultDynamicSharedBytes = 48 * 1024;
    /// <summary>Per-block opt-in limit (227 KB, the sm_90 value of the target H200).</summary>
    public const int MaxDynamicSharedBytesLimit = 232448;

    readonly EmuCompiler _compiler;
    readonly ConcurrentDictionary<string, Lazy<Library>> _libraries = new(StringComparer.Ordinal);
    // One kernel object per (file, name), as CudaDevice: a raised MaxDynamicSharedBytes must stick.
    readonly ConcurrentDictionary<(string File, string Name), IKernel> _kernelObjects = new();
    readonly Dictionary<nint, long> _allocations = new();
    readonly List<nint> _sortedStarts = new();  // for range checks; guarded by _allocations
    readonly object _launchLock = new();
    bool _disposed;

    sealed record Library(EmuLibrary Info, nint Handle);

    public EmulatedDevice(EmuCompiler? compiler = null)
    {
        _compiler = compiler ?? new EmuCompiler();
        var env = Environment.GetEnvironmentVariable("FIBER_EMU_SCHEDULE");
        if (!string.IsNullOrEmpty(env))
            Schedule = Enum.TryParse<EmuSchedule>(env, ignoreCase: true, out var s) ? s
                : throw new ArgumentException($"FIBER_EMU_SCHEDULE='{env}': expected forward, reverse or random");
    }

    /// <summary>Thread resume order for launches (default: FIBER_EMU_SCHEDULE, else forward).</summary>
    public EmuSchedule Schedule { get; set; }
    /// <summary>Seed of the <see cref="EmuSchedule.Random"/> order (mixed with each block's index).</summary>
    public uint ScheduleSeed { get; set; } = 1;

    public EmuCompiler Compiler => _compiler;
    public string Name => "Emulated GPU (g++ fibers)";
    public bool IsEmulated => true;
    public int ComputeCapability => 80;
    public long TotalMemory => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
    /// <summary>Bytes currently allocated with <see cref="Malloc"/> (leak checks in tests).</summary>
    public long AllocatedBytes { get { lock (_allocations) return _allocations.Values.Sum(); } }

    public nint Malloc(long bytes)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        if (bytes == 0) return 0;
        var p = (nint)NativeMemory.AlignedAlloc((nuint)bytes, 256);
        if (p == 0) throw new OutOfMemoryException($"emulated device: cannot allocate {bytes} bytes");
        lock (_allocations)
        {
            _allocations[p] = bytes;
            int i = _sortedStarts.BinarySearch(p);
            _sortedStarts.Insert(~i, p);
        }
        return p;
    }

    public void Free(nint ptr)
    {
        if (ptr == 0) return;
        lock (_allocations)
        {
            if (!_allocations.Remove(ptr))
                throw new InvalidOperationException($"emulated device: Free of 0x{ptr:x}, which is not a live allocation (double free?)");
            _sortedStarts.RemoveAt(_sortedStarts.BinarySearch(ptr));
        }
        NativeMemory.AlignedFree((void*)ptr);
    }

    /// <summary>Throws unless [p, p+bytes) lies inside one live allocation.</summary>
    void CheckRange(nint p, long bytes, string what)
    {
        lock (_allocations)
        {
            int i = _sortedStarts.BinarySearch(p);
            if (i < 0) i = ~i - 1;
            if (i >= 0)
            {
                nint start = _sortedStarts[i];
                long size = _allocations[start];
                if ((long)(p - start) + bytes <= size) return;
                throw new ArgumentOutOfRangeException(what, $"emulated device: {what} range 0x{p:x}+{bytes} overruns the allocation 0x{start:x} of {size} bytes by {(long)(p - start) + bytes - size} bytes");
            }
            throw new ArgumentOutOfRangeException(what, $"emulated device: {what} pointer 0x{p:x} is not inside any live allocation");
        }
    }

    public nint MallocHost(long bytes) => Malloc(bytes);
    public void FreeHost(nint ptr) => Free(ptr);

    public void CopyHostToDevice(nint dst, void* src, long bytes)
    {
        if (bytes > 0) CheckRange(dst, bytes, "copy destination");
        Copy((void*)dst, src, bytes);
    }

    public void CopyDeviceToHost(void* dst, nint src, long bytes)
    {
        if (bytes > 0) CheckRange(src, bytes, "copy source");
        Copy(dst, (void*)src, bytes);
    }

    public void CopyDeviceToDevice(nint dst, nint src, long bytes)
    {
        if (bytes > 0) { CheckRange(dst, bytes, "copy destination"); CheckRange(src, bytes, "copy source"); }
        Copy((void*)dst, (void*)src, bytes);
    }

    static void Copy(void* dst, void* src, long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        if (bytes == 0) return;
        if (dst == null || src == null) throw new ArgumentNullException(dst == null ? nameof(dst) : nameof(src), "emulated device: copy with a null pointer");
        Buffer.MemoryCopy(src, dst, bytes, bytes);
    }

    public void Memset(nint dst, byte value, long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        if (bytes == 0) return;
        if (dst == 0) throw new ArgumentNullException(nameof(dst), "emulated device: memset of a null pointer");
        CheckRange(dst, bytes, "memset");
        NativeMemory.Fill((void*)dst, (nuint)bytes, value);
    }

    public IKernel GetKernel(string file, string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _kernelObjects.GetOrAdd((file, name), key => Resolve(key.File, key.Name));
    }

    IKernel Resolve(string file, string name)
    {
        var lib = _libraries.GetOrAdd(file, f => new Lazy<Library>(() => Load(f))).Value;
        if (!NativeLibrary.TryGetExport(lib.Handle, "fiber_emu_launch_" + name, out var fn))
            throw new ArgumentException($"kernels/{file} has no kernel '{name}' (extern \"C\" __global__); it has: {string.Join(", ", lib.Info.Kernels)}");
        return new EmuKernel(file, name, (delegate* unmanaged<EmuLaunch*, void**, int>)fn);
    }

    Library Load(string file)
    {
        var info = _compiler.Compile(file);
        return new Library(info, NativeLibrary.Load(info.Path));
    }

    public void Launch(IKernel kernel, Dim3 grid, Dim3 block, int dynamicSharedBytes, void** args)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (kernel is not EmuKernel k) throw new ArgumentException("kernel was not created by this EmulatedDevice", nameof(kernel));
        ArgumentOutOfRangeException.ThrowIfNegative(dynamicSharedBytes);
        const int errCap = 1024;
        byte* err = stackalloc byte[errCap];
        err[0] = 0;
        var cfg = new EmuLaunch
        {
            DynSmem = (ulong)dynamicSharedBytes,
            MaxDynSmem = (ulong)k.MaxDynamicSharedBytes,
            Err = err,
            ErrCap = errCap,
            Schedule = (uint)Schedule,
            Seed = ScheduleSeed,
        };
        cfg.Grid[0] = grid.X; cfg.Grid[1] = grid.Y; cfg.Grid[2] = grid.Z;
        cfg.Block[0] = block.X; cfg.Block[1] = block.Y; cfg.Block[2] = block.Z;
        int rc;
        // One stream: launches run one after another, like kernels on one CUDA stream.
        lock (_launchLock) rc = k.Fn(&cfg, args);
        if (rc != 0)
        {
            var msg = Marshal.PtrToStringUTF8((nint)err) ?? "unknown error";
            throw new EmuLaunchException(k.File, k.Name, $"grid {grid} block {block} dynamic smem {dynamicSharedBytes}: {msg}");
        }
    }

    public void Gemm(in GemmDesc g) => CpuGemm.Gemm(g);

    public void Synchronize() { }

    public ITimer CreateTimer() => new StopwatchTimer();

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        // Kernel libraries stay loaded: their worker threads live for the process.
        lock (_allocations)
        {
            foreach (var p in _allocations.Keys) NativeMemory.AlignedFree((void*)p);
            _allocations.Clear();
            _sortedStarts.Clear();
        }
    }

    /// <summary>Mirrors <c>struct emu_launch</c> in kernels/emu/cuda_emu.h.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct EmuLaunch
    {
        public fixed uint Grid[3];
        public fixed uint Block[3];
        public ulong DynSmem;
        public ulong MaxDynSmem;
        public byte* Err;
        public ulong ErrCap;
        public uint Schedule;
        public uint Seed;
    }

    sealed class EmuKernel(string file, string name, delegate* unmanaged<EmuLaunch*, void**, int> fn) : IKernel
    {
        int _maxDyn = DefaultDynamicSharedBytes;
        public string File { get; } = file;
        public string Name { get; } = name;
        public delegate* unmanaged<EmuLaunch*, void**, int> Fn { get; } = fn;
        public int MaxDynamicSharedBytes
        {
            get => _maxDyn;
            set
            {
                if (value < 0 || value > MaxDynamicSharedBytesLimit)
                    throw new ArgumentOutOfRangeException(nameof(value), value, $"dynamic shared memory must be in [0, {MaxDynamicSharedBytesLimit}] on the emulated device");
                _maxDyn = value;
            }
        }
    }

    sealed class StopwatchTimer : ITimer
    {
        long _start, _stop;
        public void Start() => _start = Stopwatch.GetTimestamp();
        public void Stop() => _stop = Stopwatch.GetTimestamp();
        public float ElapsedMs() => (float)Stopwatch.GetElapsedTime(_start, _stop).TotalMilliseconds;
        public void Dispose() { }
    }
}
