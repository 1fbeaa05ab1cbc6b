// common.cuh — shared device helpers for every kernels/*.cu file.
//
// Compiles two ways and must stay valid for both:
//   * NVRTC (real GPU): no toolkit headers exist, so nothing here includes one; math functions
//     (expf, erff, sqrtf, ...) are NVRTC built-ins.
//   * g++ with FIBER_EMULATION defined, against kernels/emu/cuda_emu.h, which provides the CUDA
//     built-ins (threadIdx, __syncthreads, __shfl_xor_sync, atomics, emu_dynamic_smem).
// Intrinsics are therefore avoided where plain C++ does the same job (bit casts via unions,
// 32x32->64 products instead of __umulhi) so the emulator needs to model as little as possible.
#pragma once

#if defined(FIBER_EMULATION)
#include <math.h>
// cuda_emu.h normally defines these; keep the file self-sufficient for plain g++ syntax checks.
#ifndef __forceinline__
#define __forceinline__ inline __attribute__((always_inline))
#endif
#endif

// Tensor-core / async-copy wrappers (inline PTX, emulated under FIBER_EMULATION); it defines the
// same fixed-width typedefs behind the same guard.
#include "ptx.cuh"

#ifndef FIBER_TYPES_DEFINED
#define FIBER_TYPES_DEFINED
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;
typedef int i32;
#endif

typedef unsigned short u16;

// Dynamic shared memory. The emulator cannot model `extern __shared__`, so it hands out a
// per-block buffer instead.
#if defined(FIBER_EMULATION)
#define FIBER_DYNAMIC_SMEM(type, name) type* name = (type*)emu_dynamic_smem();
#else
#define FIBER_DYNAMIC_SMEM(type, name) \
    extern __shared__ __align__(16) unsigned char name##_raw[]; \
    type* name = (type*)name##_raw;
#endif

#define FIBER_FULL_MASK 0xffffffffu
#define FIBER_WARP 32

// ---------------------------------------------------------------------------------------------
// bit casts and bf16
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ u32 fiber_f2u(float f) { union { float f; u32 u; } c; c.f = f; return c.u; }
__device__ __forceinline__ float fiber_u2f(u32 u) { union { float f; u32 u; } c; c.u = u; return c.f; }
__device__ __forceinline__ float fiber_neg_inf() { return fiber_u2f(0xff800000u); }

// Storage type for bfloat16: the raw 16 bits. Arithmetic is always done in float.
struct bf16 { u16 bits; };

// Round to nearest even; NaN stays a quiet NaN. Bit for bit the same as Tensors/BFloat16.cs.
__device__ __forceinline__ bf16 float_to_bf16(float f)
{
    u32 u = fiber_f2u(f);
    bf16 h;
    if ((u & 0x7fffffffu) > 0x7f800000u) { h.bits = (u16)((u >> 16) | 0x40u); return h; }
    u += 0x7fffu + ((u >> 16) & 1u);
    h.bits = (u16)(u >> 16);
    return h;
}
__device__ __forceinline__ float bf16_to_float(bf16 h) { return fiber_u2f(((u32)h.bits) << 16); }

// Element conversions used by every templated kernel: math is in float, storage is T.
__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(bf16 v) { return bf16_to_float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float v) { return float_to_bf16(v); }

template <typename T> __device__ __forceinline__ float load_f(const T* p, i64 i) { return to_f(p[i]); }
template <typename T> __device__ __forceinline__ void store_f(T* p, i64 i, float v) { p[i] = from_f<T>(v); }

// Small side tensors (losses, per-row sums, norms) whose dtype the host picks at run time:
// 0 = f32, 1 = bf16 (the DType enum order). Not for hot loops over big tensors.
__device__ __forceinline__ float load_dyn(const void* p, i64 i, int dt)
{
    return dt == 1 ? bf16_to_float(((const bf16*)p)[i]) : ((const float*)p)[i];
}
__device__ __forceinline__ void store_dyn(void* p, i64 i, int dt, float v)
{
    if (dt == 1) ((bf16*)p)[i] = float_to_bf16(v); else ((float*)p)[i] = v;
}

// ---------------------------------------------------------------------------------------------
// 16-byte vector access. A Pack<T> is what one 128-bit load moves (4 f32 or 8 bf16). Callers use
// it only when the address is 16-byte aligned (allocations are; row starts are when the row length
// is a multiple of Pack<T>::N), and fall back to scalar code otherwise.
// ---------------------------------------------------------------------------------------------
template <typename T> struct alignas(16) Pack
{
    static const int N = 16 / (int)sizeof(T);
    T v[16 / sizeof(T)];
};

template <typename T> __device__ __forceinline__ Pack<T> load_pack(const T* p) { return *(const Pack<T>*)p; }
template <typename T> __device__ __forceinline__ void store_pack(T* p, const Pack<T>& v) { *(Pack<T>*)p = v; }

// N floats to one Pack<T>. For bf16 on the GPU two floats round in one instruction
// (cvt.rn.bf16x2.f32, round to nearest even like float_to_bf16; only NaNs differ, so they are
// redone by float_to_bf16 to keep the bits identical to Tensors/BFloat16.cs).
__device__ __forceinline__ u32 bf16x2_bits(float lo, float hi)
{
#if defined(FIBER_EMULATION)
    return (u32)float_to_bf16(lo).bits | ((u32)float_to_bf16(hi).bits << 16);
#else
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    if (lo != lo) r = (r & 0xffff0000u) | (u32)float_to_bf16(lo).bits;
    if (hi != hi) r = (r & 0xffffu) | ((u32)float_to_bf16(hi).bits << 16);
    return r;
#endif
}
template <typename T> __device__ __forceinline__ Pack<T> pack_from(const float* v);
template <> __device__ __forceinline__ Pack<float> pack_from<float>(const float* v)
{
    Pack<float> p;
#pragma unroll
    for (int j = 0; j < 4; j++) p.v[j] = v[j];
    return p;
}
template <> __device__ __forceinline__ Pack<bf16> pack_from<bf16>(const float* v)
{
    union { Pack<bf16> p; u32 w[4]; } u;
#pragma unroll
    for (int j = 0; j < 4; j++) u.w[j] = bf16x2_bits(v[2 * j], v[2 * j + 1]);
    return u.p;
}

// V consecutive elements as floats, and back: one Pack<T> when V is its width (the address then 16-byte aligned),
// a scalar when V is 1. Lets a kernel template take either unit from one code path.
template <typename T, int V>
__device__ __forceinline__ void load_floats(const T* p, float* v)
{
    if constexpr (V == 1) v[0] = to_f(*p);
    else
    {
        Pack<T> k = load_pack(p);
#pragma unroll
        for (int j = 0; j < V; j++) v[j] = to_f(k.v[j]);
    }
}

template <typename T, int V>
__device__ __forceinline__ void store_floats(T* p, const float* v)
{
    if constexpr (V == 1) *p = from_f<T>(v[0]);
    else store_pack(p, pack_from<T>(v));
}

template <typename T> __device__ __forceinline__ bool aligned16(const T* p) { return (((u64)p) & 15u) == 0; }

// ---------------------------------------------------------------------------------------------
// reductions
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FIBER_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FIBER_FULL_MASK, v, o));
    return v;
}

// Whole-block reductions; every thread of the block must call them and gets the result.
// blockDim.x must be a multiple of 32. `scratch` is 32 floats of shared memory owned by the caller
// (separate calls in a row may share it: the leading barrier protects the previous result).
__device__ __forceinline__ float block_sum(float v, float* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < nw ? scratch[lane] : 0.0f;
    return warp_sum(r);
}
__device__ __forceinline__ float block_max(float v, float* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < nw ? scratch[lane] : fiber_neg_inf();
    return warp_max(r);
}

// ---------------------------------------------------------------------------------------------
// math
// ---------------------------------------------------------------------------------------------
#define FIBER_INV_SQRT2 0.70710678118654752440f
#define FIBER_INV_SQRT_2PI 0.39894228040143267794f

// Exact (erf) GELU, as nn.GELU() and HF "gelu" use.
__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * FIBER_INV_SQRT2)); }
__device__ __forceinline__ float gelu_erf_grad(float x)
{
    float cdf = 0.5f * (1.0f + erff(x * FIBER_INV_SQRT2));
    float pdf = FIBER_INV_SQRT_2PI * expf(-0.5f * x * x);
    return cdf + x * pdf;
}

// ---------------------------------------------------------------------------------------------
// Philox4x32-10, the counter-based RNG shared bit for bit with Ops/Philox.cs.
// counter = (lo32(offset+e), hi32(offset+e), 0, 0), key = (lo32(seed), hi32(seed)).
// ---------------------------------------------------------------------------------------------
struct Philox4 { u32 x, y, z, w; };

__device__ __forceinline__ Philox4 philox4x32_10(u64 counter, u64 seed)
{
    u32 c0 = (u32)counter, c1 = (u32)(counter >> 32), c2 = 0u, c3 = 0u;
    u32 k0 = (u32)seed, k1 = (u32)(seed >> 32);
    for (int r = 0; r < 10; r++)
    {
        u64 p0 = (u64)0xD2511F53u * (u64)c0;
        u64 p1 = (u64)0xCD9E8D57u * (u64)c2;
        u32 hi0 = (u32)(p0 >> 32), lo0 = (u32)p0;
        u32 hi1 = (u32)(p1 >> 32), lo1 = (u32)p1;
        u32 n0 = hi1 ^ c1 ^ k0;
        u32 n1 = lo1;
        u32 n2 = hi0 ^ c3 ^ k1;
        u32 n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        if (r < 9) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
    }
    Philox4 o; o.x = c0; o.y = c1; o.z = c2; o.w = c3;
    return o;
}

// Uniform in [0,1) with 24 random bits, from the first Philox output word.
__device__ __forceinline__ float philox_uniform(u64 seed, u64 counter)
{
    return (float)(philox4x32_10(counter, seed).x >> 8) * (1.0f / 16777216.0f);
}

// ---------------------------------------------------------------------------------------------
// atomics for accumulation into bf16 (no native bf16 atomicAdd before sm_90 without headers):
// CAS on the aligned 32-bit word that holds the half-word.
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ void atomic_add_bf16(bf16* addr, float v)
{
    u64 a = (u64)addr;
    u32* word = (u32*)(a & ~(u64)3);
    u32 shift = (a & 2) ? 16u : 0u;
    u32 old = *word, assumed;
    do
    {
        assumed = old;
        float cur = fiber_u2f(((assumed >> shift) & 0xffffu) << 16);
        u32 nb = (u32)float_to_bf16(cur + v).bits;
        u32 nw = (assumed & ~(0xffffu << shift)) | (nb << shift);
        old = atomicCAS(word, assumed, nw);
    } while (old != assumed);
}
__device__ __forceinline__ void atomic_add_f(float* addr, float v) { atomicAdd(addr, v); }
__device__ __forceinline__ void atomic_add_f(bf16* addr, float v) { atomic_add_bf16(addr, v); }

// Grid-stride loop over [0, n).
#define FIBER_GRID_LOOP(i, n) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n); i += (i64)blockDim.x * gridDim.x)

// ---------------------------------------------------------------------------------------------
// Column partial sums (bias gradients and the like), deterministic. Block shape (32, 8): thread
// (tx, ty) owns `nv` consecutive columns starting at (blockIdx.x*32 + tx)*nv and has summed them
// over the rows it visited into acc[]. This folds the 8 row-groups in a fixed order and writes the
// block's sums to partial_row[col] (the caller's row blockIdx.y of a [gridDim.y, C] f32 buffer);
// reduce.cu's colsum_partials then adds the rows up. Must be called by every thread of the block.
// ---------------------------------------------------------------------------------------------
template <int NMAX>
__device__ __forceinline__ void colpart_finish(const float (&acc)[NMAX], int nv, int C, float* partial_row)
{
    __shared__ float sm[8][32 * 8];
    int tx = threadIdx.x, ty = threadIdx.y;
#pragma unroll
    for (int k = 0; k < NMAX; k++) if (k < nv) sm[ty][tx * nv + k] = acc[k];
    __syncthreads();
    int width = 32 * nv, col_base = blockIdx.x * width;
    for (int i = ty * 32 + tx; i < width; i += 256)
    {
        float s = 0.0f;
#pragma unroll
        for (int r = 0; r < 8; r++) s += sm[r][i];
        if (col_base + i < C) partial_row[col_base + i] = s;
    }
}

// ---------------------------------------------------------------------------------------------
// Rows of up to 1024 elements held in registers by one warp (32 floats per lane), so row kernels
// read and write global memory exactly once. With vec, lane owns whole 16-byte packs (columns
// ((k/N)*32 + lane)*N + k%N); without, columns k*32 + lane. Slots past the row end read as 0 and
// are never stored. Loops over k must be fully unrolled so v[] stays in registers.
// ---------------------------------------------------------------------------------------------
#define FIBER_ROW_CACHE 1024

template <typename T> __device__ __forceinline__ int row_col(int k, int lane, bool vec)
{
    const int N = Pack<T>::N;
    return vec ? ((k / N) * 32 + lane) * N + (k % N) : k * 32 + lane;
}

template <typename T> __device__ __forceinline__ void row_load(const T* r, int C, int lane, bool vec, float (&v)[32])
{
    const int N = Pack<T>::N;
    if (vec)
    {
#pragma unroll
        for (int kp = 0; kp < 32 / N; kp++)
        {
            int c = (kp * 32 + lane) * N;
            if (c < C)
            {
                Pack<T> p = load_pack(r + c);
#pragma unroll
                for (int j = 0; j < N; j++) v[kp * N + j] = to_f(p.v[j]);
            }
            else
            {
#pragma unroll
                for (int j = 0; j < N; j++) v[kp * N + j] = 0.0f;
            }
        }
    }
    else
    {
#pragma unroll
        for (int k = 0; k < 32; k++) { int c = k * 32 + lane; v[k] = c < C ? to_f(r[c]) : 0.0f; }
    }
}

template <typename T> __device__ __forceinline__ void row_store(T* r, int C, int lane, bool vec, const float (&v)[32])
{
    const int N = Pack<T>::N;
    if (vec)
    {
#pragma unroll
        for (int kp = 0; kp < 32 / N; kp++)
        {
            int c = (kp * 32 + lane) * N;
            if (c < C)
            {
                store_pack(r + c, pack_from<T>(&v[kp * N]));
            }
        }
    }
    else
    {
#pragma unroll
        for (int k = 0; k < 32; k++) { int c = k * 32 + lane; if (c < C) r[c] = from_f<T>(v[k]); }
    }
}

// Global warp index / count for warp-per-row kernels (1-D blocks, blockDim.x a multiple of 32).
__device__ __forceinline__ i64 global_warp() { return ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; }
__device__ __forceinline__ i64 global_warps() { return ((i64)gridDim.x * blockDim.x) >> 5; }

// ---------------------------------------------------------------------------------------------
// Row groups: TPR lanes (8, 16 or 32) own one row; each lane keeps KP 16-byte packs of it in
// registers (pack k*TPR + gl, gl = lane % TPR). Requires C % Pack<T>::N == 0 and
// C <= KP·TPR·N. Sizes are compile-time so the row cache costs exactly the registers it needs
// (a runtime-sized cache made the compiler keep 32 floats and both load paths live).
// All lanes of a warp run the same iterations (rows past the end are masked), so the group
// shuffles always have the full warp.
// ---------------------------------------------------------------------------------------------
template <int TPR> __device__ __forceinline__ float group_sum(float v)
{
#pragma unroll
    for (int o = TPR / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FIBER_FULL_MASK, v, o);
    return v;
}
template <int TPR> __device__ __forceinline__ float group_max(float v)
{
#pragma unroll
    for (int o = TPR / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FIBER_FULL_MASK, v, o));
    return v;
}

template <typename T, int KP, int TPR>
__device__ __forceinline__ void rg_load(const T* row, int C, int gl, bool ok, float (&v)[KP * Pack<T>::N])
{
    const int N = Pack<T>::N;
#pragma unroll
    for (int k = 0; k < KP; k++)
    {
        int c = (k * TPR + gl) * N;
        if (ok && c < C)
        {
            Pack<T> p = load_pack(row + c);
#pragma unroll
            for (int j = 0; j < N; j++) v[k * N + j] = to_f(p.v[j]);
        }
        else
        {
#pragma unroll
            for (int j = 0; j < N; j++) v[k * N + j] = 0.0f;
        }
    }
}

template <typename T, int KP, int TPR>
__device__ __forceinline__ void rg_store(T* row, int C, int gl, bool ok, const float (&v)[KP * Pack<T>::N])
{
    const int N = Pack<T>::N;
#pragma unroll
    for (int k = 0; k < KP; k++)
    {
        int c = (k * TPR + gl) * N;
        if (ok && c < C)
        {
            store_pack(row + c, pack_from<T>(&v[k * N]));
        }
    }
}

// Per-lane parameters (gamma, beta) for the KP packs a row-group lane owns: the same columns for
// every row, so kernels load them once, before their row loop. Whole 16-byte loads when the lane's
// N consecutive parameters span whole packs of P (f32 params for bf16 rows), else scalars.
template <typename T, typename P, int KP, int TPR>
__device__ __forceinline__ void rg_params(const P* prm, int C, int gl, float (&o)[KP * Pack<T>::N])
{
    const int N = Pack<T>::N;
#pragma unroll
    for (int k = 0; k < KP; k++)
    {
        int c = (k * TPR + gl) * N;
        if (c < C)
        {
            if constexpr ((N * sizeof(P)) % 16 == 0)
            {
#pragma unroll
                for (int h = 0; h < (int)(N * sizeof(P) / 16); h++)
                {
                    Pack<P> pk = load_pack(prm + c + h * Pack<P>::N);
#pragma unroll
                    for (int j = 0; j < Pack<P>::N; j++) o[k * N + h * Pack<P>::N + j] = to_f(pk.v[j]);
                }
            }
            else
            {
#pragma unroll
                for (int j = 0; j < N; j++) o[k * N + j] = to_f(prm[c + j]);
            }
        }
        else
        {
#pragma unroll
            for (int j = 0; j < N; j++) o[k * N + j] = 0.0f;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Per-lane cp.async pipelines for row-group kernels: a lane copies its own KP packs of a row into
// its own shared-memory slots S steps ahead, so S·KP 16-byte loads per lane are in flight without
// holding registers (which is what limits the plain load path). Only the lane that issued a copy
// reads it, so cp.async.wait_group alone orders it (no barrier). Slot layout
// [stage][k][thread] keeps a warp's 16-byte reads conflict-free. Dynamic shared memory:
// S·KP·blockDim.x packs.
// ---------------------------------------------------------------------------------------------
template <typename T, int KP, int TPR>
__device__ __forceinline__ void rg_issue(Pack<T>* slots, const T* row, int C, int gl, bool ok)
{
    const int N = Pack<T>::N;
#pragma unroll
    for (int k = 0; k < KP; k++)
    {
        int c = (k * TPR + gl) * N;
        if (ok && c < C) cp_async_cg_16(slots + k * blockDim.x + threadIdx.x, row + c);
    }
}

template <typename T, int KP, int TPR>
__device__ __forceinline__ void rg_take(const Pack<T>* slots, int C, int gl, bool ok, float (&v)[KP * Pack<T>::N])
{
    const int N = Pack<T>::N;
#pragma unroll
    for (int k = 0; k < KP; k++)
    {
        int c = (k * TPR + gl) * N;
        if (ok && c < C)
        {
            Pack<T> p = slots[k * blockDim.x + threadIdx.x];
#pragma unroll
            for (int j = 0; j < N; j++) v[k * N + j] = to_f(p.v[j]);
        }
        else
        {
#pragma unroll
            for (int j = 0; j < N; j++) v[k * N + j] = 0.0f;
        }
    }
}

// Streams the rows of a persistent grid's row groups through an S-stage pipeline (rg_issue S−1 rows
// ahead, rg_take the current one) and hands each row to body(r, ok, v): r the row, ok whether it
// exists, v its KP·N values in registers. Dynamic shared memory: `buf`, S·KP·blockDim.x packs.
template <typename T, int KP, int TPR, int S, typename Body>
__device__ __forceinline__ void rg_pipeline(Pack<T>* buf, const T* x, i64 rows, int C, Body body)
{
    const int RPW = 32 / TPR;
    const int lane = threadIdx.x & 31, gl = lane % TPR;
    const i64 first = global_warp() * RPW + lane / TPR, step = global_warps() * RPW;
    const i64 nsteps = rows > first - lane / TPR ? (rows - (first - lane / TPR) + step - 1) / step : 0; // per warp
    for (int i = 0; i < S - 1; i++)
    {
        const i64 r = first + i * step;
        rg_issue<T, KP, TPR>(buf + (i % S) * KP * blockDim.x, x + (r < rows ? r * C : 0), C, gl, i < nsteps && r < rows);
        cp_async_commit();
    }
    for (i64 i = 0; i < nsteps; i++)
    {
        {
            const i64 j = i + S - 1, r = first + j * step;
            rg_issue<T, KP, TPR>(buf + (int)(j % S) * KP * blockDim.x, x + (r < rows ? r * C : 0), C, gl, j < nsteps && r < rows);
            cp_async_commit();
        }
        cp_async_wait_group<S - 1>();
        const i64 r = first + i * step;
        const bool ok = r < rows;
        float v[KP * Pack<T>::N];
        rg_take<T, KP, TPR>(buf + (int)(i % S) * KP * blockDim.x, C, gl, ok, v);
        body(r, ok, v);
    }
    cp_async_wait_all();
}
