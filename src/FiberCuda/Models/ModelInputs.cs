using System.Runtime.InteropServices;
using FiberCuda.Nn;
using FiberCuda.Tensors;

namespace FiberCuda.Models;

/// <summary>Host batches (the loaders' f32 pixels and i64 ids) → the model's inputs on its backend and dtype.</summary>
public static class ModelInputs
{
    /// <summary>Pixels [b,3,S,S] from the first Numel(shape) floats of <paramref name="data"/>, cast to the context's dtype.</summary>
    public static Tensor Pixels(NnContext ctx, float[] data, int[] shape)
    {
        var be = ctx.Backend;
        var f = be.Empty(shape, DType.F32);
        be.Upload(f, MemoryMarshal.AsBytes(data.AsSpan(0, checked((int)ShapeUtil.Numel(shape)))));
        if (ctx.DType == DType.F32) return f;
        var t = be.Empty(shape, ctx.DType);
        be.Cast(f, t);
        f.Dispose();
        return t;
    }

    public static TextBatch Text(long[] ids, long[] mask, int batch, int length) =>
        new(Array.ConvertAll(ids, v => (int)v), Array.ConvertAll(mask, v => (int)v), batch, length);
}
