// gelu.cu — y = gelu_erf(x + bias) and its backward.
// Gradient convention: dx += dy·gelu'(x + bias); dbias is produced as deterministic column partials
// ([gridDim.y, C] f32) that reduce.cu's colsum_partials adds (+=) into dbias.
// T = dtype of x/y/dy/dx, P = dtype of bias (f32 or bf16). bias may be null (no bias).
#include "common.cuh"

// The N bias values of one pack's columns (c a multiple of N, so whole 16-byte loads when N
// values of P fill them: f32 bias with f32 x, bf16 with bf16; else two halves or scalars).
template <typename T, typename P>
__device__ __forceinline__ void bias_pack(const P* bias, int c, float (&b)[Pack<T>::N])
{
    const int N = Pack<T>::N;
    if (!bias)
    {
#pragma unroll
        for (int j = 0; j < N; j++) b[j] = 0.0f;
        return;
    }
    if constexpr ((N * sizeof(P)) % 16 == 0)
    {
        if (!aligned16(bias))
        {
#pragma unroll
            for (int j = 0; j < N; j++) b[j] = to_f(bias[c + j]);
            return;
        }
#pragma unroll
        for (int h = 0; h < (int)(N * sizeof(P) / 16); h++)
        {
            Pack<P> pk = load_pack(bias + c + h * Pack<P>::N);
#pragma unroll
            for (int j = 0; j < Pack<P>::N; j++) b[h * Pack<P>::N + j] = to_f(pk.v[j]);
        }
    }
    else
    {
#pragma unroll
        for (int j = 0; j < N; j++) b[j] = to_f(bias[c + j]);
    }
}

// U packs per thread and step (4; _u1/_u2 kernels for 1 and 2), all loaded before any is computed;
// pack u of a step is at u·stride + t, so every load instruction stays coalesced.
template <typename T, typename P, int U>
__device__ __forceinline__ void bias_gelu_fwd_body(const T* x, const P* bias, T* y, i64 n, int C)
{
    const int N = Pack<T>::N;
    const i64 stride = (i64)blockDim.x * gridDim.x;
    const i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    bool vec = (C % N) == 0 && aligned16(x) && aligned16(y);
    const i64 np = vec ? n / N : 0;
    // Column of a pack: 32-bit math when the index fits (64-bit modulo is slow on the GPU).
    const bool small = np < 0x7fffffffLL / N;
    for (i64 p0 = t; p0 < np; p0 += stride * U)
    {
        Pack<T> vx[U];
#pragma unroll
        for (int u = 0; u < U; u++)
        {
            const i64 p = p0 + u * stride;
            if (p < np) vx[u] = load_pack(x + p * N);
        }
#pragma unroll
        for (int u = 0; u < U; u++)
        {
            const i64 p = p0 + u * stride;
            if (p < np)
            {
                int c0 = small ? (int)((u32)(p * N) % (u32)C) : (int)((p * N) % C);
                float b[Pack<T>::N];
                bias_pack<T, P>(bias, c0, b);
                float o[Pack<T>::N];
#pragma unroll
                for (int k = 0; k < N; k++) o[k] = gelu_erf(to_f(vx[u].v[k]) + b[k]);
                store_pack(y + p * N, pack_from<T>(o));
            }
        }
    }
    for (i64 i = np * N + t; i < n; i += stride)
        y[i] = from_f<T>(gelu_erf(to_f(x[i]) + (bias ? to_f(bias[i % C]) : 0.0f)));
}

// Block (TX, TY), TX·TY = 256, grid (ceil(C / (TX·nv)), R). vec != 0 means C % Pack<T>::N == 0
// (host decides; buffers are 16-byte aligned), so each thread moves one 16-byte pack per row, nv = N.
// Thread (tx, ty) owns columns col0..col0+nv and visits rows blockIdx.y·TY + ty + k·gridDim.y·TY,
// two per step with all six loads issued first. With partial, it sums dx's increments per column
// in registers; the block folds its TY row groups in order into partial[blockIdx.y] (f32 [R, C]).
template <typename T, typename P>
__device__ __forceinline__ void bias_gelu_bwd_body(const T* x, const P* bias, const T* dy, T* dx, float* partial,
                                                   i64 rows, int C, int vec)
{
    const int N = Pack<T>::N;
    const int nv = vec ? N : 1, TX = blockDim.x, TY = blockDim.y, tx = threadIdx.x, ty = threadIdx.y;
    const int col0 = (blockIdx.x * TX + tx) * nv;
    float acc[Pack<T>::N], b[Pack<T>::N];
#pragma unroll
    for (int k = 0; k < N; k++) acc[k] = 0.0f;
    if (vec && col0 < C) bias_pack<T, P>(bias, col0, b);
    else
    {
#pragma unroll
        for (int k = 0; k < N; k++) b[k] = (bias && k < nv && col0 + k < C) ? to_f(bias[col0 + k]) : 0.0f;
    }
    const i64 rstep = (i64)gridDim.y * TY;
    if (col0 < C)
    {
        for (i64 r0 = (i64)blockIdx.y * TY + ty; r0 < rows; r0 += 2 * rstep)
        {
            const i64 r1 = r0 + rstep;
            const bool two = r1 < rows;
            if (vec)
            {
                float f[Pack<T>::N];
                const i64 b0 = r0 * C + col0, b1 = two ? r1 * C + col0 : b0;
                Pack<T> x0 = load_pack(x + b0), d0 = load_pack(dy + b0), o0 = load_pack((const T*)dx + b0);
                Pack<T> x1, d1, o1;
                if (two) { x1 = load_pack(x + b1); d1 = load_pack(dy + b1); o1 = load_pack((const T*)dx + b1); }
#pragma unroll
                for (int k = 0; k < N; k++)
                {
                    float d = to_f(d0.v[k]) * gelu_erf_grad(to_f(x0.v[k]) + b[k]);
                    acc[k] += d;
                    f[k] = to_f(o0.v[k]) + d;
                }
                store_pack(dx + b0, pack_from<T>(f));
                if (two)
                {
#pragma unroll
                    for (int k = 0; k < N; k++)
                    {
                        float d = to_f(d1.v[k]) * gelu_erf_grad(to_f(x1.v[k]) + b[k]);
                        acc[k] += d;
                        f[k] = to_f(o1.v[k]) + d;
                    }
                    store_pack(dx + b1, pack_from<T>(f));
                }
            }
            else
            {
                const i64 b0 = r0 * C + col0, b1 = r1 * C + col0;
                float x0 = to_f(x[b0]), d0 = to_f(dy[b0]), o0 = to_f(dx[b0]), x1 = 0.0f, d1 = 0.0f, o1 = 0.0f;
                if (two) { x1 = to_f(x[b1]); d1 = to_f(dy[b1]); o1 = to_f(dx[b1]); }
                float g0 = d0 * gelu_erf_grad(x0 + b[0]);
                acc[0] += g0;
                dx[b0] = from_f<T>(o0 + g0);
                if (two)
                {
                    float g1 = d1 * gelu_erf_grad(x1 + b[0]);
                    acc[0] += g1;
                    dx[b1] = from_f<T>(o1 + g1);
                }
            }
        }
    }
    if (!partial) return; // uniform over the block: no barrier is skipped by only some threads
    __shared__ float sm[256 * Pack<T>::N];
    const int width = TX * nv;
#pragma unroll
    for (int k = 0; k < N; k++) if (k < nv) sm[ty * width + tx * nv + k] = acc[k];
    __syncthreads();
    const int col_base = blockIdx.x * width;
    float* out = partial + (i64)blockIdx.y * C;
    for (int i = ty * TX + tx; i < width; i += TX * TY)
    {
        float s = 0.0f;
        for (int r = 0; r < TY; r++) s += sm[r * width + i];
        if (col_base + i < C) out[col_base + i] = s;
    }
}

extern "C" __global__ void __launch_bounds__(256) bias_gelu_fwd_f32_f32(const float* x, const float* bias, float* y, long long n, int C)
{ bias_gelu_fwd_body<float, float, 4>(x, bias, y, n, C); }
extern "C" __global__ void __launch_bounds__(256) bias_gelu_fwd_f32_f32_u1(const float* x, const float* bias, float* y, long long n, int C)
{ bias_gelu_fwd_body<float, float, 1>(x, bias, y, n, C); }
extern "C" __global__ void __launch_bounds__(256) bias_gelu_fwd_f32_f32_u2(const float* x, const float* bias, float* y, long long n, int C)
{ bias_gelu_fwd_body<float, float, 2>(x, bias, y, n, C); }
extern "C" __global__ void __launch_bounds__(256) bias_gelu_bwd_f32_f32(const float* x, const float* bias, const float* dy, float* dx, float* partial,
                                             long long rows, int C, int vec)
{ bias_gelu_bwd_body(x, bias, dy, dx, partial, rows, C, vec); }

extern "C" __global__ void __launch_bounds__(256) bias_gelu_fwd_f32_bf16(const float* x, const bf16* bias, float* y, long long n, int C)
{ bias_gelu_fwd_body<float, bf16, 4>(x, bias, y, n, C); }
extern "C" __global__ void __launch_bounds__(256) bias_gelu_fwd_f32_bf16_u1(const float* x, const bf16* bias, float* y, long long n, int C)
{ bias_gelu_fwd_body<float, bf16, 1>(x, bias, y, n, C); }
extern "C" __global__ void __launch_bounds__(256) bias_gelu_fwd_f32_bf16_u2(const float* x, const bf16* bias, float* y, long long n, int C)
{ bias_gelu_fwd_body<float, bf16, 2>(x, bias, y, n, C); }
extern "C" __global__ void __launch_bounds__(256) bias_gelu_bwd_f32_bf16(const float* x, const bf16* bias, const float* dy, float* dx, float* partial,
                                             long long rows, int C, int vec)
{ bias_gelu_bwd_body(x, bias, dy, dx, partial, rows, C, vec); }

extern "C" __global__ void __launch_bounds__(256) bias_gelu_fwd_bf16_f32(const bf16* x, const float* bias, bf16* y, long long n, int C)
{ bias_gelu_fwd_body<bf16, float, 4>(x, bias, y, n, C); }
extern "C" __global__ void __launch_bounds__(256) bias_gelu_fwd_bf16_f32_u1(const bf16* x, const float* bias, bf16* y, long long n, int C)
{ bias_gelu_fwd_body<bf16, float, 1>(x, bias, y, n, C); }
extern "C" __global__ void __launch_bounds__(256) bias_gelu_fwd_bf16_f32_u2(const bf16* x, const float* bias, bf16* y, long long n, int C)
{ bias_gelu_fwd_body<bf16, float, 2>(x, bias, y, n, C); }
extern "C" __global__ void __launch_bounds__(256) bias_gelu_bwd_bf16_f32(const bf16* x, const float* bias, const bf16* dy, bf16* dx, float* partial,
                                             long long rows, int C, int vec)
{ bias_gelu_bwd_body(x, bias, dy, dx, partial, rows, C, vec); }

extern "C" __global__ void __launch_bounds__(256) bias_gelu_fwd_bf16_bf16(const bf16* x, const bf16* bias, bf16* y, long long n, int C)
{ bias_gelu_fwd_body<bf16, bf16, 4>(x, bias, y, n, C); }
extern "C" __global__ void __launch_bounds__(256) bias_gelu_fwd_bf16_bf16_u1(const bf16* x, const bf16* bias, bf16* y, long long n, int C)
{ bias_gelu_fwd_body<bf16, bf16, 1>(x, bias, y, n, C); }
extern "C" __global__ void __launch_bounds__(256) bias_gelu_fwd_bf16_bf16_u2(const bf16* x, const bf16* bias, bf16* y, long long n, int C)
{ bias_gelu_fwd_body<bf16, bf16, 2>(x, bias, y, n, C); }
extern "C" __global__ void __launch_bounds__(256) bias_gelu_bwd_bf16_bf16(const bf16* x, const bf16* bias, const bf16* dy, bf16* dx, float* partial,
                                             long long rows, int C, int vec)
{ bias_gelu_bwd_body(x, bias, dy, dx, partial, rows, C, vec); }
