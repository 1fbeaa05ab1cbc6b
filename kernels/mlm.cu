// mlm.cu — the row kernels of the fused MLM decoder + cross-entropy. The matmuls (≈all the FLOPs:
// 2·N·V·H for the forward, three times that with the backward) go through the engine GEMM
// (cuBLASLt, tensor cores) one V tile at a time into an f32 [N, tv] scratch; these kernels do the rest:
//   mlm_online: fold a tile of logits into each row's running max / Σexp and catch the target logit;
//   mlm_finish: lse and per-row loss;
//   mlm_grad:   turn a recomputed tile of logits into G = dloss·(softmax − onehot) (in the weights'
//               dtype, for the two gradient GEMMs) and add its column sums to dbias.
// The bias is added here (not in the GEMM epilogue) so it may be f32 or bf16 whatever the scratch is.
// Dtype codes chosen at run time: 0 = f32, 1 = bf16, -1 = absent.
#include "common.cuh"

__device__ __forceinline__ float mlm_bias(const void* bias, int bdt, i64 v)
{
    return bdt < 0 ? 0.0f : load_dyn(bias, v, bdt);
}

// One block per row. State m (running max), l (Σexp(x − m)), tgt (target logit) in f32 [N].
template <typename TI>
__device__ __forceinline__ void mlm_online_body(const float* logits, int tv, long long v0, const void* bias, int bdt,
                                                const TI* labels, float* m, float* l, float* tgt, int first)
{
    __shared__ float scratch[32];
    const i64 r = blockIdx.x;
    const float* x = logits + r * tv;
    float mx = fiber_neg_inf(), s = 0.0f;
    for (int c = threadIdx.x; c < tv; c += blockDim.x)
    {
        float v = x[c] + mlm_bias(bias, bdt, v0 + c);
        if (v == fiber_neg_inf()) continue;
        if (v > mx) { s = s * expf(mx - v) + 1.0f; mx = v; }
        else s += expf(v - mx);
    }
    float M = block_max(mx, scratch);
    s = (mx == fiber_neg_inf()) ? 0.0f : s * expf(mx - M);
    float S = block_sum(s, scratch);
    if (threadIdx.x == 0)
    {
        float mo = first ? fiber_neg_inf() : m[r], lo = first ? 0.0f : l[r];
        float mn = fmaxf(mo, M);
        float ln = 0.0f;
        if (mn != fiber_neg_inf()) ln = (mo == fiber_neg_inf() ? 0.0f : lo * expf(mo - mn)) + (M == fiber_neg_inf() ? 0.0f : S * expf(M - mn));
        m[r] = mn; l[r] = ln;
        long long t = (long long)labels[r];
        if (first) tgt[r] = fiber_u2f(0x7fc00000u);
        if (t >= v0 && t < v0 + tv) tgt[r] = x[t - v0] + mlm_bias(bias, bdt, t);
    }
}

extern "C" __global__ void mlm_online_i32(const float* logits, int tv, long long v0, const void* bias, int bdt,
                                          const int* labels, float* m, float* l, float* tgt, int first)
{ mlm_online_body(logits, tv, v0, bias, bdt, labels, m, l, tgt, first); }
extern "C" __global__ void mlm_online_i64(const float* logits, int tv, long long v0, const void* bias, int bdt,
                                          const long long* labels, float* m, float* l, float* tgt, int first)
{ mlm_online_body(logits, tv, v0, bias, bdt, labels, m, l, tgt, first); }

// loss = lse − target logit; 0 for the ignore index; NaN for a label outside [0, V) (no throw on a GPU).
template <typename TI>
__device__ __forceinline__ void mlm_finish_body(int N, const float* m, const float* l, const float* tgt, const TI* labels,
                                                long long ignore, long long V, void* loss, int ldt, float* lse)
{
    FIBER_GRID_LOOP(i, N)
    {
        float lv = m[i] + logf(l[i]);
        lse[i] = lv;
        long long t = (long long)labels[i];
        float out;
        if (t == ignore) out = 0.0f;
        else if (t < 0 || t >= V) out = fiber_u2f(0x7fc00000u);
        else out = lv - tgt[i];
        store_dyn(loss, i, ldt, out);
    }
}
extern "C" __global__ void mlm_finish_i32(int N, const float* m, const float* l, const float* tgt, const int* labels,
                                          long long ignore, long long V, void* loss, int ldt, float* lse)
{ mlm_finish_body(N, m, l, tgt, labels, ignore, V, loss, ldt, lse); }
extern "C" __global__ void mlm_finish_i64(int N, const float* m, const float* l, const float* tgt, const long long* labels,
                                          long long ignore, long long V, void* loss, int ldt, float* lse)
{ mlm_finish_body(N, m, l, tgt, labels, ignore, V, loss, ldt, lse); }

// One thread per column of the tile, looping over the N rows: G writes and logit reads are coalesced
// across the warp, the per-row values (label, lse, dloss) are warp-uniform loads, and the column sum
// for dbias comes out in a fixed order (deterministic, no atomics). G may alias logits when T = f32.
template <typename T, typename TI>
__device__ __forceinline__ void mlm_grad_body(const float* logits, T* G, int N, int tv, long long v0, long long V,
                                              const void* bias, int bdt, const TI* labels, long long ignore,
                                              const float* lse, const void* dloss, int ddt, void* dbias, int dbdt)
{
    const i64 c = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= tv) return;
    const float b = mlm_bias(bias, bdt, v0 + c);
    float colsum = 0.0f;
    for (int i = 0; i < N; i++)
    {
        long long t = (long long)labels[i];
        float gv = 0.0f;
        if (t != ignore && t >= 0 && t < V)
        {
            float p = expf(logits[(i64)i * tv + c] + b - lse[i]);
            gv = load_dyn(dloss, i, ddt) * (p - (t == v0 + c ? 1.0f : 0.0f));
        }
        T q = from_f<T>(gv);
        G[(i64)i * tv + c] = q;
        colsum += gv;
    }
    if (dbdt >= 0) store_dyn(dbias, v0 + c, dbdt, load_dyn(dbias, v0 + c, dbdt) + colsum);
}

extern "C" __global__ void mlm_grad_f32_i32(const float* logits, float* G, int N, int tv, long long v0, long long V,
                                          const void* bias, int bdt, const int* labels, long long ignore,
                                          const float* lse, const void* dloss, int ddt, void* dbias, int dbdt)
{ mlm_grad_body(logits, G, N, tv, v0, V, bias, bdt, labels, ignore, lse, dloss, ddt, dbias, dbdt); }

extern "C" __global__ void mlm_grad_f32_i64(const float* logits, float* G, int N, int tv, long long v0, long long V,
                                          const void* bias, int bdt, const long long* labels, long long ignore,
                                          const float* lse, const void* dloss, int ddt, void* dbias, int dbdt)
{ mlm_grad_body(logits, G, N, tv, v0, V, bias, bdt, labels, ignore, lse, dloss, ddt, dbias, dbdt); }

extern "C" __global__ void mlm_grad_bf16_i32(const float* logits, bf16* G, int N, int tv, long long v0, long long V,
                                          const void* bias, int bdt, const int* labels, long long ignore,
                                          const float* lse, const void* dloss, int ddt, void* dbias, int dbdt)
{ mlm_grad_body(logits, G, N, tv, v0, V, bias, bdt, labels, ignore, lse, dloss, ddt, dbias, dbdt); }

extern "C" __global__ void mlm_grad_bf16_i64(const float* logits, bf16* G, int N, int tv, long long v0, long long V,
                                          const void* bias, int bdt, const long long* labels, long long ignore,
                                          const float* lse, const void* dloss, int ddt, void* dbias, int dbdt)
{ mlm_grad_body(logits, G, N, tv, v0, V, bias, bdt, labels, ignore, lse, dloss, ddt, dbias, dbdt); }
