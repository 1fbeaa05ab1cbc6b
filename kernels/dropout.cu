// dropout.cu — inverted dropout with a counter-based mask (Philox4x32-10, see common.cuh), so the
// backward recomputes the mask instead of storing it.
// Gradient convention: dx += dy·keep/(1−p).
// Element e is kept iff uniform(seed, offset + e) >= p; kept values are scaled by 1/(1−p)
// (0 when p >= 1: everything is dropped).
#include "common.cuh"

__device__ __forceinline__ float dropout_scale(float p) { return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f; }

template <typename T>
__device__ __forceinline__ void dropout_fwd_body(const T* x, T* y, long long n, float p, u64 seed, u64 offset)
{
    const float sc = dropout_scale(p);
    FIBER_GRID_LOOP(e, n)
    {
        bool keep = philox_uniform(seed, offset + (u64)e) >= p;
        y[e] = from_f<T>(keep ? to_f(x[e]) * sc : 0.0f);
    }
}

template <typename T>
__device__ __forceinline__ void dropout_bwd_body(const T* dy, T* dx, long long n, float p, u64 seed, u64 offset)
{
    const float sc = dropout_scale(p);
    FIBER_GRID_LOOP(e, n)
    {
        if (philox_uniform(seed, offset + (u64)e) >= p) dx[e] = from_f<T>(to_f(dx[e]) + to_f(dy[e]) * sc);
    }
}



extern "C" __global__ void dropout_fwd_f32(const float* x, float* y, long long n, float p, unsigned long long seed,
                                           unsigned long long offset)
{ dropout_fwd_body(x, y, n, p, seed, offset); }
extern "C" __global__ void dropout_bwd_f32(const float* dy, float* dx, long long n, float p, unsigned long long seed,
                                           unsigned long long offset)
{ dropout_bwd_body(dy, dx, n, p, seed, offset); }

extern "C" __global__ void dropout_fwd_bf16(const bf16* x, bf16* y, long long n, float p, unsigned long long seed,
                                           unsigned long long offset)
{ dropout_fwd_body(x, y, n, p, seed, offset); }
extern "C" __global__ void dropout_bwd_bf16(const bf16* dy, bf16* dx, long long n, float p, unsigned long long seed,
                                           unsigned long long offset)
{ dropout_bwd_body(dy, dx, n, p, seed, offset); }
