using FiberCuda.Backends;
using FiberCuda.Tensors;

namespace FiberCuda.Profile;

/// <summary>The benchmark cases: FIBER's shapes (issue 2), or small ones for a quick validation run.</summary>
public static class Cases
{
    /// <summary>(rows, C) views of the FIBER activations: Swin stage 1 at 384 px (8×9216×128),
    /// stage 3 (8×576×512) and the text tower (64×40×768).</summary>
    public static readonly (string Name, int Rows, int C)[] FiberShapes =
        [("8x9216x128", 8 * 9216, 128), ("8x576x512", 8 * 576, 512), ("64x40x768", 64 * 40, 768)];

    public static readonly (string Name, int Rows, int C)[] SmallShapes =
        [("3x37x96", 3 * 37, 96), ("5x129", 5, 129), ("2x1000", 2, 1000)];

    public static IEnumerable<BenchCase> All(bool fiber, DType dt)
    {
        var shapes = fiber ? FiberShapes : SmallShapes;
        foreach (var (name, rows, c) in shapes)
        {
            foreach (var bc in RowOps(name, rows, c, dt)) yield return bc;
        }
        foreach (var bc in SwinOps(fiber, dt)) yield return bc;
        foreach (var bc in Gemms(fiber)) yield return bc;
    }

    /// <summary>PatchMerging inputs [B, H·W, C] of FIBER-B's Swin at 384 px, batch 8 (stages 1–3), and small ones
    /// (H ≠ W, C not a multiple of the 16-byte pack).</summary>
    public static readonly (string Name, int B, int H, int W, int C)[] PatchMergeFiber =
        [("8x96x96x128", 8, 96, 96, 128), ("8x48x48x256", 8, 48, 48, 256), ("8x24x24x512", 8, 24, 24, 512)];
    public static readonly (string Name, int B, int H, int W, int C)[] PatchMergeSmall =
        [("2x6x4x12", 2, 6, 4, 12), ("1x4x8x5", 1, 4, 8, 5), ("2x8x8x64", 2, 8, 8, 64)];

    /// <summary>DropPath tensors [B, per]: the stage-1 and stage-4 residual streams of FIBER-B (8×9216×128, 8×144×1024).</summary>
    public static readonly (string Name, int B, int Per)[] DropPathFiber = [("8x9216x128", 8, 9216 * 128), ("8x144x1024", 8, 144 * 1024)];
    public static readonly (string Name, int B, int Per)[] DropPathSmall = [("3x37x96", 3, 37 * 96), ("5x129", 5, 129)];

    /// <summary>The fused Swin ops outside IBackend: PatchMerging's gather + LayerNorm(4C) and DropPath with the residual add.</summary>
    static IEnumerable<BenchCase> SwinOps(bool fiber, DType dt)
    {
        double e = dt.Size();
        double tolFwd = dt == DType.BF16 ? 2e-2 : 1e-4, tolBwd = dt == DType.BF16 ? 5e-2 : 1e-3;
        foreach (var (name, b, h, w, c) in fiber ? PatchMergeFiber : PatchMergeSmall)
        {
            int rows = b * (h / 2) * (w / 2);
            int[] x = [b, h * w, c], y = [b, h / 2 * (w / 2), 4 * c], vec = [4 * c], stat = [rows];
            double n = (double)b * h * w * c;
            // The model keeps LayerNorm weights in its own dtype (Module.Param uses the context's dtype).
            yield return new("patch_merge_norm_fwd", name, dt,
                [new(x, dt), new(vec, dt, Init.Positive), new(vec, dt)],
                [new(y, dt), new(stat, DType.F32), new(stat, DType.F32)],
                (be, i, o) => PatchMergeNormOps.For(be).Forward(i[0], h, w, i[1], i[2], 1e-5f, o[0], o[1], o[2]),
                // reads x once (gathered), writes y, mean and rstd
                Bytes: 2 * n * e + 8.0 * rows, Flops: 8 * n, tolFwd);

            yield return new("patch_merge_norm_bwd", name, dt,
                [new(x, dt), new(vec, dt, Init.Positive), new(stat, DType.F32), new(stat, DType.F32, Init.Positive), new(y, dt)],
                [new(x, dt, Init.Zeros), new(vec, dt, Init.Zeros), new(vec, dt, Init.Zeros)],
                (be, i, o) => PatchMergeNormOps.For(be).Backward(i[0], h, w, i[1], i[2], i[3], i[4], o[0], o[1], o[2]),
                // reads x and dy, reads and writes dx (+=); the dweight|dbias partials are not counted
                Bytes: 4 * n * e + 8.0 * rows, Flops: 12 * n, tolBwd) { Accumulates = true };
        }

        // p = 0.1 (FIBER-B's deepest blocks): a dropped sample's y is not read, so the bytes below (every sample
        // kept) can overstate a run's traffic by the dropped share.
        const float p = 0.1f;
        const ulong seed = 1234, offset = 5678;
        foreach (var (name, b, per) in fiber ? DropPathFiber : DropPathSmall)
        {
            int[] x = [b, per];
            double n = (double)b * per;
            yield return new("drop_path_res_fwd", name, dt,
                [new(x, dt), new(x, dt)], [new(x, dt)],
                (be, i, o) => DropPathOps.For(be).Forward(i[0], i[1], p, seed, offset, o[0]),
                // reads y and the residual, writes out
                Bytes: 3 * n * e, Flops: 2 * n, tolFwd);

            yield return new("drop_path_res_bwd", name, dt,
                [new(x, dt)], [new(x, dt, Init.Zeros), new(x, dt, Init.Zeros)],
                (be, i, o) => DropPathOps.For(be).Backward(i[0], p, seed, offset, o[0], o[1]),
                // reads dout, reads and writes dy and dresidual (+=)
                Bytes: 5 * n * e, Flops: 3 * n, tolBwd) { Accumulates = true };
        }
    }

    static IEnumerable<BenchCase> RowOps(string shape, int rows, int c, DType dt)
    {
        int[] x = [rows, c], vec = [c], stat = [rows];
        double n = (double)rows * c, e = dt.Size();
        double tolFwd = dt == DType.BF16 ? 2e-2 : 1e-4, tolBwd = dt == DType.BF16 ? 5e-2 : 1e-3;

        yield return new("layernorm_fwd", shape, dt,
            [new(x, dt), new(vec, DType.F32, Init.Positive), new(vec, DType.F32)],
            [new(x, dt), new(stat, DType.F32), new(stat, DType.F32)],
            (be, i, o) => be.LayerNorm(i[0], null, i[1], i[2], 1e-5f, o[0], null, o[1], o[2]),
            Bytes: 2 * n * e + 8.0 * rows, Flops: 8 * n, tolFwd);

        yield return new("layernorm_bwd", shape, dt,
            [new(x, dt), new(vec, DType.F32, Init.Positive), new(stat, DType.F32), new(stat, DType.F32, Init.Positive), new(x, dt)],
            [new(x, dt, Init.Zeros), new(vec, DType.F32, Init.Zeros), new(vec, DType.F32, Init.Zeros)],
            (be, i, o) => be.LayerNormBackward(i[0], i[1], i[2], i[3], i[4], o[0], o[1], o[2]),
            // reads s and dy, reads and writes dx (the += convention)
            Bytes: 4 * n * e + 8.0 * rows, Flops: 12 * n, tolBwd) { Accumulates = true };

        yield return new("layernorm_res_fwd", shape, dt,
            [new(x, dt), new(x, dt), new(vec, DType.F32, Init.Positive), new(vec, DType.F32)],
            [new(x, dt), new(x, dt), new(stat, DType.F32), new(stat, DType.F32)],
            (be, i, o) => be.LayerNorm(i[0], i[1], i[2], i[3], 1e-5f, o[0], o[1], o[2], o[3]),
            // reads x and the residual, writes the sum and the normalised output
            Bytes: 4 * n * e + 8.0 * rows, Flops: 9 * n, tolFwd);

        yield return new("bias_gelu_fwd", shape, dt,
            [new(x, dt), new(vec, dt)], [new(x, dt)],
            (be, i, o) => be.BiasGelu(i[0], i[1], o[0]),
            Bytes: 2 * n * e, Flops: 20 * n, tolFwd);

        yield return new("bias_gelu_bwd", shape, dt,
            [new(x, dt), new(vec, dt), new(x, dt)], [new(x, dt, Init.Zeros), new(vec, DType.F32, Init.Zeros)],
            (be, i, o) => be.BiasGeluBackward(i[0], i[1], i[2], o[0], o[1]),
            Bytes: 4 * n * e, Flops: 30 * n, tolBwd) { Accumulates = true };

        yield return new("softmax_fwd", shape, dt,
            [new(x, dt)], [new(x, dt)],
            (be, i, o) => be.Softmax(i[0], 1f, o[0]),
            Bytes: 2 * n * e, Flops: 5 * n, tolFwd);

        yield return new("softmax_bwd", shape, dt,
            [new(x, dt, Init.Positive), new(x, dt)], [new(x, dt, Init.Zeros)],
            (be, i, o) => be.SoftmaxBackward(i[0], i[1], 1f, o[0]),
            Bytes: 4 * n * e, Flops: 5 * n, tolBwd) { Accumulates = true };

        // AdamW over one tensor of the activation's size: f32 param, grad, m, v (read) and param, m, v (written).
        yield return new("adamw", shape, DType.F32,
            [new(x, DType.F32), new(x, DType.F32, Init.Positive)],
            [new(x, DType.F32), new(x, DType.F32, Init.Zeros), new(x, DType.F32, Init.Zeros)],
            (be, i, o) => be.AdamW([new AdamWTensor(o[0], i[0], o[1], o[2], null, 1e-3f, 0.01f)], 0.9f, 0.98f, 1e-8f, 1, 1f),
            Bytes: 7 * n * 4, Flops: 15 * n, 1e-4) { Accumulates = true };
    }

    static IEnumerable<BenchCase> Gemms(bool fiber)
    {
        // Swin-B stage-3 MLP fc1 at 384 px, batch 8: [4608 x 512] · [512 x 2048]ᵀ, and the text FFN.
        var shapes = fiber
            ? new (string, int, int, int)[] { ("4608x2048x512", 4608, 2048, 512), ("2560x3072x768", 2560, 3072, 768), ("8192x8192x8192", 8192, 8192, 8192) }
            : new (string, int, int, int)[] { ("33x17x65", 33, 17, 65), ("128x96x64", 128, 96, 64) };
        foreach (var (name, m, nn, k) in shapes)
        {
            yield return new("gemm_bias", name, DType.BF16,
                [new([m, k], DType.BF16), new([nn, k], DType.BF16), new([nn], DType.BF16)],
                [new([m, nn], DType.BF16)],
                (be, i, o) => be.Gemm(new GemmArgs(i[0], i[1], o[0], m, nn, k, TransB: true, Bias: i[2])),
                Bytes: 2.0 * ((double)m * k + (double)nn * k + (double)m * nn), Flops: 2.0 * m * nn * k,
                Tolerance: 2e-2);
        }
    }
}
