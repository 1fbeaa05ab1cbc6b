// crossentropy.cu — per-row cross-entropy with saved logsumexp, and its backward.
// Gradient convention: dlogits[i] += dloss[i]·(softmax(logits[i]) − onehot(t_i)); ignored rows get nothing.
// One block per row (vocabularies are long). T = logits dtype, TI = target index type (i32/i64).
// loss/dloss dtypes are chosen at run time (0 = f32, 1 = bf16); lse is f32.
// A target outside [0, C) that is not ignoreIndex yields a NaN loss (and no gradient) so the error
// shows up instead of reading out of bounds.
#include "common.cuh"

template <typename T, typename TI>
__device__ __forceinline__ void ce_fwd_body(const T* logits, const TI* targets, long long ignore, void* loss, int loss_dt,
                                            float* lse, int C)
{
    __shared__ float scratch[32];
    const i64 r = blockIdx.x;
    const T* x = logits + r * C;
    float mx = fiber_neg_inf(), s = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
    {
        float v = to_f(x[c]);
        if (v == fiber_neg_inf()) continue; // masked: adds 0 (and exp(-inf - -inf) would be NaN)
        if (v > mx) { s = s * expf(mx - v) + 1.0f; mx = v; }
        else s += expf(v - mx);
    }
    float M = block_max(mx, scratch);
    s = (mx == fiber_neg_inf()) ? 0.0f : s * expf(mx - M);
    float S = block_sum(s, scratch);
    if (threadIdx.x == 0)
    {
        float l = M + logf(S);
        lse[r] = l;
        long long t = (long long)targets[r];
        float out;
        if (t == ignore) out = 0.0f;
        else if (t < 0 || t >= C) out = fiber_u2f(0x7fc00000u);
        else out = l - to_f(x[t]);
        store_dyn(loss, r, loss_dt, out);
    }
}

template <typename T, typename TI>
__device__ __forceinline__ void ce_bwd_body(const T* logits, const TI* targets, long long ignore, const float* lse,
                                            const void* dloss, int dloss_dt, T* dlogits, int C)
{
    const i64 r = blockIdx.x;
    long long t = (long long)targets[r];
    if (t == ignore || t < 0 || t >= C) return;
    const float l = lse[r], g = load_dyn(dloss, r, dloss_dt);
    const T* x = logits + r * C;
    T* dx = dlogits + r * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
    {
        float p = expf(to_f(x[c]) - l) - (c == t ? 1.0f : 0.0f);
        dx[c] = from_f<T>(to_f(dx[c]) + g * p);
    }
}



extern "C" __global__ void ce_fwd_f32_i32(const float* logits, const int* targets, long long ignore, void* loss, int loss_dt,
                                      float* lse, int C)
{ ce_fwd_body(logits, targets, ignore, loss, loss_dt, lse, C); }
extern "C" __global__ void ce_bwd_f32_i32(const float* logits, const int* targets, long long ignore, const float* lse,
                                      const void* dloss, int dloss_dt, float* dlogits, int C)
{ ce_bwd_body(logits, targets, ignore, lse, dloss, dloss_dt, dlogits, C); }

extern "C" __global__ void ce_fwd_f32_i64(const float* logits, const long long* targets, long long ignore, void* loss, int loss_dt,
                                      float* lse, int C)
{ ce_fwd_body(logits, targets, ignore, loss, loss_dt, lse, C); }
extern "C" __global__ void ce_bwd_f32_i64(const float* logits, const long long* targets, long long ignore, const float* lse,
                                      const void* dloss, int dloss_dt, float* dlogits, int C)
{ ce_bwd_body(logits, targets, ignore, lse, dloss, dloss_dt, dlogits, C); }

extern "C" __global__ void ce_fwd_bf16_i32(const bf16* logits, const int* targets, long long ignore, void* loss, int loss_dt,
                                      float* lse, int C)
{ ce_fwd_body(logits, targets, ignore, loss, loss_dt, lse, C); }
extern "C" __global__ void ce_bwd_bf16_i32(const bf16* logits, const int* targets, long long ignore, const float* lse,
                                      const void* dloss, int dloss_dt, bf16* dlogits, int C)
{ ce_bwd_body(logits, targets, ignore, lse, dloss, dloss_dt, dlogits, C); }

extern "C" __global__ void ce_fwd_bf16_i64(const bf16* logits, const long long* targets, long long ignore, void* loss, int loss_dt,
                                      float* lse, int C)
{ ce_fwd_body(logits, targets, ignore, loss, loss_dt, lse, C); }
extern "C" __global__ void ce_bwd_bf16_i64(const bf16* logits, const long long* targets, long long ignore, const float* lse,
                                      const void* dloss, int dloss_dt, bf16* dlogits, int C)
{ ce_bwd_body(logits, targets, ignore, lse, dloss, dloss_dt, dlogits, C); }
