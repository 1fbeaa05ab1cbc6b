using System.Runtime.InteropServices;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Backends.Cuda;

public sealed unsafe partial class CudaBackend
{
    // =============================================================================================
    // normalisation
    // =============================================================================================

    public void LayerNorm(Tensor x, Tensor? residual, Tensor gamma, Tensor beta, float eps,
                          Tensor y, Tensor? residualOut, Tensor mean, Tensor rstd)
    {
        const string op = nameof(LayerNorm);
        Float(x, "x"); SameAll(op, x, y);
        if (residual is not null)
        {
            SameAll(op, x, residual);
            if (residualOut is null) throw new ArgumentException("LayerNorm: residualOut is required when residual is given");
            SameAll(op, x, residualOut);
        }
        int C = LastDim(x, op);
        Bias(gamma, C, op, "gamma"); Bias(beta, C, op, "beta");
        if (gamma.DType != beta.DType) throw new ArgumentException($"LayerNorm: gamma is {gamma.DType.Name()} but beta is {beta.DType.Name()}");
        long rows = ShapeUtil.Rows(x.Shape);
        Stats(mean, rows, op, "mean"); Stats(rstd, rows, op, "rstd");
        if (x.Numel == 0) return;
        nint px = x.Address, pr = residual?.Address ?? 0, pg = gamma.Address, pbt = beta.Address, py = y.Address,
             pro = residual is null ? 0 : residualOut!.Address, pm = mean.Address, ps = rstd.Address;
        void** a = stackalloc void*[] { &px, &pr, &pg, &pbt, &eps, &py, &pro, &pm, &ps, &rows, &C };
        var v = RowVariant(C, x.DType);
        if (v is { } fp && residual is null && Pipelined(fp.Kp, rows, layerNorm: true) is { } pipe)
            Launch("layernorm.cu", $"layernorm_fwd_{S(x)}_{S(gamma)}_{fp.Suffix}p", PipeGrid(rows, fp.Tpr), Threads, pipe.Smem, a);
        else if (v is { } f)
        {
            int rb = RowsPerGroup(f.Kp, residual is not null);
            Launch("layernorm.cu", $"layernorm_fwd_{S(x)}_{S(gamma)}_{f.Suffix}{RbSuffix(rb)}", GroupGrid(rows, f.Tpr, rb), Threads, 0, a);
        }
        else Launch("layernorm.cu", $"layernorm_fwd_{S(x)}_{S(gamma)}", RowGrid(rows), Threads, 0, a);
    }

    public void LayerNormBackward(Tensor s, Tensor gamma, Tensor mean, Tensor rstd, Tensor dy,
                                  Tensor dx, Tensor dgamma, Tensor dbeta)
    {
        const string op = nameof(LayerNormBackward);
        Float(s, "s"); SameAll(op, s, dy, dx);
        int C = LastDim(s, op);
        Bias(gamma, C, op, "gamma"); Bias(dgamma, C, op, "dgamma"); Bias(dbeta, C, op, "dbeta");
        long rows = ShapeUtil.Rows(s.Shape);
        Stats(mean, rows, op, "mean"); Stats(rstd, rows, op, "rstd");
        if (s.Numel == 0 || C == 0) return;
        var v = RowVariant(C, s.DType);
        IKernel k;
        int blocks, threads, smem;
        if (v is { } f)
        {
            // Persistent grid: row groups sum dgamma/dbeta in registers, so each block adds one
            // 2C-float partial row however many rows it visits; the register cap (launch bounds)
            // guarantees `bps` blocks fit on an SM. Shared memory: W·C floats for the final fold.
            int bps = LnBwdBlocksPerSm(f.Kp);
            k = Kernel("layernorm.cu", $"layernorm_bwd_{S(s)}_{S(gamma)}_{f.Suffix}{(bps == 4 && f.Kp == 1 ? "m4" : "")}");
            threads = Threads;
            long groups = Threads / f.Tpr;
            blocks = (int)Math.Clamp((rows + groups - 1) / groups, 1, _dev.IsEmulated ? _maxBlocks : _smCount * bps);
            smem = Threads / 32 * C * 4;
        }
        else
        {
            // W warps per block, each with its own 2C-float dgamma|dbeta slice in shared memory.
            int W = (int)Math.Clamp(MaxStaticSmem / (8L * C), 1, 4);
            k = Kernel("layernorm.cu", $"layernorm_bwd_{S(s)}_{S(gamma)}");
            threads = W * 32;
            smem = W * 2 * C * 4;
            blocks = (int)Math.Clamp((rows + W - 1) / W, 1, _smCount * 8);
        }
        if (smem > MaxStaticSmem && k.MaxDynamicSharedBytes < smem) k.MaxDynamicSharedBytes = smem;
        nint partial = Scratch((long)blocks * 2 * C * 4);
        nint ps = s.Address, pg = gamma.Address, pm = mean.Address, pr = rstd.Address, pdy = dy.Address, pdx = dx.Address;
        void** a = stackalloc void*[] { &ps, &pg, &pm, &pr, &pdy, &pdx, &partial, &rows, &C };
        Launch(k, blocks, threads, smem, a);
        long R = blocks;
        nint pdg = dgamma.Address, pdb = dbeta.Address;
        int dtg = Dt(dgamma), dtb = Dt(dbeta);
        void** a2 = stackalloc void*[] { &partial, &R, &C, &pdg, &dtg, &pdb, &dtb };
        var cb = ColSumBlock(R);
        Launch("reduce.cu", "colsum_partials2", (int)((2 * C + cb.X - 1) / cb.X), cb, 0, a2);
    }

    public void Softmax(Tensor x, float scale, Tensor y)
    {
        Float(x, "x"); SameAll(nameof(Softmax), x, y);
        int C = LastDim(x, nameof(Softmax));
        if (x.Numel == 0) return;
        long rows = ShapeUtil.Rows(x.Shape);
        nint px = x.Address, py = y.Address;
        void** a = stackalloc void*[] { &px, &py, &scale, &rows, &C };
        if (RowVariant(C, x.DType) is { } fp && Pipelined(fp.Kp, rows, layerNorm: false) is { } pipe)
            Launch("softmax.cu", $"softmax_fwd_{S(x)}_{fp.Suffix}p", PipeGrid(rows, fp.Tpr), Threads, pipe.Smem, a);
        else if (RowVariant(C, x.DType) is { } f)
        {
            int rb = RowsPerGroup(f.Kp);
            Launch("softmax.cu", $"softmax_fwd_{S(x)}_{f.Suffix}{RbSuffix(rb)}", GroupGrid(rows, f.Tpr, rb), Threads, 0, a);
        }
        else Launch("softmax.cu", "softmax_fwd_" + S(x), RowGrid(rows), Threads, 0, a);
    }

    public void SoftmaxBackward(Tensor y, Tensor dy, float scale, Tensor dx)
    {
        Float(y, "y"); SameAll(nameof(SoftmaxBackward), y, dy, dx);
        int C = LastDim(y, nameof(SoftmaxBackward));
        if (y.Numel == 0) return;
        long rows = ShapeUtil.Rows(y.Shape);
        nint py = y.Address, pdy = dy.Address, pdx = dx.Address;
        void** a = stackalloc void*[] { &py, &pdy, &scale, &pdx, &rows, &C };
        if (RowVariant(C, y.DType) is { } f) Launch("softmax.cu", $"softmax_bwd_{S(y)}_{f.Suffix}", GroupGrid(rows, f.Tpr), Threads, 0, a);
        else Launch("softmax.cu", "softmax_bwd_" + S(y), RowGrid(rows), Threads, 0, a);
    }
}
