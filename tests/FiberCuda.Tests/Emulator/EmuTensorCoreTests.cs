using FiberCuda.Backends.Cpu;
using FiberCuda.Runtime;
using FiberCuda.Tensors;

namespace FiberCuda.Tests.Emulator;

/// <summary>
/// ptx.cuh: ldmatrix/mma fragment layouts against an independent C# transcription of the PTX ISA
/// fragment tables, cp.async group semantics, and the mma_probe GEMMs against CpuGemm. The same tests
/// run on the emulator (<see cref="EmuTensorCoreTests"/>) and on a real GPU (<see cref="GpuTensorCoreTests"/>);
/// passing on both shows the emulator's fragment layouts are the hardware's.
/// </summary>
public abstract class TensorCoreTestsBase
{
    const string File = "tests/mma_probe.cu";

    internal abstract ProbeHarness H { get; }
    /// <summary>The emulator finishes cp.async copies exactly at the covering wait; a GPU may finish them earlier.</summary>
    protected abstract bool ExactAsyncCompletion { get; }

    IGpuDevice Device => H.Device;
    nint Upload<T>(T[] data) where T : unmanaged => H.Upload(data);
    nint Zeros<T>(int n) where T : unmanaged => H.Zeros<T>(n);
    T[] Download<T>(nint p, int n) where T : unmanaged => H.Download<T>(p, n);
    void Launch(string file, string name, Dim3 grid, Dim3 block, int smem, params object[] args) => H.Launch(file, name, grid, block, smem, args);

    // ---- PTX ISA fragment tables, written per element index as the ISA states them ----------------
    // mma.m16n8k16 .bf16 A (16x16): 8 elements a0..a7 per thread, two per 32-bit register.
    //   row = groupID for a0,a1,a4,a5, groupID+8 for a2,a3,a6,a7; col = threadID_in_group*2 + (i & 1), +8 for i >= 4.
    static (int Row, int Col) AElemK16(int lane, int i)
    {
        int group = lane >> 2, tig = lane % 4;
        int row = (i is 0 or 1 or 4 or 5) ? group : group + 8;
        int col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
        return (row, col);
    }
    // m16n8k8 .bf16 A (16x8): a0..a3; row = groupID for a0,a1, groupID+8 for a2,a3; col = threadID_in_group*2 + (i & 1).
    static (int Row, int Col) AElemK8(int lane, int i) => (i < 2 ? lane >> 2 : (lane >> 2) + 8, (lane % 4) * 2 + (i & 1));
    // B (Kx8): b0..b3 (k16) / b0,b1 (k8); row(k) = threadID_in_group*2 + (i & 1), +8 for i >= 2; col(n) = groupID.
    static (int Row, int Col) BElem(int lane, int i) => ((lane % 4) * 2 + (i & 1) + (i >= 2 ? 8 : 0), lane >> 2);
    // C/D (16x8 f32): c0..c3; row = groupID for c0,c1, groupID+8 for c2,c3; col = threadID_in_group*2 + (i & 1).
    static (int Row, int Col) CElem(int lane, int i) => (i < 2 ? lane >> 2 : (lane >> 2) + 8, (lane % 4) * 2 + (i & 1));

    static ushort[] RandomBf16(Random rng, int n, float scale = 1f)
        => Enumerable.Range(0, n).Select(_ => BFloat16.FromFloat((float)(rng.NextDouble() * 2 - 1) * scale)).ToArray();

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void MmaFragmentsFollowThePtxLayout(bool k8)
    {
        int K = k8 ? 8 : 16;
        var rng = new Random(k8 ? 11 : 12);
        var A = new float[16, K];
        var B = new float[K, 8];
        var C = new float[16, 8];
        for (int r = 0; r < 16; r++) for (int k = 0; k < K; k++) A[r, k] = BFloat16.Round((float)rng.NextDouble() * 4 - 2);
        for (int k = 0; k < K; k++) for (int n = 0; n < 8; n++) B[k, n] = BFloat16.Round((float)rng.NextDouble() * 4 - 2);
        for (int r = 0; r < 16; r++) for (int n = 0; n < 8; n++) C[r, n] = (float)rng.NextDouble() * 10 - 5;

        var a = new uint[32 * 4];
        var b = new uint[32 * 2];
        var c = new float[32 * 4];
        for (int lane = 0; lane < 32; lane++)
        {
            for (int i = 0; i < (k8 ? 4 : 8); i++)
            {
                var (r, col) = k8 ? AElemK8(lane, i) : AElemK16(lane, i);
                a[lane * 4 + i / 2] |= (uint)BFloat16.FromFloat(A[r, col]) << (16 * (i & 1));
            }
            for (int i = 0; i < (k8 ? 2 : 4); i++)
            {
                var (r, col) = BElem(lane, i);
                b[lane * 2 + i / 2] |= (uint)BFloat16.FromFloat(B[r, col]) << (16 * (i & 1));
            }
            for (int i = 0; i < 4; i++) { var (r, col) = CElem(lane, i); c[lane * 4 + i] = C[r, col]; }
        }
        nint da = Upload(a), db = Upload(b), dc = Upload(c), dd = Zeros<float>(128);
        Launch(File, "mma_fragment_probe", 1, 32, 0, da, db, dc, dd, k8 ? 1 : 0);
        var d = Download<float>(dd, 128);
        for (int lane = 0; lane < 32; lane++)
            for (int i = 0; i < 4; i++)
            {
                var (r, col) = CElem(lane, i);
                double want = C[r, col];
                for (int k = 0; k < K; k++) want += (double)A[r, k] * B[k, col];
                Assert.AreEqual(want, d[lane * 4 + i], 1e-5 * (1 + Math.Abs(want)), $"lane {lane} d{i} = D[{r},{col}]");
            }
        foreach (var p in new[] { da, db, dc, dd }) Device.Free(p);
    }

    [TestMethod]
    public void LdmatrixFragmentsFollowThePtxLayout()
    {
        var src = Enumerable.Range(0, 256).Select(i => (ushort)(0x1000 + i * 7)).ToArray();
        nint ds = Upload(src), dout = Zeros<uint>(768);
        Launch(File, "ldmatrix_probe", 1, 32, 0, ds, dout);
        var got = Download<uint>(dout, 768);
        // Lane L points at row (5L+3)%32; matrix m's row r is the row lane 8m+r points at.
        ushort Elem(int m, int r, int col) => src[((5 * (8 * m + r) + 3) % 32) * 8 + col];
        int[] counts = [4, 4, 2, 2, 1, 1];
        for (int v = 0; v < 6; v++)
        {
            bool trans = (v & 1) == 1;
            for (int lane = 0; lane < 32; lane++)
                for (int m = 0; m < counts[v]; m++)
                {
                    // ISA: thread lane holds row lane/4, elements 2*(lane%4) and 2*(lane%4)+1; .trans swaps row and column.
                    int row = lane / 4, c0 = 2 * (lane % 4);
                    ushort lo = trans ? Elem(m, c0, row) : Elem(m, row, c0);
                    ushort hi = trans ? Elem(m, c0 + 1, row) : Elem(m, row, c0 + 1);
                    Assert.AreEqual(lo | ((uint)hi << 16), got[v * 128 + lane * 4 + m], $"variant {v} lane {lane} matrix {m}");
                }
        }
        Device.Free(ds); Device.Free(dout);
    }

    [TestMethod]
    public void CpAsyncCompletesOnlyTheWaitedGroups()
    {
        const int threads = 64;
        var src = Enumerable.Range(0, threads * 3).Select(i => i * 10 + 1).ToArray();
        nint ds = Upload(src), dout = Zeros<int>(threads * 9);
        Launch(File, "cp_async_probe", 1, threads, 0, ds, dout);
        var got = Download<int>(dout, threads * 9);
        for (int t = 0; t < threads; t++)
            for (int step = 0; step < 3; step++)
                for (int j = 0; j < 3; j++)
                {
                    // wait_group<2-step> leaves the newest 2-step groups pending.
                    if (j <= step) Assert.AreEqual(src[t * 3 + j], got[t * 9 + 3 * step + j], $"thread {t} step {step} word {j}");
                    else if (ExactAsyncCompletion) Assert.AreEqual(-1, got[t * 9 + 3 * step + j], $"thread {t} step {step} word {j} (not waited for)");
                }
        Device.Free(ds); Device.Free(dout);
    }

    [TestMethod]
    [DataRow(16, 8, 16)]
    [DataRow(32, 24, 48)]
    [DataRow(48, 40, 128)]
    public void MmaProbeGemmMatchesCpuGemm(int M, int N, int K)
    {
        var rng = new Random(M * 1000 + N * 10 + K);
        var a = RandomBf16(rng, M * K);
        var b = RandomBf16(rng, N * K);
        nint da = Upload(a), db = Upload(b), dc = Zeros<float>(M * N);
        Launch(File, "mma_probe_gemm", new Dim3((uint)(N / 8), (uint)(M / 16)), 32, 0, da, db, dc, M, N, K);
        CompareGemm(a, b, Download<float>(dc, M * N), CpuReference(a, b, M, N, K, transB: true), M, N, K, bT: true);
        foreach (var p in new[] { da, db, dc }) Device.Free(p);
    }

    [TestMethod]
    [DataRow(16, 8, 16, false)]
    [DataRow(32, 16, 64, false)]
    [DataRow(32, 16, 64, true)]
    public void MmaProbeGemmWithTransposedLdmatrixMatchesCpuGemm(int M, int N, int K, bool k8)
    {
        var rng = new Random(M + N + K + (k8 ? 1 : 0));
        var a = RandomBf16(rng, M * K);
        var b = RandomBf16(rng, K * N);
        nint da = Upload(a), db = Upload(b), dc = Zeros<float>(M * N);
        Launch(File, "mma_probe_gemm_nn", new Dim3((uint)(N / 8), (uint)(M / 16)), 32, 0, da, db, dc, M, N, K, k8 ? 1 : 0);
        CompareGemm(a, b, Download<float>(dc, M * N), CpuReference(a, b, M, N, K, transB: false), M, N, K, bT: false);
        foreach (var p in new[] { da, db, dc }) Device.Free(p);
    }

    // CpuGemm on host copies (the device's memory need not be host-addressable).
    static unsafe float[] CpuReference(ushort[] a, ushort[] b, int M, int N, int K, bool transB)
    {
        var c = new float[M * N];
        fixed (ushort* pa = a) fixed (ushort* pb = b) fixed (float* pc = c)
            CpuGemm.Gemm(new GemmDesc((nint)pa, (nint)pb, (nint)pc, 0, DType.BF16, DType.F32, DType.F32, M, N, K, false, transB, 1f, 0f, 1, 0, 0, 0));
        return c;
    }

    // fp32 summation-order tolerance: a few ulps of the sum of |products|.
    static void CompareGemm(ushort[] a, ushort[] b, float[] got, float[] cpu, int M, int N, int K, bool bT)
    {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
            {
                double absSum = 0;
                for (int k = 0; k < K; k++)
                    absSum += Math.Abs(BFloat16.ToFloat(a[i * K + k]) * BFloat16.ToFloat(bT ? b[j * K + k] : b[k * N + j]));
                double tol = 4 * K * 6e-8 * absSum + 1e-30;
                Assert.AreEqual(cpu[i * N + j], got[i * N + j], tol, $"C[{i},{j}] (M={M} N={N} K={K})");
            }
    }
}

[TestClass]
[TestCategory("Emulated")]
public sealed class EmuTensorCoreTests : TensorCoreTestsBase
{
    internal override ProbeHarness H => EmuHarness.Harness;
    protected override bool ExactAsyncCompletion => true;
}

[TestClass]
[TestCategory("Gpu")]
public sealed class GpuTensorCoreTests : TensorCoreTestsBase
{
    static readonly Lazy<(ProbeHarness? H, string Reason)> Shared = new(() =>
        CudaDevice.TryCreate(out var d, out var reason) ? (new ProbeHarness(d!), "") : (null, reason));

    internal override ProbeHarness H
    {
        get
        {
            var (h, reason) = Shared.Value;
            if (h is null) Assert.Inconclusive("no GPU: " + reason);
            return h!;
        }
    }
    protected override bool ExactAsyncCompletion => false;
}
