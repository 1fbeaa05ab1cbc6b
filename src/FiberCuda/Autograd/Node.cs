using FiberCuda.Tensors;

namespace FiberCuda.Autograd;

/// <summary>One recorded op on the tape: its inputs and what its backward rule needs.</summary>
public sealed class Node
{
    public Node(string op, Tensor[] inputs) { Op = op; Inputs = inputs; }
    public string Op { get; }
    public Tensor[] Inputs { get; }
}
