// itc.cu — image-text contrastive loss with feature queues (ALBEF/FIBER ITC), loss and gradients in
// one pass over the keys, plus the small helpers the autograd backward and the temperature need.
//
// Rows: direction 0 (image→text) has query imgQ[b] and keys [txtK ‖ txtQueue]; direction 1 (text→image)
// has query txtQ[b] and keys [imgK ‖ imgQueue]. s_j = q·k_j / τ, target = key b (the in-batch diagonal).
// Per row the kernel keeps a flash-attention style online state over key tiles: running max m, Σe
// (e = exp(s − m)), Σe·s (for ∂/∂τ) and the D-vector Σe·k (for ∂/∂q); all are rescaled when m grows.
// So [B, B+Q] is never stored and the keys are read once per block of ITC_R query rows.
//   row loss  = lse − s_b
//   ∂/∂τ      = −(E_p[s] − s_b) / τ
//   ∂/∂q      = (Σ_j p_j k_j − k_b) / τ
// Each is then scaled by 1/(2B) (the mean over B rows, and the ½ of the two directions).
#include "common.cuh"

#define ITC_R 4        // query rows per block: every key load feeds ITC_R dot products
#define ITC_TK 64      // keys per tile (two per lane in the online update)
#define ITC_DMAX 1024  // largest feature width (FIBER uses 256 or 768)
#define ITC_THREADS 256
#define ITC_DPT (ITC_DMAX / ITC_THREADS)

template <typename T>
__device__ __forceinline__ const T* itc_key(const T* batch, const T* queue, int B, int D, int j)
{
    return j < B ? batch + (i64)j * D : queue + (i64)(j - B) * D;
}

template <typename T>
__device__ __forceinline__ void itc_rows_body(const T* imgQ, const T* txtQ, const T* imgK, const T* txtK,
                                              const T* imgQueue, const T* txtQueue, const float* temp,
                                              int B, int Q, int D, float* rowLoss, float* rowTemp, T* gImg, T* gTxt)
{
    __shared__ float qs[ITC_R * ITC_DMAX];
    __shared__ float sc[ITC_R * ITC_TK];
    __shared__ float corr[ITC_R];
    __shared__ float sdiag[ITC_R];
    __shared__ float fin[ITC_R];

    const int dir = blockIdx.y;
    const T* qsrc = dir == 0 ? imgQ : txtQ;
    const T* kb = dir == 0 ? txtK : imgK;
    const T* kq = dir == 0 ? txtQueue : imgQueue;
    T* g = dir == 0 ? gImg : gTxt;
    const bool want = g != nullptr;
    const int r0 = blockIdx.x * ITC_R;
    const int nr = min(ITC_R, B - r0);
    const float inv_t = 1.0f / temp[0];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarps = blockDim.x >> 5;
    const int N = B + Q;
    const float NEG = fiber_neg_inf();

    for (int i = tid; i < ITC_R * D; i += blockDim.x)
    {
        int r = i / D, d = i - r * D;
        qs[r * ITC_DMAX + d] = r < nr ? to_f(qsrc[(i64)(r0 + r) * D + d]) : 0.0f;
    }
    if (tid < ITC_R) sdiag[tid] = 0.0f;
    float m = NEG, l = 0.0f, es = 0.0f; // row `warp`'s state, identical in every lane of warps < ITC_R
    float acc[ITC_R][ITC_DPT];
#pragma unroll
    for (int r = 0; r < ITC_R; r++)
#pragma unroll
        for (int k = 0; k < ITC_DPT; k++) acc[r][k] = 0.0f;
    __syncthreads();

    for (int j0 = 0; j0 < N; j0 += ITC_TK)
    {
        const int nk = min(ITC_TK, N - j0);
        // (a) scores of this tile: one key per warp at a time, lanes across D
        for (int jj = warp; jj < ITC_TK; jj += nwarps)
        {
            float dot[ITC_R];
#pragma unroll
            for (int r = 0; r < ITC_R; r++) dot[r] = 0.0f;
            if (jj < nk)
            {
                const T* k = itc_key(kb, kq, B, D, j0 + jj);
                for (int d = lane; d < D; d += 32)
                {
                    float kv = to_f(k[d]);
#pragma unroll
                    for (int r = 0; r < ITC_R; r++) dot[r] += qs[r * ITC_DMAX + d] * kv;
                }
            }
#pragma unroll
            for (int r = 0; r < ITC_R; r++) dot[r] = warp_sum(dot[r]);
            if (lane == 0)
            {
#pragma unroll
                for (int r = 0; r < ITC_R; r++)
                {
                    bool ok = jj < nk && r < nr;
                    sc[r * ITC_TK + jj] = ok ? dot[r] * inv_t : NEG;
                    if (ok && j0 + jj == r0 + r) sdiag[r] = dot[r] * inv_t;
                }
            }
        }
        __syncthreads();
        // (b) warp r folds the tile into row r's online state and turns scores into weights e = exp(s − m)
        if (warp < ITC_R)
        {
            const int r = warp;
            float s0 = sc[r * ITC_TK + lane], s1 = sc[r * ITC_TK + lane + 32];
            float mn = fmaxf(m, warp_max(fmaxf(s0, s1)));
            float c = 1.0f, e0 = 0.0f, e1 = 0.0f;
            if (mn != NEG) // a padding row (r >= nr) stays at zero
            {
                c = m == NEG ? 0.0f : expf(m - mn);
                if (s0 != NEG) e0 = expf(s0 - mn);
                if (s1 != NEG) e1 = expf(s1 - mn);
            }
            float ps = warp_sum(e0 + e1);
            float pes = warp_sum((s0 != NEG ? e0 * s0 : 0.0f) + (s1 != NEG ? e1 * s1 : 0.0f));
            l = l * c + ps;
            es = es * c + pes;
            m = mn;
            sc[r * ITC_TK + lane] = e0;
            sc[r * ITC_TK + lane + 32] = e1;
            if (lane == 0) corr[r] = c;
        }
        __syncthreads();
        // (c) Σ e·k over this tile, each thread owning columns tid, tid+256, ...
        if (want)
        {
#pragma unroll
            for (int k = 0; k < ITC_DPT; k++)
            {
                const int d = tid + k * ITC_THREADS;
                if (d < D)
                {
#pragma unroll
                    for (int r = 0; r < ITC_R; r++) acc[r][k] *= corr[r];
                    for (int jj = 0; jj < nk; jj++)
                    {
                        float kv = to_f(itc_key(kb, kq, B, D, j0 + jj)[d]);
#pragma unroll
                        for (int r = 0; r < ITC_R; r++) acc[r][k] += sc[r * ITC_TK + jj] * kv;
                    }
                }
            }
        }
        __syncthreads(); // sc and corr are rewritten by the next tile
    }

    if (warp < nr && lane == 0)
    {
        const int r = warp;
        const int row = dir * B + r0 + r;
        rowLoss[row] = m + logf(l) - sdiag[r];
        rowTemp[row] = -(es / l - sdiag[r]) * inv_t;
        fin[r] = 1.0f / l;
    }
    __syncthreads();
    if (want)
    {
        const float scale = inv_t / (2.0f * (float)B);
#pragma unroll
        for (int k = 0; k < ITC_DPT; k++)
        {
            const int d = tid + k * ITC_THREADS;
            if (d < D)
            {
#pragma unroll
                for (int r = 0; r < ITC_R; r++)
                {
                    if (r < nr)
                    {
                        const int b = r0 + r;
                        float v = acc[r][k] * fin[r] - to_f(kb[(i64)b * D + d]);
                        g[(i64)b * D + d] = from_f<T>(v * scale);
                    }
                }
            }
        }
    }
}

extern "C" __global__ void itc_rows_f32(const float* imgQ, const float* txtQ, const float* imgK, const float* txtK,
                                        const float* imgQueue, const float* txtQueue, const float* temp,
                                        int B, int Q, int D, float* rowLoss, float* rowTemp, float* gImg, float* gTxt)
{ itc_rows_body(imgQ, txtQ, imgK, txtK, imgQueue, txtQueue, temp, B, Q, D, rowLoss, rowTemp, gImg, gTxt); }

extern "C" __global__ void itc_rows_bf16(const bf16* imgQ, const bf16* txtQ, const bf16* imgK, const bf16* txtK,
                                         const bf16* imgQueue, const bf16* txtQueue, const float* temp,
                                         int B, int Q, int D, float* rowLoss, float* rowTemp, bf16* gImg, bf16* gTxt)
{ itc_rows_body(imgQ, txtQ, imgK, txtK, imgQueue, txtQueue, temp, B, Q, D, rowLoss, rowTemp, gImg, gTxt); }

// One block: loss = Σ rowLoss / (2B), gTemp = Σ rowTemp / (2B) (deterministic: fixed order per thread
// and a fixed tree). gTemp may be null.
extern "C" __global__ void itc_finish(const float* rowLoss, const float* rowTemp, int rows, float scale,
                                      float* loss, float* gTemp)
{
    __shared__ float scratch[32];
    float a = 0.0f, b = 0.0f;
    for (int i = threadIdx.x; i < rows; i += blockDim.x) { a += rowLoss[i]; b += rowTemp[i]; }
    a = block_sum(a, scratch);
    b = block_sum(b, scratch);
    if (threadIdx.x == 0)
    {
        loss[0] = a * scale;
        if (gTemp) gTemp[0] = b * scale;
    }
}

// y += s[0]·x (s read on the device; its dtype chosen at run time: 0 = f32, 1 = bf16).
template <typename T>
__device__ __forceinline__ void scale_acc_body(const void* s, int sdt, const T* x, T* y, long long n)
{
    const float a = load_dyn(s, 0, sdt);
    FIBER_GRID_LOOP(i, n) y[i] = from_f<T>(to_f(y[i]) + a * to_f(x[i]));
}
extern "C" __global__ void scale_acc_f32(const void* s, int sdt, const float* x, float* y, long long n)
{ scale_acc_body(s, sdt, x, y, n); }
extern "C" __global__ void scale_acc_bf16(const void* s, int sdt, const bf16* x, bf16* y, long long n)
{ scale_acc_body(s, sdt, x, y, n); }

// t = clamp(t, lo, hi); comparisons (not fminf/fmaxf) so that NaN stays NaN, like torch.clamp_.
template <typename T>
__device__ __forceinline__ void clamp_body(T* t, float lo, float hi, long long n)
{
    FIBER_GRID_LOOP(i, n)
    {
        float v = to_f(t[i]);
        if (v < lo) v = lo; else if (v > hi) v = hi;
        t[i] = from_f<T>(v);
    }
}
extern "C" __global__ void clamp_f32(float* t, float lo, float hi, long long n) { clamp_body(t, lo, hi, n); }
extern "C" __global__ void clamp_bf16(bf16* t, float lo, float hi, long long n) { clamp_body(t, lo, hi, n); }
