// layout.cu — permute (rank ≤ 6) and copy-slice, each as a plain copy (any dtype, by element size)
// or an accumulating copy (f32/bf16).
// Gradient convention: the *_acc variants do y += x; they are the backward of slicing/permuting.
// Kernels walk the output in order (coalesced writes) and gather the input.
#include "common.cuh"

struct AddOp { template <typename T> __device__ __forceinline__ static void apply(T* y, i64 i, T v) { y[i] = from_f<T>(to_f(y[i]) + to_f(v)); } };
struct SetOp { template <typename T> __device__ __forceinline__ static void apply(T* y, i64 i, T v) { y[i] = v; } };

// y dims d0..d5 (leading dims padded with 1), s0..s5 = strides in x (elements) of the x dimension
// that lands on each y dimension.
template <typename T, typename Op>
__device__ __forceinline__ void permute_body(const T* x, T* y, long long n,
    long long d0, long long d1, long long d2, long long d3, long long d4, long long d5,
    long long s0, long long s1, long long s2, long long s3, long long s4, long long s5)
{
    FIBER_GRID_LOOP(e, n)
    {
        i64 r = e, off = 0, q;
        q = r % d5; r /= d5; off += q * s5;
        q = r % d4; r /= d4; off += q * s4;
        q = r % d3; r /= d3; off += q * s3;
        q = r % d2; r /= d2; off += q * s2;
        q = r % d1; r /= d1; off += q * s1;
        off += r * s0;
        (void)d0;
        Op::apply(y, e, x[off]);
    }
}

// x viewed as [outer, Lx, inner], y as [outer, Ly, inner]; copies len slabs along the middle axis.
template <typename T, typename Op>
__device__ __forceinline__ void copy_slice_body(const T* x, T* y, long long outer, long long inner, long long Lx,
                                                long long Ly, long long src, long long dst, long long len)
{
    const i64 slab = len * inner;
    FIBER_GRID_LOOP(e, outer * slab)
    {
        i64 o = e / slab, r = e % slab;
        Op::apply(y, o * Ly * inner + dst * inner + r, x[o * Lx * inner + src * inner + r]);
    }
}

// Plain copies move bits through integer types, so no float conversion is involved.



extern "C" __global__ void permute_copy2(const u16* x, u16* y, long long n,
    long long d0, long long d1, long long d2, long long d3, long long d4, long long d5,
    long long s0, long long s1, long long s2, long long s3, long long s4, long long s5)
{ permute_body<u16, SetOp>(x, y, n, d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5); }
extern "C" __global__ void copy_slice_copy2(const u16* x, u16* y, long long outer, long long inner, long long Lx,
    long long Ly, long long src, long long dst, long long len)
{ copy_slice_body<u16, SetOp>(x, y, outer, inner, Lx, Ly, src, dst, len); }

extern "C" __global__ void permute_copy4(const u32* x, u32* y, long long n,
    long long d0, long long d1, long long d2, long long d3, long long d4, long long d5,
    long long s0, long long s1, long long s2, long long s3, long long s4, long long s5)
{ permute_body<u32, SetOp>(x, y, n, d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5); }
extern "C" __global__ void copy_slice_copy4(const u32* x, u32* y, long long outer, long long inner, long long Lx,
    long long Ly, long long src, long long dst, long long len)
{ copy_slice_body<u32, SetOp>(x, y, outer, inner, Lx, Ly, src, dst, len); }

extern "C" __global__ void permute_copy8(const u64* x, u64* y, long long n,
    long long d0, long long d1, long long d2, long long d3, long long d4, long long d5,
    long long s0, long long s1, long long s2, long long s3, long long s4, long long s5)
{ permute_body<u64, SetOp>(x, y, n, d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5); }
extern "C" __global__ void copy_slice_copy8(const u64* x, u64* y, long long outer, long long inner, long long Lx,
    long long Ly, long long src, long long dst, long long len)
{ copy_slice_body<u64, SetOp>(x, y, outer, inner, Lx, Ly, src, dst, len); }

extern "C" __global__ void permute_acc_f32(const float* x, float* y, long long n,
    long long d0, long long d1, long long d2, long long d3, long long d4, long long d5,
    long long s0, long long s1, long long s2, long long s3, long long s4, long long s5)
{ permute_body<float, AddOp>(x, y, n, d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5); }
extern "C" __global__ void copy_slice_acc_f32(const float* x, float* y, long long outer, long long inner, long long Lx,
    long long Ly, long long src, long long dst, long long len)
{ copy_slice_body<float, AddOp>(x, y, outer, inner, Lx, Ly, src, dst, len); }

extern "C" __global__ void permute_acc_bf16(const bf16* x, bf16* y, long long n,
    long long d0, long long d1, long long d2, long long d3, long long d4, long long d5,
    long long s0, long long s1, long long s2, long long s3, long long s4, long long s5)
{ permute_body<bf16, AddOp>(x, y, n, d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5); }
extern "C" __global__ void copy_slice_acc_bf16(const bf16* x, bf16* y, long long outer, long long inner, long long Lx,
    long long Ly, long long src, long long dst, long long len)
{ copy_slice_body<bf16, AddOp>(x, y, outer, inner, Lx, Ly, src, dst, len); }
