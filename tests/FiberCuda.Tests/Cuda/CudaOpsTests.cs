using FiberCuda.Tests.Support;
using FiberCuda.Backends;
using FiberCuda.Backends.Cpu;
using FiberCuda.Backends.Cuda;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Cuda;

/// <summary>
/// Every op of the CUDA backend, forward and backward, against the CPU backend (the C# reference),
/// in f32 and bf16, at awkward shapes (not multiples of warps/packs, one element, a 4099-long row).
/// Inputs are the same bits on both backends; gradients are checked on pre-filled buffers so `+=` is
/// tested too. Subclasses pick the device: the emulator (category Emulated) or a real GPU (Gpu).
/// Shapes stay small because the emulator runs every CUDA thread as a fiber.
/// </summary>
public abstract class CudaOpsTestBase
{
    protected abstract CudaBackend Gpu { get; }
    static CpuBackend Cpu => Backend.Cpu;

    readonly List<Tensor> _live = new();

    /// <summary>Skips (Inconclusive) before the test body when the device is missing.</summary>
    [TestInitialize]
    public void RequireDevice() => _ = Gpu;

    [TestCleanup]
    public void FreeTensors()
    {
        foreach (var t in _live) t.Dispose();
        _live.Clear();
    }

    // ------------------------------------------------------------------ helpers

    static readonly DType[] Floats = [DType.F32, DType.BF16];

    Tensor Keep(Tensor t) { _live.Add(t); return t; }

    static float[] Rand(Random r, long n, double scale = 1, double shift = 0)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = (float)((r.NextDouble() * 2 - 1) * scale + shift);
        return a;
    }

    /// <summary>The same values (rounded to <paramref name="dt"/>) on the CPU and the GPU.</summary>
    (Tensor C, Tensor G) Pair(float[] data, int[] shape, DType dt)
    {
        var c = Keep(Cpu.FromFloats(data, shape, dt));
        var g = Keep(Gpu.CopyFrom(c));
        return (c, g);
    }

    (Tensor C, Tensor G) RandPair(Random r, int[] shape, DType dt, double scale = 1, double shift = 0)
        => Pair(Rand(r, ShapeUtil.Numel(shape), scale, shift), shape, dt);

    (Tensor C, Tensor G) IdxPair(long[] ids, int[] shape, DType dt)
    {
        var c = Keep(Cpu.FromDoubles(Array.ConvertAll(ids, i => (double)i), shape, dt));
        var g = Keep(Gpu.CopyFrom(c));
        return (c, g);
    }

    (Tensor C, Tensor G) EmptyPair(int[] shape, DType dt) => (Keep(Cpu.Zeros(shape, dt)), Keep(Gpu.Zeros(shape, dt)));

    /// <summary>
    /// llm.c's rule: |gpu − cpu| ≤ atol + rtol·|cpu|, with atol relative to the largest reference value
    /// (sums and differences lose absolute, not relative, precision). bf16 results may differ by a
    /// rounding step when the fp32 values behind them differ in the last bits.
    /// </summary>
    static void Close(Tensor cpu, Tensor gpu, string what, double scale = 1)
    {
        var e = cpu.ToFloatArray();
        var a = gpu.ToFloatArray();
        Assert.AreEqual(e.Length, a.Length, $"{what}: length");
        bool bf = cpu.DType == DType.BF16 || gpu.DType == DType.BF16;
        double rtol = (bf ? 1.0 / 64 : 2e-5) * scale;
        double max = 0;
        foreach (var v in e) if (float.IsFinite(v)) max = Math.Max(max, Math.Abs(v));
        double atol = (bf ? 4e-3 : 2e-6) * scale * Math.Max(max, 1e-3);
        int bad = 0; string first = "";
        for (int i = 0; i < e.Length; i++)
        {
            if (float.IsNaN(e[i]) && float.IsNaN(a[i])) continue;
            double d = Math.Abs((double)a[i] - e[i]);
            if (!(d <= atol + rtol * Math.Abs(e[i])))
            {
                if (bad++ == 0) first = $"[{i}] cpu {e[i]:R} gpu {a[i]:R}";
            }
        }
        Assert.AreEqual(0, bad, $"{what} ({cpu.DType.Name()}{ShapeUtil.Format(cpu.Shape)}): {bad}/{e.Length} mismatches, first {first}");
    }

    static void Exact(Tensor cpu, Tensor gpu, string what)
    {
        var e = new byte[cpu.Bytes]; var a = new byte[gpu.Bytes];
        cpu.Backend.Download(cpu, e); gpu.Backend.Download(gpu, a);
        CollectionAssert.AreEqual(e, a, $"{what}: bits differ");
    }

    static IEnumerable<(int[] Shape, DType Dt)> Cases(params int[][] shapes)
    {
        foreach (var s in shapes) foreach (var dt in Floats) yield return (s, dt);
    }

    // ------------------------------------------------------------------ memory / casts / gemm

    [TestMethod]
    public void UploadDownloadFillCast()
    {
        var r = new Random(1);
        foreach (var n in new[] { 1, 7, 1000 })
        {
            var data = Rand(r, n);
            var g = Keep(Gpu.FromFloats(data, [n]));
            CollectionAssert.AreEqual(data, g.ToArray<float>());
            foreach (var (src, dst) in new[] { (DType.F32, DType.BF16), (DType.BF16, DType.F32), (DType.F32, DType.F32) })
            {
                var (cs, gs) = Pair(data, [n], src);
                var (cd, gd) = EmptyPair([n], dst);
                Cpu.Cast(cs, cd); Gpu.Cast(gs, gd);
                Exact(cd, gd, $"cast {src.Name()}->{dst.Name()}");
            }
            foreach (var dt in new[] { DType.F32, DType.BF16, DType.I32, DType.I64 })
            {
                var (c, gg) = EmptyPair([n], dt);
                double v = dt.IsFloat() ? -1.37 : -12345;
                Cpu.Fill(c, v); Gpu.Fill(gg, v);
                Exact(c, gg, $"fill {dt.Name()}");
            }
        }
        var z = Keep(Gpu.Zeros([5, 3], DType.BF16));
        CollectionAssert.AreEqual(new float[15], z.ToFloatArray());
    }

    [TestMethod]
    public void RejectsF64AndMismatches()
    {
        Assert.ThrowsExactly<NotSupportedException>(() => Gpu.Empty([3], DType.F64));
        var a = Keep(Gpu.Zeros([4, 3], DType.F32));
        var b = Keep(Gpu.Zeros([4, 2], DType.F32));
        var h = Keep(Gpu.Zeros([4, 3], DType.BF16));
        Assert.ThrowsExactly<ArgumentException>(() => Gpu.Add(a, b, a));
        Assert.ThrowsExactly<ArgumentException>(() => Gpu.Add(a, h, a));
        var cpuT = Keep(Cpu.Zeros([4, 3], DType.F32));
        Assert.ThrowsExactly<ArgumentException>(() => Gpu.Add(a, cpuT, a));
        var g3 = Keep(Gpu.Zeros([2], DType.F32));
        Assert.ThrowsExactly<ArgumentException>(() => Gpu.AddBias(a, g3, a));
    }

    [TestMethod]
    public void Gemm()
    {
        var r = new Random(2);
        foreach (var dt in Floats)
        {
            int M = 5, N = 7, K = 9;
            var (ca, ga) = RandPair(r, [K, M], dt);
            var (cb, gb) = RandPair(r, [N, K], dt);
            var (cc, gc) = RandPair(r, [M, N], DType.F32);
            var (cbias, gbias) = RandPair(r, [N], DType.F32);
            Cpu.Gemm(new GemmArgs(ca, cb, cc, M, N, K, TransA: true, TransB: true, Alpha: 0.5f, Beta: 1f, Bias: cbias));
            Gpu.Gemm(new GemmArgs(ga, gb, gc, M, N, K, TransA: true, TransB: true, Alpha: 0.5f, Beta: 1f, Bias: gbias));
            Close(cc, gc, $"gemm {dt.Name()}", dt == DType.BF16 ? 1 : 50);
        }
    }

    // ------------------------------------------------------------------ elementwise

    [TestMethod]
    public void ElementwiseOps()
    {
        var r = new Random(3);
        foreach (var (shape, dt) in Cases([1], [3, 37], [2, 4099], [64, 24]))
        {
            var (ca, ga) = RandPair(r, shape, dt);
            var (cb, gb) = RandPair(r, shape, dt);
            var (cy, gy) = EmptyPair(shape, dt);
            Cpu.Add(ca, cb, cy); Gpu.Add(ga, gb, gy); Close(cy, gy, "add");
            Cpu.Mul(ca, cb, cy); Gpu.Mul(ga, gb, gy); Close(cy, gy, "mul");
            Cpu.Scale(ca, -0.3f, cy); Gpu.Scale(ga, -0.3f, gy); Close(cy, gy, "scale");
            Cpu.Axpy(1.7f, ca, cb); Gpu.Axpy(1.7f, ga, gb); Close(cb, gb, "axpy");
            foreach (var bdt in Floats)
            {
                var (cbias, gbias) = RandPair(r, [shape[^1]], bdt);
                Cpu.AddBias(ca, cbias, cy); Gpu.AddBias(ga, gbias, gy); Close(cy, gy, $"add_bias(bias {bdt.Name()})");
            }
        }
    }

    [TestMethod]
    public void BiasGeluForwardBackward()
    {
        var r = new Random(4);
        foreach (var (shape, dt) in Cases([1, 1], [5, 37], [9, 128], [2, 4099]))
        {
            int C = shape[^1];
            var (cx, gx) = RandPair(r, shape, dt, 3);
            var (cdy, gdy) = RandPair(r, shape, dt);
            foreach (bool withBias in new[] { false, true })
            {
                var (cb, gb) = RandPair(r, [C], dt);
                var (cy, gy) = EmptyPair(shape, dt);
                Cpu.BiasGelu(cx, withBias ? cb : null, cy); Gpu.BiasGelu(gx, withBias ? gb : null, gy);
                Close(cy, gy, "bias_gelu fwd");
                var (cdx, gdx) = RandPair(r, shape, dt);
                var (cdb, gdb) = RandPair(r, [C], DType.F32);
                Cpu.BiasGeluBackward(cx, withBias ? cb : null, cdy, cdx, cdb);
                Gpu.BiasGeluBackward(gx, withBias ? gb : null, gdy, gdx, gdb);
                Close(cdx, gdx, "bias_gelu dx");
                Close(cdb, gdb, "bias_gelu dbias", dt == DType.BF16 ? 1 : 10);
                Cpu.BiasGeluBackward(cx, withBias ? cb : null, cdy, cdx, null);
                Gpu.BiasGeluBackward(gx, withBias ? gb : null, gdy, gdx, null);
                Close(cdx, gdx, "bias_gelu dx (no dbias)");
            }
        }
    }

    // ------------------------------------------------------------------ normalisation

    [TestMethod]
    public void LayerNormForwardBackward()
    {
        var r = new Random(5);
        foreach (var (shape, dt) in Cases([1, 1], [7, 37], [7, 64], [3, 3, 128], [3, 520], [3, 768], [5, 1024], [2, 4099]))
        {
            int C = shape[^1];
            long rows = ShapeUtil.Rows(shape);
            foreach (var pdt in Floats)
            foreach (bool withRes in new[] { false, true })
            {
                var (cx, gx) = RandPair(r, shape, dt, 2, 0.5);
                var (cres, gres) = RandPair(r, shape, dt);
                var (cg, gg) = RandPair(r, [C], pdt, 1, 1);
                var (cb, gb) = RandPair(r, [C], pdt);
                var (cy, gy) = EmptyPair(shape, dt);
                var (cro, gro) = EmptyPair(shape, dt);
                var (cm, gm) = EmptyPair([(int)rows], DType.F32);
                var (cr, gr) = EmptyPair([(int)rows], DType.F32);
                Cpu.LayerNorm(cx, withRes ? cres : null, cg, cb, 1e-5f, cy, withRes ? cro : null, cm, cr);
                Gpu.LayerNorm(gx, withRes ? gres : null, gg, gb, 1e-5f, gy, withRes ? gro : null, gm, gr);
                string tag = $"layernorm (gamma {pdt.Name()}, residual {withRes})";
                Close(cy, gy, tag + " y", 2);
                if (withRes) Close(cro, gro, tag + " residualOut");
                Close(cm, gm, tag + " mean", 10);
                Close(cr, gr, tag + " rstd", 10);

                var s = withRes ? (cro, gro) : (cx, gx);
                var (cdy, gdy) = RandPair(r, shape, dt);
                var (cdx, gdx) = RandPair(r, shape, dt);
                var (cdg, gdg) = RandPair(r, [C], pdt);
                var (cdb, gdb) = RandPair(r, [C], pdt);
                // Both backends use the CPU's statistics so only the backward is under test.
                var gmean = Keep(Gpu.CopyFrom(cm)); var grstd = Keep(Gpu.CopyFrom(cr));
                Cpu.LayerNormBackward(s.Item1, cg, cm, cr, cdy, cdx, cdg, cdb);
                Gpu.LayerNormBackward(s.Item2, gg, gmean, grstd, gdy, gdx, gdg, gdb);
                Close(cdx, gdx, tag + " dx", 10);
                Close(cdg, gdg, tag + " dgamma", 20);
                Close(cdb, gdb, tag + " dbeta", 20);
            }
        }
    }

    [TestMethod]
    public void SoftmaxForwardBackward()
    {
        var r = new Random(6);
        foreach (var (shape, dt) in Cases([1, 1], [5, 49], [7, 64], [2, 3, 144], [3, 520], [3, 1024], [2, 4099]))
        {
            var (cx, gx) = RandPair(r, shape, dt, 4);
            var (cy, gy) = EmptyPair(shape, dt);
            Cpu.Softmax(cx, 0.7f, cy); Gpu.Softmax(gx, 0.7f, gy);
            Close(cy, gy, "softmax fwd", 2);
            var (cdy, gdy) = RandPair(r, shape, dt);
            var (cdx, gdx) = RandPair(r, shape, dt);
            Cpu.SoftmaxBackward(cy, cdy, 0.7f, cdx); Gpu.SoftmaxBackward(Keep(Gpu.CopyFrom(cy)), gdy, 0.7f, gdx);
            Close(cdx, gdx, "softmax bwd", 4);
        }
        // Fully masked rows (all −inf) give zeros on both backends, on the fast and the generic path.
        foreach (var (shape, dt) in Cases([3, 64], [3, 49], [2, 2000]))
        {
            var data = Rand(r, ShapeUtil.Numel(shape), 3);
            int C = shape[1];
            for (int c = 0; c < C; c++) data[C + c] = float.NegativeInfinity;
            data[5] = float.NegativeInfinity;
            var (cx, gx) = Pair(data, shape, dt);
            var (cy, gy) = EmptyPair(shape, dt);
            Cpu.Softmax(cx, 1f, cy); Gpu.Softmax(gx, 1f, gy);
            Close(cy, gy, "softmax masked rows", 2);
            CollectionAssert.AreEqual(new float[C], gy.ToFloatArray()[C..(2 * C)], "masked row must be zeros");
        }
    }

    [TestMethod]
    public void L2NormalizeForwardBackward()
    {
        var r = new Random(7);
        foreach (var (shape, dt) in Cases([1, 1], [6, 37], [4, 512], [2, 4099]))
        {
            long rows = ShapeUtil.Rows(shape);
            var (cx, gx) = RandPair(r, shape, dt);
            var (cy, gy) = EmptyPair(shape, dt);
            var (cn, gn) = EmptyPair([(int)rows], DType.F32);
            Cpu.L2Normalize(cx, 1e-6f, cy, cn); Gpu.L2Normalize(gx, 1e-6f, gy, gn);
            Close(cy, gy, "l2norm y", 2); Close(cn, gn, "l2norm norm", 10);
            var (cdy, gdy) = RandPair(r, shape, dt);
            var (cdx, gdx) = RandPair(r, shape, dt);
            Cpu.L2NormalizeBackward(cy, cn, 1e-6f, cdy, cdx);
            Gpu.L2NormalizeBackward(Keep(Gpu.CopyFrom(cy)), Keep(Gpu.CopyFrom(cn)), 1e-6f, gdy, gdx);
            Close(cdx, gdx, "l2norm dx", 10);
        }
    }

    // ------------------------------------------------------------------ losses

    [TestMethod]
    public void CrossEntropyForwardBackward()
    {
        var r = new Random(8);
        foreach (var (shape, dt) in Cases([1, 1], [6, 37], [3, 4099]))
        foreach (var idt in new[] { DType.I32, DType.I64 })
        {
            int N = shape[0], C = shape[1];
            var (cx, gx) = RandPair(r, shape, dt, 5);
            var ids = new long[N];
            for (int i = 0; i < N; i++) ids[i] = r.Next(C);
            if (N > 2) ids[1] = -100;
            var (ct, gt) = IdxPair(ids, [N], idt);
            var (cl, gl) = EmptyPair([N], DType.F32);
            var (cs, gs) = EmptyPair([N], DType.F32);
            Cpu.CrossEntropy(cx, ct, -100, cl, cs); Gpu.CrossEntropy(gx, gt, -100, gl, gs);
            Close(cl, gl, $"ce loss ({idt.Name()})", 20); Close(cs, gs, "ce lse", 10);
            var (cd, gd) = RandPair(r, [N], DType.F32);
            var (cdx, gdx) = RandPair(r, shape, dt);
            Cpu.CrossEntropyBackward(cx, ct, -100, cs, cd, cdx);
            Gpu.CrossEntropyBackward(gx, gt, -100, gs, gd, gdx);
            Close(cdx, gdx, "ce dlogits", 10);
        }
    }

    // ------------------------------------------------------------------ embedding / dropout

    [TestMethod]
    public void EmbeddingForwardBackward()
    {
        var r = new Random(9);
        foreach (var (shape, dt) in Cases([17, 24], [11, 37], [5, 1]))
        foreach (var idt in new[] { DType.I32, DType.I64 })
        {
            int V = shape[0], D = shape[1];
            var ids = new long[] { 3, 0, V - 1, 3, 3, 1, V - 1 };
            var (cw, gw) = RandPair(r, shape, dt);
            var (ci, gi) = IdxPair(ids, [7], idt);
            var (cy, gy) = EmptyPair([7, D], dt);
            Cpu.Embedding(cw, ci, cy); Gpu.Embedding(gw, gi, gy);
            Exact(cy, gy, "embedding fwd");
            foreach (var wdt in Floats)
            {
                var (cdy, gdy) = RandPair(r, [7, D], dt);
                var (cdw, gdw) = RandPair(r, shape, wdt);
                Cpu.EmbeddingBackward(cdy, ci, cdw); Gpu.EmbeddingBackward(gdy, gi, gdw);
                Close(cdw, gdw, $"embedding bwd (dweight {wdt.Name()})", wdt == DType.BF16 ? 2 : 5);
            }
        }
    }

    [TestMethod]
    public void DropoutMatchesCpuMask()
    {
        var r = new Random(10);
        foreach (var (shape, dt) in Cases([1], [3, 37], [1000]))
        foreach (var p in new[] { 0f, 0.3f, 1f })
        {
            var (cx, gx) = RandPair(r, shape, dt);
            var (cy, gy) = EmptyPair(shape, dt);
            ulong seed = 0x1234_5678_9abc_def0UL, offset = 12345678901UL;
            Cpu.Dropout(cx, p, seed, offset, cy); Gpu.Dropout(gx, p, seed, offset, gy);
            Close(cy, gy, $"dropout p={p}", 0.01);
            var (cdx, gdx) = RandPair(r, shape, dt);
            Cpu.DropoutBackward(cx, p, seed, offset, cdx); Gpu.DropoutBackward(gx, p, seed, offset, gdx);
            Close(cdx, gdx, $"dropout bwd p={p}");
        }
        // The mask is a function of (seed, offset+e): a shifted offset gives the shifted mask.
        var big = Keep(Gpu.FromFloats(Enumerable.Repeat(1f, 64).ToArray(), [64]));
        var m1 = Keep(Gpu.Empty([64], DType.F32)); var m2 = Keep(Gpu.Empty([64], DType.F32));
        Gpu.Dropout(big, 0.5f, 7, 100, m1); Gpu.Dropout(big, 0.5f, 7, 101, m2);
        CollectionAssert.AreEqual(m1.ToArray<float>()[1..], m2.ToArray<float>()[..^1]);
    }

    // ------------------------------------------------------------------ reductions

    [TestMethod]
    public void Reductions()
    {
        var r = new Random(11);
        foreach (var (shape, dt) in Cases([1, 1], [7, 37], [33, 128], [2, 4099], [300, 3]))
        {
            int C = shape[^1]; long rows = ShapeUtil.Rows(shape);
            var (cx, gx) = RandPair(r, shape, dt, 1, 0.25);
            foreach (var odt in Floats)
            {
                var (cl, gl) = EmptyPair([(int)rows], odt);
                Cpu.SumLastDim(cx, cl); Gpu.SumLastDim(gx, gl); Close(cl, gl, $"sum_last -> {odt.Name()}", 20);
                var (cr, gr) = RandPair(r, [C], odt);
                Cpu.SumRows(cx, cr, true); Gpu.SumRows(gx, gr, true); Close(cr, gr, $"sum_rows += {odt.Name()}", 20);
                Cpu.SumRows(cx, cr, false); Gpu.SumRows(gx, gr, false); Close(cr, gr, $"sum_rows = {odt.Name()}", 20);
            }
            var (ca, ga) = EmptyPair([1], DType.F32);
            Cpu.SumAll(cx, ca); Gpu.SumAll(gx, ga); Close(ca, ga, "sum_all", 50);
        }
    }

    [TestMethod]
    public void SumOfSquaresManyTensors()
    {
        var r = new Random(12);
        var shapes = new[] { new[] { 3, 37 }, [1], [4099], [16, 16] };
        var cs = new List<Tensor>(); var gs = new List<Tensor>();
        for (int i = 0; i < shapes.Length; i++)
        {
            var (c, g) = RandPair(r, shapes[i], Floats[i % 2]);
            cs.Add(c); gs.Add(g);
        }
        var (cy, gy) = EmptyPair([1], DType.F32);
        Cpu.SumOfSquares(cs, cy); Gpu.SumOfSquares(gs, gy);
        Close(cy, gy, "sum of squares", 50);
    }

    // ------------------------------------------------------------------ layout

    [TestMethod]
    public void PermuteAllDtypes()
    {
        var r = new Random(13);
        var cases = new (int[] Shape, int[] Perm)[]
        {
            ([5], [0]), ([3, 7], [1, 0]), ([2, 3, 5, 7], [0, 2, 1, 3]), ([2, 3, 4, 5], [3, 1, 0, 2]),
            ([2, 1, 3, 2, 3, 2], [5, 3, 1, 4, 0, 2]),
        };
        foreach (var (shape, perm) in cases)
        {
            var yshape = perm.Select(p => shape[p]).ToArray();
            foreach (var dt in new[] { DType.F32, DType.BF16, DType.I32, DType.I64 })
            {
                long n = ShapeUtil.Numel(shape);
                var (cx, gx) = dt.IsFloat() ? RandPair(r, shape, dt)
                    : IdxPair(Enumerable.Range(0, (int)n).Select(i => (long)r.Next(-1000, 1000)).ToArray(), shape, dt);
                var (cy, gy) = EmptyPair(yshape, dt);
                Cpu.Permute(cx, perm, cy, false); Gpu.Permute(gx, perm, gy, false);
                Exact(cy, gy, $"permute {dt.Name()} [{string.Join(",", perm)}]");
                if (dt.IsFloat())
                {
                    var (cz, gz) = RandPair(r, yshape, dt);
                    Cpu.Permute(cx, perm, cz, true); Gpu.Permute(gx, perm, gz, true);
                    Close(cz, gz, "permute accumulate");
                }
            }
        }
    }

    [TestMethod]
    public void CopySliceAndAccumulate()
    {
        var r = new Random(14);
        foreach (var dt in new[] { DType.F32, DType.BF16, DType.I64 })
        {
            // concat-like: x [2,3,5] rows 1..3 of axis 1 into y [2,6,5] at 2
            foreach (var (xs, ys, axis, s, d, len) in new (int[], int[], int, int, int, int)[]
                     { ([2, 3, 5], [2, 6, 5], 1, 1, 2, 2), ([7], [9], 0, 0, 9 - 7, 7), ([4, 3, 37], [4, 3, 40], 2, 5, 1, 32), ([3, 2], [5, 2], 0, 1, 4, 1) })
            {
                var (cx, gx) = dt.IsFloat() ? RandPair(r, xs, dt)
                    : IdxPair(Enumerable.Range(0, (int)ShapeUtil.Numel(xs)).Select(i => (long)i * 3 - 7).ToArray(), xs, dt);
                var (cy, gy) = dt.IsFloat() ? RandPair(r, ys, dt)
                    : IdxPair(new long[ShapeUtil.Numel(ys)], ys, dt);
                Cpu.CopySlice(cx, axis, s, cy, d, len, false); Gpu.CopySlice(gx, axis, s, gy, d, len, false);
                Exact(cy, gy, $"copy_slice {dt.Name()}");
                if (dt.IsFloat())
                {
                    Cpu.CopySlice(cx, axis, s, cy, d, len, true); Gpu.CopySlice(gx, axis, s, gy, d, len, true);
                    Close(cy, gy, $"copy_slice accumulate {dt.Name()}");
                }
            }
        }
        var a = Keep(Gpu.Zeros([2, 3], DType.F32)); var b = Keep(Gpu.Zeros([2, 3], DType.F32));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Gpu.CopySlice(a, 1, 2, b, 0, 2, false));
    }

    // ------------------------------------------------------------------ optimizer

    [TestMethod]
    public void AdamWMultiTensor()
    {
        var r = new Random(15);
        var specs = new (int N, DType P, DType G, bool Master)[]
        {
            (37, DType.F32, DType.F32, false), (1, DType.F32, DType.BF16, false),
            (4099, DType.BF16, DType.F32, true), (300, DType.BF16, DType.BF16, true),
        };
        var cg = new List<AdamWTensor>(); var gg = new List<AdamWTensor>();
        var check = new List<(Tensor, Tensor, string)>();
        for (int i = 0; i < specs.Length; i++)
        {
            var (n, pdt, gdt, master) = specs[i];
            var w = Rand(r, n);
            var (cp, gp) = Pair(w, [n], pdt);
            var (cgr, ggr) = RandPair(r, [n], gdt, 0.1);
            var (cm, gm) = RandPair(r, [n], DType.F32, 0.01);
            var (cv, gv) = Pair(Rand(r, n, 0.001, 0.001), [n], DType.F32);
            (Tensor, Tensor)? ms = master ? Pair(w, [n], DType.F32) : null;
            float lr = 1e-3f * (i + 1), wd = i % 2 == 0 ? 0.05f : 0f;
            cg.Add(new AdamWTensor(cp, cgr, cm, cv, ms?.Item1, lr, wd));
            gg.Add(new AdamWTensor(gp, ggr, gm, gv, ms?.Item2, lr, wd));
            check.Add((cp, gp, $"param {i}")); check.Add((cm, gm, $"m {i}")); check.Add((cv, gv, $"v {i}"));
            if (ms is { } mm) check.Add((mm.Item1, mm.Item2, $"master {i}"));
        }
        for (int step = 1; step <= 2; step++)
        {
            Cpu.AdamW(cg, 0.9f, 0.999f, 1e-8f, step, 0.5f);
            Gpu.AdamW(gg, 0.9f, 0.999f, 1e-8f, step, 0.5f);
        }
        foreach (var (c, g, what) in check) Close(c, g, "adamw " + what, 10);
    }
}

[TestClass]
[TestCategory("Emulated")]
public sealed class CudaOpsEmulatedTests : CudaOpsTestBase
{
    protected override CudaBackend Gpu => TestDevices.Emulated;
}

[TestClass]
[TestCategory("Gpu")]
public sealed class CudaOpsGpuTests : CudaOpsTestBase
{
    protected override CudaBackend Gpu => TestDevices.Gpu;
}
