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

#define FIBER_PERMUTE(T, OP, S)                                                                               \
extern "C" __global__ void permute_##S(const T* x, T* y, long long n,                                        \
    long long d0, long long d1, long long d2, long long d3, long long d4, long long d5,                      \
    long long s0, long long s1, long long s2, long long s3, long long s4, long long s5)                      \
{ permute_body<T, OP>(x, y, n, d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5); }                            \
extern "C" __global__ void copy_slice_##S(const T* x, T* y, long long outer, long long inner, long long Lx,   \
    long long Ly, long long src, long long dst, long long len)                                               \
{ copy_slice_body<T, OP>(x, y, outer, inner, Lx, Ly, src, dst, len); }

FIBER_PERMUTE(u16, SetOp, copy2)
FIBER_PERMUTE(u32, SetOp, copy4)
FIBER_PERMUTE(u64, SetOp, copy8)
FIBER_PERMUTE(float, AddOp, acc_f32)
FIBER_PERMUTE(bf16, AddOp, acc_bf16)
