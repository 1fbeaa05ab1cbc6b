// reduce.cu — sums over the last dim, over rows (bias gradients), over everything; L2 normalise
// (fwd/bwd); sum of squares over many tensors. All reductions are deterministic: partial sums go to
// an f32 scratch buffer in a fixed layout and a second kernel adds them up in a fixed order.
// Gradient convention: l2norm_bwd does dx += ...; colsum_partials adds (+=) when accumulate != 0.
// T = dtype of the big input; small outputs take a run-time dtype code (0 = f32, 1 = bf16).
#include "common.cuh"

// y[c] (+)= Σ_r partial[r·ld + c] for c < C. Block (32, ≤32), grid ceil(C/32): threadIdx.y splits
// the R partial rows (reads stay coalesced along c), then the row-group sums fold in a fixed order.
extern "C" __global__ void colsum_partials(const float* partial, long long R, long long ld, int C, void* y, int ydt,
                                           int accumulate)
{
    __shared__ float sm[32][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (c < C)
        for (i64 r = threadIdx.y; r < R; r += blockDim.y) s += partial[r * ld + c];
    sm[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C)
    {
        float t = 0.0f;
        for (int j = 0; j < (int)blockDim.y; j++) t += sm[j][threadIdx.x];
        if (accumulate) t += load_dyn(y, c, ydt);
        store_dyn(y, c, ydt, t);
    }
}

// y[0] = Σ partial[0..R) (one block).
extern "C" __global__ void sum_final(const float* partial, long long R, void* y, int ydt)
{
    __shared__ float scratch[32];
    float s = 0.0f;
    for (i64 i = threadIdx.x; i < R; i += blockDim.x) s += partial[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) store_dyn(y, 0, ydt, s);
}

// Column partials of x [rows, C]: block (32, 8), grid (ceil(C / (32·nv)), R); see colpart_finish.
template <typename T>
__device__ __forceinline__ void sum_rows_body(const T* x, float* partial, i64 rows, int C, int vec)
{
    const int N = Pack<T>::N;
    int nv = vec ? N : 1;
    int col0 = (blockIdx.x * 32 + threadIdx.x) * nv;
    float acc[Pack<T>::N];
#pragma unroll
    for (int k = 0; k < N; k++) acc[k] = 0.0f;
    if (col0 < C)
    {
        for (i64 r = (i64)blockIdx.y * 8 + threadIdx.y; r < rows; r += (i64)gridDim.y * 8)
        {
            if (vec)
            {
                Pack<T> v = load_pack(x + r * C + col0);
#pragma unroll
                for (int k = 0; k < N; k++) acc[k] += to_f(v.v[k]);
            }
            else acc[0] += to_f(x[r * C + col0]);
        }
    }
    colpart_finish(acc, nv, C, partial + (i64)blockIdx.y * C);
}

template <typename T>
__device__ __forceinline__ void sum_last_body(const T* x, void* y, int ydt, i64 rows, int C)
{
    const int lane = threadIdx.x & 31;
    for (i64 r = global_warp(); r < rows; r += global_warps())
    {
        float s = 0.0f;
        for (int c = lane; c < C; c += 32) s += to_f(x[r * C + c]);
        s = warp_sum(s);
        if (lane == 0) store_dyn(y, r, ydt, s);
    }
}

template <typename T>
__device__ __forceinline__ void sum_all_body(const T* x, long long n, float* partial)
{
    __shared__ float scratch[32];
    float s = 0.0f;
    FIBER_GRID_LOOP(i, n) s += to_f(x[i]);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// norm[r] = ‖x_r‖ (unclamped); y = x / max(norm, eps).
template <typename T>
__device__ __forceinline__ void l2norm_fwd_body(const T* x, float eps, T* y, float* norm, i64 rows, int C)
{
    const int lane = threadIdx.x & 31;
    const bool vec = (C % Pack<T>::N) == 0;
    for (i64 r = global_warp(); r < rows; r += global_warps())
    {
        const i64 off = r * C;
        float nrm;
        if (C <= FIBER_ROW_CACHE)
        {
            float v[32];
            row_load(x + off, C, lane, vec, v);
            float q = 0.0f;
#pragma unroll
            for (int k = 0; k < 32; k++) q += v[k] * v[k];
            nrm = sqrtf(warp_sum(q));
            float inv = 1.0f / fmaxf(nrm, eps);
#pragma unroll
            for (int k = 0; k < 32; k++) v[k] *= inv;
            row_store(y + off, C, lane, vec, v);
        }
        else
        {
            float q = 0.0f;
            for (int c = lane; c < C; c += 32) { float v = to_f(x[off + c]); q += v * v; }
            nrm = sqrtf(warp_sum(q));
            float inv = 1.0f / fmaxf(nrm, eps);
            for (int c = lane; c < C; c += 32) y[off + c] = from_f<T>(to_f(x[off + c]) * inv);
        }
        if (lane == 0) norm[r] = nrm;
    }
}

// dx += (dy − y·Σ(dy·y)) / max(norm, eps)
template <typename T>
__device__ __forceinline__ void l2norm_bwd_body(const T* y, const float* norm, float eps, const T* dy, T* dx, i64 rows, int C)
{
    const int lane = threadIdx.x & 31;
    for (i64 r = global_warp(); r < rows; r += global_warps())
    {
        const i64 off = r * C;
        float s = 0.0f;
        for (int c = lane; c < C; c += 32) s += to_f(y[off + c]) * to_f(dy[off + c]);
        s = warp_sum(s);
        float inv = 1.0f / fmaxf(norm[r], eps);
        for (int c = lane; c < C; c += 32)
            dx[off + c] = from_f<T>(to_f(dx[off + c]) + (to_f(dy[off + c]) - to_f(y[off + c]) * s) * inv);
    }
}



extern "C" __global__ void sum_rows_f32(const float* x, float* partial, long long rows, int C, int vec)
{ sum_rows_body(x, partial, rows, C, vec); }
extern "C" __global__ void sum_last_f32(const float* x, void* y, int ydt, long long rows, int C)
{ sum_last_body(x, y, ydt, rows, C); }
extern "C" __global__ void sum_all_f32(const float* x, long long n, float* partial) { sum_all_body(x, n, partial); }
extern "C" __global__ void l2norm_fwd_f32(const float* x, float eps, float* y, float* norm, long long rows, int C)
{ l2norm_fwd_body(x, eps, y, norm, rows, C); }
extern "C" __global__ void l2norm_bwd_f32(const float* y, const float* norm, float eps, const float* dy, float* dx,
                                          long long rows, int C)
{ l2norm_bwd_body(y, norm, eps, dy, dx, rows, C); }

extern "C" __global__ void sum_rows_bf16(const bf16* x, float* partial, long long rows, int C, int vec)
{ sum_rows_body(x, partial, rows, C, vec); }
extern "C" __global__ void sum_last_bf16(const bf16* x, void* y, int ydt, long long rows, int C)
{ sum_last_body(x, y, ydt, rows, C); }
extern "C" __global__ void sum_all_bf16(const bf16* x, long long n, float* partial) { sum_all_body(x, n, partial); }
extern "C" __global__ void l2norm_fwd_bf16(const bf16* x, float eps, bf16* y, float* norm, long long rows, int C)
{ l2norm_fwd_body(x, eps, y, norm, rows, C); }
extern "C" __global__ void l2norm_bwd_bf16(const bf16* y, const float* norm, float eps, const bf16* dy, bf16* dx,
                                          long long rows, int C)
{ l2norm_bwd_body(y, norm, eps, dy, dx, rows, C); }

// One entry per tensor of a SumOfSquares call (device memory, 24 bytes; CudaBackend mirrors it).
struct SumsqEntry { u64 ptr; long long n; int dt; int pad; };

// Grid (bx, ntensors): block (b, t) writes Σx² over its grid-stride share of tensor t to
// partial[t·bx + b]; sum_final then adds the ntensors·bx partials.
extern "C" __global__ void sumsq_multi(const SumsqEntry* table, float* partial)
{
    __shared__ float scratch[32];
    const SumsqEntry e = table[blockIdx.y];
    float s = 0.0f;
    if (e.dt == 1) { const bf16* p = (const bf16*)e.ptr; FIBER_GRID_LOOP(i, e.n) { float v = bf16_to_float(p[i]); s += v * v; } }
    else { const float* p = (const float*)e.ptr; FIBER_GRID_LOOP(i, e.n) { float v = p[i]; s += v * v; } }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) partial[(i64)blockIdx.y * gridDim.x + blockIdx.x] = s;
}
