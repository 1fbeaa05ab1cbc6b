// probe_driver.cu — runs the emulator's probe kernels (kernels/tests/emu_selftest.cu, mma_probe.cu) on
// fixed pseudo-random inputs and writes every output to <outdir>/<name>.bin, so the outputs of a real
// GPU and of the emulated GPU can be compared (compare.py). One source, two builds:
//   GPU:      nvcc -std=c++17 -O2 -arch=sm_90 -I kernels probe_driver.cu -o probe_gpu
//   emulator: g++ -std=c++17 -O2 -pthread -DFIBER_EMULATION -include kernels/emu/cuda_emu.h -I kernels -x c++ probe_driver.cu -o probe_emu
// File format: u32 kind (0 = compare bits exactly, 1 = f32 within tolerance, 2 = f32, tolerance per
// element in the following array), u32 count, then the data.
#include "tests/emu_selftest.cu"
#include "tests/mma_probe.cu"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <tuple>
#include <vector>

#ifdef FIBER_EMULATION
static void* dalloc(size_t n) { void* p = aligned_alloc(256, (n + 255) / 256 * 256); memset(p, 0, n); return p; }
static void up(void* d, const void* h, size_t n) { memcpy(d, h, n); }
static void down(void* h, const void* d, size_t n) { memcpy(h, d, n); }
static void dfree(void* p) { free(p); }
template <class... P, class... A> static void launch(void (*k)(P...), dim3 g, dim3 b, size_t smem, A... a)
{
    std::tuple<P...> vals(a...);
    void* args[sizeof...(P) + 1];
    std::apply([&](auto&... v) { int i = 0; ((args[i++] = (void*)&v), ...); }, vals);
    char err[1024] = {0};
    emu_launch cfg{{g.x, g.y, g.z}, {b.x, b.y, b.z}, smem, 232448, err, sizeof err};
    if (const char* order = getenv("FIBER_EMU_SCHEDULE"))  // forward | reverse | random
        cfg.schedule = !strcmp(order, "reverse") ? 1u : !strcmp(order, "random") ? 2u : 0u;
    if (fiber_emu::launch(k, &cfg, args)) { fprintf(stderr, "launch failed: %s\n", err); exit(1); }
}
#else
static void check(cudaError_t e, const char* what) { if (e != cudaSuccess) { fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e)); exit(1); } }
static void* dalloc(size_t n) { void* p; check(cudaMalloc(&p, n), "malloc"); check(cudaMemset(p, 0, n), "memset"); return p; }
static void up(void* d, const void* h, size_t n) { check(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice), "h2d"); }
static void down(void* h, const void* d, size_t n) { check(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost), "d2h"); }
static void dfree(void* p) { cudaFree(p); }
template <class... P, class... A> static void launch(void (*k)(P...), dim3 g, dim3 b, size_t smem, A... a)
{
    k<<<g, b, smem>>>(((P)a)...);
    check(cudaGetLastError(), "launch");
    check(cudaDeviceSynchronize(), "sync");
}
#endif

static std::string outdir;
static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;
static unsigned rnd() { rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull; return (unsigned)(rng_state >> 33); }
static float rndf() { return (float)(rnd() & 0xFFFFFF) / 16777216.0f; }
static unsigned short bf16(float f) { unsigned u; memcpy(&u, &f, 4); u += 0x7FFF + ((u >> 16) & 1); return (unsigned short)(u >> 16); }

template <class T> static T* dev(const std::vector<T>& h) { T* d = (T*)dalloc(h.size() * sizeof(T) + 1); up(d, h.data(), h.size() * sizeof(T)); return d; }
template <class T> static std::vector<T> get(const T* d, size_t n) { std::vector<T> h(n); down(h.data(), d, n * sizeof(T)); return h; }

static void save(const std::string& name, unsigned kind, const void* data, size_t bytes, const std::vector<float>* tol = nullptr)
{
    FILE* f = fopen((outdir + "/" + name + ".bin").c_str(), "wb");
    unsigned count = (unsigned)(bytes / 4);
    fwrite(&kind, 4, 1, f);
    fwrite(&count, 4, 1, f);
    fwrite(data, 1, bytes, f);
    if (tol) fwrite(tol->data(), 4, tol->size(), f);
    fclose(f);
}
template <class T> static void save_bits(const std::string& name, const std::vector<T>& v) { save(name, 0, v.data(), v.size() * sizeof(T)); }
static void save_f32(const std::string& name, const std::vector<float>& v) { save(name, 1, v.data(), v.size() * 4); }

static void gemm_probe(int M, int N, int K, int mode)  // mode 0: tn k16, 1: nn k16, 2: nn k8
{
    std::vector<unsigned short> a(M * K), b(N * K);
    for (auto& x : a) x = bf16(rndf() * 2 - 1);
    for (auto& x : b) x = bf16(rndf() * 2 - 1);
    auto da = dev(a), db = dev(b);
    float* dc = (float*)dalloc(M * N * 4);
    if (mode == 0) launch(mma_probe_gemm, dim3(N / 8, M / 16), dim3(32), 0, da, db, dc, M, N, K);
    else launch(mma_probe_gemm_nn, dim3(N / 8, M / 16), dim3(32), 0, da, db, dc, M, N, K, mode == 2 ? 1 : 0);
    auto c = get(dc, M * N);
    // Per-element tolerance: fp32 summation-order slack relative to sum |a*b|.
    std::vector<float> tol(M * N);
    auto F = [](unsigned short h) { unsigned u = (unsigned)h << 16; float f; memcpy(&f, &u, 4); return f; };
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++)
        {
            double s = 0;
            for (int k = 0; k < K; k++) s += fabs((double)F(a[i * K + k]) * F(mode == 0 ? b[j * K + k] : b[k * N + j]));
            tol[i * N + j] = (float)(4 * K * 6e-8 * s + 1e-30);
        }
    char name[64];
    snprintf(name, sizeof name, "gemm_m%d_%dx%dx%d", mode, M, N, K);
    save(name, 2, c.data(), c.size() * 4, &tol);
    dfree(da); dfree(db); dfree(dc);
}

int main(int argc, char** argv)
{
    if (argc < 2) { fprintf(stderr, "usage: %s outdir\n", argv[0]); return 2; }
    outdir = argv[1];

    {   // shuffles
        int pairs[][2] = {{1, 32}, {3, 8}, {5, 16}, {16, 32}, {2, 4}, {7, 32}, {16, 8}, {9, 8}};
        for (auto& p : pairs)
        {
            std::vector<int> in(64);
            for (auto& x : in) x = (int)(rnd() % 200001) - 100000;
            auto din = dev(in);
            long long* dout = (long long*)dalloc(16 * 64 * 8);
            launch(shfl_probe, dim3(1), dim3(64), 0, din, dout, p[0], p[1]);
            save_bits("shfl_b" + std::to_string(p[0]) + "_w" + std::to_string(p[1]), get(dout, 16 * 64));
            dfree(din); dfree(dout);
        }
    }
    {   // votes
        std::vector<int> pred(96);
        for (int i = 0; i < 96; i++) pred[i] = (i >= 32 && i < 64) ? 1 : (rnd() % 3 == 0 ? 0 : 1 + rnd() % 4);
        auto dp = dev(pred);
        unsigned* dout = (unsigned*)dalloc(96 * 9 * 4);
        launch(vote_probe, dim3(1), dim3(96), 0, dp, dout);
        save_bits("votes", get(dout, 96 * 9));
        dfree(dp); dfree(dout);
    }
    {   // warp reduce + activemask, partial warp
        std::vector<int> x(80);
        for (auto& v : x) v = (int)(rnd() % 1000) - 500;
        auto dx = dev(x);
        int* dout = (int*)dalloc(12 * 4);
        launch(reduce_probe, dim3(1), dim3(80), 0, dx, dout);
        save_bits("reduce", get(dout, 12));
        dfree(dx); dfree(dout);
    }
    {   // indices
        int* dout = (int*)dalloc(12 * 24 * 6 * 4);
        int* ddims = (int*)dalloc(6 * 4);
        launch(index_probe, dim3(3, 2, 2), dim3(4, 3, 2), 0, dout, ddims);
        save_bits("index", get(dout, 12 * 24 * 6));
        save_bits("index_dims", get(ddims, 6));
        dfree(dout); dfree(ddims);
    }
    {   // block reduction, warp sums, dynamic smem
        int n = 256 * 37 - 5;
        std::vector<float> x(256 * 37);
        for (auto& v : x) v = (float)((int)(rnd() % 2000) - 1000) / 8;
        auto dx = dev(x);
        float* dout = (float*)dalloc(37 * 4);
        launch(block_sum_tree, dim3(37), dim3(256), 0, dx, dout, n);
        save_bits("block_sum", get(dout, 37));
        float* dw = (float*)dalloc(2 * 384 / 32 * 4);
        launch(warp_sums, dim3(3), dim3(128), 0, dx, dw);
        save_bits("warp_sums", get(dw, 2 * 384 / 32));
        float* dy = (float*)dalloc(x.size() * 4);
        int* dclash = (int*)dalloc(4);
        launch(dyn_smem_reverse, dim3(23), dim3(256), 256 * 4, dx, dy, dclash);
        save_bits("dyn_reverse", get(dy, 23 * 256));
        save_bits("dyn_clash", get(dclash, 1));
        dfree(dx); dfree(dout); dfree(dw); dfree(dy); dfree(dclash);
    }
    {   // scalar shared broadcast
        std::vector<int> x(40);
        for (auto& v : x) v = (int)rnd();
        auto dx = dev(x);
        int* dout = (int*)dalloc(40 * 96 * 4);
        launch(shared_scalar_broadcast, dim3(2), dim3(96), 0, dx, dout, 40);
        save_bits("shared_scalar", get(dout, 40 * 96));
        dfree(dx); dfree(dout);
    }
    {   // atomics (order-independent results only)
        int n = 128 * 64 - 77;
        std::vector<int> vals(n);
        for (auto& v : vals) v = (int)(rnd() % 2000) - 1000;
        std::vector<int> acc0 = {0, (int)0x80000000, 0x7fffffff, 0, -1, -1, 0, 0, 0};
        auto dv = dev(vals);
        auto dacc = dev(acc0);
        unsigned* du = (unsigned*)dalloc(4);
        unsigned long long* dull = (unsigned long long*)dalloc(8);
        float* df = (float*)dalloc(4);
        double* dd = (double*)dalloc(8);
        int* dorder = (int*)dalloc(n * 4);
        launch(atomics_probe, dim3(64), dim3(128), 0, dv, dacc, du, dull, df, dd, dorder, n);
        auto acc = get(dacc, 9);
        acc[4] = 0;  // atomicExch: whichever thread came last
        save_bits("atomics_acc", acc);
        save_bits("atomics_u", get(du, 1));
        save_bits("atomics_ull", get(dull, 1));
        save_bits("atomics_f", get(df, 1));
        save_bits("atomics_d", get(dd, 1));
        dfree(dv); dfree(dacc); dfree(du); dfree(dull); dfree(df); dfree(dd); dfree(dorder);
    }
    {   // math
        int n = 300;
        std::vector<float> x(n);
        for (auto& v : x) v = rndf() * 6 - 3;
        x[0] = 0.25f; x[1] = -0.05f; x[2] = 0.15f;
        auto dx = dev(x);
        float* dout = (float*)dalloc(n * 16 * 4);
        launch(math_probe, dim3((n + 127) / 128), dim3(128), 0, dx, dout, n);
        save_f32("math", get(dout, n * 16));
        dfree(dx); dfree(dout);
    }
    {   // ldmatrix
        std::vector<unsigned short> src(256);
        for (auto& v : src) v = (unsigned short)rnd();
        auto ds = dev(src);
        u32* dout = (u32*)dalloc(768 * 4);
        launch(ldmatrix_probe, dim3(1), dim3(32), 0, ds, dout);
        save_bits("ldmatrix", get(dout, 768));
        dfree(ds); dfree(dout);
    }
    for (int k8 = 0; k8 < 2; k8++)
    {   // raw mma fragments (bf16 values in [-2, 2), C in [-5, 5))
        std::vector<u32> a(128), b(64);
        std::vector<float> c(128);
        for (auto& v : a) v = (u32)bf16(rndf() * 4 - 2) | ((u32)bf16(rndf() * 4 - 2) << 16);
        for (auto& v : b) v = (u32)bf16(rndf() * 4 - 2) | ((u32)bf16(rndf() * 4 - 2) << 16);
        for (auto& v : c) v = rndf() * 10 - 5;
        auto da = dev(a); auto db = dev(b); auto dc = dev(c);
        float* dd = (float*)dalloc(128 * 4);
        launch(mma_fragment_probe, dim3(1), dim3(32), 0, da, db, dc, dd, k8);
        save_f32(k8 ? "mma_frag_k8" : "mma_frag_k16", get(dd, 128));
        dfree(da); dfree(db); dfree(dc); dfree(dd);
    }
    {   // cp.async: only the words that must be complete are comparable across targets
        std::vector<int> src(64 * 3);
        for (int i = 0; i < 64 * 3; i++) src[i] = i * 10 + 1;
        auto ds = dev(src);
        int* dout = (int*)dalloc(64 * 9 * 4);
        launch(cp_async_probe, dim3(1), dim3(64), 0, ds, dout);
        auto o = get(dout, 64 * 9);
        for (int t = 0; t < 64; t++)
            for (int step = 0; step < 3; step++)
                for (int j = step + 1; j < 3; j++) o[t * 9 + 3 * step + j] = 0;  // may or may not be done on a GPU
        save_bits("cp_async_done", o);
        dfree(ds); dfree(dout);
    }
    gemm_probe(16, 8, 16, 0);
    gemm_probe(32, 24, 48, 0);
    gemm_probe(48, 40, 128, 0);
    gemm_probe(128, 64, 256, 0);
    gemm_probe(16, 8, 16, 1);
    gemm_probe(32, 16, 64, 1);
    gemm_probe(32, 16, 64, 2);
    gemm_probe(64, 64, 128, 2);
    printf("probe_driver: wrote %s\n", outdir.c_str());
    return 0;
}
