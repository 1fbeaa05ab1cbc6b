// gated_residual.cu — y = r + α·x with α a one-element device tensor (the FIBER fusion gates alpha_i2t /
// alpha_t2i), and its backward, so the gate and the residual add cost one pass instead of a GEMM-based
// scale and a separate add.
//   forward : y[e] = r[e] + α·x[e]                      (r, x, y: T; α: f32 or bf16, runtime dtype adt)
//   backward: dr += dy, dx += α·dy (either may be null), dα += Σ dy·x
// dα is deterministic: each block writes the partial sum of its grid-stride share into part[blockIdx.x]
// (the grid size is fixed by n on the host), then one block adds the partials in a fixed order.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ void gres_fwd(const T* r, const T* x, const void* alpha, int adt, T* y, i64 n)
{
    const float a = load_dyn(alpha, 0, adt);
    FIBER_GRID_LOOP(e, n) y[e] = from_f<T>(to_f(r[e]) + a * to_f(x[e]));
}

template <typename T>
__device__ __forceinline__ void gres_bwd(const T* dy, const T* x, const void* alpha, int adt, T* dr, T* dx, float* part, i64 n)
{
    __shared__ float scratch[32];
    const float a = load_dyn(alpha, 0, adt);
    float acc = 0.0f;
    FIBER_GRID_LOOP(e, n)
    {
        float g = to_f(dy[e]);
        if (dr != nullptr) dr[e] = from_f<T>(to_f(dr[e]) + g);
        if (dx != nullptr) dx[e] = from_f<T>(to_f(dx[e]) + a * g);
        acc += g * to_f(x[e]);
    }
    float s = block_sum(acc, scratch);
    if (part != nullptr && threadIdx.x == 0) part[blockIdx.x] = s;
}

extern "C" __global__ void gated_residual_fwd_f32(const float* r, const float* x, const void* alpha, int adt, float* y, i64 n)
{
    gres_fwd<float>(r, x, alpha, adt, y, n);
}
extern "C" __global__ void gated_residual_fwd_bf16(const bf16* r, const bf16* x, const void* alpha, int adt, bf16* y, i64 n)
{
    gres_fwd<bf16>(r, x, alpha, adt, y, n);
}
extern "C" __global__ void gated_residual_bwd_f32(const float* dy, const float* x, const void* alpha, int adt, float* dr, float* dx, float* part, i64 n)
{
    gres_bwd<float>(dy, x, alpha, adt, dr, dx, part, n);
}
extern "C" __global__ void gated_residual_bwd_bf16(const bf16* dy, const bf16* x, const void* alpha, int adt, bf16* dr, bf16* dx, float* part, i64 n)
{
    gres_bwd<bf16>(dy, x, alpha, adt, dr, dx, part, n);
}

// dalpha[0] += Σ_b part[b], summed in a fixed order by one block.
extern "C" __global__ void gated_residual_dalpha(const float* part, int nparts, void* dalpha, int adt)
{
    __shared__ float scratch[32];
    float acc = 0.0f;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) acc += part[i];
    float s = block_sum(acc, scratch);
    if (threadIdx.x == 0) store_dyn(dalpha, 0, adt, load_dyn(dalpha, 0, adt) + s);
}
