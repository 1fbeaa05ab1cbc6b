// gelu.cu — y = gelu_erf(x + bias) and its backward.
// Gradient convention: dx += dy·gelu'(x + bias); dbias is produced as deterministic column partials
// ([gridDim.y, C] f32) that reduce.cu's colsum_partials adds (+=) into dbias.
// T = dtype of x/y/dy/dx, P = dtype of bias (f32 or bf16). bias may be null (no bias).
#include "common.cuh"

template <typename T, typename P>
__device__ __forceinline__ void bias_gelu_fwd_body(const T* x, const P* bias, T* y, i64 n, int C)
{
    const int N = Pack<T>::N;
    const i64 stride = (i64)blockDim.x * gridDim.x;
    const i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    bool vec = (C % N) == 0 && aligned16(x) && aligned16(y);
    i64 np = vec ? n / N : 0;
    for (i64 p = t; p < np; p += stride)
    {
        Pack<T> vx = load_pack(x + p * N), vy;
        // Column of the pack: 32-bit math when the index fits (64-bit modulo is slow on the GPU).
        int c0 = np < 0x7fffffffLL / N ? (int)((u32)(p * N) % (u32)C) : (int)((p * N) % C);
#pragma unroll
        for (int k = 0; k < N; k++)
        {
            float v = to_f(vx.v[k]) + (bias ? to_f(bias[c0 + k]) : 0.0f);
            vy.v[k] = from_f<T>(gelu_erf(v));
        }
        store_pack(y + p * N, vy);
    }
    for (i64 i = np * N + t; i < n; i += stride)
        y[i] = from_f<T>(gelu_erf(to_f(x[i]) + (bias ? to_f(bias[i % C]) : 0.0f)));
}

// Block (32, 8), grid (ceil(C / (32·nv)), R). vec != 0 means C % Pack<T>::N == 0 (host decides;
// buffers are 16-byte aligned), so each thread moves one 16-byte pack per row.
template <typename T, typename P>
__device__ __forceinline__ void bias_gelu_bwd_body(const T* x, const P* bias, const T* dy, T* dx, float* partial,
                                                   i64 rows, int C, int vec)
{
    const int N = Pack<T>::N;
    int nv = vec ? N : 1;
    int col0 = (blockIdx.x * 32 + threadIdx.x) * nv;
    float acc[Pack<T>::N], b[Pack<T>::N];
#pragma unroll
    for (int k = 0; k < N; k++) { acc[k] = 0.0f; b[k] = (bias && k < nv && col0 + k < C) ? to_f(bias[col0 + k]) : 0.0f; }
    if (col0 < C)
    {
        for (i64 r = (i64)blockIdx.y * 8 + threadIdx.y; r < rows; r += (i64)gridDim.y * 8)
        {
            i64 base = r * C + col0;
            if (vec)
            {
                Pack<T> vx = load_pack(x + base), vdy = load_pack(dy + base), vdx = load_pack((const T*)dx + base);
#pragma unroll
                for (int k = 0; k < N; k++)
                {
                    float d = to_f(vdy.v[k]) * gelu_erf_grad(to_f(vx.v[k]) + b[k]);
                    acc[k] += d;
                    vdx.v[k] = from_f<T>(to_f(vdx.v[k]) + d);
                }
                store_pack(dx + base, vdx);
            }
            else
            {
                float d = to_f(dy[base]) * gelu_erf_grad(to_f(x[base]) + b[0]);
                acc[0] += d;
                dx[base] = from_f<T>(to_f(dx[base]) + d);
            }
        }
    }
    if (partial) colpart_finish(acc, nv, C, partial + (i64)blockIdx.y * C);
}



extern "C" __global__ void bias_gelu_fwd_f32_f32(const float* x, const float* bias, float* y, long long n, int C)
{ bias_gelu_fwd_body(x, bias, y, n, C); }
extern "C" __global__ void bias_gelu_bwd_f32_f32(const float* x, const float* bias, const float* dy, float* dx, float* partial,
                                             long long rows, int C, int vec)
{ bias_gelu_bwd_body(x, bias, dy, dx, partial, rows, C, vec); }

extern "C" __global__ void bias_gelu_fwd_f32_bf16(const float* x, const bf16* bias, float* y, long long n, int C)
{ bias_gelu_fwd_body(x, bias, y, n, C); }
extern "C" __global__ void bias_gelu_bwd_f32_bf16(const float* x, const bf16* bias, const float* dy, float* dx, float* partial,
                                             long long rows, int C, int vec)
{ bias_gelu_bwd_body(x, bias, dy, dx, partial, rows, C, vec); }

extern "C" __global__ void bias_gelu_fwd_bf16_f32(const bf16* x, const float* bias, bf16* y, long long n, int C)
{ bias_gelu_fwd_body(x, bias, y, n, C); }
extern "C" __global__ void bias_gelu_bwd_bf16_f32(const bf16* x, const float* bias, const bf16* dy, bf16* dx, float* partial,
                                             long long rows, int C, int vec)
{ bias_gelu_bwd_body(x, bias, dy, dx, partial, rows, C, vec); }

extern "C" __global__ void bias_gelu_fwd_bf16_bf16(const bf16* x, const bf16* bias, bf16* y, long long n, int C)
{ bias_gelu_fwd_body(x, bias, y, n, C); }
extern "C" __global__ void bias_gelu_bwd_bf16_bf16(const bf16* x, const bf16* bias, const bf16* dy, bf16* dx, float* partial,
                                             long long rows, int C, int vec)
{ bias_gelu_bwd_body(x, bias, dy, dx, partial, rows, C, vec); }
