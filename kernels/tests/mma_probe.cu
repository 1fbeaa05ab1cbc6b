// mma_probe.cu — small tensor-core GEMMs and fragment probes over ptx.cuh.
//
// Purpose: the same tests run on the emulator (CI, category Emulated) and on a real GPU (category
// Gpu); agreement on both proves the emulator's ldmatrix/mma fragment layouts and cp.async group
// semantics match the hardware. Not a fast GEMM: one warp per 16x8 output tile.
#include "ptx.cuh"

#define PROBE_PAD 8  // bf16 elements of row padding (keeps 16-byte row alignment for ldmatrix)

// Stages the 16x16 A tile and the 8x16 B tile (B given as [N,K]) of k-step k0 with 16-byte cp.async.
__device__ __forceinline__ void probe_load_tn(unsigned short (*sA)[16 + PROBE_PAD], unsigned short (*sB)[16 + PROBE_PAD],
                                              const unsigned short* A, const unsigned short* B, int m0, int n0, int k0,
                                              int K, int lane)
{
    int row = lane >> 1, chunk = (lane & 1) * 8;
    cp_async_cg_16(&sA[row][chunk], A + (long long)(m0 + row) * K + k0 + chunk);
    if (lane < 16) cp_async_cg_16(&sB[row][chunk], B + (long long)(n0 + row) * K + k0 + chunk);
}

// C[M,N] (f32) = A[M,K] · B[N,K]^T, A and B bf16 row-major. grid (N/8, M/16), block 32.
// M % 16 == 0, N % 8 == 0, K % 16 == 0. Double-buffered: k-step kt+1 is in flight while kt is used.
extern "C" __global__ void mma_probe_gemm(const unsigned short* A, const unsigned short* B, float* C, int M, int N, int K)
{
    __shared__ __align__(16) unsigned short sA[2][16][16 + PROBE_PAD];
    __shared__ __align__(16) unsigned short sB[2][8][16 + PROBE_PAD];
    int lane = threadIdx.x;
    int m0 = blockIdx.y * 16, n0 = blockIdx.x * 8;
    int nk = K / 16;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};

    probe_load_tn(sA[0], sB[0], A, B, m0, n0, 0, K, lane);
    cp_async_commit();
    for (int kt = 0; kt < nk; kt++)
    {
        if (kt + 1 < nk) probe_load_tn(sA[(kt + 1) & 1], sB[(kt + 1) & 1], A, B, m0, n0, (kt + 1) * 16, K, lane);
        cp_async_commit();          // possibly empty, so "all but the newest group" is always k-step kt
        cp_async_wait_group<1>();
        __syncwarp();               // the other lanes' copies of this k-step are visible
        int buf = kt & 1;
        u32 a[4], b[2];
        // A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
        ldmatrix_x4(a, &sA[buf][(lane & 7) + ((lane >> 3) & 1) * 8][(lane >> 4) * 8]);
        // B stored [n][k] is B^T row-major = the column-major K x 8 operand: no transpose needed.
        ldmatrix_x2(b, &sB[buf][lane & 7][((lane >> 3) & 1) * 8]);
        mma_m16n8k16_bf16(acc, a, b, acc);
        __syncwarp();               // everyone is done with `buf` before it is refilled
    }
    int g = lane >> 2, t = lane & 3;
    float* c0 = C + (long long)(m0 + g) * N + n0 + 2 * t;
    float* c1 = C + (long long)(m0 + g + 8) * N + n0 + 2 * t;
    c0[0] = acc[0]; c0[1] = acc[1];
    c1[0] = acc[2]; c1[1] = acc[3];
}

// C[M,N] (f32) = A[M,K] · B[K,N], B row-major: its k-rows are loaded with ldmatrix .trans.
// use_k8 != 0 splits each k-step into two m16n8k8 MMAs. Same grid/block/shape rules as above.
extern "C" __global__ void mma_probe_gemm_nn(const unsigned short* A, const unsigned short* B, float* C, int M, int N,
                                             int K, int use_k8)
{
    __shared__ __align__(16) unsigned short sA[2][16][16 + PROBE_PAD];
    __shared__ __align__(16) unsigned short sB[2][16][8 + PROBE_PAD];
    int lane = threadIdx.x;
    int m0 = blockIdx.y * 16, n0 = blockIdx.x * 8;
    int nk = K / 16;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int kt = 0; kt < nk; kt++)
    {
        int buf = kt & 1, k0 = kt * 16;
        int row = lane >> 1, chunk = (lane & 1) * 8;
        cp_async_cg_16(&sA[buf][row][chunk], A + (long long)(m0 + row) * K + k0 + chunk);
        if (lane < 16) cp_async_cg_16(&sB[buf][lane][0], B + (long long)(k0 + lane) * N + n0);
        cp_async_wait_all();
        __syncwarp();
        u32 a[4], b[2];
        ldmatrix_x4(a, &sA[buf][(lane & 7) + ((lane >> 3) & 1) * 8][(lane >> 4) * 8]);
        // Matrix 0 = k rows 0-7, matrix 1 = k rows 8-15 (lanes 16-31 repeat valid addresses).
        ldmatrix_x2_trans(b, &sB[buf][lane & 15][0]);
        if (use_k8)
        {
            mma_m16n8k8_bf16(acc, a, b, acc);
            mma_m16n8k8_bf16(acc, a + 2, b + 1, acc);
        }
        else
            mma_m16n8k16_bf16(acc, a, b, acc);
        __syncwarp();
    }
    int g = lane >> 2, t = lane & 3;
    float* c0 = C + (long long)(m0 + g) * N + n0 + 2 * t;
    float* c1 = C + (long long)(m0 + g + 8) * N + n0 + 2 * t;
    c0[0] = acc[0]; c0[1] = acc[1];
    c1[0] = acc[2]; c1[1] = acc[3];
}

// Raw ldmatrix results. src: 32 rows of 8 b16. Lane L points at row (5L + 3) % 32 of the staged copy.
// out (768 u32): [variant*128 + lane*4 + i], variants x4, x4.trans, x2, x2.trans, x1, x1.trans
// (registers a variant does not produce stay as they were). One warp.
extern "C" __global__ void ldmatrix_probe(const unsigned short* src, u32* out)
{
    __shared__ __align__(16) unsigned short s[32][8];
    int lane = threadIdx.x;
    for (int j = 0; j < 8; j++) s[lane][j] = src[lane * 8 + j];
    __syncwarp();
    const unsigned short* row = &s[(5 * lane + 3) & 31][0];
    u32 r[4];
    ldmatrix_x4(r, row);
    for (int i = 0; i < 4; i++) out[0 * 128 + lane * 4 + i] = r[i];
    ldmatrix_x4_trans(r, row);
    for (int i = 0; i < 4; i++) out[1 * 128 + lane * 4 + i] = r[i];
    ldmatrix_x2(r, row);
    for (int i = 0; i < 2; i++) out[2 * 128 + lane * 4 + i] = r[i];
    ldmatrix_x2_trans(r, row);
    for (int i = 0; i < 2; i++) out[3 * 128 + lane * 4 + i] = r[i];
    ldmatrix_x1(r, row);
    out[4 * 128 + lane * 4] = r[0];
    ldmatrix_x1_trans(r, row);
    out[5 * 128 + lane * 4] = r[0];
}

// Raw mma on per-lane fragments: lane L uses a[L*4..], b[L*2..], c[L*4..] and writes d[L*4..].
// k8 != 0: m16n8k8 with a[L*4+0..1], b[L*2+0]. One warp.
extern "C" __global__ void mma_fragment_probe(const u32* a, const u32* b, const float* c, float* d, int k8)
{
    int lane = threadIdx.x;
    u32 ra[4], rb[2];
    float rc[4], rd[4];
    for (int i = 0; i < 4; i++) { ra[i] = a[lane * 4 + i]; rc[i] = c[lane * 4 + i]; }
    rb[0] = b[lane * 2];
    rb[1] = b[lane * 2 + 1];
    if (k8) mma_m16n8k8_bf16(rd, ra, rb, rc);
    else mma_m16n8k16_bf16(rd, ra, rb, rc);
    for (int i = 0; i < 4; i++) d[lane * 4 + i] = rd[i];
}

// cp.async group semantics: each thread issues three 4-byte copies in three groups, then reads its
// destination after wait_group<2>, <1>, <0>; out[t*9 + 3*step + j] = dst word j after step.
// On the emulator unfinished copies are visibly not done (dst keeps its -1 fill); on the GPU they may
// or may not be, so only the "must be done" words are compared there.
extern "C" __global__ void cp_async_probe(const int* src, int* out)
{
    __shared__ __align__(16) int s[128][4];
    int t = threadIdx.x;
    for (int j = 0; j < 3; j++) s[t][j] = -1;
    for (int j = 0; j < 3; j++)
    {
        cp_async_ca_4(&s[t][j], src + t * 3 + j);
        cp_async_commit();
    }
    cp_async_wait_group<2>();
    for (int j = 0; j < 3; j++) out[t * 9 + j] = s[t][j];
    cp_async_wait_group<1>();
    for (int j = 0; j < 3; j++) out[t * 9 + 3 + j] = s[t][j];
    cp_async_wait_group<0>();
    for (int j = 0; j < 3; j++) out[t * 9 + 6 + j] = s[t][j];
}
