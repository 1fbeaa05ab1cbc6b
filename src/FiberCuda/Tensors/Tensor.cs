using System.Runtime.InteropServices;
using FiberCuda.Backends;

namespace FiberCuda.Tensors;

/// <summary>
/// A contiguous, row-major n-d array on one backend. Data on a GPU stays there; reading it on the
/// host is an explicit <see cref="ToArray{T}"/>. Autograd state (RequiresGrad, Grad, GradFn) lives here
/// too, but the tensor itself knows nothing of the tape's rules (see Autograd/).
/// </summary>
public sealed class Tensor : IDisposable
{
    public Tensor(Storage storage, int[] shape, DType dtype)
    {
        long n = ShapeUtil.Numel(shape);
        if (n * dtype.Size() > storage.Bytes)
            throw new ArgumentException($"storage of {storage.Bytes} bytes is too small for {dtype.Name()}{ShapeUtil.Format(shape)}");
        Storage = storage; Shape = shape; DType = dtype; Numel = n;
    }

    public Storage Storage { get; }
    public int[] Shape { get; }
    public DType DType { get; }
    public long Numel { get; }
    public int Rank => Shape.Length;
    public long Bytes => Numel * DType.Size();
    public IBackend Backend => Storage.Backend;
    public nint Address => Storage.Address;

    /// <summary>Size of dimension <paramref name="d"/>; negative counts from the end.</summary>
    public int Dim(int d) => Shape[d < 0 ? Shape.Length + d : d];

    // ---- autograd state (used by FiberCuda.Autograd) ----
    public bool RequiresGrad { get; set; }
    public Tensor? Grad { get; set; }
    public Autograd.Node? GradFn { get; internal set; }
    public string? Name { get; set; }

    /// <summary>Same storage, another shape with the same element count (free: tensors are contiguous).</summary>
    public Tensor Reshape(params int[] shape)
    {
        shape = ShapeUtil.Resolve(shape, Numel);
        return new Tensor(Storage, shape, DType);
    }

    public T[] ToArray<T>() where T : unmanaged
    {
        if (Marshal.SizeOf<T>() != DType.Size()) throw new ArgumentException($"{typeof(T).Name} does not match {DType.Name()}");
        var a = new T[Numel];
        Backend.Download(this, MemoryMarshal.AsBytes(a.AsSpan()));
        return a;
    }

    /// <summary>Values as float (bf16 and f64 converted), for tests and printing.</summary>
    public float[] ToFloatArray()
    {
        switch (DType)
        {
            case DType.F32: return ToArray<float>();
            case DType.F64: return Array.ConvertAll(ToArray<double>(), d => (float)d);
            case DType.BF16: return Array.ConvertAll(ToArray<ushort>(), BFloat16.ToFloat);
            case DType.I32: return Array.ConvertAll(ToArray<int>(), i => (float)i);
            case DType.I64: return Array.ConvertAll(ToArray<long>(), i => (float)i);
            default: throw new NotSupportedException(DType.ToString());
        }
    }

    public double[] ToDoubleArray() => DType == DType.F64 ? ToArray<double>() : Array.ConvertAll(ToFloatArray(), f => (double)f);

    public void Dispose() => Storage.Dispose();

    public override string ToString() => $"Tensor({DType.Name()}{ShapeUtil.Format(Shape)} on {Backend.Name}{(Name is null ? "" : ", " + Name)})";
}

public static class ShapeUtil
{
    public static long Numel(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (int s in shape)
        {
            if (s < 0) throw new ArgumentException("negative dimension");
            n *= s;
        }
        return n;
    }

    public static string Format(ReadOnlySpan<int> shape) => "[" + string.Join(",", shape.ToArray()) + "]";

    /// <summary>Fills one -1 entry so the element count matches.</summary>
    public static int[] Resolve(int[] shape, long numel)
    {
        int neg = Array.IndexOf(shape, -1);
        var s = (int[])shape.Clone();
        if (neg >= 0)
        {
            long rest = 1;
            for (int i = 0; i < s.Length; i++) if (i != neg) rest *= s[i];
            if (rest == 0 || numel % rest != 0) throw new ArgumentException($"cannot reshape {numel} elements to {Format(shape)}");
            s[neg] = (int)(numel / rest);
        }
        if (Numel(s) != numel) throw new ArgumentException($"cannot reshape {numel} elements to {Format(shape)}");
        return s;
    }

    public static bool Equal(ReadOnlySpan<int> a, ReadOnlySpan<int> b) => a.SequenceEqual(b);

    /// <summary>Product of the dimensions before the last (rows of a row-major matrix view).</summary>
    public static long Rows(ReadOnlySpan<int> shape) => shape.Length == 0 ? 1 : Numel(shape[..^1]);
}
