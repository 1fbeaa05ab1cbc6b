// layernorm.cu — LayerNorm over the last dim, with optional fused residual add, and its backward.
// Gradient convention: dx += ds; dgamma/dbeta are produced as deterministic per-block partials
// ([gridDim.x, 2C] f32: dgamma columns then dbeta columns) that reduce.cu's colsum_partials adds (+=)
// into dgamma and dbeta.
// T = dtype of x/residual/y/dy/dx, P = dtype of gamma/beta. mean/rstd are f32.
// One warp per row. Rows of ≤ 1024 elements live in registers (one global read per input, one write
// per output); longer rows take a scalar path that re-reads the row (from L1/L2).
// With a residual, s = round_T(x + residual) is written to residualOut and is what gets normalised,
// so the backward (which receives the stored s) sees exactly what the forward used.
#include "common.cuh"

template <typename T, typename P>
__device__ __forceinline__ void ln_fwd_body(const T* x, const T* res, const P* gamma, const P* beta, float eps,
                                            T* y, T* resout, float* mean, float* rstd, i64 rows, int C)
{
    const int lane = threadIdx.x & 31;
    const bool vec = (C % Pack<T>::N) == 0;
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
template <typename T, typename P>
__device__ __forceinline__ void ln_bwd_body(const T* s, const P* gamma, const float* mean, const float* rstd,
                                            const T* dy, T* dx, float* partial, i64 rows, int C)
{
    FIBER_DYNAMIC_SMEM(float, acc_all)
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, W = blockDim.x >> 5;
    const bool vec = (C % Pack<T>::N) == 0;
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
                    accg[c] += vd[k] * xh;
                    accb[c] += vd[k];
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
    float* out = partial + (i64)blockIdx.x * 2 * C;
    for (int i = threadIdx.x; i < 2 * C; i += blockDim.x)
    {
        float t = 0.0f;
        for (int j = 0; j < W; j++) t += acc_all[(i64)j * 2 * C + i];
        out[i] = t;
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
