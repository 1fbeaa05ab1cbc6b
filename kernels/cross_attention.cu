// cross_attention.cu — fused multi-head cross-attention (forward and backward), head dim 32 or 64.
//
// Layouts (row-major, C = nH·D, head h = channels h·D..h·D+D−1):
//   q  [B, Lq, C]    k, v [B, Lk, C]    y [B, Lq, C]
//   mask [B, Lk]     additive per key (f32 or bf16, runtime dtype mdt: 0 f32, 1 bf16), or null
//   lse  [B, nH, Lq] f32, per-row logsumexp of the scores (saved for the backward)
// S = scale·q·kᵀ + mask[b, j]; P = softmax over the keys; y = P·v. Math is fp32 whatever T is.
//
// Lk is free (16 text tokens to thousands of image tokens), so nothing is sized by it: keys are
// streamed through shared memory in tiles of 32 with an online softmax (running max m, running sum l,
// the output accumulator rescaled by exp(m_old − m_new) when the max grows). No score matrix is
// stored; the backward recomputes P from q, k and lse.
// Work split: a block of 4 warps owns 16 rows (queries, or keys in the dK/dV pass) of one (b, h); a
// warp owns 4 of them. In a tile each lane owns one key (scores) and D/32 output channels (sums over
// the tile's keys, the lane's P value broadcast by shuffle). Tiles read as "one row per lane" are
// padded to D+1 floats so those reads are free of bank conflicts.
// Dropout on P (p > 0): element e = ((b·nH + h)·Lq + i)·Lk + j kept iff philox_uniform(seed, offset + e) ≥ p,
// scaled by 1/(1−p) — bit for bit F.Dropout's decision on the [B, nH, Lq, Lk] probability tensor. The
// softmax sum and lse are of the undropped scores; the backward uses D_i = dO_i·O_i unchanged.
// Rows past the end are computed on zero data and never stored; keys past Lk get a −inf score
// (forward), queries past Lq an lse of +inf (backward), so they weigh exactly zero.
#include "common.cuh"

#define XA_WARPS 4
#define XA_ROWS 4                      // rows per warp
#define XA_BROWS (XA_WARPS * XA_ROWS)  // rows per block
#define XA_T 32                        // keys (forward, dQ) or queries (dK/dV) per tile

__device__ __forceinline__ float xa_pos_inf() { return fiber_u2f(0x7f800000u); }

// Dropout factor of probability element e: 0 or 1/(1−p); 1 without dropout.
__device__ __forceinline__ float xa_keep(float dp, u64 seed, u64 offset, i64 e)
{
    if (dp <= 0.0f) return 1.0f;
    return philox_uniform(seed, offset + (u64)e) >= dp ? 1.0f / (1.0f - dp) : 0.0f;
}

// Mask values of keys j0..j0+31 into Ms (−inf past Lk, so those keys drop out of the softmax).
__device__ __forceinline__ void xa_load_mask(const void* mask, int mdt, int b, int Lk, int j0, float* Ms)
{
    for (int jj = threadIdx.x; jj < XA_T; jj += blockDim.x)
    {
        int j = j0 + jj;
        Ms[jj] = j < Lk ? (mask != nullptr ? load_dyn(mask, (i64)b * Lk + j, mdt) : 0.0f) : fiber_neg_inf();
    }
}

// rows [n][ld] (f32) ← head h of rows r0.. of x [B, L, C]; zeros past L.
template <typename T, int D>
__device__ __forceinline__ void xa_load_rows(const T* x, int b, int L, int C, int h, int r0, int n, float* rows, int ld)
{
    for (int e = threadIdx.x; e < n * D; e += blockDim.x)
    {
        int r = e / D, c = e % D, i = r0 + r;
        rows[r * ld + c] = i < L ? to_f(x[((i64)b * L + i) * C + h * D + c]) : 0.0f;
    }
}

// Shared memory: Q [16][D], K [32][D+1], V [32][D], mask [32].
template <typename T, int D>
__device__ __forceinline__ void xa_fwd(const T* q, const T* k, const T* v, const void* mask, int mdt, T* y, float* lse,
                                       int Lq, int Lk, int nH, float scale, float dp, u64 seed, u64 offset)
{
    constexpr int P = D / 32, LD = D + 1;
    FIBER_DYNAMIC_SMEM(float, sm);
    float* Qs = sm;
    float* Ks = Qs + XA_BROWS * D;
    float* Vs = Ks + XA_T * LD;
    float* Ms = Vs + XA_T * D;
    const int b = blockIdx.y / nH, h = blockIdx.y % nH, C = nH * D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int r0 = blockIdx.x * XA_BROWS;
    xa_load_rows<T, D>(q, b, Lq, C, h, r0, XA_BROWS, Qs, D);

    float m[XA_ROWS], l[XA_ROWS], o[XA_ROWS][P];
#pragma unroll
    for (int r = 0; r < XA_ROWS; r++)
    {
        m[r] = fiber_neg_inf(); l[r] = 0.0f;
#pragma unroll
        for (int u = 0; u < P; u++) o[r][u] = 0.0f;
    }
    for (int j0 = 0; j0 < Lk; j0 += XA_T)
    {
        __syncthreads(); // the previous tile is consumed
        xa_load_rows<T, D>(k, b, Lk, C, h, j0, XA_T, Ks, LD);
        xa_load_rows<T, D>(v, b, Lk, C, h, j0, XA_T, Vs, D);
        xa_load_mask(mask, mdt, b, Lk, j0, Ms);
        __syncthreads();
        const float* kr = Ks + lane * LD;
#pragma unroll
        for (int r = 0; r < XA_ROWS; r++)
        {
            const float* qr = Qs + (warp * XA_ROWS + r) * D;
            float acc = 0.0f;
#pragma unroll
            for (int c = 0; c < D; c++) acc += qr[c] * kr[c];
            float s = scale * acc + Ms[lane];
            float mn = fmaxf(m[r], warp_max(s));
            // A row whose keys so far are all −inf (a −inf mask) keeps a zero sum instead of NaNs.
            float base = mn == fiber_neg_inf() ? 0.0f : mn;
            float corr = expf(m[r] - base);
            float p = expf(s - base);
            l[r] = l[r] * corr + warp_sum(p);
            if (j0 + lane < Lk) p *= xa_keep(dp, seed, offset, ((i64)blockIdx.y * Lq + r0 + warp * XA_ROWS + r) * Lk + j0 + lane);
#pragma unroll
            for (int u = 0; u < P; u++) o[r][u] *= corr;
            for (int jj = 0; jj < XA_T; jj++)
            {
                float pj = __shfl_sync(FIBER_FULL_MASK, p, jj);
#pragma unroll
                for (int u = 0; u < P; u++) o[r][u] += pj * Vs[jj * D + lane + 32 * u];
            }
            m[r] = mn;
        }
    }
#pragma unroll
    for (int r = 0; r < XA_ROWS; r++)
    {
        int i = r0 + warp * XA_ROWS + r;
        if (i >= Lq) continue;
        float inv = 1.0f / l[r];
#pragma unroll
        for (int u = 0; u < P; u++) y[((i64)b * Lq + i) * C + h * D + lane + 32 * u] = from_f<T>(o[r][u] * inv);
        if (lane == 0) lse[((i64)b * nH + h) * Lq + i] = m[r] + logf(l[r]);
    }
}

// Backward, pass 0: Dd[b, h, i] = Σ_c dO_ic·O_ic (one warp per row).
template <typename T, int D>
__device__ __forceinline__ void xa_bwd_dot(const T* y, const T* dy, float* Dd, int B, int Lq, int nH)
{
    const int lane = threadIdx.x & 31, C = nH * D;
    const i64 rows = (i64)B * nH * Lq;
    for (i64 r = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += (i64)gridDim.x * (blockDim.x >> 5))
    {
        int i = (int)(r % Lq); i64 bh = r / Lq; int h = (int)(bh % nH), b = (int)(bh / nH);
        i64 o = ((i64)b * Lq + i) * C + h * D;
        float acc = 0.0f;
#pragma unroll
        for (int u = 0; u < D / 32; u++) acc += to_f(dy[o + lane + 32 * u]) * to_f(y[o + lane + 32 * u]);
        acc = warp_sum(acc);
        if (lane == 0) Dd[r] = acc;
    }
}

// Backward, pass 1 (per query row): dQ_i += scale·Σ_j dS_ij·k_j, dS_ij = P_ij·(dO_i·v_j − D_i).
// Shared memory: Q, dO [16][D], K, V [32][D+1], mask [32].
template <typename T, int D>
__device__ __forceinline__ void xa_bwd_dq(const T* q, const T* k, const T* v, const void* mask, int mdt, const float* lse,
                                          const float* Dd, const T* dy, T* dq, int Lq, int Lk, int nH, float scale,
                                          float dp_, u64 seed, u64 offset)
{
    constexpr int P = D / 32, LD = D + 1;
    FIBER_DYNAMIC_SMEM(float, sm);
    float* Qs = sm;
    float* dOs = Qs + XA_BROWS * D;
    float* Ks = dOs + XA_BROWS * D;
    float* Vs = Ks + XA_T * LD;
    float* Ms = Vs + XA_T * LD;
    const int b = blockIdx.y / nH, h = blockIdx.y % nH, C = nH * D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int r0 = blockIdx.x * XA_BROWS;
    xa_load_rows<T, D>(q, b, Lq, C, h, r0, XA_BROWS, Qs, D);
    xa_load_rows<T, D>(dy, b, Lq, C, h, r0, XA_BROWS, dOs, D);
    float L[XA_ROWS], Dr[XA_ROWS], g[XA_ROWS][P];
#pragma unroll
    for (int r = 0; r < XA_ROWS; r++)
    {
        int i = r0 + warp * XA_ROWS + r;
        i64 li = ((i64)b * nH + h) * Lq + i;
        L[r] = i < Lq ? lse[li] : xa_pos_inf();
        Dr[r] = i < Lq ? Dd[li] : 0.0f;
#pragma unroll
        for (int u = 0; u < P; u++) g[r][u] = 0.0f;
    }
    for (int j0 = 0; j0 < Lk; j0 += XA_T)
    {
        __syncthreads();
        xa_load_rows<T, D>(k, b, Lk, C, h, j0, XA_T, Ks, LD);
        xa_load_rows<T, D>(v, b, Lk, C, h, j0, XA_T, Vs, LD);
        xa_load_mask(mask, mdt, b, Lk, j0, Ms);
        __syncthreads();
        const float* kr = Ks + lane * LD;
        const float* vr = Vs + lane * LD;
#pragma unroll
        for (int r = 0; r < XA_ROWS; r++)
        {
            const float* qr = Qs + (warp * XA_ROWS + r) * D;
            const float* dr = dOs + (warp * XA_ROWS + r) * D;
            float x = 0.0f, dp = 0.0f;
#pragma unroll
            for (int c = 0; c < D; c++) { x += qr[c] * kr[c]; dp += dr[c] * vr[c]; }
            float p = expf(scale * x + Ms[lane] - L[r]);
            float kd = j0 + lane < Lk ? xa_keep(dp_, seed, offset, ((i64)blockIdx.y * Lq + r0 + warp * XA_ROWS + r) * Lk + j0 + lane) : 0.0f;
            float ds = p * (kd * dp - Dr[r]);
            for (int jj = 0; jj < XA_T; jj++)
            {
                float dsj = __shfl_sync(FIBER_FULL_MASK, ds, jj);
#pragma unroll
                for (int u = 0; u < P; u++) g[r][u] += dsj * Ks[jj * LD + lane + 32 * u];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < XA_ROWS; r++)
    {
        int i = r0 + warp * XA_ROWS + r;
        if (i >= Lq) continue;
#pragma unroll
        for (int u = 0; u < P; u++)
        {
            T* dst = dq + ((i64)b * Lq + i) * C + h * D + lane + 32 * u;
            *dst = from_f<T>(to_f(*dst) + scale * g[r][u]);
        }
    }
}

// Backward, pass 2 (per key row j, queries streamed in tiles, a lane per query):
// dV_j += Σ_i P_ij·dO_i, dK_j += scale·Σ_i dS_ij·q_i. Each block owns its keys' rows: no atomics.
// Shared memory: K, V [16][D], Q, dO [32][D+1], lse, D [32].
template <typename T, int D>
__device__ __forceinline__ void xa_bwd_dkdv(const T* q, const T* k, const T* v, const void* mask, int mdt, const float* lse,
                                            const float* Dd, const T* dy, T* dk, T* dv, int Lq, int Lk, int nH, float scale,
                                            float dp_, u64 seed, u64 offset)
{
    constexpr int P = D / 32, LD = D + 1;
    FIBER_DYNAMIC_SMEM(float, sm);
    float* Ks = sm;
    float* Vs = Ks + XA_BROWS * D;
    float* Qs = Vs + XA_BROWS * D;
    float* dOs = Qs + XA_T * LD;
    float* Ls = dOs + XA_T * LD;
    float* Ds = Ls + XA_T;
    const int b = blockIdx.y / nH, h = blockIdx.y % nH, C = nH * D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int r0 = blockIdx.x * XA_BROWS;
    xa_load_rows<T, D>(k, b, Lk, C, h, r0, XA_BROWS, Ks, D);
    xa_load_rows<T, D>(v, b, Lk, C, h, r0, XA_BROWS, Vs, D);
    float mk[XA_ROWS], gk[XA_ROWS][P], gv[XA_ROWS][P];
#pragma unroll
    for (int r = 0; r < XA_ROWS; r++)
    {
        int j = r0 + warp * XA_ROWS + r;
        mk[r] = j < Lk && mask != nullptr ? load_dyn(mask, (i64)b * Lk + j, mdt) : 0.0f;
#pragma unroll
        for (int u = 0; u < P; u++) { gk[r][u] = 0.0f; gv[r][u] = 0.0f; }
    }
    for (int i0 = 0; i0 < Lq; i0 += XA_T)
    {
        __syncthreads();
        xa_load_rows<T, D>(q, b, Lq, C, h, i0, XA_T, Qs, LD);
        xa_load_rows<T, D>(dy, b, Lq, C, h, i0, XA_T, dOs, LD);
        for (int ii = threadIdx.x; ii < XA_T; ii += blockDim.x)
        {
            int i = i0 + ii;
            i64 li = ((i64)b * nH + h) * Lq + i;
            Ls[ii] = i < Lq ? lse[li] : xa_pos_inf();
            Ds[ii] = i < Lq ? Dd[li] : 0.0f;
        }
        __syncthreads();
        const float* qi = Qs + lane * LD;
        const float* di = dOs + lane * LD;
        const float Li = Ls[lane], Di = Ds[lane];
#pragma unroll
        for (int r = 0; r < XA_ROWS; r++)
        {
            const float* kr = Ks + (warp * XA_ROWS + r) * D;
            const float* vr = Vs + (warp * XA_ROWS + r) * D;
            float x = 0.0f, dp = 0.0f;
#pragma unroll
            for (int c = 0; c < D; c++) { x += qi[c] * kr[c]; dp += di[c] * vr[c]; }
            float p = expf(scale * x + mk[r] - Li);
            const int j = r0 + warp * XA_ROWS + r;
            float kd = (i0 + lane < Lq && j < Lk) ? xa_keep(dp_, seed, offset, ((i64)blockIdx.y * Lq + i0 + lane) * Lk + j) : 0.0f;
            float ds = p * (kd * dp - Di);
            const float pk = p * kd;
            for (int ii = 0; ii < XA_T; ii++)
            {
                float pi = __shfl_sync(FIBER_FULL_MASK, pk, ii);
                float dsi = __shfl_sync(FIBER_FULL_MASK, ds, ii);
#pragma unroll
                for (int u = 0; u < P; u++)
                {
                    gv[r][u] += pi * dOs[ii * LD + lane + 32 * u];
                    gk[r][u] += dsi * Qs[ii * LD + lane + 32 * u];
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < XA_ROWS; r++)
    {
        int j = r0 + warp * XA_ROWS + r;
        if (j >= Lk) continue;
#pragma unroll
        for (int u = 0; u < P; u++)
        {
            i64 o = ((i64)b * Lk + j) * C + h * D + lane + 32 * u;
            if (dk != nullptr) dk[o] = from_f<T>(to_f(dk[o]) + scale * gk[r][u]);
            if (dv != nullptr) dv[o] = from_f<T>(to_f(dv[o]) + gv[r][u]);
        }
    }
}

// Thin extern "C" instantiations, spelled out (the emulator finds kernels by their declarations).

extern "C" __global__ void cross_attn_fwd_f32_d32(const float* q, const float* k, const float* v, const void* mask, int mdt,
                                              float* y, float* lse, int Lq, int Lk, int nH, float scale,
                                              float dp, u64 seed, u64 offset)
{
    xa_fwd<float, 32>(q, k, v, mask, mdt, y, lse, Lq, Lk, nH, scale, dp, seed, offset);
}
extern "C" __global__ void cross_attn_bwd_dot_f32_d32(const float* y, const float* dy, float* Dd, int B, int Lq, int nH)
{
    xa_bwd_dot<float, 32>(y, dy, Dd, B, Lq, nH);
}
extern "C" __global__ void cross_attn_bwd_dq_f32_d32(const float* q, const float* k, const float* v, const void* mask, int mdt,
                                                 const float* lse, const float* Dd, const float* dy, float* dq,
                                                 int Lq, int Lk, int nH, float scale, float dp, u64 seed, u64 offset)
{
    xa_bwd_dq<float, 32>(q, k, v, mask, mdt, lse, Dd, dy, dq, Lq, Lk, nH, scale, dp, seed, offset);
}
extern "C" __global__ void cross_attn_bwd_dkdv_f32_d32(const float* q, const float* k, const float* v, const void* mask, int mdt,
                                                   const float* lse, const float* Dd, const float* dy, float* dk, float* dv,
                                                   int Lq, int Lk, int nH, float scale, float dp, u64 seed, u64 offset)
{
    xa_bwd_dkdv<float, 32>(q, k, v, mask, mdt, lse, Dd, dy, dk, dv, Lq, Lk, nH, scale, dp, seed, offset);
}

extern "C" __global__ void cross_attn_fwd_f32_d64(const float* q, const float* k, const float* v, const void* mask, int mdt,
                                              float* y, float* lse, int Lq, int Lk, int nH, float scale,
                                              float dp, u64 seed, u64 offset)
{
    xa_fwd<float, 64>(q, k, v, mask, mdt, y, lse, Lq, Lk, nH, scale, dp, seed, offset);
}
extern "C" __global__ void cross_attn_bwd_dot_f32_d64(const float* y, const float* dy, float* Dd, int B, int Lq, int nH)
{
    xa_bwd_dot<float, 64>(y, dy, Dd, B, Lq, nH);
}
extern "C" __global__ void cross_attn_bwd_dq_f32_d64(const float* q, const float* k, const float* v, const void* mask, int mdt,
                                                 const float* lse, const float* Dd, const float* dy, float* dq,
                                                 int Lq, int Lk, int nH, float scale, float dp, u64 seed, u64 offset)
{
    xa_bwd_dq<float, 64>(q, k, v, mask, mdt, lse, Dd, dy, dq, Lq, Lk, nH, scale, dp, seed, offset);
}
extern "C" __global__ void cross_attn_bwd_dkdv_f32_d64(const float* q, const float* k, const float* v, const void* mask, int mdt,
                                                   const float* lse, const float* Dd, const float* dy, float* dk, float* dv,
                                                   int Lq, int Lk, int nH, float scale, float dp, u64 seed, u64 offset)
{
    xa_bwd_dkdv<float, 64>(q, k, v, mask, mdt, lse, Dd, dy, dk, dv, Lq, Lk, nH, scale, dp, seed, offset);
}

extern "C" __global__ void cross_attn_fwd_bf16_d32(const bf16* q, const bf16* k, const bf16* v, const void* mask, int mdt,
                                              bf16* y, float* lse, int Lq, int Lk, int nH, float scale,
                                              float dp, u64 seed, u64 offset)
{
    xa_fwd<bf16, 32>(q, k, v, mask, mdt, y, lse, Lq, Lk, nH, scale, dp, seed, offset);
}
extern "C" __global__ void cross_attn_bwd_dot_bf16_d32(const bf16* y, const bf16* dy, float* Dd, int B, int Lq, int nH)
{
    xa_bwd_dot<bf16, 32>(y, dy, Dd, B, Lq, nH);
}
extern "C" __global__ void cross_attn_bwd_dq_bf16_d32(const bf16* q, const bf16* k, const bf16* v, const void* mask, int mdt,
                                                 const float* lse, const float* Dd, const bf16* dy, bf16* dq,
                                                 int Lq, int Lk, int nH, float scale, float dp, u64 seed, u64 offset)
{
    xa_bwd_dq<bf16, 32>(q, k, v, mask, mdt, lse, Dd, dy, dq, Lq, Lk, nH, scale, dp, seed, offset);
}
extern "C" __global__ void cross_attn_bwd_dkdv_bf16_d32(const bf16* q, const bf16* k, const bf16* v, const void* mask, int mdt,
                                                   const float* lse, const float* Dd, const bf16* dy, bf16* dk, bf16* dv,
                                                   int Lq, int Lk, int nH, float scale, float dp, u64 seed, u64 offset)
{
    xa_bwd_dkdv<bf16, 32>(q, k, v, mask, mdt, lse, Dd, dy, dk, dv, Lq, Lk, nH, scale, dp, seed, offset);
}

extern "C" __global__ void cross_attn_fwd_bf16_d64(const bf16* q, const bf16* k, const bf16* v, const void* mask, int mdt,
                                              bf16* y, float* lse, int Lq, int Lk, int nH, float scale,
                                              float dp, u64 seed, u64 offset)
{
    xa_fwd<bf16, 64>(q, k, v, mask, mdt, y, lse, Lq, Lk, nH, scale, dp, seed, offset);
}
extern "C" __global__ void cross_attn_bwd_dot_bf16_d64(const bf16* y, const bf16* dy, float* Dd, int B, int Lq, int nH)
{
    xa_bwd_dot<bf16, 64>(y, dy, Dd, B, Lq, nH);
}
extern "C" __global__ void cross_attn_bwd_dq_bf16_d64(const bf16* q, const bf16* k, const bf16* v, const void* mask, int mdt,
                                                 const float* lse, const float* Dd, const bf16* dy, bf16* dq,
                                                 int Lq, int Lk, int nH, float scale, float dp, u64 seed, u64 offset)
{
    xa_bwd_dq<bf16, 64>(q, k, v, mask, mdt, lse, Dd, dy, dq, Lq, Lk, nH, scale, dp, seed, offset);
}
extern "C" __global__ void cross_attn_bwd_dkdv_bf16_d64(const bf16* q, const bf16* k, const bf16* v, const void* mask, int mdt,
                                                   const float* lse, const float* Dd, const bf16* dy, bf16* dk, bf16* dv,
                                                   int Lq, int Lk, int nH, float scale, float dp, u64 seed, u64 offset)
{
    xa_bwd_dkdv<bf16, 64>(q, k, v, mask, mdt, lse, Dd, dy, dk, dv, Lq, Lk, nH, scale, dp, seed, offset);
}
