using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Profile;

public enum Init { Normal, Positive, Zeros, Ones, Ids, Targets }

/// <summary>An input or output of a case. Ids/Targets draw integers in [0, Range).</summary>
public sealed record TensorSpec(int[] Shape, DType DType, Init Init = Init.Normal, int Range = 0);

/// <summary>
/// One kernel at one shape: how to make its tensors, how to run it on any backend, and the bytes
/// and flops one run must move or compute (what the throughput figures count).
/// </summary>
public sealed record BenchCase(
    string Op, string Shape, DType DType,
    TensorSpec[] Inputs, TensorSpec[] Outputs,
    Action<IBackend, Tensor[], Tensor[]> Run,
    double Bytes, double Flops,
    double Tolerance)
{
    public string Name => $"{Op} {Shape} {DType.Name()}";
    /// <summary>Outputs that are accumulated into (+=) start from these values on every backend.</summary>
    public bool Accumulates { get; init; }
}
