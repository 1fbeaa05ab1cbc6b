// adamw.cu — one fused AdamW step over many tensors in a single launch.
// Gradient convention: reads gradients, never writes them; updates param, m, v (and master) in place.
// Math (torch.optim.AdamW): g = grad·gradScale; m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²;
// w −= lr·(m/bc1 / (sqrt(v/bc2) + eps) + wd·w), bc1 = 1−β1^t, bc2 = 1−β2^t (computed on the host).
// w is the f32 master copy when there is one (bf16 params), else the param itself.
// Launch: grid (bx, ntensors); block (b, t) walks tensor t with a grid-stride loop over bx blocks.
#include "common.cuh"

// One entry per tensor (device memory, 64 bytes; CudaBackend mirrors this layout).
struct AdamWEntry
{
    u64 param, grad, m, v, master;
    long long n;
    float lr, wd;
    int param_dt, grad_dt; // 0 = f32, 1 = bf16
};

template <typename TP, typename TG>
__device__ __forceinline__ void adamw_body(const AdamWEntry& e, float b1, float b2, float eps, float bc1, float bc2,
                                           float gscale)
{
    TP* param = (TP*)e.param;
    const TG* grad = (const TG*)e.grad;
    float* m = (float*)e.m;
    float* v = (float*)e.v;
    float* master = (float*)e.master;
    const float lr = e.lr, wd = e.wd, ib1 = 1.0f / bc1, ib2 = 1.0f / bc2;
    FIBER_GRID_LOOP(i, e.n)
    {
        float g = to_f(grad[i]) * gscale;
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi; v[i] = vi;
        float w = master ? master[i] : to_f(param[i]);
        w -= lr * ((mi * ib1) / (sqrtf(vi * ib2) + eps) + wd * w);
        if (master) master[i] = w;
        param[i] = from_f<TP>(w);
    }
}

extern "C" __global__ void adamw_multi(const AdamWEntry* table, float beta1, float beta2, float eps, float bc1,
                                       float bc2, float gscale)
{
    const AdamWEntry e = table[blockIdx.y];
    if (e.param_dt == 0 && e.grad_dt == 0) adamw_body<float, float>(e, beta1, beta2, eps, bc1, bc2, gscale);
    else if (e.param_dt == 0) adamw_body<float, bf16>(e, beta1, beta2, eps, bc1, bc2, gscale);
    else if (e.grad_dt == 0) adamw_body<bf16, float>(e, beta1, beta2, eps, bc1, bc2, gscale);
    else adamw_body<bf16, bf16>(e, beta1, beta2, eps, bc1, bc2, gscale);
}
