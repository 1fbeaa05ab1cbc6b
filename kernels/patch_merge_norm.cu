// patch_merge_norm.cu — Swin PatchMerging's 2×2 gather fused with its LayerNorm(4C), and the backward.
//   x [B, H·W, C] (token t = y·W + x)  →  y [B, (H/2)·(W/2), 4C]
//   output row r = (b, i, j), element e = q·C + c, q = 0..3 reads x[b, (2i + (q & 1))·W + 2j + (q >> 1), c]
//   (the official x0 = [0::2, 0::2], x1 = [1::2, 0::2], x2 = [0::2, 1::2], x3 = [1::2, 1::2]), then
//   y = (g − mean)·rstd·gamma + beta over the 4C gathered values; mean/rstd [rows] f32 are saved.
// The gathered row is never stored: the forward reads the four source rows and writes the normalised row,
// the backward re-gathers x, reads dy and scatters dx += LN'(dy) back to the source tokens. Every source
// element belongs to exactly one (row, column), so that scatter is a plain read-add-write.
// dgamma|dbeta are deterministic: every thread owns fixed columns and sums them in registers over the
// rows its group visits; the groups of a block fold in a fixed order into partial[blockIdx.x] (2·4C
// floats: dgamma columns then dbeta columns) and reduce.cu's colsum_partials2 adds the partial rows (+=).
//
// Layout: a block is G groups of NT threads (NT a power of two ≥ 32, or a multiple of 32 when G = 1);
// a group owns one output row at a time. Thread gt of a group owns units k·NT + gt (k < KU) of V
// consecutive elements: V = Pack<T>::N (16-byte accesses; needs C % V == 0 so a unit never straddles
// two source rows and stays aligned) or V = 1. KU·V = 8, so NT = 4C/8 rounded up, 4C ≤ 8192.
// T = dtype of x / y / dy / dx; P = dtype of gamma / beta.
#include "common.cuh"

// (a, b) summed over the nw warps of each group (groups are nw consecutive warps). Every thread of the
// block calls it the same number of times (the leading barrier protects the previous call's scratch).
__device__ __forceinline__ void pm_group_sum2(float& a, float& b, int nw, float* scratch)
{
    a = warp_sum(a); b = warp_sum(b);
    if (nw == 1) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) { scratch[warp] = a; scratch[32 + warp] = b; }
    __syncthreads();
    const int first = warp - warp % nw;
    float sa = 0.0f, sb = 0.0f;
    for (int w = 0; w < nw; w++) { sa += scratch[first + w]; sb += scratch[32 + first + w]; }
    a = sa; b = sb;
}

// Offset in x (or dx) of output row r's quarter-0 source element (b, 2i, 2j, channel 0), once per row.
__device__ __forceinline__ i64 pm_row(i64 r, int H, int W, int C)
{
    const int Wo = W >> 1;
    const i64 per = (i64)(H >> 1) * Wo;
    const i64 b = r / per;
    const int t = (int)(r - b * per), i = t / Wo, j = t - i * Wo;
    return (b * H * W + (i64)(2 * i) * W + 2 * j) * C;
}

// Offset of gathered element e0 (a unit start) from its row's pm_row: quarter q = e0 / C is source token
// (2i + (q & 1), 2j + (q >> 1)).
// The same for every row, so each thread computes its units' offsets once ((W + 2)·C < 2^31 is checked on the host).
__device__ __forceinline__ int pm_col(int e0, int W, int C)
{
    const int q = e0 / C, c = e0 - q * C;
    return ((q & 1) * W + (q >> 1)) * C + c;
}

template <typename T, typename P, int V, int KU>
__device__ __forceinline__ void pm_fwd(const T* x, const P* gamma, const P* beta, float eps, T* y, float* mean,
                                       float* rstd, i64 rows, int H, int W, int C, int NT)
{
    __shared__ float scratch[64];
    const int E = KU * V, C4 = 4 * C, G = blockDim.x / NT, g = threadIdx.x / NT, gt = threadIdx.x - g * NT;
    const int nw = NT >> 5;
    const float inv = 1.0f / (float)C4;
    float gv[E], bv[E];
#pragma unroll
    for (int k = 0; k < KU; k++)
    {
        const int e0 = (k * NT + gt) * V;
#pragma unroll
        for (int j = 0; j < V; j++)
        {
            gv[k * V + j] = e0 < C4 ? to_f(gamma[e0 + j]) : 0.0f;
            bv[k * V + j] = e0 < C4 ? to_f(beta[e0 + j]) : 0.0f;
        }
    }
    int col[KU];
#pragma unroll
    for (int k = 0; k < KU; k++) { const int e0 = (k * NT + gt) * V; col[k] = e0 < C4 ? pm_col(e0, W, C) : 0; }
    for (i64 base = (i64)blockIdx.x * G; base < rows; base += (i64)gridDim.x * G)
    {
        const i64 r = base + g;
        const bool ok = r < rows;
        const T* src = x + (ok ? pm_row(r, H, W, C) : 0);
        float v[E];
        float s = 0.0f, unused = 0.0f;
#pragma unroll
        for (int k = 0; k < KU; k++)
        {
            const int e0 = (k * NT + gt) * V;
            if (ok && e0 < C4) load_floats<T, V>(src + col[k], &v[k * V]);
            else
            {
#pragma unroll
                for (int j = 0; j < V; j++) v[k * V + j] = 0.0f;
            }
#pragma unroll
            for (int j = 0; j < V; j++) s += v[k * V + j];
        }
        pm_group_sum2(s, unused, nw, scratch);
        const float m = s * inv;
        float d2 = 0.0f;
#pragma unroll
        for (int k = 0; k < KU; k++)
            if ((k * NT + gt) * V < C4)
            {
#pragma unroll
                for (int j = 0; j < V; j++) { float d = v[k * V + j] - m; d2 += d * d; }
            }
        pm_group_sum2(d2, unused, nw, scratch);
        const float rs = 1.0f / sqrtf(d2 * inv + eps);
        if (ok)
        {
#pragma unroll
            for (int k = 0; k < KU; k++)
            {
                const int e0 = (k * NT + gt) * V;
                if (e0 < C4)
                {
                    float o[V];
#pragma unroll
                    for (int j = 0; j < V; j++) o[j] = (v[k * V + j] - m) * rs * gv[k * V + j] + bv[k * V + j];
                    store_floats<T, V>(y + r * C4 + e0, o);
                }
            }
            if (gt == 0) { mean[r] = m; rstd[r] = rs; }
        }
    }
}

template <typename T, typename P, int V, int KU>
__device__ __forceinline__ void pm_bwd(const T* x, const P* gamma, const float* mean, const float* rstd, const T* dy,
                                       T* dx, float* partial, i64 rows, int H, int W, int C, int NT)
{
    __shared__ float scratch[64];
    __shared__ float fold[2048];
    const int E = KU * V, C4 = 4 * C, G = blockDim.x / NT, g = threadIdx.x / NT, gt = threadIdx.x - g * NT;
    const int nw = NT >> 5;
    const float inv = 1.0f / (float)C4;
    float gv[E], ag[E], ab[E];
#pragma unroll
    for (int k = 0; k < KU; k++)
    {
        const int e0 = (k * NT + gt) * V;
#pragma unroll
        for (int j = 0; j < V; j++) { gv[k * V + j] = e0 < C4 ? to_f(gamma[e0 + j]) : 0.0f; ag[k * V + j] = 0.0f; ab[k * V + j] = 0.0f; }
    }
    int col[KU];
#pragma unroll
    for (int k = 0; k < KU; k++) { const int e0 = (k * NT + gt) * V; col[k] = e0 < C4 ? pm_col(e0, W, C) : 0; }
    for (i64 base = (i64)blockIdx.x * G; base < rows; base += (i64)gridDim.x * G)
    {
        const i64 r = base + g;
        const bool ok = r < rows;
        // Rows past the end load zeros and use m = rs = 0: they add nothing.
        const float m = ok ? mean[r] : 0.0f, rs = ok ? rstd[r] : 0.0f;
        const i64 row = ok ? pm_row(r, H, W, C) : 0;
        float xs[E], ds[E];
        float a = 0.0f, b = 0.0f;
#pragma unroll
        for (int k = 0; k < KU; k++)
        {
            const int e0 = (k * NT + gt) * V;
            if (ok && e0 < C4)
            {
                load_floats<T, V>(x + row + col[k], &xs[k * V]);
                load_floats<T, V>(dy + r * C4 + e0, &ds[k * V]);
            }
            else
            {
#pragma unroll
                for (int j = 0; j < V; j++) { xs[k * V + j] = 0.0f; ds[k * V + j] = 0.0f; }
            }
#pragma unroll
            for (int j = 0; j < V; j++)
            {
                const int e = k * V + j;
                const float xh = (xs[e] - m) * rs, dxh = ds[e] * gv[e];
                a += dxh; b += dxh * xh;
                ag[e] += ds[e] * xh; ab[e] += ds[e];
            }
        }
        pm_group_sum2(a, b, nw, scratch);
        a *= inv; b *= inv;
        if (dx != nullptr && ok)
        {
#pragma unroll
            for (int k = 0; k < KU; k++)
            {
                const int e0 = (k * NT + gt) * V;
                if (e0 < C4)
                {
                    const i64 at = row + col[k];
                    float o[V];
                    load_floats<T, V>(dx + at, o);
#pragma unroll
                    for (int j = 0; j < V; j++)
                    {
                        const int e = k * V + j;
                        const float xh = (xs[e] - m) * rs;
                        o[j] += rs * (ds[e] * gv[e] - a - xh * b);
                    }
                    store_floats<T, V>(dx + at, o);
                }
            }
        }
    }
    if (partial == nullptr) return;
    float* out = partial + (i64)blockIdx.x * 2 * C4;
    if (G == 1)
    {
#pragma unroll
        for (int k = 0; k < KU; k++)
        {
            const int e0 = (k * NT + gt) * V;
            if (e0 < C4)
            {
#pragma unroll
                for (int j = 0; j < V; j++) { out[e0 + j] = ag[k * V + j]; out[C4 + e0 + j] = ab[k * V + j]; }
            }
        }
        return;
    }
    // G > 1 only for blocks of 256 threads with 4C ≤ 8·NT, so G·4C ≤ 2048: the groups' columns fit in `fold`;
    // they are added in group order.
#pragma unroll
    for (int h = 0; h < 2; h++)
    {
        __syncthreads();
#pragma unroll
        for (int k = 0; k < KU; k++)
        {
            const int e0 = (k * NT + gt) * V;
            if (e0 < C4)
            {
#pragma unroll
                for (int j = 0; j < V; j++) fold[g * C4 + e0 + j] = h == 0 ? ag[k * V + j] : ab[k * V + j];
            }
        }
        __syncthreads();
        for (int c = threadIdx.x; c < C4; c += blockDim.x)
        {
            float t = 0.0f;
            for (int q = 0; q < G; q++) t += fold[q * C4 + c];
            out[h * C4 + c] = t;
        }
    }
}

// Instantiations (written out: the emulator finds kernels by their extern "C" declarations): _v = 16-byte
// units (C % Pack<T>::N == 0), _s = scalar units; 8 elements per thread either way.
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_fwd_f32_f32_v(const float* x, const float* gamma,
    const float* beta, float eps, float* y, float* mean, float* rstd, long long rows, int H, int W, int C, int NT)
{ pm_fwd<float, float, Pack<float>::N, 8 / Pack<float>::N>(x, gamma, beta, eps, y, mean, rstd, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_bwd_f32_f32_v(const float* x, const float* gamma,
    const float* mean, const float* rstd, const float* dy, float* dx, float* partial, long long rows, int H, int W, int C, int NT)
{ pm_bwd<float, float, Pack<float>::N, 8 / Pack<float>::N>(x, gamma, mean, rstd, dy, dx, partial, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_fwd_f32_f32_s(const float* x, const float* gamma,
    const float* beta, float eps, float* y, float* mean, float* rstd, long long rows, int H, int W, int C, int NT)
{ pm_fwd<float, float, 1, 8>(x, gamma, beta, eps, y, mean, rstd, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_bwd_f32_f32_s(const float* x, const float* gamma,
    const float* mean, const float* rstd, const float* dy, float* dx, float* partial, long long rows, int H, int W, int C, int NT)
{ pm_bwd<float, float, 1, 8>(x, gamma, mean, rstd, dy, dx, partial, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_fwd_f32_bf16_v(const float* x, const bf16* gamma,
    const bf16* beta, float eps, float* y, float* mean, float* rstd, long long rows, int H, int W, int C, int NT)
{ pm_fwd<float, bf16, Pack<float>::N, 8 / Pack<float>::N>(x, gamma, beta, eps, y, mean, rstd, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_bwd_f32_bf16_v(const float* x, const bf16* gamma,
    const float* mean, const float* rstd, const float* dy, float* dx, float* partial, long long rows, int H, int W, int C, int NT)
{ pm_bwd<float, bf16, Pack<float>::N, 8 / Pack<float>::N>(x, gamma, mean, rstd, dy, dx, partial, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_fwd_f32_bf16_s(const float* x, const bf16* gamma,
    const bf16* beta, float eps, float* y, float* mean, float* rstd, long long rows, int H, int W, int C, int NT)
{ pm_fwd<float, bf16, 1, 8>(x, gamma, beta, eps, y, mean, rstd, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_bwd_f32_bf16_s(const float* x, const bf16* gamma,
    const float* mean, const float* rstd, const float* dy, float* dx, float* partial, long long rows, int H, int W, int C, int NT)
{ pm_bwd<float, bf16, 1, 8>(x, gamma, mean, rstd, dy, dx, partial, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_fwd_bf16_f32_v(const bf16* x, const float* gamma,
    const float* beta, float eps, bf16* y, float* mean, float* rstd, long long rows, int H, int W, int C, int NT)
{ pm_fwd<bf16, float, Pack<bf16>::N, 8 / Pack<bf16>::N>(x, gamma, beta, eps, y, mean, rstd, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_bwd_bf16_f32_v(const bf16* x, const float* gamma,
    const float* mean, const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int H, int W, int C, int NT)
{ pm_bwd<bf16, float, Pack<bf16>::N, 8 / Pack<bf16>::N>(x, gamma, mean, rstd, dy, dx, partial, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_fwd_bf16_f32_s(const bf16* x, const float* gamma,
    const float* beta, float eps, bf16* y, float* mean, float* rstd, long long rows, int H, int W, int C, int NT)
{ pm_fwd<bf16, float, 1, 8>(x, gamma, beta, eps, y, mean, rstd, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_bwd_bf16_f32_s(const bf16* x, const float* gamma,
    const float* mean, const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int H, int W, int C, int NT)
{ pm_bwd<bf16, float, 1, 8>(x, gamma, mean, rstd, dy, dx, partial, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_fwd_bf16_bf16_v(const bf16* x, const bf16* gamma,
    const bf16* beta, float eps, bf16* y, float* mean, float* rstd, long long rows, int H, int W, int C, int NT)
{ pm_fwd<bf16, bf16, Pack<bf16>::N, 8 / Pack<bf16>::N>(x, gamma, beta, eps, y, mean, rstd, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_bwd_bf16_bf16_v(const bf16* x, const bf16* gamma,
    const float* mean, const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int H, int W, int C, int NT)
{ pm_bwd<bf16, bf16, Pack<bf16>::N, 8 / Pack<bf16>::N>(x, gamma, mean, rstd, dy, dx, partial, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_fwd_bf16_bf16_s(const bf16* x, const bf16* gamma,
    const bf16* beta, float eps, bf16* y, float* mean, float* rstd, long long rows, int H, int W, int C, int NT)
{ pm_fwd<bf16, bf16, 1, 8>(x, gamma, beta, eps, y, mean, rstd, rows, H, W, C, NT); }
extern "C" __global__ void __launch_bounds__(1024) patch_merge_norm_bwd_bf16_bf16_s(const bf16* x, const bf16* gamma,
    const float* mean, const float* rstd, const bf16* dy, bf16* dx, float* partial, long long rows, int H, int W, int C, int NT)
{ pm_bwd<bf16, bf16, 1, 8>(x, gamma, mean, rstd, dy, dx, partial, rows, H, W, C, NT); }
