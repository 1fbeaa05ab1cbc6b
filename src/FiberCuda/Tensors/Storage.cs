namespace FiberCuda.Tensors;

/// <summary>
/// A backend's buffer. Tensors are always contiguous and start at the storage's first byte;
/// views (slice, permute) are ops that copy. A storage returns its memory on Dispose, or from
/// its finalizer when a tensor is dropped without one (backends make that thread-safe).
/// </summary>
public abstract class Storage : IDisposable
{
    protected Storage(Backends.IBackend backend, long bytes) { Backend = backend; Bytes = bytes; TensorScope.Register(this); }

    public Backends.IBackend Backend { get; }
    public long Bytes { get; }

    /// <summary>Address of the first byte: a host address on the CPU and the emulated GPU, a CUdeviceptr on a GPU.</summary>
    public abstract nint Address { get; }

    public bool IsDisposed { get; private set; }

    protected abstract void Release();

    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        Release();
        GC.SuppressFinalize(this);
    }

    ~Storage()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        try { Release(); } catch { /* a finalizer must not throw; the process may be shutting down */ }
    }
}
