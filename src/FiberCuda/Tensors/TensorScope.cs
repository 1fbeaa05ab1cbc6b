namespace FiberCuda.Tensors;

/// <summary>
/// Deterministic lifetime for the temporaries of one step: every storage allocated on this thread
/// while the scope is innermost is released when it ends (activations, saved statistics, gradients
/// of intermediates), so a training step's memory goes back to the caching allocator at once instead
/// of waiting for the GC. Use one scope per step, not one around a whole loop (it holds what it owns).
/// Long-lived state made lazily inside a step (parameter gradients, optimizer moments) is allocated
/// under <see cref="Suspend"/>; a result the caller wants to keep is handed out with <see cref="Keep"/>.
/// Views (Reshape) share their storage and are never owned by a scope they did not allocate in.
/// </summary>
public sealed class TensorScope : IDisposable
{
    [ThreadStatic] static TensorScope? _current;

    readonly TensorScope? _outer;
    readonly List<Storage>? _owned; // null: a suspension, which records nothing
    bool _disposed;

    public TensorScope() : this(record: true) { }

    TensorScope(bool record)
    {
        _outer = _current;
        _owned = record ? [] : null;
        _current = this;
    }

    /// <summary>Until disposed, new storages on this thread belong to no scope (long-lived state).</summary>
    public static IDisposable Suspend() => new TensorScope(record: false);

    internal static void Register(Storage s) => _current?._owned?.Add(s);

    /// <summary>Takes <paramref name="t"/>'s storage out of this scope (into the enclosing one, if any).</summary>
    public Tensor Keep(Tensor t)
    {
        if (_owned is not null && _owned.Remove(t.Storage)) _outer?._owned?.Add(t.Storage);
        return t;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (!ReferenceEquals(_current, this))
            throw new InvalidOperationException("TensorScope disposed out of order (scopes nest like using blocks, on one thread)");
        _current = _outer;
        if (_owned is null) return;
        foreach (var s in _owned) s.Dispose();
        _owned.Clear();
    }
}
