// layout.cu — permute (rank ≤ 6) and copy-slice, each as a plain copy (any dtype, by element size)
// or an accumulating copy (f32/bf16).
// Gradient convention: the *_acc variants do y += x; they are the backward of slicing/permuting.
// Kernels walk the output in order (coalesced writes) and gather the input.
#include "common.cuh"

struct AddOp { template <typename T> __device__ __forceinline__ static void apply(T* y, i64 i, T v) { y[i] = from_f<T>(to_f(y[i]) + to_f(v)); } };
struct SetOp { template <typename T> __device__ __forceinline__ static void apply(T* y, i64 i, T v) { y[i] = v; } };

// y dims d0..d5 (leading dims padded with 1), s0..s5 = strides in x (elements) of the x dimension
// that lands on each y dimension.
// Index math in I (u32 when the tensor has < 2^31 elements: 64-bit division is several times slower
// and would make this copy compute-bound).
template <typename T, typename Op, typename I>
__device__ __forceinline__ void permute_loop(const T* x, T* y, I n, I d1, I d2, I d3, I d4, I d5,
                                             I s0, I s1, I s2, I s3, I s4, I s5)
{
    const I stride = (I)blockDim.x * gridDim.x;
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride)
    {
        I r = e, off = 0, q;
        q = r % d5; r /= d5; off += q * s5;
        q = r % d4; r /= d4; off += q * s4;
        q = r % d3; r /= d3; off += q * s3;
        q = r % d2; r /= d2; off += q * s2;
        q = r % d1; r /= d1; off += q * s1;
        off += r * s0;
        Op::apply(y, (i64)e, x[off]);
    }
}

// y dims d0..d5 (leading dims padded with 1), s0..s5 = strides in x (elements) of the x dimension
// that lands on each y dimension.
template <typename T, typename Op>
__device__ __forceinline__ void permute_body(const T* x, T* y, long long n,
    long long d0, long long d1, long long d2, long long d3, long long d4, long long d5,
    long long s0, long long s1, long long s2, long long s3, long long s4, long long s5)
{
    (void)d0;
    if (n < 0x7fffffffLL)
        permute_loop<T, Op, u32>(x, y, (u32)n, (u32)d1, (u32)d2, (u32)d3, (u32)d4, (u32)d5,
                                 (u32)s0, (u32)s1, (u32)s2, (u32)s3, (u32)s4, (u32)s5);
    else
        permute_loop<T, Op, u64>(x, y, (u64)n, (u64)d1, (u64)d2, (u64)d3, (u64)d4, (u64)d5,
                                 (u64)s0, (u64)s1, (u64)s2, (u64)s3, (u64)s4, (u64)s5);
}

template <typename T, typename Op, typename I>
__device__ __forceinline__ void copy_slice_loop(const T* x, T* y, I total, I slab, I inner, I Lx, I Ly, I src, I dst)
{
    const I stride = (I)blockDim.x * gridDim.x;
    for (I e = (I)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride)
    {
        I o = e / slab, r = e - o * slab;
        Op::apply(y, (i64)(o * Ly * inner + dst * inner + r), x[o * Lx * inner + src * inner + r]);
    }
}

// x viewed as [outer, Lx, inner], y as [outer, Ly, inner]; copies len slabs along the middle axis.
template <typename T, typename Op>
__device__ __forceinline__ void copy_slice_body(const T* x, T* y, long long outer, long long inner, long long Lx,
                                                long long Ly, long long src, long long dst, long long len)
{
    const long long slab = len * inner, total = outer * slab;
    if (outer * Lx * inner < 0x7fffffffLL && outer * Ly * inner < 0x7fffffffLL)
        copy_slice_loop<T, Op, u32>(x, y, (u32)total, (u32)slab, (u32)inner, (u32)Lx, (u32)Ly, (u32)src, (u32)dst);
    else
        copy_slice_loop<T, Op, u64>(x, y, (u64)total, (u64)slab, (u64)inner, (u64)Lx, (u64)Ly, (u64)src, (u64)dst);
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
