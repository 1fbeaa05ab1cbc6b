// elementwise.cu — add, mul, scale, axpy, add_bias, fill, cast.
// Gradient convention: no backward kernels here; axpy is the `+=` used to accumulate gradients.
// All tensors of one call share a dtype (T = f32 or bf16), except cast and the bias of add_bias
// (P = f32 or bf16). Math is in float; results are rounded once, at the store.
// Vector path: 16-byte packs when every pointer is 16-byte aligned (the allocator guarantees it for
// whole tensors); the tail and unaligned cases go element by element.
#include "common.cuh"

struct OpAdd { float s; __device__ __forceinline__ float operator()(float a, float b) const { return a + b; } };
struct OpMul { float s; __device__ __forceinline__ float operator()(float a, float b) const { return a * b; } };
// b is the destination's old value for axpy: y = y + s*x.
struct OpAxpy { float s; __device__ __forceinline__ float operator()(float a, float b) const { return b + s * a; } };
struct OpScale { float s; __device__ __forceinline__ float operator()(float a, float b) const { return s * a; } };

template <typename T, typename Op>
__device__ __forceinline__ void map2(const T* a, const T* b, T* y, i64 n, Op op)
{
    const int N = Pack<T>::N;
    const i64 stride = (i64)blockDim.x * gridDim.x;
    const i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    bool vec = aligned16(a) && aligned16(b) && aligned16(y);
    i64 np = vec ? n / N : 0;
    for (i64 p = t; p < np; p += stride)
    {
        Pack<T> va = load_pack(a + p * N), vb = load_pack(b + p * N), vy;
#pragma unroll
        for (int k = 0; k < N; k++) vy.v[k] = from_f<T>(op(to_f(va.v[k]), to_f(vb.v[k])));
        store_pack(y + p * N, vy);
    }
    for (i64 i = np * N + t; i < n; i += stride) y[i] = from_f<T>(op(to_f(a[i]), to_f(b[i])));
}



extern "C" __global__ void ew_add_f32(const float* a, const float* b, float* y, long long n) { OpAdd o; o.s = 0; map2(a, b, y, n, o); }
extern "C" __global__ void ew_mul_f32(const float* a, const float* b, float* y, long long n) { OpMul o; o.s = 0; map2(a, b, y, n, o); }
extern "C" __global__ void ew_scale_f32(const float* x, float s, float* y, long long n) { OpScale o; o.s = s; map2(x, x, y, n, o); }
extern "C" __global__ void ew_axpy_f32(float alpha, const float* x, float* y, long long n) { OpAxpy o; o.s = alpha; map2(x, (const float*)y, y, n, o); }
extern "C" __global__ void ew_fill_f32(float* y, float value, long long n) { float v = from_f<float>(value); FIBER_GRID_LOOP(i, n) y[i] = v; }

extern "C" __global__ void ew_add_bf16(const bf16* a, const bf16* b, bf16* y, long long n) { OpAdd o; o.s = 0; map2(a, b, y, n, o); }
extern "C" __global__ void ew_mul_bf16(const bf16* a, const bf16* b, bf16* y, long long n) { OpMul o; o.s = 0; map2(a, b, y, n, o); }
extern "C" __global__ void ew_scale_bf16(const bf16* x, float s, bf16* y, long long n) { OpScale o; o.s = s; map2(x, x, y, n, o); }
extern "C" __global__ void ew_axpy_bf16(float alpha, const bf16* x, bf16* y, long long n) { OpAxpy o; o.s = alpha; map2(x, (const bf16*)y, y, n, o); }
extern "C" __global__ void ew_fill_bf16(bf16* y, float value, long long n) { bf16 v = from_f<bf16>(value); FIBER_GRID_LOOP(i, n) y[i] = v; }

extern "C" __global__ void ew_fill_i32(int* y, int value, long long n) { FIBER_GRID_LOOP(i, n) y[i] = value; }
extern "C" __global__ void ew_fill_i64(long long* y, long long value, long long n) { FIBER_GRID_LOOP(i, n) y[i] = value; }

extern "C" __global__ void ew_cast_f32_bf16(const float* x, bf16* y, long long n) { FIBER_GRID_LOOP(i, n) y[i] = float_to_bf16(x[i]); }
extern "C" __global__ void ew_cast_bf16_f32(const bf16* x, float* y, long long n) { FIBER_GRID_LOOP(i, n) y[i] = bf16_to_float(x[i]); }

// y = x + bias[col]; C = row length. Packs never straddle rows when C % N == 0.
template <typename T, typename P>
__device__ __forceinline__ void add_bias_body(const T* x, const P* bias, T* y, i64 n, int C)
{
    const int N = Pack<T>::N;
    const i64 stride = (i64)blockDim.x * gridDim.x;
    const i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    bool vec = (C % N) == 0 && aligned16(x) && aligned16(y);
    i64 np = vec ? n / N : 0;
    for (i64 p = t; p < np; p += stride)
    {
        Pack<T> vx = load_pack(x + p * N), vy;
        // Column of the pack: 32-bit math when the index fits (64-bit modulo is slow on the GPU).
        int c0 = np < 0x7fffffffLL / N ? (int)((u32)(p * N) % (u32)C) : (int)((p * N) % C);
#pragma unroll
        for (int k = 0; k < N; k++) vy.v[k] = from_f<T>(to_f(vx.v[k]) + to_f(bias[c0 + k]));
        store_pack(y + p * N, vy);
    }
    for (i64 i = np * N + t; i < n; i += stride) y[i] = from_f<T>(to_f(x[i]) + to_f(bias[i % C]));
}


extern "C" __global__ void ew_add_bias_f32_f32(const float* x, const float* bias, float* y, long long n, int C) { add_bias_body(x, bias, y, n, C); }

extern "C" __global__ void ew_add_bias_f32_bf16(const float* x, const bf16* bias, float* y, long long n, int C) { add_bias_body(x, bias, y, n, C); }

extern "C" __global__ void ew_add_bias_bf16_f32(const bf16* x, const float* bias, bf16* y, long long n, int C) { add_bias_body(x, bias, y, n, C); }

extern "C" __global__ void ew_add_bias_bf16_bf16(const bf16* x, const bf16* bias, bf16* y, long long n, int C) { add_bias_body(x, bias, y, n, C); }
