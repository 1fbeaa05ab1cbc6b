// layernorm.cu — LayerNorm over the last dim, with optional fused residual add, and its backward.
// Gradient convention: dx += ds; dgamma/dbeta are produced as deterministic per-block partials
// ([gridDim.x, 2C] f32: dgamma columns then dbeta columns) that reduce.cu's colsum_partials adds (+=)
// into dgamma and dbeta.
// T = dtype of x/residual/y/dy/dx, P = dtype of gamma/beta. mean/rstd are f32.
// Two kinds of kernel (CudaBackend picks):
//   * _k<KP>t<TPR> fast paths, for rows of whole 16-byte packs up to 1024 elements: TPR lanes per
//     row, KP packs per lane held in registers — one global read per input, one write per output.
//   * the generic kernels (any C): one warp per row; rows of ≤ 1024 elements are cached as scalars
//     in registers, longer rows take a path that re-reads the row (from L1/L2).
// With a residual, s = round_T(x + residual) is written to residualOut and is what gets normalised,
// so the backward (which receives the stored s) sees exactly what the forward used.
#include "common.cuh"

template <typename T, typename P>
__device__ __forceinline__ void ln_fwd_body(const T* x, const T* res, const P* gamma, const P* beta, float eps,
                                            T* y, T* resout, float* mean, float* rstd, i64 rows, int C)
{
    const int lane = threadIdx.x & 31;
    // Rows of whole packs up to 1024 elements take the _k*t* fast kernels, so this generic path
    // caches scalars only (a runtime pack/scalar choice doubled its register use).
    const bool vec = false;
    const float invC = 1.0f / (float)C;
    for (i64 r = global_warp(); r < rows; r += global_warps())
    {
        const i64 off = r * C;
        float m, rs;
        if (C <= FIBER_ROW_CACHE)
        {
            float v[32];
            row_load(x + off, C, lane, vec, v);
            if (res)
            {
                float w[32];
                row_load(res + off, C, lane, vec, w);
#pragma unroll
                for (int k = 0; k < 32; k++) v[k] = to_f(from_f<T>(v[k] + w[k]));
                row_store(resout + off, C, lane, vec, v);
            }
            float s = 0.0f;
#pragma unroll
            for (int k = 0; k < 32; k++) s += v[k];
            m = warp_sum(s) * invC;
            float q = 0.0f;
#pragma unroll
            for (int k = 0; k < 32; k++) if (row_col<T>(k, lane, vec) < C) { float d = v[k] - m; q += d * d; }
            rs = 1.0f / sqrtf(warp_sum(q) * invC + eps);
#pragma unroll
            for (int k = 0; k < 32; k++)
            {
                int c = row_col<T>(k, lane, vec);
                if (c < C) v[k] = (v[k] - m) * rs * to_f(gamma[c]) + to_f(beta[c]);
            }
            row_store(y + off, C, lane, vec, v);
        }
        else
        {
            const T* src = res ? (const T*)resout : x;
            float s = 0.0f;
            for (int c = lane; c < C; c += 32)
            {
                float v = to_f(x[off + c]);
                if (res) { T sv = from_f<T>(v + to_f(res[off + c])); resout[off + c] = sv; v = to_f(sv); }
                s += v;
            }
            m = warp_sum(s) * invC;
            float q = 0.0f;
            for (int c = lane; c < C; c += 32) { float d = to_f(src[off + c]) - m; q += d * d; }
            rs = 1.0f / sqrtf(warp_sum(q) * invC + eps);
            for (int c = lane; c < C; c += 32)
                y[off + c] = from_f<T>((to_f(src[off + c]) - m) * rs * to_f(gamma[c]) + to_f(beta[c]));
        }
        if (lane == 0) { mean[r] = m; rstd[r] = rs; }
    }
}

// Block = W warps; dynamic shared memory W·2C floats: each warp accumulates dgamma|dbeta for the
// rows it visits in its own slice (within a warp every column has one owning lane, so no atomics),
// then the slices are folded in warp order into partial[blockIdx.x] — deterministic.
// In the packed layout a lane owns N consecutive columns, so column c lives at slot
// (c % N)·(C/N) + c/N: the lanes of a warp then touch consecutive words (no bank conflicts).
__device__ __forceinline__ int ln_slot(int c, int C, int N, bool vec) { return vec ? (c % N) * (C / N) + c / N : c; }

template <typename T, typename P>
__device__ __forceinline__ void ln_bwd_body(const T* s, const P* gamma, const float* mean, const float* rstd,
                                            const T* dy, T* dx, float* partial, i64 rows, int C)
{
    FIBER_DYNAMIC_SMEM(float, acc_all)
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, W = blockDim.x >> 5;
    // Rows of whole packs up to 1024 elements take the _k*t* fast kernels, so this generic path
    // caches scalars only (a runtime pack/scalar choice doubled its register use).
    const bool vec = false;
    const float invC = 1.0f / (float)C;
    float* accg = acc_all + (i64)w * 2 * C;
    float* accb = accg + C;
    for (int i = threadIdx.x; i < W * 2 * C; i += blockDim.x) acc_all[i] = 0.0f;
    __syncthreads();
    for (i64 r = (i64)blockIdx.x * W + w; r < rows; r += (i64)gridDim.x * W)
    {
        const i64 off = r * C;
        const float m = mean[r], rs = rstd[r];
        if (C <= FIBER_ROW_CACHE)
        {
            float vs[32], vd[32];
            row_load(s + off, C, lane, vec, vs);
            row_load(dy + off, C, lane, vec, vd);
            float a = 0.0f, b = 0.0f;
#pragma unroll
            for (int k = 0; k < 32; k++)
            {
                int c = row_col<T>(k, lane, vec);
                if (c < C)
                {
                    float xh = (vs[k] - m) * rs;
                    float dxh = vd[k] * to_f(gamma[c]);
                    a += dxh; b += dxh * xh;
                    int sl = ln_slot(c, C, Pack<T>::N, vec);
                    accg[sl] += vd[k] * xh;
                    accb[sl] += vd[k];
                }
            }
            a = warp_sum(a) * invC; b = warp_sum(b) * invC;
            float vx[32];
            row_load((const T*)dx + off, C, lane, vec, vx);
#pragma unroll
            for (int k = 0; k < 32; k++)
            {
                int c = row_col<T>(k, lane, vec);
                if (c < C)
                {
                    float xh = (vs[k] - m) * rs;
                    float dxh = vd[k] * to_f(gamma[c]);
                    vx[k] += rs * (dxh - a - xh * b);
                }
            }
            row_store(dx + off, C, lane, vec, vx);
        }
        else
        {
            float a = 0.0f, b = 0.0f;
            for (int c = lane; c < C; c += 32)
            {
                float xh = (to_f(s[off + c]) - m) * rs, d = to_f(dy[off + c]);
                float dxh = d * to_f(gamma[c]);
                a += dxh; b += dxh * xh;
                accg[c] += d * xh;
                accb[c] += d;
            }
            a = warp_sum(a) * invC; b = warp_sum(b) * invC;
            for (int c = lane; c < C; c += 32)
            {
                float xh = (to_f(s[off + c]) - m) * rs;
                float dxh = to_f(dy[off + c]) * to_f(gamma[c]);
                dx[off + c] = from_f<T>(to_f(dx[off + c]) + rs * (dxh - a - xh * b));
            }
        }
    }
    __syncthreads();
    // The register path used packed slots; the long-row path plain columns.
    const bool slotted = vec && C <= FIBER_ROW_CACHE;
    float* out = partial + (i64)blockIdx.x * 2 * C;
    for (int i = threadIdx.x; i < 2 * C; i += blockDim.x)
    {
        int c = i < C ? i : i - C;
        int src = (i < C ? 0 : C) + (slotted ? ln_slot(c, C, Pack<T>::N, true) : c);
        float t = 0.0f;
        for (int j = 0; j < W; j++) t += acc_all[(i64)j * 2 * C + src];
        out[i] = t;
    }
}



// ---------------------------------------------------------------------------------------------
// Fast paths (CudaBackend picks them when C % Pack<T>::N == 0 and the row fits KP·TPR packs):
// compile-time row groups (common.cuh), one global read per input and one write per output.
// ---------------------------------------------------------------------------------------------
// RB rows per row group and step: all their loads are issued before the first reduction, so a
// lane has RB·KP 16-byte loads in flight (one alone cannot cover the memory latency).
template <typename T, typename P, int KP, int TPR, int RB>
__device__ __forceinline__ void ln_fwd_fast(const T* x, const T* res, const P* gamma, const P* beta, float eps,
                                            T* y, T* resout, float* mean, float* rstd, i64 rows, int C)
{
    const int N = Pack<T>::N, E = KP * Pack<T>::N, RPW = 32 / TPR;
    const int lane = threadIdx.x & 31, gl = lane % TPR;
    const float invC = 1.0f / (float)C;
    float gv[E], bv[E];
    rg_params<T, P, KP, TPR>(gamma, C, gl, gv);
    rg_params<T, P, KP, TPR>(beta, C, gl, bv);
    for (i64 base = global_warp() * RPW * RB; base < rows; base += global_warps() * RPW * RB)
    {
        float v[RB][E];
        i64 off[RB];
        bool ok[RB];
#pragma unroll
        for (int q = 0; q < RB; q++)
        {
            const i64 r = base + q * RPW + lane / TPR;
            ok[q] = r < rows;
            off[q] = ok[q] ? r * C : 0;
            rg_load<T, KP, TPR>(x + off[q], C, gl, ok[q], v[q]);
        }
        if (res)
        {
#pragma unroll
            for (int q = 0; q < RB; q++)
            {
                float w[E];
                rg_load<T, KP, TPR>(res + off[q], C, gl, ok[q], w);
#pragma unroll
                for (int e = 0; e < E; e++) v[q][e] = to_f(from_f<T>(v[q][e] + w[e]));
                rg_store<T, KP, TPR>(resout + off[q], C, gl, ok[q], v[q]);
            }
        }
#pragma unroll
        for (int q = 0; q < RB; q++)
        {
            float s = 0.0f;
#pragma unroll
            for (int e = 0; e < E; e++) s += v[q][e];
            const float m = group_sum<TPR>(s) * invC;
            float d2 = 0.0f;
#pragma unroll
            for (int k = 0; k < KP; k++)
                if ((k * TPR + gl) * N < C)
                {
#pragma unroll
                    for (int j = 0; j < N; j++) { float d = v[q][k * N + j] - m; d2 += d * d; }
                }
            const float rs = 1.0f / sqrtf(group_sum<TPR>(d2) * invC + eps);
#pragma unroll
            for (int e = 0; e < E; e++) v[q][e] = (v[q][e] - m) * rs * gv[e] + bv[e];
            rg_store<T, KP, TPR>(y + off[q], C, gl, ok[q], v[q]);
            if (ok[q] && gl == 0) { const i64 r = base + q * RPW + lane / TPR; mean[r] = m; rstd[r] = rs; }
        }
    }
}

// The same forward through a per-lane cp.async pipeline S steps deep (common.cuh rg_issue/rg_take):
// a persistent grid, so every lane has many steps and keeps S·KP loads in flight. No residual
// (CudaBackend uses ln_fwd_fast for that).
template <typename T, typename P, int KP, int TPR, int S>
__device__ __forceinline__ void ln_fwd_pipe(const T* x, const P* gamma, const P* beta, float eps,
                                            T* y, float* mean, float* rstd, i64 rows, int C)
{
    FIBER_DYNAMIC_SMEM(Pack<T>, buf)
    const int N = Pack<T>::N, E = KP * Pack<T>::N;
    const int lane = threadIdx.x & 31, gl = lane % TPR;
    const float invC = 1.0f / (float)C;
    float gv[E], bv[E];
    rg_params<T, P, KP, TPR>(gamma, C, gl, gv);
    rg_params<T, P, KP, TPR>(beta, C, gl, bv);
    rg_pipeline<T, KP, TPR, S>(buf, x, rows, C, [&](i64 r, bool ok, float (&v)[E])
    {
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < E; e++) s += v[e];
        const float m = group_sum<TPR>(s) * invC;
        float d2 = 0.0f;
#pragma unroll
        for (int k = 0; k < KP; k++)
            if ((k * TPR + gl) * N < C)
            {
#pragma unroll
                for (int j = 0; j < N; j++) { float d = v[k * N + j] - m; d2 += d * d; }
            }
        const float rs = 1.0f / sqrtf(group_sum<TPR>(d2) * invC + eps);
#pragma unroll
        for (int e = 0; e < E; e++) v[e] = (v[e] - m) * rs * gv[e] + bv[e];
        rg_store<T, KP, TPR>(y + (ok ? r * C : 0), C, gl, ok, v);
        if (ok && gl == 0) { mean[r] = m; rstd[r] = rs; }
    });
}

// dgamma/dbeta: a row-group lane owns the same columns in every row it visits, so it sums them in
// registers; at the end the RPW groups of a warp fold by shuffles and the warps of the block through
// shared memory (dynamic, W·C floats), always in the same order, into partial[blockIdx.x] =
// dgamma|dbeta (2C floats) — deterministic. CudaBackend launches a persistent grid (a few blocks per
// SM) so there are few partial rows for colsum_partials2 to add up.
// Wide rows (KP ≥ 3) load dx only after the row sums and re-read gamma (L1) to stay within registers.
template <typename T, typename P, int KP, int TPR>
__device__ __forceinline__ void ln_bwd_fast(const T* s, const P* gamma, const float* mean, const float* rstd,
                                            const T* dy, T* dx, float* partial, i64 rows, int C)
{
    FIBER_DYNAMIC_SMEM(float, fold)
    const int N = Pack<T>::N, E = KP * Pack<T>::N, RPW = 32 / TPR;
    const bool wide = KP >= 3;
    const int lane = threadIdx.x & 31, gl = lane % TPR, w = threadIdx.x >> 5, W = blockDim.x >> 5;
    const float invC = 1.0f / (float)C;
    float ag[E], ab[E], gv[E];
#pragma unroll
    for (int e = 0; e < E; e++) { ag[e] = 0.0f; ab[e] = 0.0f; }
    if (!wide) rg_params<T, P, KP, TPR>(gamma, C, gl, gv);
    const i64 step = (i64)gridDim.x * W * RPW;
    for (i64 base = ((i64)blockIdx.x * W + w) * RPW; base < rows; base += step)
    {
        const i64 r = base + lane / TPR;
        const bool ok = r < rows;
        const i64 off = ok ? r * C : 0;
        float vs[E], vd[E], vx[E];
        rg_load<T, KP, TPR>(s + off, C, gl, ok, vs);
        rg_load<T, KP, TPR>(dy + off, C, gl, ok, vd);
        if (!wide) rg_load<T, KP, TPR>((const T*)dx + off, C, gl, ok, vx);
        else rg_params<T, P, KP, TPR>(gamma, C, gl, gv);
        // Rows past the end load zeros and use m = rs = 0, so they add nothing below.
        const float m = ok ? mean[r] : 0.0f, rs = ok ? rstd[r] : 0.0f;
        float a = 0.0f, b = 0.0f;
#pragma unroll
        for (int e = 0; e < E; e++)
        {
            float xh = (vs[e] - m) * rs;
            float dxh = vd[e] * gv[e];
            a += dxh; b += dxh * xh;
            ag[e] += vd[e] * xh; ab[e] += vd[e];
        }
        a = group_sum<TPR>(a) * invC; b = group_sum<TPR>(b) * invC;
        if (wide) rg_load<T, KP, TPR>((const T*)dx + off, C, gl, ok, vx);
#pragma unroll
        for (int e = 0; e < E; e++)
        {
            float xh = (vs[e] - m) * rs;
            float dxh = vd[e] * gv[e];
            vx[e] += rs * (dxh - a - xh * b);
        }
        rg_store<T, KP, TPR>(dx + off, C, gl, ok, vx);
    }
    // Slots of packs past the row end hold zeros and are never written out.
#pragma unroll
    for (int e = 0; e < E; e++)
    {
#pragma unroll
        for (int o = TPR; o < 32; o <<= 1)
        {
            ag[e] += __shfl_xor_sync(FIBER_FULL_MASK, ag[e], o);
            ab[e] += __shfl_xor_sync(FIBER_FULL_MASK, ab[e], o);
        }
    }
    float* out = partial + (i64)blockIdx.x * 2 * C;
#pragma unroll
    for (int h = 0; h < 2; h++)
    {
        if (lane < TPR)
        {
#pragma unroll
            for (int k = 0; k < KP; k++)
            {
                int c = (k * TPR + gl) * N;
                if (c < C)
                {
#pragma unroll
                    for (int j = 0; j < N; j++) fold[w * C + c + j] = h == 0 ? ag[k * N + j] : ab[k * N + j];
                }
            }
        }
        __syncthreads();
        for (int i = threadIdx.x; i < C; i += blockDim.x)
        {
            float t = 0.0f;
            for (int q = 0; q < W; q++) t += fold[q * C + i];
            out[h * C + i] = t;
        }
        __syncthreads();
    }
}

extern "C" __global__ void layernorm_fwd_f32_f32(const float* x, const float* res, const float* gamma, const float* beta, float eps,
    float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_body(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void layernorm_bwd_f32_f32(const float* s, const float* gamma, const float* mean, const float* rstd,
    const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_body(s, gamma, mean, rstd, dy, dx, partial, rows, C); }

extern "C" __global__ void layernorm_fwd_f32_bf16(const float* x, const float* res, const bf16* gamma, const bf16* beta, float eps,
    float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_body(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void layernorm_bwd_f32_bf16(const float* s, const bf16* gamma, const float* mean, const float* rstd,
    const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_body(s, gamma, mean, rstd, dy, dx, partial, rows, C); }

extern "C" __global__ void layernorm_fwd_bf16_f32(const bf16* x, const bf16* res, const float* gamma, const float* beta, float eps,
    bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_body(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void layernorm_bwd_bf16_f32(const bf16* s, const float* gamma, const float* mean, const float* rstd,
    const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_body(s, gamma, mean, rstd, dy, dx, partial, rows, C); }

extern "C" __global__ void layernorm_fwd_bf16_bf16(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta, float eps,
    bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_body(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void layernorm_bwd_bf16_bf16(const bf16* s, const bf16* gamma, const float* mean, const float* rstd,
    const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_body(s, gamma, mean, rstd, dy, dx, partial, rows, C); }

// Fast-path instantiations (see CudaBackend.RowVariant): forward _k<KP>t<TPR>[r<RB>] (RB rows per
// group and step, 1 when absent); backward _k<KP>t<TPR>[m<B>], B = blocks per SM the register
// budget is capped for (CudaBackend.LnBwdBlocksPerSm sizes the persistent grid to match).
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k1t8(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 1, 8, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 3) layernorm_bwd_f32_f32_k1t8(const float* s, const float* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, float, 1, 8>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k1t8r2(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 1, 8, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k1t8r4(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 1, 8, 4>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_bwd_f32_f32_k1t8m4(const float* s, const float* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, float, 1, 8>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k1t16(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 1, 16, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 3) layernorm_bwd_f32_f32_k1t16(const float* s, const float* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, float, 1, 16>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k1t16r2(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 1, 16, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k1t16r4(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 1, 16, 4>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_bwd_f32_f32_k1t16m4(const float* s, const float* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, float, 1, 16>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k1t32(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 1, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 3) layernorm_bwd_f32_f32_k1t32(const float* s, const float* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, float, 1, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k1t32r2(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 1, 32, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k1t32r4(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 1, 32, 4>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_bwd_f32_f32_k1t32m4(const float* s, const float* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, float, 1, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k2t32(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 2, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 2) layernorm_bwd_f32_f32_k2t32(const float* s, const float* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, float, 2, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k2t32r2(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 2, 32, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k3t32(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 3, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 1) layernorm_bwd_f32_f32_k3t32(const float* s, const float* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, float, 3, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k4t32(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 4, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 1) layernorm_bwd_f32_f32_k4t32(const float* s, const float* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, float, 4, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k6t32(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 6, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 1) layernorm_bwd_f32_f32_k6t32(const float* s, const float* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, float, 6, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_f32_k8t32(const float* x, const float* res, const float* gamma, const float* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, float, 8, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 1) layernorm_bwd_f32_f32_k8t32(const float* s, const float* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, float, 8, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k1t8(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 1, 8, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 3) layernorm_bwd_f32_bf16_k1t8(const float* s, const bf16* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, bf16, 1, 8>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k1t8r2(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 1, 8, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k1t8r4(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 1, 8, 4>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_bwd_f32_bf16_k1t8m4(const float* s, const bf16* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, bf16, 1, 8>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k1t16(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 1, 16, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 3) layernorm_bwd_f32_bf16_k1t16(const float* s, const bf16* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, bf16, 1, 16>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k1t16r2(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 1, 16, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k1t16r4(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 1, 16, 4>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_bwd_f32_bf16_k1t16m4(const float* s, const bf16* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, bf16, 1, 16>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k1t32(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 1, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 3) layernorm_bwd_f32_bf16_k1t32(const float* s, const bf16* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, bf16, 1, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k1t32r2(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 1, 32, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k1t32r4(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 1, 32, 4>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_bwd_f32_bf16_k1t32m4(const float* s, const bf16* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, bf16, 1, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k2t32(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 2, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 2) layernorm_bwd_f32_bf16_k2t32(const float* s, const bf16* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, bf16, 2, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k2t32r2(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 2, 32, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k3t32(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 3, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 1) layernorm_bwd_f32_bf16_k3t32(const float* s, const bf16* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, bf16, 3, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k4t32(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 4, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 1) layernorm_bwd_f32_bf16_k4t32(const float* s, const bf16* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, bf16, 4, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k6t32(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 6, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 1) layernorm_bwd_f32_bf16_k6t32(const float* s, const bf16* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, bf16, 6, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_f32_bf16_k8t32(const float* x, const float* res, const bf16* gamma, const bf16* beta,
    float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<float, bf16, 8, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 1) layernorm_bwd_f32_bf16_k8t32(const float* s, const bf16* gamma, const float* mean,
    const float* rstd, const float* dy, float* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<float, bf16, 8, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_f32_k1t8(const bf16* x, const bf16* res, const float* gamma, const float* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, float, 1, 8, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 3) layernorm_bwd_bf16_f32_k1t8(const bf16* s, const float* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, float, 1, 8>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_f32_k1t8r2(const bf16* x, const bf16* res, const float* gamma, const float* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, float, 1, 8, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_f32_k1t8r4(const bf16* x, const bf16* res, const float* gamma, const float* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, float, 1, 8, 4>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_bwd_bf16_f32_k1t8m4(const bf16* s, const float* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, float, 1, 8>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_f32_k1t16(const bf16* x, const bf16* res, const float* gamma, const float* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, float, 1, 16, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 3) layernorm_bwd_bf16_f32_k1t16(const bf16* s, const float* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, float, 1, 16>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_f32_k1t16r2(const bf16* x, const bf16* res, const float* gamma, const float* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, float, 1, 16, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_f32_k1t16r4(const bf16* x, const bf16* res, const float* gamma, const float* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, float, 1, 16, 4>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_bwd_bf16_f32_k1t16m4(const bf16* s, const float* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, float, 1, 16>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_f32_k1t32(const bf16* x, const bf16* res, const float* gamma, const float* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, float, 1, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 3) layernorm_bwd_bf16_f32_k1t32(const bf16* s, const float* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, float, 1, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_f32_k1t32r2(const bf16* x, const bf16* res, const float* gamma, const float* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, float, 1, 32, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_f32_k1t32r4(const bf16* x, const bf16* res, const float* gamma, const float* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, float, 1, 32, 4>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_bwd_bf16_f32_k1t32m4(const bf16* s, const float* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, float, 1, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_f32_k2t32(const bf16* x, const bf16* res, const float* gamma, const float* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, float, 2, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 2) layernorm_bwd_bf16_f32_k2t32(const bf16* s, const float* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, float, 2, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_f32_k2t32r2(const bf16* x, const bf16* res, const float* gamma, const float* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, float, 2, 32, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_f32_k3t32(const bf16* x, const bf16* res, const float* gamma, const float* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, float, 3, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 1) layernorm_bwd_bf16_f32_k3t32(const bf16* s, const float* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, float, 3, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_f32_k4t32(const bf16* x, const bf16* res, const float* gamma, const float* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, float, 4, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 1) layernorm_bwd_bf16_f32_k4t32(const bf16* s, const float* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, float, 4, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_bf16_k1t8(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, bf16, 1, 8, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 3) layernorm_bwd_bf16_bf16_k1t8(const bf16* s, const bf16* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, bf16, 1, 8>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_bf16_k1t8r2(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, bf16, 1, 8, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_bf16_k1t8r4(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, bf16, 1, 8, 4>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_bwd_bf16_bf16_k1t8m4(const bf16* s, const bf16* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, bf16, 1, 8>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_bf16_k1t16(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, bf16, 1, 16, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 3) layernorm_bwd_bf16_bf16_k1t16(const bf16* s, const bf16* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, bf16, 1, 16>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_bf16_k1t16r2(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, bf16, 1, 16, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_bf16_k1t16r4(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, bf16, 1, 16, 4>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_bwd_bf16_bf16_k1t16m4(const bf16* s, const bf16* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, bf16, 1, 16>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_bf16_k1t32(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, bf16, 1, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 3) layernorm_bwd_bf16_bf16_k1t32(const bf16* s, const bf16* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, bf16, 1, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_bf16_k1t32r2(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, bf16, 1, 32, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_bf16_k1t32r4(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, bf16, 1, 32, 4>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_bwd_bf16_bf16_k1t32m4(const bf16* s, const bf16* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, bf16, 1, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_bf16_k2t32(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, bf16, 2, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 2) layernorm_bwd_bf16_bf16_k2t32(const bf16* s, const bf16* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, bf16, 2, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_bf16_k2t32r2(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, bf16, 2, 32, 2>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_bf16_k3t32(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, bf16, 3, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 1) layernorm_bwd_bf16_bf16_k3t32(const bf16* s, const bf16* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, bf16, 3, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
extern "C" __global__ void __launch_bounds__(256) layernorm_fwd_bf16_bf16_k4t32(const bf16* x, const bf16* res, const bf16* gamma, const bf16* beta,
    float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_fast<bf16, bf16, 4, 32, 1>(x, res, gamma, beta, eps, y, resout, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 1) layernorm_bwd_bf16_bf16_k4t32(const bf16* s, const bf16* gamma, const float* mean,
    const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int C)
{ ln_bwd_fast<bf16, bf16, 4, 32>(s, gamma, mean, rstd, dy, dx, partial, rows, C); }
// cp.async pipeline forward (no residual): _k<KP>t<TPR>p, S = 4 stages (3 for KP = 2); 4 blocks per SM.
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_f32_f32_k1t8p(const float* x, const float* res, const float* gamma,
    const float* beta, float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<float, float, 1, 8, 4>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_f32_f32_k1t16p(const float* x, const float* res, const float* gamma,
    const float* beta, float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<float, float, 1, 16, 4>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_f32_f32_k1t32p(const float* x, const float* res, const float* gamma,
    const float* beta, float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<float, float, 1, 32, 4>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_f32_f32_k2t32p(const float* x, const float* res, const float* gamma,
    const float* beta, float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<float, float, 2, 32, 3>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_f32_bf16_k1t8p(const float* x, const float* res, const bf16* gamma,
    const bf16* beta, float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<float, bf16, 1, 8, 4>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_f32_bf16_k1t16p(const float* x, const float* res, const bf16* gamma,
    const bf16* beta, float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<float, bf16, 1, 16, 4>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_f32_bf16_k1t32p(const float* x, const float* res, const bf16* gamma,
    const bf16* beta, float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<float, bf16, 1, 32, 4>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_f32_bf16_k2t32p(const float* x, const float* res, const bf16* gamma,
    const bf16* beta, float eps, float* y, float* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<float, bf16, 2, 32, 3>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_bf16_f32_k1t8p(const bf16* x, const bf16* res, const float* gamma,
    const float* beta, float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<bf16, float, 1, 8, 4>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_bf16_f32_k1t16p(const bf16* x, const bf16* res, const float* gamma,
    const float* beta, float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<bf16, float, 1, 16, 4>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_bf16_f32_k1t32p(const bf16* x, const bf16* res, const float* gamma,
    const float* beta, float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<bf16, float, 1, 32, 4>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_bf16_f32_k2t32p(const bf16* x, const bf16* res, const float* gamma,
    const float* beta, float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<bf16, float, 2, 32, 3>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_bf16_bf16_k1t8p(const bf16* x, const bf16* res, const bf16* gamma,
    const bf16* beta, float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<bf16, bf16, 1, 8, 4>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_bf16_bf16_k1t16p(const bf16* x, const bf16* res, const bf16* gamma,
    const bf16* beta, float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<bf16, bf16, 1, 16, 4>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_bf16_bf16_k1t32p(const bf16* x, const bf16* res, const bf16* gamma,
    const bf16* beta, float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<bf16, bf16, 1, 32, 4>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) layernorm_fwd_bf16_bf16_k2t32p(const bf16* x, const bf16* res, const bf16* gamma,
    const bf16* beta, float eps, bf16* y, bf16* resout, float* mean, float* rstd, long long rows, int C)
{ ln_fwd_pipe<bf16, bf16, 2, 32, 3>(x, gamma, beta, eps, y, mean, rstd, rows, C); }
