using System.Runtime.InteropServices;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cpu;

/// <summary>
/// 64-byte aligned native memory. Release may run on a finalizer thread while another thread disposes:
/// the pointer is swapped out atomically so it is freed exactly once. Memory pressure is reported to
/// the GC so dropped tensors are finalized before native memory runs out.
/// </summary>
public sealed unsafe class CpuStorage : Storage
{
    nint _ptr;

    public CpuStorage(IBackend backend, long bytes) : base(backend, bytes)
    {
        if (bytes < 0) throw new ArgumentOutOfRangeException(nameof(bytes));
        _ptr = (nint)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 64), 64);
        if (bytes > 0) GC.AddMemoryPressure(bytes);
    }

    public override nint Address
    {
        get
        {
            nint p = Volatile.Read(ref _ptr);
            if (p == 0) throw new ObjectDisposedException(nameof(CpuStorage));
            return p;
        }
    }

    protected override void Release()
    {
        nint p = Interlocked.Exchange(ref _ptr, 0);
        if (p == 0) return;
        NativeMemory.AlignedFree((void*)p);
        if (Bytes > 0) GC.RemoveMemoryPressure(Bytes);
    }
}
