// kbench.cu — bandwidth and spot-correctness check of the memory-bound op kernels on a real GPU,
// with nvcc alone (the GPU machine has no .NET). Launch configurations mirror CudaBackend.cs.
//   nvcc -O3 -std=c++17 -arch=sm_90 -I../../../../kernels kbench.cu -o kbench && ./kbench
// Prints, per op and FIBER shape: time, GB/s of bytes moved (napkin count), % of D2D copy bandwidth,
// and the max error against a host reference (first repetition only).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <cmath>
#include <vector>
#include <cuda_runtime.h>

#include "elementwise.cu"
#include "gelu.cu"
#include "layernorm.cu"
#include "softmax.cu"
#include "reduce.cu"
#include "adamw.cu"

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %s:%d\n", cudaGetErrorString(e), __FILE__, __LINE__); exit(1); } } while (0)

static const int SMS = 132, MAXB = SMS * 16;
static void* flushBuf; static size_t flushBytes = 256u << 20;
static cudaEvent_t e0, e1;
static double copyGBs = 0;

static float bf2f(unsigned short h) { unsigned u = (unsigned)h << 16; float f; memcpy(&f, &u, 4); return f; }
static unsigned short f2bf(float f) { unsigned u; memcpy(&u, &f, 4); if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40; u += 0x7fffu + ((u >> 16) & 1u); return u >> 16; }

template <class F> static float timeit(F f, int reps = 20)
{
    float best = 1e30f, tot = 0;
    for (int i = 0; i < reps; i++)
    {
        CK(cudaMemsetAsync(flushBuf, i, flushBytes));
        CK(cudaEventRecord(e0)); f(); CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1));
        float ms; CK(cudaEventElapsedTime(&ms, e0, e1)); tot += ms; if (ms < best) best = ms;
    }
    CK(cudaGetLastError());
    return tot / reps;
}

static void report(const char* op, long long rows, int C, double bytes, float ms, double err)
{
    double gbs = bytes / (ms * 1e-3) / 1e9;
    printf("%-22s %6lldx%-5d %8.1f us %7.0f GB/s %5.1f%% of copy  maxerr %.3g\n", op, rows, C, ms * 1e3, gbs, 100 * gbs / copyGBs, err);
}

static std::vector<unsigned short> randbf(size_t n, float scale, float shift = 0)
{
    std::vector<unsigned short> v(n);
    for (auto& x : v) x = f2bf(((float)rand() / RAND_MAX * 2 - 1) * scale + shift);
    return v;
}

template <class T> static T* dev(const std::vector<T>& h) { T* p; CK(cudaMalloc(&p, h.size() * sizeof(T) + 16)); CK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice)); return p; }
template <class T> static std::vector<T> host(const T* d, size_t n) { std::vector<T> h(n); CK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost)); return h; }

static int rowGrid(long long rows) { long long b = (rows + 7) / 8; return (int)std::min<long long>(std::max<long long>(b, 1), MAXB * 4); }
static int grid(long long work, int per) { long long it = (work + per - 1) / per; return (int)std::min<long long>(std::max<long long>((it + 255) / 256, 1), MAXB); }

// The row-group variant CudaBackend.RowVariant picks for bf16 rows of C (C = 128, 512, 768 here).
static int tprOf(int C) { return C / 8 <= 8 ? 8 : C / 8 <= 16 ? 16 : 32; }
static int groupGrid(long long rows, int tpr) { long long pb = 256 / tpr; return (int)std::min<long long>(std::max<long long>((rows + pb - 1) / pb, 1), SMS * 64); }
static void ln_fwd(long long rows, int C, bf16* x, bf16* res, float* g, float* b, bf16* y, bf16* ro, float* mean, float* rstd)
{
    int gg = groupGrid(rows, tprOf(C));
    switch (C)
    {
        case 128: layernorm_fwd_bf16_f32_k1t16<<<gg, 256>>>(x, res, g, b, 1e-5f, y, ro, mean, rstd, rows, C); break;
        case 512: layernorm_fwd_bf16_f32_k2t32<<<gg, 256>>>(x, res, g, b, 1e-5f, y, ro, mean, rstd, rows, C); break;
        case 768: layernorm_fwd_bf16_f32_k3t32<<<gg, 256>>>(x, res, g, b, 1e-5f, y, ro, mean, rstd, rows, C); break;
    }
}
static int ln_bwd_blocks(long long rows, int C, int& W, int& smem)
{
    int tpr = tprOf(C);
    W = (int)std::min<long long>(std::max<long long>(48 * 1024 / (8LL * C) * tpr / 32, 1), 4);
    int groups = W * 32 / tpr; smem = groups * 2 * C * 4;
    return (int)std::min<long long>(std::max<long long>((rows + groups - 1) / groups, 1), SMS * 8);
}
static void ln_bwd(long long rows, int C, bf16* s, float* g, float* mean, float* rstd, bf16* dy, bf16* dx, float* partial)
{
    int W, smem, blocks = ln_bwd_blocks(rows, C, W, smem);
    switch (C)
    {
        case 128: layernorm_bwd_bf16_f32_k1t16<<<blocks, W * 32, smem>>>(s, g, mean, rstd, dy, dx, partial, rows, C); break;
        case 512: layernorm_bwd_bf16_f32_k2t32<<<blocks, W * 32, smem>>>(s, g, mean, rstd, dy, dx, partial, rows, C); break;
        case 768: layernorm_bwd_bf16_f32_k3t32<<<blocks, W * 32, smem>>>(s, g, mean, rstd, dy, dx, partial, rows, C); break;
    }
}
static void colsum(const float* partial, long long R, long long ld, int C, float* y)
{
    colsum_partials<<<(C + 31) / 32, dim3(32, (unsigned)std::min<long long>(std::max<long long>(R, 1), 32))>>>(partial, R, ld, C, y, 0, 1);
}
static void sm_fwd(long long rows, int C, bf16* x, bf16* y)
{
    int gg = groupGrid(rows, tprOf(C));
    switch (C)
    {
        case 128: softmax_fwd_bf16_k1t16<<<gg, 256>>>(x, y, 0.5f, rows, C); break;
        case 512: softmax_fwd_bf16_k2t32<<<gg, 256>>>(x, y, 0.5f, rows, C); break;
        case 768: softmax_fwd_bf16_k3t32<<<gg, 256>>>(x, y, 0.5f, rows, C); break;
    }
}
static void sm_bwd(long long rows, int C, bf16* y, bf16* dy, bf16* dx)
{
    int gg = groupGrid(rows, tprOf(C));
    switch (C)
    {
        case 128: softmax_bwd_bf16_k1t16<<<gg, 256>>>(y, dy, 0.5f, dx, rows, C); break;
        case 512: softmax_bwd_bf16_k2t32<<<gg, 256>>>(y, dy, 0.5f, dx, rows, C); break;
        case 768: softmax_bwd_bf16_k3t32<<<gg, 256>>>(y, dy, 0.5f, dx, rows, C); break;
    }
}

static void bench_shape(long long rows, int C)
{
    size_t n = (size_t)rows * C;
    auto hx = randbf(n, 2, 0.5f), hr = randbf(n, 1), hdy = randbf(n, 1), hdx0 = randbf(n, 0.5f);
    std::vector<float> hg(C), hb(C);
    for (int c = 0; c < C; c++) { hg[c] = 1 + 0.3f * sinf(c); hb[c] = 0.1f * cosf(c); }
    bf16 *x = (bf16*)dev(hx), *res = (bf16*)dev(hr), *dy = (bf16*)dev(hdy), *dx = (bf16*)dev(hdx0);
    bf16 *y = (bf16*)dev(std::vector<unsigned short>(n)), *ro = (bf16*)dev(std::vector<unsigned short>(n));
    float *g = dev(hg), *b = dev(hb), *mean = dev(std::vector<float>(rows)), *rstd = dev(std::vector<float>(rows));
    float *dg = dev(std::vector<float>(C)), *db = dev(std::vector<float>(C));
    float* partial; CK(cudaMalloc(&partial, (size_t)8448 * 2 * C * 4));
    double B = 2.0 * n;

    // ---- LayerNorm fwd (no residual), with a host check on the first 64 rows
    float ms = timeit([&] { ln_fwd(rows, C, x, nullptr, g, b, y, nullptr, mean, rstd); });
    double err = 0;
    {
        auto hy = host((unsigned short*)y, (size_t)64 * C);
        for (int r = 0; r < 64; r++)
        {
            double m = 0, v = 0;
            for (int c = 0; c < C; c++) m += bf2f(hx[(size_t)r * C + c]);
            m /= C;
            for (int c = 0; c < C; c++) { double d = bf2f(hx[(size_t)r * C + c]) - m; v += d * d; }
            double rs = 1 / sqrt(v / C + 1e-5);
            for (int c = 0; c < C; c++) err = fmax(err, fabs((bf2f(hx[(size_t)r * C + c]) - m) * rs * hg[c] + hb[c] - bf2f(hy[(size_t)r * C + c])));
        }
    }
    report("layernorm_fwd", rows, C, 2 * B + 8.0 * rows, ms, err);
    ms = timeit([&] { ln_fwd(rows, C, x, res, g, b, y, ro, mean, rstd); });
    report("layernorm_fwd+residual", rows, C, 4 * B + 8.0 * rows, ms, 0);

    // ---- LayerNorm bwd (+ two colsums), dx checked on the first 16 rows
    {
        ln_fwd(rows, C, x, nullptr, g, b, y, nullptr, mean, rstd);
        int W, smem, blocks = ln_bwd_blocks(rows, C, W, smem);
        CK(cudaMemcpy(dx, hdx0.data(), n * 2, cudaMemcpyHostToDevice));
        ln_bwd(rows, C, x, g, mean, rstd, dy, dx, partial);
        auto hdx = host((unsigned short*)dx, (size_t)16 * C);
        auto hm = host(mean, 16); auto hs = host(rstd, 16);
        double e = 0;
        for (int r = 0; r < 16; r++)
        {
            double a = 0, bb = 0;
            for (int c = 0; c < C; c++) { double xh = (bf2f(hx[(size_t)r * C + c]) - hm[r]) * hs[r], d = bf2f(hdy[(size_t)r * C + c]) * hg[c]; a += d; bb += d * xh; }
            a /= C; bb /= C;
            for (int c = 0; c < C; c++)
            {
                double xh = (bf2f(hx[(size_t)r * C + c]) - hm[r]) * hs[r], d = bf2f(hdy[(size_t)r * C + c]) * hg[c];
                double ref = bf2f(hdx0[(size_t)r * C + c]) + hs[r] * (d - a - xh * bb);
                e = fmax(e, fabs(ref - bf2f(hdx[(size_t)r * C + c])) / (1 + fabs(ref)));
            }
        }
        ms = timeit([&] {
            ln_bwd(rows, C, x, g, mean, rstd, dy, dx, partial);
            colsum(partial, blocks, 2LL * C, C, dg);
            colsum(partial + C, blocks, 2LL * C, C, db);
        });
        report("layernorm_bwd(+dgb)", rows, C, 4 * B + 8.0 * rows, ms, e);
    }

    // ---- bias + GELU
    ms = timeit([&] { bias_gelu_fwd_bf16_f32<<<grid(n, 8), 256>>>(x, b, y, n, C); });
    {
        auto hy = host((unsigned short*)y, (size_t)4096);
        double e = 0;
        for (size_t i = 0; i < 4096; i++) { double v = bf2f(hx[i]) + hb[i % C]; double ref = 0.5 * v * (1 + erf(v / sqrt(2.0))); e = fmax(e, fabs(ref - bf2f(hy[i]))); }
        report("bias_gelu_fwd", rows, C, 2 * B, ms, e);
    }
    {
        int nv = C % 8 == 0 ? 8 : 1, gx = (C + 32 * nv - 1) / (32 * nv);
        int gy = (int)std::min<long long>(std::max<long long>((rows + 7) / 8, 1), std::max(1, SMS * 8 / gx));
        ms = timeit([&] {
            bias_gelu_bwd_bf16_f32<<<dim3(gx, gy), dim3(32, 8)>>>(x, b, dy, dx, partial, rows, C, nv == 8);
            colsum(partial, gy, C, C, db);
        });
        report("bias_gelu_bwd(+dbias)", rows, C, 4 * B, ms, 0);
    }

    // ---- softmax
    ms = timeit([&] { sm_fwd(rows, C, x, y); });
    {
        auto hy = host((unsigned short*)y, (size_t)8 * C);
        double e = 0;
        for (int r = 0; r < 8; r++)
        {
            double mx = -1e30, s = 0;
            for (int c = 0; c < C; c++) mx = fmax(mx, 0.5 * bf2f(hx[(size_t)r * C + c]));
            for (int c = 0; c < C; c++) s += exp(0.5 * bf2f(hx[(size_t)r * C + c]) - mx);
            for (int c = 0; c < C; c++) e = fmax(e, fabs(exp(0.5 * bf2f(hx[(size_t)r * C + c]) - mx) / s - bf2f(hy[(size_t)r * C + c])));
        }
        report("softmax_fwd", rows, C, 2 * B, ms, e);
    }
    ms = timeit([&] { sm_bwd(rows, C, y, dy, dx); });
    report("softmax_bwd", rows, C, 4 * B, ms, 0);

    // ---- elementwise add (reference point for simple streaming)
    ms = timeit([&] { ew_add_bf16<<<grid(n, 8), 256>>>(x, res, y, n); });
    report("ew_add", rows, C, 3 * B, ms, 0);

    cudaFree(x); cudaFree(res); cudaFree(dy); cudaFree(dx); cudaFree(y); cudaFree(ro); cudaFree(g); cudaFree(b);
    cudaFree(mean); cudaFree(rstd); cudaFree(dg); cudaFree(db); cudaFree(partial);
}

int main()
{
    CK(cudaMalloc(&flushBuf, flushBytes));
    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
    cudaDeviceProp p; CK(cudaGetDeviceProperties(&p, 0));
    printf("%s, %d SMs\n", p.name, p.multiProcessorCount);
    {
        size_t bytes = 1u << 30; void *a, *b; CK(cudaMalloc(&a, bytes)); CK(cudaMalloc(&b, bytes));
        float ms = timeit([&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); }, 10);
        copyGBs = 2.0 * bytes / (ms * 1e-3) / 1e9;
        printf("D2D copy: %.0f GB/s (read+write)\n", copyGBs);
        cudaFree(a); cudaFree(b);
    }
    bench_shape(8LL * 9216, 128);
    bench_shape(8LL * 576, 512);
    bench_shape(64LL * 40, 768);
    bench_shape(8LL * 1024, 768);
    bench_shape(64LL * 9216, 128);

    // ---- AdamW: bf16 params + f32 master, bf16 grads, 4 tensors totalling 128M elements
    {
        const int T = 4; long long ns[T] = {64LL << 20, 32LL << 20, 24LL << 20, 8LL << 20};
        std::vector<AdamWEntry> tab(T); long long tot = 0, maxn = 0;
        for (int i = 0; i < T; i++)
        {
            long long k = ns[i]; tot += k; maxn = std::max(maxn, k);
            void *pp, *gg, *mm, *vv, *ww;
            CK(cudaMalloc(&pp, k * 2)); CK(cudaMalloc(&gg, k * 2)); CK(cudaMalloc(&mm, k * 4)); CK(cudaMalloc(&vv, k * 4)); CK(cudaMalloc(&ww, k * 4));
            CK(cudaMemset(pp, 0, k * 2)); CK(cudaMemset(gg, 0x3c, k * 2)); CK(cudaMemset(mm, 0, k * 4)); CK(cudaMemset(vv, 0, k * 4)); CK(cudaMemset(ww, 0, k * 4));
            tab[i] = AdamWEntry{(u64)pp, (u64)gg, (u64)mm, (u64)vv, (u64)ww, k, 1e-4f, 0.05f, 1, 1};
        }
        AdamWEntry* dt = dev(tab);
        int bx = std::max(1, std::min(grid(maxn, 1), std::max(1, MAXB * 4 / T)));
        float ms = timeit([&] { adamw_multi<<<dim3(bx, T), 256>>>(dt, 0.9f, 0.999f, 1e-8f, 0.1f, 0.001f, 1.0f); }, 10);
        double gbs = 28.0 * tot / (ms * 1e-3) / 1e9;
        printf("%-22s %12lld %8.1f us %7.0f GB/s %5.1f%% of copy\n", "adamw_multi(bf16+master)", tot, ms * 1e3, gbs, 100 * gbs / copyGBs);
    }
    return 0;
}
