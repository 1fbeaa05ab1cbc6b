// drop_path.cu — stochastic depth (DropPath) with the residual add fused:
//   out[b, e] = (residual ? residual[b, e] : 0) + y[b, e]·s[b]
//   s[b] = keep_b ? scale : 0, keep_b = philox_uniform(seed, offset + b) >= p
// i.e. one Philox draw per sample, the numbers Nn.DropPath takes from its context's stream (counter offset + b),
// computed in the kernel so nothing is uploaded per call and the backward recomputes them.
// `scale` = 1/(1−p) rounded on the host to the activation dtype (what a mask tensor in that dtype holds).
// Backward (+=): dy += dout·s[b] (dropped samples are skipped: they add 0), dresidual += dout; either may be null.
// Grid (x: chunks of a sample's row, y: sample b); units of V elements: V = Pack<T>::N (16-byte accesses, when
// `per` is a multiple of it so every row start is aligned) or 1. A dropped sample's y is never read.
#include "common.cuh"

__device__ __forceinline__ float dp_sample_scale(float p, float scale, u64 seed, u64 offset)
{
    return philox_uniform(seed, offset + (u64)blockIdx.y) >= p ? scale : 0.0f;
}

template <typename T, int V>
__device__ __forceinline__ void dp_fwd(const T* y, const T* res, T* out, i64 per, float p, float scale, u64 seed, u64 offset)
{
    const float s = dp_sample_scale(p, scale, seed, offset);
    const i64 row = (i64)blockIdx.y * per, units = per / V;
    for (i64 u = (i64)blockIdx.x * blockDim.x + threadIdx.x; u < units; u += (i64)gridDim.x * blockDim.x)
    {
        const i64 e = row + u * V;
        float o[V];
        if (res != nullptr) load_floats<T, V>(res + e, o);
        else
        {
#pragma unroll
            for (int j = 0; j < V; j++) o[j] = 0.0f;
        }
        if (s != 0.0f)
        {
            float v[V];
            load_floats<T, V>(y + e, v);
#pragma unroll
            for (int j = 0; j < V; j++) o[j] += v[j] * s;
        }
        store_floats<T, V>(out + e, o);
    }
}

template <typename T, int V>
__device__ __forceinline__ void dp_bwd(const T* dout, T* dy, T* dres, i64 per, float p, float scale, u64 seed, u64 offset)
{
    const float s = dp_sample_scale(p, scale, seed, offset);
    T* dyk = s != 0.0f ? dy : nullptr;
    if (dyk == nullptr && dres == nullptr) return;
    const i64 row = (i64)blockIdx.y * per, units = per / V;
    for (i64 u = (i64)blockIdx.x * blockDim.x + threadIdx.x; u < units; u += (i64)gridDim.x * blockDim.x)
    {
        const i64 e = row + u * V;
        float g[V], a[V];
        load_floats<T, V>(dout + e, g);
        if (dres != nullptr)
        {
            load_floats<T, V>(dres + e, a);
#pragma unroll
            for (int j = 0; j < V; j++) a[j] += g[j];
            store_floats<T, V>(dres + e, a);
        }
        if (dyk != nullptr)
        {
            load_floats<T, V>(dyk + e, a);
#pragma unroll
            for (int j = 0; j < V; j++) a[j] += g[j] * s;
            store_floats<T, V>(dyk + e, a);
        }
    }
}

extern "C" __global__ void drop_path_fwd_f32_v(const float* y, const float* res, float* out, long long per, float p, float scale,
                                               unsigned long long seed, unsigned long long offset)
{ dp_fwd<float, 4>(y, res, out, per, p, scale, seed, offset); }
extern "C" __global__ void drop_path_fwd_f32_s(const float* y, const float* res, float* out, long long per, float p, float scale,
                                               unsigned long long seed, unsigned long long offset)
{ dp_fwd<float, 1>(y, res, out, per, p, scale, seed, offset); }
extern "C" __global__ void drop_path_fwd_bf16_v(const bf16* y, const bf16* res, bf16* out, long long per, float p, float scale,
                                                unsigned long long seed, unsigned long long offset)
{ dp_fwd<bf16, 8>(y, res, out, per, p, scale, seed, offset); }
extern "C" __global__ void drop_path_fwd_bf16_s(const bf16* y, const bf16* res, bf16* out, long long per, float p, float scale,
                                                unsigned long long seed, unsigned long long offset)
{ dp_fwd<bf16, 1>(y, res, out, per, p, scale, seed, offset); }
extern "C" __global__ void drop_path_bwd_f32_v(const float* dout, float* dy, float* dres, long long per, float p, float scale,
                                               unsigned long long seed, unsigned long long offset)
{ dp_bwd<float, 4>(dout, dy, dres, per, p, scale, seed, offset); }
extern "C" __global__ void drop_path_bwd_f32_s(const float* dout, float* dy, float* dres, long long per, float p, float scale,
                                               unsigned long long seed, unsigned long long offset)
{ dp_bwd<float, 1>(dout, dy, dres, per, p, scale, seed, offset); }
extern "C" __global__ void drop_path_bwd_bf16_v(const bf16* dout, bf16* dy, bf16* dres, long long per, float p, float scale,
                                                unsigned long long seed, unsigned long long offset)
{ dp_bwd<bf16, 8>(dout, dy, dres, per, p, scale, seed, offset); }
extern "C" __global__ void drop_path_bwd_bf16_s(const bf16* dout, bf16* dy, bf16* dres, long long per, float p, float scale,
                                                unsigned long long seed, unsigned long long offset)
{ dp_bwd<bf16, 1>(dout, dy, dres, per, p, scale, seed, offset); }
