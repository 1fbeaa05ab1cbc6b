// adamw.cu — one fused AdamW step over many tensors in a single launch.
// Gradient convention: reads gradients, never writes them; updates param, m, v (and master) in place.
// Math (torch.optim.AdamW): g = grad·gradScale; m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²;
// w −= lr·(m/bc1 / (sqrt(v/bc2) + eps) + wd·w), bc1 = 1−β1^t, bc2 = 1−β2^t (computed on the host).
// w is the f32 master copy when there is one (bf16 params), else the param itself.
// Launch: grid (bx, ntensors); block (b, t) walks tensor t with a grid-stride loop over bx blocks,
// four elements per thread and step (one vector load per array) when every array allows it.
#include "common.cuh"

// One entry per tensor (device memory, 64 bytes; CudaBackend mirrors this layout).
struct AdamWEntry
{
    u64 param, grad, m, v, master;
    long long n;
    float lr, wd;
    int param_dt, grad_dt; // 0 = f32, 1 = bf16
};

// Four consecutive elements: 16 bytes of f32, 8 of bf16 — one load either way.
template <typename T> struct alignas(4 * sizeof(T)) Quad { T v[4]; };

struct AdamWConst { float b1, b2, eps, ib1, ib2, gscale, lr, wd; };

__device__ __forceinline__ float adamw_one(const AdamWConst& k, float g, float& m, float& v, float w)
{
    g *= k.gscale;
    m = k.b1 * m + (1.0f - k.b1) * g;
    v = k.b2 * v + (1.0f - k.b2) * g * g;
    return w - k.lr * ((m * k.ib1) / (sqrtf(v * k.ib2) + k.eps) + k.wd * w);
}

template <typename TP, typename TG>
__device__ __forceinline__ void adamw_body(const AdamWEntry& e, const AdamWConst& k)
{
    TP* param = (TP*)e.param;
    const TG* grad = (const TG*)e.grad;
    float* m = (float*)e.m;
    float* v = (float*)e.v;
    float* master = (float*)e.master;
    const i64 n = e.n;
    const i64 t0 = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)blockDim.x * gridDim.x;
    const u64 mis = ((u64)param % (4 * sizeof(TP))) | ((u64)grad % (4 * sizeof(TG))) | ((u64)m & 15u) | ((u64)v & 15u)
                  | ((u64)master & 15u);
    const i64 nq = mis == 0 ? n / 4 : 0;
    for (i64 q = t0; q < nq; q += stride)
    {
        const i64 i = q * 4;
        Quad<TG> gq = *(const Quad<TG>*)(grad + i);
        Quad<float> mq = *(const Quad<float>*)(m + i), vq = *(const Quad<float>*)(v + i), wq;
        Quad<TP> pq;
        if (master) wq = *(const Quad<float>*)(master + i);
        else
        {
            pq = *(const Quad<TP>*)(param + i);
#pragma unroll
            for (int j = 0; j < 4; j++) wq.v[j] = to_f(pq.v[j]);
        }
#pragma unroll
        for (int j = 0; j < 4; j++)
        {
            wq.v[j] = adamw_one(k, to_f(gq.v[j]), mq.v[j], vq.v[j], wq.v[j]);
            pq.v[j] = from_f<TP>(wq.v[j]);
        }
        *(Quad<float>*)(m + i) = mq;
        *(Quad<float>*)(v + i) = vq;
        if (master) *(Quad<float>*)(master + i) = wq;
        *(Quad<TP>*)(param + i) = pq;
    }
    for (i64 i = nq * 4 + t0; i < n; i += stride)
    {
        float mi = m[i], vi = v[i];
        float w = adamw_one(k, to_f(grad[i]), mi, vi, master ? master[i] : to_f(param[i]));
        m[i] = mi; v[i] = vi;
        if (master) master[i] = w;
        param[i] = from_f<TP>(w);
    }
}

extern "C" __global__ void __launch_bounds__(256) adamw_multi(const AdamWEntry* table, float beta1, float beta2, float eps,
                                                              float bc1, float bc2, float gscale)
{
    const AdamWEntry e = table[blockIdx.y];
    AdamWConst k;
    k.b1 = beta1; k.b2 = beta2; k.eps = eps; k.ib1 = 1.0f / bc1; k.ib2 = 1.0f / bc2; k.gscale = gscale;
    k.lr = e.lr; k.wd = e.wd;
    if (e.param_dt == 0 && e.grad_dt == 0) adamw_body<float, float>(e, k);
    else if (e.param_dt == 0) adamw_body<float, bf16>(e, k);
    else if (e.grad_dt == 0) adamw_body<bf16, float>(e, k);
    else adamw_body<bf16, bf16>(e, k);
}
