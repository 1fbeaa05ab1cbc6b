// ptx.cuh — tensor-core and async-copy wrappers with one API on the GPU and on the emulator.
//
// GPU (NVRTC/nvcc, sm_80+): inline PTX. Emulation (FIBER_EMULATION, kernels/emu/cuda_emu.h): warp
// collectives that reproduce the PTX ISA fragment layouts exactly, so a kernel whose fragments are
// wrong fails on the emulator the way it would fail on the GPU.
//
//   mma_m16n8k16_bf16(d, a, b, c)   D[16x8] = A[16x16] * B[16x8] + C, bf16 inputs, f32 accumulate,
//                                   A row-major, B column-major ("row.col"). d may alias c.
//   mma_m16n8k8_bf16(d, a, b, c)    the same with K = 8.
//   ldmatrix_x1/x2/x4[_trans](r, p) ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16: lane i gives
//                                   the shared-memory address of row (i % 8) of matrix (i / 8); every lane
//                                   of the warp must call it (addresses of unused lanes are ignored).
//   cp_async_cg_16(s, g)            cp.async.cg.shared.global, 16 bytes (bypasses L1).
//   cp_async_cg_16_zfill(s, g, n)   the same, copying only n (0..16) source bytes and zero-filling the rest.
//   cp_async_ca_4/8/16(s, g)        cp.async.ca.shared.global of 4/8/16 bytes.
//   cp_async_commit()               cp.async.commit_group.
//   cp_async_wait_group<N>()        cp.async.wait_group N: all but the newest N committed groups are done.
//   cp_async_wait_all()             cp.async.wait_all (commits, then waits for everything).
// After waiting, a thread sees its own copies; other threads need __syncthreads (or __syncwarp) as usual.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 / m16n8k8", floating point types).
// g = lane >> 2 (groupID), t = lane % 4 (threadID_in_group); each u32 holds two bf16, the lower
// 16 bits being the element with the lower column (A, C) or row (B) index:
//   A m16n8k16: a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]  a[2] = A[g][2t+8..2t+9]  a[3] = A[g+8][2t+8..2t+9]
//   A m16n8k8:  a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]
//   B m16n8k16: b[0] = B[2t..2t+1][g]    b[1] = B[2t+8..2t+9][g]      (B is K x N)
//   B m16n8k8:  b[0] = B[2t..2t+1][g]
//   C/D:        c[0] = C[g][2t]  c[1] = C[g][2t+1]  c[2] = C[g+8][2t]  c[3] = C[g+8][2t+1]
//   ldmatrix:   r[i] = M_i[g][2t..2t+1];  with .trans: r[i] = {M_i[2t][g], M_i[2t+1][g]}
//               (M_i = the 8x8 b16 matrix whose rows lanes 8i..8i+7 point to).
#pragma once

#ifndef FIBER_TYPES_DEFINED
#define FIBER_TYPES_DEFINED
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;
typedef int i32;
#endif

#if !defined(FIBER_EMULATION)

__device__ __forceinline__ u32 ptx_smem_addr(const void* p)
{
    u32 a;
    asm volatile("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const u32 a[4], const u32 b[2], const float c[4])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ void mma_m16n8k8_bf16(float d[4], const u32 a[2], const u32 b[1], const float c[4])
{
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%8,%9,%10};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b[0]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ void ldmatrix_x1(u32 r[1], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(ptx_smem_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x2(u32 r[2], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(ptx_smem_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x4(u32 r[4], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(ptx_smem_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x1_trans(u32 r[1], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(ptx_smem_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(u32 r[2], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(ptx_smem_addr(row)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32 r[4], const void* row)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(ptx_smem_addr(row)));
}

__device__ __forceinline__ void cp_async_cg_16(void* smem, const void* gmem)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(ptx_smem_addr(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_cg_16_zfill(void* smem, const void* gmem, int src_bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(ptx_smem_addr(smem)), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_ca_4(void* smem, const void* gmem)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" :: "r"(ptx_smem_addr(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_ca_8(void* smem, const void* gmem)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" :: "r"(ptx_smem_addr(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_ca_16(void* smem, const void* gmem)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n" :: "r"(ptx_smem_addr(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait_group() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

#else  // FIBER_EMULATION

namespace fiber_ptx {

static inline float bf16_bits_to_float(unsigned short h)
{
    u32 u = (u32)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline unsigned short lo16(u32 v) { return (unsigned short)(v & 0xFFFFu); }
static inline unsigned short hi16(u32 v) { return (unsigned short)(v >> 16); }

struct MmaData
{
    const u32* a;
    const u32* b;
    const float* c;
    float* d;
    int k;  // 16 or 8
};

// Rebuilds A (16xK), B (Kx8) and C (16x8) from the 32 lanes' fragments, multiplies, and hands each
// lane its part of D. Products of bf16 values are exact in fp32; the sum is taken in double and
// rounded once (the GPU's tensor-core summation order and rounding are unspecified).
static const char* mma_complete(void* const* data, unsigned participants)
{
    if (participants != 0xffffffffu) return "mma.sync needs all 32 lanes of the warp";
    int K = ((MmaData*)data[0])->k;
    float A[16][16], B[16][8], C[16][8];
    for (int lane = 0; lane < 32; lane++)
    {
        MmaData* m = (MmaData*)data[lane];
        if (m->k != K) return "lanes mixed m16n8k16 and m16n8k8";
        int g = lane >> 2, t = lane & 3;
        for (int half = 0; half < K / 8; half++)
        {
            u32 a_top = m->a[2 * half], a_bot = m->a[2 * half + 1];
            A[g][8 * half + 2 * t] = bf16_bits_to_float(lo16(a_top));
            A[g][8 * half + 2 * t + 1] = bf16_bits_to_float(hi16(a_top));
            A[g + 8][8 * half + 2 * t] = bf16_bits_to_float(lo16(a_bot));
            A[g + 8][8 * half + 2 * t + 1] = bf16_bits_to_float(hi16(a_bot));
            u32 bv = m->b[half];
            B[8 * half + 2 * t][g] = bf16_bits_to_float(lo16(bv));
            B[8 * half + 2 * t + 1][g] = bf16_bits_to_float(hi16(bv));
        }
        C[g][2 * t] = m->c[0];
        C[g][2 * t + 1] = m->c[1];
        C[g + 8][2 * t] = m->c[2];
        C[g + 8][2 * t + 1] = m->c[3];
    }
    for (int lane = 0; lane < 32; lane++)
    {
        MmaData* m = (MmaData*)data[lane];
        int g = lane >> 2, t = lane & 3;
        for (int i = 0; i < 4; i++)
        {
            int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
            double acc = C[row][col];
            for (int k = 0; k < K; k++) acc += (double)A[row][k] * (double)B[k][col];
            m->d[i] = (float)acc;
        }
    }
    return nullptr;
}

static inline void mma(float d[4], const u32* a, const u32* b, const float c[4], int k, const char* name)
{
    // d may alias c: results go to a private buffer first, and every lane's c is read before any d is written.
    float out[4];
    MmaData m{a, b, c, out, k};
    ::fiber_emu::warp_collective(0xffffffffu, mma_complete, &m, name);
    for (int i = 0; i < 4; i++) d[i] = out[i];
}

struct LdmData
{
    const unsigned short* row;
    u32* out;
    int nmat, trans;
};

static const char* ldmatrix_complete(void* const* data, unsigned participants)
{
    if (participants != 0xffffffffu) return "ldmatrix needs all 32 lanes of the warp";
    int nmat = ((LdmData*)data[0])->nmat, trans = ((LdmData*)data[0])->trans;
    for (int lane = 0; lane < 32; lane++)
    {
        LdmData* l = (LdmData*)data[lane];
        if (l->nmat != nmat || l->trans != trans) return "lanes mixed different ldmatrix shapes";
        if (lane < 8 * nmat && ((unsigned long long)l->row & 15u)) return "ldmatrix row address not 16-byte aligned";
    }
    u32 out[32][4];
    for (int lane = 0; lane < 32; lane++)
    {
        int g = lane >> 2, t = lane & 3;
        for (int i = 0; i < nmat; i++)
        {
            unsigned short lo, hi;
            if (!trans)
            {
                const unsigned short* r = ((LdmData*)data[8 * i + g])->row;
                lo = r[2 * t];
                hi = r[2 * t + 1];
            }
            else
            {
                lo = ((LdmData*)data[8 * i + 2 * t])->row[g];
                hi = ((LdmData*)data[8 * i + 2 * t + 1])->row[g];
            }
            out[lane][i] = (u32)lo | ((u32)hi << 16);
        }
    }
    for (int lane = 0; lane < 32; lane++)
        for (int i = 0; i < nmat; i++) ((LdmData*)data[lane])->out[i] = out[lane][i];
    return nullptr;
}

static inline void ldmatrix(u32* r, const void* row, int nmat, int trans, const char* name)
{
    LdmData l{(const unsigned short*)row, r, nmat, trans};
    ::fiber_emu::warp_collective(0xffffffffu, ldmatrix_complete, &l, name);
}

}  // namespace fiber_ptx

static inline void mma_m16n8k16_bf16(float d[4], const u32 a[4], const u32 b[2], const float c[4]) { fiber_ptx::mma(d, a, b, c, 16, "mma.m16n8k16"); }
static inline void mma_m16n8k8_bf16(float d[4], const u32 a[2], const u32 b[1], const float c[4]) { fiber_ptx::mma(d, a, b, c, 8, "mma.m16n8k8"); }

static inline void ldmatrix_x1(u32 r[1], const void* row) { fiber_ptx::ldmatrix(r, row, 1, 0, "ldmatrix.x1"); }
static inline void ldmatrix_x2(u32 r[2], const void* row) { fiber_ptx::ldmatrix(r, row, 2, 0, "ldmatrix.x2"); }
static inline void ldmatrix_x4(u32 r[4], const void* row) { fiber_ptx::ldmatrix(r, row, 4, 0, "ldmatrix.x4"); }
static inline void ldmatrix_x1_trans(u32 r[1], const void* row) { fiber_ptx::ldmatrix(r, row, 1, 1, "ldmatrix.x1.trans"); }
static inline void ldmatrix_x2_trans(u32 r[2], const void* row) { fiber_ptx::ldmatrix(r, row, 2, 1, "ldmatrix.x2.trans"); }
static inline void ldmatrix_x4_trans(u32 r[4], const void* row) { fiber_ptx::ldmatrix(r, row, 4, 1, "ldmatrix.x4.trans"); }

static inline void cp_async_cg_16(void* smem, const void* gmem) { ::fiber_emu::async_copy(smem, gmem, 16, 16); }
static inline void cp_async_cg_16_zfill(void* smem, const void* gmem, int src_bytes)
{
    if (src_bytes < 0 || src_bytes > 16) ::fiber_emu::fail("cp.async src-size %d outside [0,16]", src_bytes);
    ::fiber_emu::async_copy(smem, gmem, 16, (unsigned)src_bytes);
}
static inline void cp_async_ca_4(void* smem, const void* gmem) { ::fiber_emu::async_copy(smem, gmem, 4, 4); }
static inline void cp_async_ca_8(void* smem, const void* gmem) { ::fiber_emu::async_copy(smem, gmem, 8, 8); }
static inline void cp_async_ca_16(void* smem, const void* gmem) { ::fiber_emu::async_copy(smem, gmem, 16, 16); }
static inline void cp_async_commit() { ::fiber_emu::async_commit(); }
template <int N> static inline void cp_async_wait_group()
{
    static_assert(N >= 0, "cp.async.wait_group N >= 0");
    ::fiber_emu::async_wait(::fiber_emu::current(), (unsigned long long)N);
}
static inline void cp_async_wait_all()
{
    ::fiber_emu::async_commit();
    ::fiber_emu::async_wait(::fiber_emu::current(), 0);
}

#endif  // FIBER_EMULATION
