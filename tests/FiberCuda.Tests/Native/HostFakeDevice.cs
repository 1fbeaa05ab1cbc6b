using System.Runtime.InteropServices;
using FiberCuda.Runtime;

namespace FiberCuda.Tests.Native;

/// <summary>Host-memory IGpuDevice for allocator tests: counts raw calls and can enforce a capacity.</summary>
internal sealed unsafe class HostFakeDevice(long capacity = long.MaxValue) : IGpuDevice
{
    readonly object _lock = new();
    readonly Dictionary<nint, long> _blocks = new();
    public long Used { get; private set; }
    public int LiveBlocks { get { lock (_lock) return _blocks.Count; } }
    public int Mallocs, Frees;

    public string Name => "host-fake";
    public bool IsEmulated => true;
    public int ComputeCapability => 80;
    public long TotalMemory => capacity;

    public nint Malloc(long bytes)
    {
        lock (_lock)
        {
            if (Used + bytes > capacity) throw new OutOfMemoryException($"fake device full ({Used}+{bytes} > {capacity})");
            var p = (nint)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 256);
            _blocks.Add(p, bytes);
            Used += bytes;
            Mallocs++;
            return p;
        }
    }

    public void Free(nint ptr)
    {
        lock (_lock)
        {
            if (!_blocks.Remove(ptr, out var size)) throw new InvalidOperationException("fake device: bad free");
            Used -= size;
            Frees++;
            NativeMemory.AlignedFree((void*)ptr);
        }
    }

    public nint MallocHost(long bytes) => (nint)NativeMemory.Alloc((nuint)bytes);
    public void FreeHost(nint ptr) => NativeMemory.Free((void*)ptr);
    public void CopyHostToDevice(nint dst, void* src, long bytes) => Buffer.MemoryCopy(src, (void*)dst, bytes, bytes);
    public void CopyDeviceToHost(void* dst, nint src, long bytes) => Buffer.MemoryCopy((void*)src, dst, bytes, bytes);
    public void CopyDeviceToDevice(nint dst, nint src, long bytes) => Buffer.MemoryCopy((void*)src, (void*)dst, bytes, bytes);
    public void Memset(nint dst, byte value, long bytes) => new Span<byte>((void*)dst, checked((int)bytes)).Fill(value);
    public IKernel GetKernel(string file, string name) => throw new NotSupportedException();
    public void Launch(IKernel kernel, Dim3 grid, Dim3 block, int dynamicSharedBytes, void** args) => throw new NotSupportedException();
    public void Gemm(in GemmDesc g) => throw new NotSupportedException();
    public void Synchronize() { }
    public FiberCuda.Runtime.ITimer CreateTimer() => throw new NotSupportedException();

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var p in _blocks.Keys) NativeMemory.AlignedFree((void*)p);
            _blocks.Clear();
        }
    }
}
