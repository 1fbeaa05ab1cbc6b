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
        foreach (var bc in Gemms(fiber)) yield return bc;
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
