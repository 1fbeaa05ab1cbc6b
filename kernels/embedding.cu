// embedding.cu — row gather and its scatter-add backward.
// Gradient convention: dweight[ids[i], :] += dy[i, :] (repeated ids add up).
// The backward uses atomics, so with repeated ids the order of the additions (and hence the last
// bits) is not deterministic. bf16 dweight is supported through a 32-bit CAS loop (each addition
// rounds to bf16, so long runs of repeats lose precision: prefer f32 gradients for embeddings).
// Out-of-range ids give a zero output row in the forward and are skipped in the backward.
// T = weight/y/dy dtype, P = dweight dtype, TI = id type.
#include "common.cuh"

template <typename T, typename TI>
__device__ __forceinline__ void emb_fwd_body(const T* w, const TI* ids, T* y, long long V, long long N, int D)
{
    const int PN = Pack<T>::N;
    const i64 stride = (i64)blockDim.x * gridDim.x, t = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if ((D % PN) == 0)
    {
        const int pr = D / PN;
        for (i64 p = t; p < N * pr; p += stride)
        {
            i64 i = p / pr; int d = (int)(p % pr) * PN;
            long long id = (long long)ids[i];
            Pack<T> v;
            if (id >= 0 && id < V) v = load_pack(w + id * D + d);
            else
            {
#pragma unroll
                for (int k = 0; k < PN; k++) v.v[k] = from_f<T>(0.0f);
            }
            store_pack(y + i * D + d, v);
        }
    }
    else
    {
        for (i64 e = t; e < N * D; e += stride)
        {
            i64 i = e / D; int d = (int)(e % D);
            long long id = (long long)ids[i];
            y[e] = (id >= 0 && id < V) ? w[id * D + d] : from_f<T>(0.0f);
        }
    }
}

template <typename T, typename P, typename TI>
__device__ __forceinline__ void emb_bwd_body(const T* dy, const TI* ids, P* dw, long long V, long long N, int D)
{
    FIBER_GRID_LOOP(e, N * D)
    {
        i64 i = e / D; int d = (int)(e % D);
        long long id = (long long)ids[i];
        if (id >= 0 && id < V) atomic_add_f(dw + id * D + d, to_f(dy[e]));
    }
}



extern "C" __global__ void embedding_fwd_f32_i32(const float* w, const int* ids, float* y, long long V, long long N, int D)
{ emb_fwd_body(w, ids, y, V, N, D); }

extern "C" __global__ void embedding_fwd_f32_i64(const float* w, const long long* ids, float* y, long long V, long long N, int D)
{ emb_fwd_body(w, ids, y, V, N, D); }

extern "C" __global__ void embedding_fwd_bf16_i32(const bf16* w, const int* ids, bf16* y, long long V, long long N, int D)
{ emb_fwd_body(w, ids, y, V, N, D); }

extern "C" __global__ void embedding_fwd_bf16_i64(const bf16* w, const long long* ids, bf16* y, long long V, long long N, int D)
{ emb_fwd_body(w, ids, y, V, N, D); }

extern "C" __global__ void embedding_bwd_f32_f32_i32(const float* dy, const int* ids, float* dw, long long V, long long N, int D)
{ emb_bwd_body(dy, ids, dw, V, N, D); }

extern "C" __global__ void embedding_bwd_f32_f32_i64(const float* dy, const long long* ids, float* dw, long long V, long long N, int D)
{ emb_bwd_body(dy, ids, dw, V, N, D); }

extern "C" __global__ void embedding_bwd_f32_bf16_i32(const float* dy, const int* ids, bf16* dw, long long V, long long N, int D)
{ emb_bwd_body(dy, ids, dw, V, N, D); }

extern "C" __global__ void embedding_bwd_f32_bf16_i64(const float* dy, const long long* ids, bf16* dw, long long V, long long N, int D)
{ emb_bwd_body(dy, ids, dw, V, N, D); }

extern "C" __global__ void embedding_bwd_bf16_f32_i32(const bf16* dy, const int* ids, float* dw, long long V, long long N, int D)
{ emb_bwd_body(dy, ids, dw, V, N, D); }

extern "C" __global__ void embedding_bwd_bf16_f32_i64(const bf16* dy, const long long* ids, float* dw, long long V, long long N, int D)
{ emb_bwd_body(dy, ids, dw, V, N, D); }

extern "C" __global__ void embedding_bwd_bf16_bf16_i32(const bf16* dy, const int* ids, bf16* dw, long long V, long long N, int D)
{ emb_bwd_body(dy, ids, dw, V, N, D); }

extern "C" __global__ void embedding_bwd_bf16_bf16_i64(const bf16* dy, const long long* ids, bf16* dw, long long V, long long N, int D)
{ emb_bwd_body(dy, ids, dw, V, N, D); }
