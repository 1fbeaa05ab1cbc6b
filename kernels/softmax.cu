// softmax.cu — y = softmax(scale·x) over the last dim, and its backward.
// Gradient convention: dx += scale·y·(dy − Σ dy·y).
// A row that is entirely −inf (fully masked) gives all zeros, as on the CPU.
// T = dtype of every tensor (f32 or bf16). Like layernorm.cu: _k<KP>t<TPR> fast kernels for rows of
// whole 16-byte packs up to 1024 elements (row in registers, TPR lanes per row); generic kernels
// otherwise (one warp per row; scalar register cache up to 1024 elements, else an online max/sum
// pass and a write pass).
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void softmax_fwd_body(const T* x, T* y, float scale, i64 rows, int C)
{
    const int lane = threadIdx.x & 31;
    // Rows of whole packs up to 1024 elements take the _k*t* fast kernels, so this generic path
    // caches scalars only (a runtime pack/scalar choice doubled its register use).
    const bool vec = false;
    for (i64 r = global_warp(); r < rows; r += global_warps())
    {
        const i64 off = r * C;
        if (C <= FIBER_ROW_CACHE)
        {
            float v[32];
            row_load(x + off, C, lane, vec, v);
            float mx = fiber_neg_inf();
#pragma unroll
            for (int k = 0; k < 32; k++) if (row_col<T>(k, lane, vec) < C) mx = fmaxf(mx, v[k] * scale);
            mx = warp_max(mx);
            if (mx == fiber_neg_inf()) mx = 0.0f; // a fully masked row: exp gives 0s, not NaN
            float s = 0.0f;
#pragma unroll
            for (int k = 0; k < 32; k++)
            {
                if (row_col<T>(k, lane, vec) < C) { v[k] = expf(v[k] * scale - mx); s += v[k]; }
            }
            float tot = warp_sum(s), inv = tot > 0.0f ? 1.0f / tot : 0.0f;
#pragma unroll
            for (int k = 0; k < 32; k++) v[k] *= inv;
            row_store(y + off, C, lane, vec, v);
        }
        else
        {
            float mx = fiber_neg_inf(), s = 0.0f;
            for (int c = lane; c < C; c += 32)
            {
                float v = to_f(x[off + c]) * scale;
                if (v == fiber_neg_inf()) continue; // masked: adds 0 (and exp(-inf - -inf) would be NaN)
                if (v > mx) { s = s * expf(mx - v) + 1.0f; mx = v; }
                else s += expf(v - mx);
            }
            float M = warp_max(mx);
            if (M == fiber_neg_inf()) M = 0.0f;
            s = (mx == fiber_neg_inf()) ? 0.0f : s * expf(mx - M);
            float tot = warp_sum(s), inv = tot > 0.0f ? 1.0f / tot : 0.0f;
            for (int c = lane; c < C; c += 32) y[off + c] = from_f<T>(expf(to_f(x[off + c]) * scale - M) * inv);
        }
    }
}

template <typename T>
__device__ __forceinline__ void softmax_bwd_body(const T* y, const T* dy, float scale, T* dx, i64 rows, int C)
{
    const int lane = threadIdx.x & 31;
    // Rows of whole packs up to 1024 elements take the _k*t* fast kernels, so this generic path
    // caches scalars only (a runtime pack/scalar choice doubled its register use).
    const bool vec = false;
    for (i64 r = global_warp(); r < rows; r += global_warps())
    {
        const i64 off = r * C;
        if (C <= FIBER_ROW_CACHE)
        {
            float vy[32], vd[32], vx[32];
            row_load(y + off, C, lane, vec, vy);
            row_load(dy + off, C, lane, vec, vd);
            float s = 0.0f;
#pragma unroll
            for (int k = 0; k < 32; k++) s += vy[k] * vd[k];
            s = warp_sum(s);
            row_load((const T*)dx + off, C, lane, vec, vx);
#pragma unroll
            for (int k = 0; k < 32; k++) vx[k] += scale * vy[k] * (vd[k] - s);
            row_store(dx + off, C, lane, vec, vx);
        }
        else
        {
            float s = 0.0f;
            for (int c = lane; c < C; c += 32) s += to_f(y[off + c]) * to_f(dy[off + c]);
            s = warp_sum(s);
            for (int c = lane; c < C; c += 32)
                dx[off + c] = from_f<T>(to_f(dx[off + c]) + scale * to_f(y[off + c]) * (to_f(dy[off + c]) - s));
        }
    }
}



// ---------------------------------------------------------------------------------------------
// Fast paths (CudaBackend picks them when C % Pack<T>::N == 0 and the row fits KP·TPR packs).
// ---------------------------------------------------------------------------------------------
// RB rows per row group and step, all loaded before the first reduction (memory-level parallelism).
template <typename T, int KP, int TPR, int RB>
__device__ __forceinline__ void softmax_fwd_fast(const T* x, T* y, float scale, i64 rows, int C)
{
    const int N = Pack<T>::N, E = KP * Pack<T>::N, RPW = 32 / TPR;
    const int lane = threadIdx.x & 31, gl = lane % TPR;
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
#pragma unroll
        for (int q = 0; q < RB; q++)
        {
            float mx = fiber_neg_inf();
#pragma unroll
            for (int k = 0; k < KP; k++)
                if ((k * TPR + gl) * N < C)
                {
#pragma unroll
                    for (int j = 0; j < N; j++) mx = fmaxf(mx, v[q][k * N + j] * scale);
                }
            mx = group_max<TPR>(mx);
            if (mx == fiber_neg_inf()) mx = 0.0f; // a fully masked row: exp gives 0s, not NaN
            float sum = 0.0f;
#pragma unroll
            for (int k = 0; k < KP; k++)
                if ((k * TPR + gl) * N < C)
                {
#pragma unroll
                    for (int j = 0; j < N; j++) { float e = expf(v[q][k * N + j] * scale - mx); v[q][k * N + j] = e; sum += e; }
                }
            const float tot = group_sum<TPR>(sum), inv = tot > 0.0f ? 1.0f / tot : 0.0f;
#pragma unroll
            for (int e = 0; e < E; e++) v[q][e] *= inv;
            rg_store<T, KP, TPR>(y + off[q], C, gl, ok[q], v[q]);
        }
    }
}

// The forward through a per-lane cp.async pipeline S steps deep (see ln_fwd_pipe).
template <typename T, int KP, int TPR, int S>
__device__ __forceinline__ void softmax_fwd_pipe(const T* x, T* y, float scale, i64 rows, int C)
{
    FIBER_DYNAMIC_SMEM(Pack<T>, buf)
    const int N = Pack<T>::N, E = KP * Pack<T>::N;
    const int lane = threadIdx.x & 31, gl = lane % TPR;
    rg_pipeline<T, KP, TPR, S>(buf, x, rows, C, [&](i64 r, bool ok, float (&v)[E])
    {
        float mx = fiber_neg_inf();
#pragma unroll
        for (int k = 0; k < KP; k++)
            if ((k * TPR + gl) * N < C)
            {
#pragma unroll
                for (int j = 0; j < N; j++) mx = fmaxf(mx, v[k * N + j] * scale);
            }
        mx = group_max<TPR>(mx);
        if (mx == fiber_neg_inf()) mx = 0.0f; // a fully masked row: exp gives 0s, not NaN
        float sum = 0.0f;
#pragma unroll
        for (int k = 0; k < KP; k++)
            if ((k * TPR + gl) * N < C)
            {
#pragma unroll
                for (int j = 0; j < N; j++) { float e = expf(v[k * N + j] * scale - mx); v[k * N + j] = e; sum += e; }
            }
        const float tot = group_sum<TPR>(sum), inv = tot > 0.0f ? 1.0f / tot : 0.0f;
#pragma unroll
        for (int e = 0; e < E; e++) v[e] *= inv;
        rg_store<T, KP, TPR>(y + (ok ? r * C : 0), C, gl, ok, v);
    });
}

template <typename T, int KP, int TPR>
__device__ __forceinline__ void softmax_bwd_fast(const T* y, const T* dy, float scale, T* dx, i64 rows, int C)
{
    const int E = KP * Pack<T>::N, RPW = 32 / TPR;
    const int lane = threadIdx.x & 31, gl = lane % TPR;
    for (i64 base = global_warp() * RPW; base < rows; base += global_warps() * RPW)
    {
        const i64 r = base + lane / TPR;
        const bool ok = r < rows;
        const i64 off = ok ? r * C : 0;
        float vy[E], vd[E], vx[E];
        rg_load<T, KP, TPR>(y + off, C, gl, ok, vy);
        rg_load<T, KP, TPR>(dy + off, C, gl, ok, vd);
        rg_load<T, KP, TPR>((const T*)dx + off, C, gl, ok, vx);
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < E; e++) s += vy[e] * vd[e];
        s = group_sum<TPR>(s);
#pragma unroll
        for (int e = 0; e < E; e++) vx[e] += scale * vy[e] * (vd[e] - s);
        rg_store<T, KP, TPR>(dx + off, C, gl, ok, vx);
    }
}

extern "C" __global__ void softmax_fwd_f32(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_body(x, y, scale, rows, C); }
extern "C" __global__ void softmax_bwd_f32(const float* y, const float* dy, float scale, float* dx, long long rows, int C)
{ softmax_bwd_body(y, dy, scale, dx, rows, C); }

extern "C" __global__ void softmax_fwd_bf16(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_body(x, y, scale, rows, C); }
extern "C" __global__ void softmax_bwd_bf16(const bf16* y, const bf16* dy, float scale, bf16* dx, long long rows, int C)
{ softmax_bwd_body(y, dy, scale, dx, rows, C); }

// Fast-path instantiations (see CudaBackend.RowVariant): _k<KP>t<TPR>, forward also _k<KP>t<TPR>r<RB>.
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k1t8(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 1, 8, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_f32_k1t8(const float* y, const float* dy, float scale, float* dx, long long rows, int C)
{ softmax_bwd_fast<float, 1, 8>(y, dy, scale, dx, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k1t8r2(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 1, 8, 2>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k1t8r4(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 1, 8, 4>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k1t16(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 1, 16, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_f32_k1t16(const float* y, const float* dy, float scale, float* dx, long long rows, int C)
{ softmax_bwd_fast<float, 1, 16>(y, dy, scale, dx, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k1t16r2(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 1, 16, 2>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k1t16r4(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 1, 16, 4>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k1t32(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 1, 32, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_f32_k1t32(const float* y, const float* dy, float scale, float* dx, long long rows, int C)
{ softmax_bwd_fast<float, 1, 32>(y, dy, scale, dx, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k1t32r2(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 1, 32, 2>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k1t32r4(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 1, 32, 4>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k2t32(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 2, 32, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_f32_k2t32(const float* y, const float* dy, float scale, float* dx, long long rows, int C)
{ softmax_bwd_fast<float, 2, 32>(y, dy, scale, dx, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k2t32r2(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 2, 32, 2>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k3t32(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 3, 32, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_f32_k3t32(const float* y, const float* dy, float scale, float* dx, long long rows, int C)
{ softmax_bwd_fast<float, 3, 32>(y, dy, scale, dx, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k4t32(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 4, 32, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_f32_k4t32(const float* y, const float* dy, float scale, float* dx, long long rows, int C)
{ softmax_bwd_fast<float, 4, 32>(y, dy, scale, dx, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k6t32(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 6, 32, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_f32_k6t32(const float* y, const float* dy, float scale, float* dx, long long rows, int C)
{ softmax_bwd_fast<float, 6, 32>(y, dy, scale, dx, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32_k8t32(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_fast<float, 8, 32, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_f32_k8t32(const float* y, const float* dy, float scale, float* dx, long long rows, int C)
{ softmax_bwd_fast<float, 8, 32>(y, dy, scale, dx, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_bf16_k1t8(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_fast<bf16, 1, 8, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_bf16_k1t8(const bf16* y, const bf16* dy, float scale, bf16* dx, long long rows, int C)
{ softmax_bwd_fast<bf16, 1, 8>(y, dy, scale, dx, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_bf16_k1t8r2(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_fast<bf16, 1, 8, 2>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_bf16_k1t8r4(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_fast<bf16, 1, 8, 4>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_bf16_k1t16(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_fast<bf16, 1, 16, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_bf16_k1t16(const bf16* y, const bf16* dy, float scale, bf16* dx, long long rows, int C)
{ softmax_bwd_fast<bf16, 1, 16>(y, dy, scale, dx, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_bf16_k1t16r2(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_fast<bf16, 1, 16, 2>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_bf16_k1t16r4(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_fast<bf16, 1, 16, 4>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_bf16_k1t32(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_fast<bf16, 1, 32, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_bf16_k1t32(const bf16* y, const bf16* dy, float scale, bf16* dx, long long rows, int C)
{ softmax_bwd_fast<bf16, 1, 32>(y, dy, scale, dx, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_bf16_k1t32r2(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_fast<bf16, 1, 32, 2>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_bf16_k1t32r4(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_fast<bf16, 1, 32, 4>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_bf16_k2t32(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_fast<bf16, 2, 32, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_bf16_k2t32(const bf16* y, const bf16* dy, float scale, bf16* dx, long long rows, int C)
{ softmax_bwd_fast<bf16, 2, 32>(y, dy, scale, dx, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_bf16_k2t32r2(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_fast<bf16, 2, 32, 2>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_bf16_k3t32(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_fast<bf16, 3, 32, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_bf16_k3t32(const bf16* y, const bf16* dy, float scale, bf16* dx, long long rows, int C)
{ softmax_bwd_fast<bf16, 3, 32>(y, dy, scale, dx, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_bf16_k4t32(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_fast<bf16, 4, 32, 1>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_bf16_k4t32(const bf16* y, const bf16* dy, float scale, bf16* dx, long long rows, int C)
{ softmax_bwd_fast<bf16, 4, 32>(y, dy, scale, dx, rows, C); }
// cp.async pipeline forward: _k<KP>t<TPR>p, S = 4 stages (3 for KP = 2); 4 blocks per SM.
extern "C" __global__ void __launch_bounds__(256, 4) softmax_fwd_f32_k1t8p(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_pipe<float, 1, 8, 4>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) softmax_fwd_f32_k1t16p(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_pipe<float, 1, 16, 4>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) softmax_fwd_f32_k1t32p(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_pipe<float, 1, 32, 4>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) softmax_fwd_f32_k2t32p(const float* x, float* y, float scale, long long rows, int C)
{ softmax_fwd_pipe<float, 2, 32, 3>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) softmax_fwd_bf16_k1t8p(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_pipe<bf16, 1, 8, 4>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) softmax_fwd_bf16_k1t16p(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_pipe<bf16, 1, 16, 4>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) softmax_fwd_bf16_k1t32p(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_pipe<bf16, 1, 32, 4>(x, y, scale, rows, C); }
extern "C" __global__ void __launch_bounds__(256, 4) softmax_fwd_bf16_k2t32p(const bf16* x, bf16* y, float scale, long long rows, int C)
{ softmax_fwd_pipe<bf16, 2, 32, 3>(x, y, scale, rows, C); }
