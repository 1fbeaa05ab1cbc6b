using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

/// <summary>
/// <see cref="IDropPathOps"/> with kernels/drop_path.cu: one elementwise pass each way, grid (chunks of a sample's
/// row, sample). Each thread draws its sample's Philox number itself (the same counter offset + b as the host),
/// so no per-call mask or scale tensor is built or uploaded and the backward needs nothing saved; the host only
/// passes the dtype-rounded 1/(1 − p). A dropped sample's y is never read, and its dy never touched.
/// </summary>
public sealed unsafe class CudaDropPath : IDropPathOps
{
    const string File = "drop_path.cu";
    const int Threads = 256;

    readonly CudaBackend _be;
    readonly int _sm;

    public CudaDropPath(CudaBackend backend)
    {
        _be = backend;
        _sm = backend.Device is CudaDevice cd ? cd.MultiprocessorCount : backend.Device.IsEmulated ? 2 : 132;
    }

    static string Tn(Tensor t) => t.DType switch
    {
        DType.F32 => "f32",
        DType.BF16 => "bf16",
        _ => throw new ArgumentException($"drop path (CUDA): {t} must be f32 or bf16"),
    };

    void Mine(Tensor? t, string what)
    {
        if (t is not null && !ReferenceEquals(t.Backend, _be)) throw new ArgumentException($"drop path (CUDA): {what} {t} is not on {_be.Name}");
    }

    /// <summary>Kernel suffix (16-byte units when every row start is aligned) and grid.</summary>
    (string Suffix, Dim3 Grid) Plan(int batch, long per, DType dt, params Tensor?[] ts)
    {
        if (batch > 65535) throw new ArgumentException($"drop path (CUDA): batch {batch} exceeds the grid's 65535 samples");
        int pack = 16 / dt.Size();
        bool vec = per % pack == 0 && ts.All(t => t is null || (t.Address & 15) == 0);
        long units = vec ? per / pack : per;
        // About 4 waves of 2048 threads per SM over the whole tensor; at least one block per sample.
        long cap = _be.Device.IsEmulated ? 4 : Math.Max(1, (long)_sm * 8 * 4 / batch);
        uint gx = (uint)Math.Clamp((units + Threads - 1) / Threads, 1, cap);
        return (vec ? "v" : "s", new Dim3(gx, (uint)batch));
    }

    public void Forward(Tensor y, Tensor? residual, float p, ulong seed, ulong offset, Tensor output)
    {
        DropPathOps.Check(y, residual, output, p);
        Mine(y, "y"); Mine(residual, "residual"); Mine(output, "output");
        int batch = y.Dim(0);
        if (batch == 0 || y.Numel == 0) return;
        long per = y.Numel / batch;
        var (suf, grid) = Plan(batch, per, y.DType, y, residual, output);
        var k = _be.Device.GetKernel(File, $"drop_path_fwd_{Tn(y)}_{suf}");
        float scale = (float)DropPathOps.Scale(p, y.DType);
        nint py = y.Address, pr = residual?.Address ?? 0, po = output.Address;
        void** a = stackalloc void*[] { &py, &pr, &po, &per, &p, &scale, &seed, &offset };
        _be.Device.Launch(k, grid, Threads, 0, a);
    }

    public void Backward(Tensor dout, float p, ulong seed, ulong offset, Tensor? dy, Tensor? dresidual)
    {
        DropPathOps.CheckBackward(dout, p, dy, dresidual);
        Mine(dout, "dout"); Mine(dy, "dy"); Mine(dresidual, "dresidual");
        int batch = dout.Dim(0);
        if (batch == 0 || dout.Numel == 0 || (dy is null && dresidual is null)) return;
        long per = dout.Numel / batch;
        var (suf, grid) = Plan(batch, per, dout.DType, dout, dy, dresidual);
        var k = _be.Device.GetKernel(File, $"drop_path_bwd_{Tn(dout)}_{suf}");
        float scale = (float)DropPathOps.Scale(p, dout.DType);
        nint pg = dout.Address, pdy = dy?.Address ?? 0, pdr = dresidual?.Address ?? 0;
        void** a = stackalloc void*[] { &pg, &pdy, &pdr, &per, &p, &scale, &seed, &offset };
        _be.Device.Launch(k, grid, Threads, 0, a);
    }
}
