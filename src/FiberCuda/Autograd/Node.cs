using FiberCuda.Tensors;

namespace FiberCuda.Autograd;

/// <summary>
/// One recorded op on the tape: its name (the key of its rule in <see cref="BackwardRules"/>), inputs,
/// outputs (weak: an output nobody holds can receive no gradient), the tensors its rule needs, and its
/// attributes. <see cref="Owned"/> tensors were made for this node alone (LayerNorm's mean/rstd,
/// cross-entropy's lse) and are freed with the graph.
/// </summary>
public sealed class Node
{
    readonly WeakReference<Tensor>[] _outputs;

    public Node(string op, Tensor[] inputs, Tensor[] outputs, Tensor?[]? saved = null,
                IReadOnlyDictionary<string, object?>? attrs = null, Tensor[]? owned = null)
    {
        Op = op; Inputs = inputs;
        _outputs = Array.ConvertAll(outputs, t => new WeakReference<Tensor>(t));
        Saved = saved ?? Array.Empty<Tensor?>();
        Attrs = attrs ?? new Dictionary<string, object?>();
        Owned = owned ?? Array.Empty<Tensor>();
    }

    public string Op { get; }
    public Tensor[] Inputs { get; private set; }
    public Tensor?[] Saved { get; private set; }
    public IReadOnlyDictionary<string, object?> Attrs { get; }
    public Tensor[] Owned { get; private set; }
    public int OutputCount => _outputs.Length;
    public bool Released { get; private set; }

    public Tensor? Output(int i) => _outputs[i].TryGetTarget(out var t) ? t : null;

    public T Attr<T>(string name) => Attrs.TryGetValue(name, out var v) && v is T t
        ? t : throw new InvalidOperationException($"node {Op} has no attribute {name} of type {typeof(T).Name}");

    /// <summary>Drops what only the backward needed (called after the backward unless the graph is retained).</summary>
    public void Release()
    {
        if (Released) return;
        Released = true;
        foreach (var t in Owned) t.Dispose();
        Owned = Array.Empty<Tensor>();
        Saved = Array.Empty<Tensor?>();
        // Dropping the inputs too lets the activations behind a loss the caller still holds be collected.
        Inputs = Array.Empty<Tensor>();
    }

    public override string ToString() => $"Node({Op}, {Inputs.Length} inputs, {OutputCount} outputs)";
}
