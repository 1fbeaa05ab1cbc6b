namespace FiberCuda.IO;

/// <summary>Raised for any unreadable, malformed or refused weight file; the message says what and where.</summary>
public class WeightFormatException(string message, Exception? inner = null) : IOException(message, inner);

/// <summary>Raised when a pickle would call something outside the allow-list (nothing is ever executed).</summary>
public sealed class UnsafePickleException(string global, string path)
    : WeightFormatException($"{path}: refused to call '{global}': a pickle may only rebuild tensors and containers, nothing is executed")
{
    public string Global { get; } = global;
}

/// <summary>Name, dtype and shape of one stored tensor, known before its data is read.</summary>
public sealed record TensorInfo(string Name, WeightDType DType, long[] Shape)
{
    public long Numel => HostTensor.CountElements(Shape);
    public long Bytes => Numel * DType.Size();
    public override string ToString() => $"{Name} {DType.Lower()}{HostTensor.Fmt(Shape)}";
}

/// <summary>A readable set of named tensors: a safetensors file, a torch checkpoint's state dict, an HF shard set.
/// Reading is lazy: only <see cref="Read"/> touches tensor data.</summary>
public interface IWeightSource : IDisposable
{
    string Path { get; }
    IReadOnlyList<TensorInfo> Tensors { get; }
    HostTensor Read(string name);
    /// <summary>Bytes of tensor data read so far (to check laziness).</summary>
    long BytesRead { get; }
}

public static class WeightSourceExtensions
{
    public static TensorInfo? Find(this IWeightSource s, string name) => s.Tensors.FirstOrDefault(t => t.Name == name);
    public static Dictionary<string, TensorInfo> ByName(this IWeightSource s)
    {
        var d = new Dictionary<string, TensorInfo>();
        foreach (var t in s.Tensors) d[t.Name] = t;
        return d;
    }
}
