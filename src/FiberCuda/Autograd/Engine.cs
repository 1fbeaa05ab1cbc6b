using FiberCuda.Tensors;

namespace FiberCuda.Autograd;

/// <summary>Where a rule writes input gradients: zero-initialised buffers, created on first request.</summary>
public sealed class GradSink
{
    readonly Node _node;
    readonly Dictionary<Tensor, Tensor> _grads;

    internal GradSink(Node node, Dictionary<Tensor, Tensor> grads) { _node = node; _grads = grads; }

    /// <summary>True when input <paramref name="i"/> wants a gradient.</summary>
    public bool Needs(int i) { var t = _node.Inputs[i]; return t.GradFn is not null || t.RequiresGrad; }

    /// <summary>The accumulation buffer (+=) of input <paramref name="i"/>'s gradient, or null when it needs none.</summary>
    public Tensor? For(int i)
    {
        var t = _node.Inputs[i];
        if (t.GradFn is not null)
        {
            if (!_grads.TryGetValue(t, out var g)) _grads[t] = g = t.Backend.Zeros(t.Shape, t.DType);
            return g;
        }
        if (t.RequiresGrad)
        {
            if (t.Grad is null) using (TensorScope.Suspend()) t.Grad = t.Backend.Zeros(t.Shape, t.DType); // outlives the step
            return t.Grad;
        }
        return null;
    }
}

public static class Engine
{
    /// <summary>
    /// Reverse pass from <paramref name="root"/> (seeded with ones, or <paramref name="seed"/>): nodes run in
    /// reverse topological order, each exactly once, after every consumer of its outputs. Leaf gradients
    /// accumulate into Tensor.Grad; intermediate gradients are freed as soon as their producer has run.
    /// </summary>
    public static void Backward(this Tensor root, Tensor? seed = null, bool retainGraph = false)
    {
        var be = root.Backend;
        if (seed is not null && seed.Numel != root.Numel) throw new ArgumentException($"seed {seed} does not match {root}");
        if (root.GradFn is null)
        {
            if (!root.RequiresGrad) throw new InvalidOperationException($"{root} does not require grad and has no graph");
            if (root.Grad is null) using (TensorScope.Suspend()) root.Grad = be.Zeros(root.Shape, root.DType);
            using var one = MakeSeed(root, seed);
            be.Axpy(1f, one, root.Grad);
            return;
        }

        var order = TopoOrder(root.GradFn);
        var grads = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        grads[root] = MakeSeed(root, seed);
        using (Grad.NoGrad())
        {
            try
            {
                for (int k = order.Count - 1; k >= 0; k--)
                {
                    var node = order[k];
                    var outGrads = new Tensor?[node.OutputCount];
                    var outs = new Tensor?[node.OutputCount];
                    bool any = false;
                    for (int i = 0; i < node.OutputCount; i++)
                    {
                        outs[i] = node.Output(i);
                        if (outs[i] is { } o && grads.TryGetValue(o, out var g)) { outGrads[i] = g; any = true; }
                    }
                    if (any)
                    {
                        if (node.Released) throw new InvalidOperationException($"backward through {node.Op} a second time: pass retainGraph: true the first time");
                        BackwardRules.Apply(node, outGrads, new GradSink(node, grads));
                    }
                    for (int i = 0; i < outs.Length; i++)
                        if (outs[i] is { } o && grads.Remove(o, out var g)) g.Dispose();
                    if (!retainGraph) node.Release();
                }
            }
            finally
            {
                foreach (var g in grads.Values) g.Dispose();
            }
        }
    }

    static Tensor MakeSeed(Tensor root, Tensor? seed)
    {
        var be = root.Backend;
        var g = be.Empty(root.Shape, root.DType);
        if (seed is null) be.Fill(g, 1.0);
        else be.Cast(seed, g);
        return g;
    }

    /// <summary>Post-order of the graph below <paramref name="root"/> (iterative: graphs can be deep).</summary>
    static List<Node> TopoOrder(Node root)
    {
        var order = new List<Node>();
        var seen = new HashSet<Node>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<(Node n, int next)>();
        stack.Push((root, 0)); seen.Add(root);
        while (stack.Count > 0)
        {
            var (n, next) = stack.Pop();
            if (next < n.Inputs.Length)
            {
                stack.Push((n, next + 1));
                var child = n.Inputs[next].GradFn;
                if (child is not null && seen.Add(child)) stack.Push((child, 0));
            }
            else order.Add(n);
        }
        return order;
    }

    /// <summary>Records <paramref name="node"/> as the producer of its outputs when grad mode is on and an input needs a gradient.</summary>
    internal static bool ShouldRecord(params Tensor?[] inputs)
    {
        if (!Grad.IsEnabled) return false;
        foreach (var t in inputs) if (t is not null && (t.RequiresGrad || t.GradFn is not null)) return true;
        return false;
    }

    internal static void Attach(Node node, params Tensor[] outputs)
    {
        foreach (var o in outputs) { o.GradFn = node; o.RequiresGrad = true; }
    }
}
