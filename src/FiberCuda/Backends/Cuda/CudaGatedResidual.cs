using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

/// <summary>
/// <see cref="IGatedResidualOps"/> with kernels/gated_residual.cu: one grid-stride elementwise pass each way;
/// dα from per-block partial sums (the grid size depends only on n) added in a fixed order: deterministic.
/// </summary>
public sealed unsafe class CudaGatedResidual : IGatedResidualOps
{
    const string File = "gated_residual.cu";
    const int Threads = 256;
    const int MaxBlocks = 512;

    readonly CudaBackend _be;

    public CudaGatedResidual(CudaBackend backend) { _be = backend; }

    IKernel Kernel(string name) => _be.Device.GetKernel(File, name);

    static string Tn(Tensor t) => t.DType switch
    {
        DType.F32 => "f32",
        DType.BF16 => "bf16",
        _ => throw new ArgumentException($"gated residual (CUDA): {t} must be f32 or bf16"),
    };

    static int Dt(Tensor t) => t.DType switch
    {
        DType.F32 => 0,
        DType.BF16 => 1,
        _ => throw new ArgumentException($"gated residual (CUDA): {t} must be f32 or bf16"),
    };

    void Mine(Tensor? t, string what)
    {
        if (t is not null && !ReferenceEquals(t.Backend, _be)) throw new ArgumentException($"gated residual (CUDA): {what} {t} is not on {_be.Name}");
    }

    static uint Blocks(long n) => (uint)Math.Max(1, Math.Min((n + Threads - 1) / Threads, MaxBlocks));

    public void Forward(Tensor r, Tensor x, Tensor alpha, Tensor y)
    {
        GatedResidualOps.Check(r, x, alpha, y);
        Mine(r, "r"); Mine(x, "x"); Mine(alpha, "alpha"); Mine(y, "y");
        var k = Kernel($"gated_residual_fwd_{Tn(x)}");
        nint pr = r.Address, px = x.Address, pa = alpha.Address, py = y.Address;
        int adt = Dt(alpha); long n = x.Numel;
        void** args = stackalloc void*[] { &pr, &px, &pa, &adt, &py, &n };
        _be.Device.Launch(k, Blocks(n), Threads, 0, args);
    }

    public void Backward(Tensor x, Tensor alpha, Tensor dy, Tensor? dr, Tensor? dx, Tensor? dalpha)
    {
        GatedResidualOps.CheckBackward(x, alpha, dy, dr, dx, dalpha);
        Mine(x, "x"); Mine(alpha, "alpha"); Mine(dy, "dy"); Mine(dr, "dr"); Mine(dx, "dx"); Mine(dalpha, "dalpha");
        if (dr is null && dx is null && dalpha is null) return;
        long n = x.Numel;
        uint blocks = Blocks(n);
        using var part = dalpha is null ? null : _be.Empty([(int)blocks], DType.F32);
        var k = Kernel($"gated_residual_bwd_{Tn(x)}");
        nint pdy = dy.Address, px = x.Address, pa = alpha.Address, pdr = dr?.Address ?? 0, pdx = dx?.Address ?? 0, pp = part?.Address ?? 0;
        int adt = Dt(alpha);
        void** args = stackalloc void*[] { &pdy, &px, &pa, &adt, &pdr, &pdx, &pp, &n };
        _be.Device.Launch(k, blocks, Threads, 0, args);
        if (dalpha is not null)
        {
            var kr = Kernel("gated_residual_dalpha");
            nint pd = dalpha.Address; int np = (int)blocks, ddt = Dt(dalpha);
            void** ra = stackalloc void*[] { &pp, &np, &pd, &ddt };
            _be.Device.Launch(kr, 1, Threads, 0, ra);
        }
    }
}
