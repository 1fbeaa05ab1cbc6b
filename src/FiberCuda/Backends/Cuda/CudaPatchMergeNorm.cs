using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

/// <summary>
/// <see cref="IPatchMergeNormOps"/> with kernels/patch_merge_norm.cu: one kernel gathers the four source rows and
/// writes the normalised 4C row (no gathered copy in memory); the backward re-gathers x, scatters dx (+=) and
/// leaves per-block dweight|dbias partials that reduce.cu's colsum_partials2 adds in a fixed order (deterministic).
/// A group of NT threads owns a row, 8 elements per thread (16-byte units when C is a multiple of the pack);
/// blocks are 256 threads (several rows at a time) unless a row needs more. 4C ≤ 8192.
/// </summary>
public sealed unsafe class CudaPatchMergeNorm : IPatchMergeNormOps
{
    const string File = "patch_merge_norm.cu";
    const int PerThread = 8;
    const int Block = 256;
    public const int MaxWidth = 1024 * PerThread;

    readonly CudaBackend _be;
    readonly int _sm;

    public CudaPatchMergeNorm(CudaBackend backend)
    {
        _be = backend;
        _sm = backend.Device is CudaDevice cd ? cd.MultiprocessorCount : backend.Device.IsEmulated ? 2 : 132;
    }

    static string Tn(Tensor t) => t.DType switch
    {
        DType.F32 => "f32",
        DType.BF16 => "bf16",
        _ => throw new ArgumentException($"patch merge norm (CUDA): {t} must be f32 or bf16"),
    };

    static int Dt(Tensor t) => t.DType switch
    {
        DType.F32 => 0,
        DType.BF16 => 1,
        _ => throw new ArgumentException($"patch merge norm (CUDA): {t} must be f32 or bf16"),
    };

    void Mine(Tensor? t, string what)
    {
        if (t is not null && !ReferenceEquals(t.Backend, _be)) throw new ArgumentException($"patch merge norm (CUDA): {what} {t} is not on {_be.Name}");
    }

    /// <summary>Threads per row (NT), rows per block (G), block size, and whether 16-byte units apply.</summary>
    static (int Nt, int G, int Threads, bool Vec) Layout(int c, DType dt, params Tensor?[] big)
    {
        int c4 = 4 * c;
        if (c4 > MaxWidth) throw new ArgumentException($"patch merge norm (CUDA): 4C = {c4} exceeds the kernel's {MaxWidth} (8 elements × 1024 threads)");
        int pack = 16 / dt.Size();
        bool vec = c % pack == 0 && big.All(t => t is null || (t.Address & 15) == 0);
        int need = (c4 + PerThread - 1) / PerThread;
        if (need <= Block)
        {
            int nt = 32;
            while (nt < need) nt *= 2;
            return (nt, Block / nt, Block, vec);
        }
        int n = (need + 31) / 32 * 32;
        return (n, 1, n, vec);
    }

    static void Fits(int width, int c)
    {
        // The kernels hold a unit's offset inside its 2×2 block, (W + 1)·C + C, as an int.
        if ((long)(width + 2) * c > int.MaxValue) throw new ArgumentException($"patch merge norm (CUDA): W = {width}, C = {c} is too wide for the kernel's offsets");
    }

    public void Forward(Tensor x, int height, int width, Tensor weight, Tensor bias, float eps, Tensor y, Tensor mean, Tensor rstd)
    {
        PatchMergeNormOps.Check(x, height, width, weight, bias, mean, rstd);
        PatchMergeNormOps.CheckOut(x, height, width, y, "y");
        Mine(x, "x"); Mine(weight, "weight"); Mine(bias, "bias"); Mine(y, "y"); Mine(mean, "mean"); Mine(rstd, "rstd");
        var (b, c) = PatchMergeNormOps.Geometry(x, height, width);
        long rows = PatchMergeNormOps.Rows(b, height, width);
        if (rows == 0) return;
        Fits(width, c);
        var (nt, g, threads, vec) = Layout(c, x.DType, x, y);
        var k = _be.Device.GetKernel(File, $"patch_merge_norm_fwd_{Tn(x)}_{Tn(weight)}_{(vec ? "v" : "s")}");
        long cap = _be.Device.IsEmulated ? 8 : (long)_sm * 64;
        uint blocks = (uint)Math.Clamp((rows + g - 1) / g, 1, cap);
        nint px = x.Address, pw = weight.Address, pb = bias.Address, py = y.Address, pm = mean.Address, pr = rstd.Address;
        int h = height, w = width;
        void** a = stackalloc void*[] { &px, &pw, &pb, &eps, &py, &pm, &pr, &rows, &h, &w, &c, &nt };
        _be.Device.Launch(k, blocks, (uint)threads, 0, a);
    }

    public void Backward(Tensor x, int height, int width, Tensor weight, Tensor mean, Tensor rstd, Tensor dy,
                         Tensor? dx, Tensor? dweight, Tensor? dbias)
    {
        PatchMergeNormOps.CheckBackward(x, height, width, weight, mean, rstd, dy, dx, dweight, dbias);
        Mine(x, "x"); Mine(weight, "weight"); Mine(mean, "mean"); Mine(rstd, "rstd"); Mine(dy, "dy");
        Mine(dx, "dx"); Mine(dweight, "dweight"); Mine(dbias, "dbias");
        if (dx is null && dweight is null && dbias is null) return;
        var (b, c) = PatchMergeNormOps.Geometry(x, height, width);
        long rows = PatchMergeNormOps.Rows(b, height, width);
        if (rows == 0) return;
        int c4 = 4 * c;
        Fits(width, c);
        var (nt, g, threads, vec) = Layout(c, x.DType, x, dy, dx);
        bool weights = dweight is not null || dbias is not null;
        // Persistent grid: each block leaves one 2·4C partial row however many rows it visits, so few blocks
        // keep the partials small next to x, dy and dx; 2048 threads per SM fill it.
        long cap = _be.Device.IsEmulated ? 8 : (long)_sm * Math.Max(1, 2048 / threads);
        uint blocks = (uint)Math.Clamp((rows + g - 1) / g, 1, cap);
        using var part = weights ? _be.Empty([(int)blocks, 2 * c4], DType.F32) : null;
        var k = _be.Device.GetKernel(File, $"patch_merge_norm_bwd_{Tn(x)}_{Tn(weight)}_{(vec ? "v" : "s")}");
        nint px = x.Address, pw = weight.Address, pm = mean.Address, pr = rstd.Address, pdy = dy.Address,
             pdx = dx?.Address ?? 0, pp = part?.Address ?? 0;
        int h = height, w = width;
        void** a = stackalloc void*[] { &px, &pw, &pm, &pr, &pdy, &pdx, &pp, &rows, &h, &w, &c, &nt };
        _be.Device.Launch(k, blocks, (uint)threads, 0, a);
        if (!weights) return;
        // colsum_partials2 writes both sums; a missing one goes to a scratch buffer.
        using var sg = dweight is null ? _be.Zeros([c4], DType.F32) : null;
        using var sb = dbias is null ? _be.Zeros([c4], DType.F32) : null;
        var tg = dweight ?? sg!; var tb = dbias ?? sb!;
        var kr = _be.Device.GetKernel("reduce.cu", "colsum_partials2");
        long R = blocks;
        nint pg = tg.Address, pbb = tb.Address;
        int dtg = Dt(tg), dtb = Dt(tb);
        void** a2 = stackalloc void*[] { &pp, &R, &c4, &pg, &dtg, &pbb, &dtb };
        // Block as CudaBackend's colsum launches: 8 columns × up to 128 partial-row groups.
        var cb = new Dim3(8, (uint)Math.Clamp(R, 1, 128));
        _be.Device.Launch(kr, (uint)((2 * c4 + 7) / 8), cb, 0, a2);
    }
}
