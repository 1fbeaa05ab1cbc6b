// window_attention.cu — fused Swin window attention (forward and backward), head dim 32.
//
// Layouts (row-major, token order t = y·W + x, C = nH·32):
//   qkv   [B, H·W, 3, nH, 32]   (the qkv Linear output: q = channels 0..C−1, k = C..2C−1, v = 2C..3C−1)
//   table [(2w−1)², nH]          relative position bias table, f32 or bf16 (runtime dtype tdt: 0 f32, 1 bf16)
//   y     [B, H·W, C]             attention output, heads merged, back in token order
//   lse   [B·nW, nH, w²] f32      per-row logsumexp of the scores, in window order (saved for the backward)
// One block per (window, head). The cyclic shift (roll by −s) and the window partition are fused into
// the loads: window token i = (ri, ci) of window (wr, wc) sits at shifted (Y, X) = (wr·w+ri, wc·w+ci),
// which is original token ((Y+s) mod H, (X+s) mod W). The stores use the same map, which is exactly the
// reverse partition followed by the roll by +s.
// Scores S = scale·q·kᵀ + table[rel(i,j), h] + mask, mask = −100 where the two tokens' regions of the
// shifted image differ (rows split at H−w and H−s, columns at W−w and W−s; s > 0 only), as the
// official attn_mask. Math is fp32 whatever T is.
//
// Work split: d = 32 = warp width, so a warp owns one query row at a time; for the scores each lane owns
// keys j = lane + 32m (m < WA_MAXJ), for the outputs lane c owns channel c. K, V (and Q, dO in the
// backward) live in shared memory as f32 rows padded to 33 floats so both access patterns are free of
// bank conflicts. No score matrix is ever stored: the backward recomputes P from q, k and the lse.
#include "common.cuh"

#define WA_D 32
#define WA_LD 33
#define WA_MAXJ 11 // w² ≤ 352 (w ≤ 18)

struct WaGeom
{
    int H, W, w, s, nH, nWh, nWw, N;
    int b, wr, wc, h;
};

__device__ __forceinline__ WaGeom wa_geom(int B, int H, int W, int nH, int w, int s)
{
    WaGeom g;
    g.H = H; g.W = W; g.w = w; g.s = s; g.nH = nH;
    g.nWh = H / w; g.nWw = W / w; g.N = w * w;
    int win = blockIdx.x;
    g.b = win / (g.nWh * g.nWw);
    int r = win % (g.nWh * g.nWw);
    g.wr = r / g.nWw; g.wc = r % g.nWw;
    g.h = blockIdx.y;
    return g;
}

// Token index (within the batch item) of window token i, undoing the cyclic shift.
__device__ __forceinline__ i64 wa_token(const WaGeom& g, int i)
{
    int Y = g.wr * g.w + i / g.w, X = g.wc * g.w + i % g.w;
    int y = Y + g.s; if (y >= g.H) y -= g.H;
    int x = X + g.s; if (x >= g.W) x -= g.W;
    return (i64)g.b * g.H * g.W + (i64)y * g.W + x;
}

// Region label (0..8) of window token i in the shifted image; all 0 without a shift.
__device__ __forceinline__ int wa_label(const WaGeom& g, int i)
{
    if (g.s == 0) return 0;
    int Y = g.wr * g.w + i / g.w, X = g.wc * g.w + i % g.w;
    int ry = Y < g.H - g.w ? 0 : (Y < g.H - g.s ? 1 : 2);
    int rx = X < g.W - g.w ? 0 : (X < g.W - g.s ? 1 : 2);
    return ry * 3 + rx;
}

// Bias index of (i, j): (ri−rj+w−1)·(2w−1) + (ci−cj+w−1).
__device__ __forceinline__ int wa_rel(int i, int j, int w)
{
    return (i / w - j / w + w - 1) * (2 * w - 1) + (i % w - j % w + w - 1);
}

// Loads `rows` ([N][33] f32) with part p (0 q, 1 k, 2 v) of head h for the window's N tokens.
template <typename T>
__device__ __forceinline__ void wa_load_part(const T* qkv, const WaGeom& g, int p, float* rows)
{
    const int C = g.nH * WA_D;
    for (int e = threadIdx.x; e < g.N * WA_D; e += blockDim.x)
    {
        int i = e >> 5, c = e & 31;
        i64 t = wa_token(g, i);
        rows[i * WA_LD + c] = to_f(qkv[(t * 3 + p) * C + g.h * WA_D + c]);
    }
}

// Common per-block tables: bias table of head h as f32 [(2w−1)²], region labels [N].
__device__ __forceinline__ void wa_load_tables(const void* table, int tdt, const WaGeom& g, float* btab, int* lab)
{
    const int T2 = (2 * g.w - 1) * (2 * g.w - 1);
    for (int e = threadIdx.x; e < T2; e += blockDim.x) btab[e] = load_dyn(table, (i64)e * g.nH + g.h, tdt);
    for (int e = threadIdx.x; e < g.N; e += blockDim.x) lab[e] = wa_label(g, e);
}

// The row that stays fixed over a loop lives in registers, so each FMA of a dot product reads shared
// memory once (the other operand), not twice.
__device__ __forceinline__ void wa_regs(const float* p, float (&r)[WA_D])
{
#pragma unroll
    for (int c = 0; c < WA_D; c++) r[c] = p[c];
}

__device__ __forceinline__ float wa_dot(const float (&a)[WA_D], const float* b)
{
    float acc = 0.0f;
#pragma unroll
    for (int c = 0; c < WA_D; c++) acc += a[c] * b[c];
    return acc;
}

struct alignas(8) WaF2 { float x, y; };

// Shared memory: K, V [N][33], per warp two q rows [2·32] + two p rows [2N], btab [(2w−1)²], lab [N].
template <typename T>
__device__ __forceinline__ void wa_fwd(const T* qkv, const void* table, int tdt, T* y, float* lse,
                                       int B, int H, int W, int nH, int w, int s, float scale)
{
    FIBER_DYNAMIC_SMEM(float, sm);
    WaGeom g = wa_geom(B, H, W, nH, w, s);
    const int N = g.N, T2 = (2 * w - 1) * (2 * w - 1), C = nH * WA_D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    float* Ks = sm;
    float* Vs = Ks + N * WA_LD;
    float* wbuf = Vs + N * WA_LD;                 // nwarps × (64 + 2N), 8-byte aligned (offsets are even)
    float* btab = wbuf + nwarps * (2 * WA_D + 2 * N);
    int* lab = (int*)(btab + T2);
    float* qrow = wbuf + warp * (2 * WA_D + 2 * N);  // the pair's two q rows
    WaF2* prow = (WaF2*)(qrow + 2 * WA_D);           // exp(s − max) of both rows, interleaved

    wa_load_part(qkv, g, 1, Ks);
    wa_load_part(qkv, g, 2, Vs);
    wa_load_tables(table, tdt, g, btab, lab);
    __syncthreads();

    // A warp takes two query rows at a time so every K and V value read from shared memory feeds two
    // FMAs. Row i1 may be past the end (odd N): it is computed on row i0's data and never stored.
    for (int i0 = 2 * warp; i0 < N; i0 += 2 * nwarps)
    {
        const bool has1 = i0 + 1 < N;
        const int i1 = has1 ? i0 + 1 : i0;
        const i64 t0 = wa_token(g, i0), t1 = wa_token(g, i1);
        qrow[lane] = to_f(qkv[(t0 * 3 + 0) * C + g.h * WA_D + lane]);
        qrow[WA_D + lane] = to_f(qkv[(t1 * 3 + 0) * C + g.h * WA_D + lane]);
        __syncwarp();
        float qa[WA_D], qb[WA_D];
        wa_regs(qrow, qa);
        wa_regs(qrow + WA_D, qb);
        const int la = lab[i0], lb = lab[i1];
        float sa[WA_MAXJ], sb[WA_MAXJ];
        float ma = fiber_neg_inf(), mb = fiber_neg_inf();
#pragma unroll
        for (int m = 0; m < WA_MAXJ; m++)
        {
            int j = lane + 32 * m;
            sa[m] = fiber_neg_inf(); sb[m] = fiber_neg_inf();
            if (j < N)
            {
                const float* kj = Ks + j * WA_LD;
                float da = 0.0f, db = 0.0f;
#pragma unroll
                for (int c = 0; c < WA_D; c++) { float k = kj[c]; da += qa[c] * k; db += qb[c] * k; }
                const int lj = lab[j];
                float va = scale * da + btab[wa_rel(i0, j, w)];
                float vb = scale * db + btab[wa_rel(i1, j, w)];
                if (lj != la) va += -100.0f;
                if (lj != lb) vb += -100.0f;
                sa[m] = va; sb[m] = vb;
                ma = fmaxf(ma, va); mb = fmaxf(mb, vb);
            }
        }
        ma = warp_max(ma); mb = warp_max(mb);
        float suma = 0.0f, sumb = 0.0f;
#pragma unroll
        for (int m = 0; m < WA_MAXJ; m++)
        {
            int j = lane + 32 * m;
            if (j < N)
            {
                WaF2 e; e.x = expf(sa[m] - ma); e.y = expf(sb[m] - mb);
                prow[j] = e; suma += e.x; sumb += e.y;
            }
        }
        suma = warp_sum(suma); sumb = warp_sum(sumb);
        __syncwarp();
        float oa = 0.0f, ob = 0.0f;
        for (int j = 0; j < N; j++)
        {
            WaF2 p = prow[j];
            float v = Vs[j * WA_LD + lane];
            oa += p.x * v; ob += p.y * v;
        }
        float* lrow = lse + ((i64)blockIdx.x * nH + g.h) * N;
        y[t0 * C + g.h * WA_D + lane] = from_f<T>(oa / suma);
        if (lane == 0) lrow[i0] = ma + logf(suma);
        if (has1)
        {
            y[t1 * C + g.h * WA_D + lane] = from_f<T>(ob / sumb);
            if (lane == 0) lrow[i1] = mb + logf(sumb);
        }
        __syncwarp(); // qrow/prow are rewritten by the next pair
    }
}

// Backward. Phase 0 loads Q, K, V, dO and D_i = Σ_c dO_ic·O_ic; phase 1 (warp per query row i) gives dQ;
// phase 2 (warp per key row j, lanes own queries i) gives dK, dV and the bias-table gradient. The table
// gradient is deterministic: within a key row j the queries i map to distinct relative indices, so each
// warp adds into its own private [(2w−1)²] copy without conflicts; the copies are summed in warp order
// into this block's row of `dtab_part` [B·nW, nH, (2w−1)²] and wa_dbias_reduce adds those over windows
// in window order. dqkv: each token belongs to one window, so a block owns its q/k/v gradient slices and
// adds (+=) with plain loads and stores.
// Shared memory: Q, K, V, dO [N][33]; lse, D [N]; per warp buf [2N] + dtab [(2w−1)²]; btab; lab [N].
template <typename T>
__device__ __forceinline__ void wa_bwd(const T* qkv, const void* table, int tdt, const T* y, const float* lse,
                                       const T* dy, T* dqkv, float* dtab_part,
                                       int B, int H, int W, int nH, int w, int s, float scale)
{
    FIBER_DYNAMIC_SMEM(float, sm);
    WaGeom g = wa_geom(B, H, W, nH, w, s);
    const int N = g.N, T2 = (2 * w - 1) * (2 * w - 1), C = nH * WA_D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    float* Qs = sm;
    float* Ks = Qs + N * WA_LD;
    float* Vs = Ks + N * WA_LD;
    float* dOs = Vs + N * WA_LD;
    float* Ls = dOs + N * WA_LD;
    float* Ds = Ls + N;
    float* wbuf = Ds + N;                            // nwarps × 2N
    float* wtab = wbuf + nwarps * 2 * N;             // nwarps × T2
    float* btab = wtab + nwarps * T2;
    int* lab = (int*)(btab + T2);
    float* bufA = wbuf + warp * 2 * N;
    float* bufB = bufA + N;
    float* mytab = wtab + warp * T2;

    wa_load_part(qkv, g, 0, Qs);
    wa_load_part(qkv, g, 1, Ks);
    wa_load_part(qkv, g, 2, Vs);
    wa_load_tables(table, tdt, g, btab, lab);
    for (int e = threadIdx.x; e < nwarps * T2; e += blockDim.x) wtab[e] = 0.0f;
    const float* lrow = lse + ((i64)blockIdx.x * nH + g.h) * N;
    for (int e = threadIdx.x; e < N; e += blockDim.x) Ls[e] = lrow[e];
    for (int i = warp; i < N; i += nwarps)
    {
        const i64 t = wa_token(g, i);
        float d = to_f(dy[t * C + g.h * WA_D + lane]);
        float o = to_f(y[t * C + g.h * WA_D + lane]);
        dOs[i * WA_LD + lane] = d;
        float dd = warp_sum(d * o);
        if (lane == 0) Ds[i] = dd;
    }
    __syncthreads();

    // Phase 1: dQ_i = scale·Σ_j dS_ij·k_j, dS_ij = P_ij·(dO_i·v_j − D_i).
    for (int i = warp; i < N; i += nwarps)
    {
        const int li = lab[i];
        const float L = Ls[i], Di = Ds[i];
        float qi[WA_D], di[WA_D];
        wa_regs(Qs + i * WA_LD, qi);
        wa_regs(dOs + i * WA_LD, di);
        for (int j = lane; j < N; j += 32)
        {
            float v = scale * wa_dot(qi, Ks + j * WA_LD) + btab[wa_rel(i, j, w)];
            if (lab[j] != li) v += -100.0f;
            float p = expf(v - L);
            float dp = wa_dot(di, Vs + j * WA_LD);
            bufA[j] = p * (dp - Di);
        }
        __syncwarp();
        float dq = 0.0f;
        for (int j = 0; j < N; j++) dq += bufA[j] * Ks[j * WA_LD + lane];
        const i64 t = wa_token(g, i);
        T* dst = dqkv + (t * 3 + 0) * C + g.h * WA_D + lane;
        *dst = from_f<T>(to_f(*dst) + scale * dq);
        __syncwarp();
    }

    // Phase 2: dV_j = Σ_i P_ij·dO_i, dK_j = scale·Σ_i dS_ij·q_i, dtable[rel(i,j)] += dS_ij.
    for (int j = warp; j < N; j += nwarps)
    {
        const int lj = lab[j];
        float kj[WA_D], vj[WA_D];
        wa_regs(Ks + j * WA_LD, kj);
        wa_regs(Vs + j * WA_LD, vj);
        for (int i = lane; i < N; i += 32)
        {
            int rel = wa_rel(i, j, w);
            float v = scale * wa_dot(kj, Qs + i * WA_LD) + btab[rel];
            if (lab[i] != lj) v += -100.0f;
            float p = expf(v - Ls[i]);
            float dp = wa_dot(vj, dOs + i * WA_LD);
            float ds = p * (dp - Ds[i]);
            bufA[i] = p; bufB[i] = ds;
            mytab[rel] += ds;
        }
        __syncwarp();
        float dv = 0.0f, dk = 0.0f;
        for (int i = 0; i < N; i++)
        {
            dv += bufA[i] * dOs[i * WA_LD + lane];
            dk += bufB[i] * Qs[i * WA_LD + lane];
        }
        const i64 t = wa_token(g, j);
        T* dk_dst = dqkv + (t * 3 + 1) * C + g.h * WA_D + lane;
        T* dv_dst = dqkv + (t * 3 + 2) * C + g.h * WA_D + lane;
        *dk_dst = from_f<T>(to_f(*dk_dst) + scale * dk);
        *dv_dst = from_f<T>(to_f(*dv_dst) + dv);
        __syncwarp();
    }
    __syncthreads();
    if (dtab_part != nullptr)
    {
        float* out = dtab_part + ((i64)blockIdx.x * nH + g.h) * T2;
        for (int e = threadIdx.x; e < T2; e += blockDim.x)
        {
            float acc = 0.0f;
            for (int k = 0; k < nwarps; k++) acc += wtab[k * T2 + e];
            out[e] = acc;
        }
    }
}

extern "C" __global__ void window_attn_fwd_f32(const float* qkv, const void* table, int tdt, float* y, float* lse,
                                               int B, int H, int W, int nH, int w, int s, float scale)
{
    wa_fwd<float>(qkv, table, tdt, y, lse, B, H, W, nH, w, s, scale);
}
extern "C" __global__ void window_attn_fwd_bf16(const bf16* qkv, const void* table, int tdt, bf16* y, float* lse,
                                                int B, int H, int W, int nH, int w, int s, float scale)
{
    wa_fwd<bf16>(qkv, table, tdt, y, lse, B, H, W, nH, w, s, scale);
}
extern "C" __global__ void window_attn_bwd_f32(const float* qkv, const void* table, int tdt, const float* y, const float* lse,
                                               const float* dy, float* dqkv, float* dtab_part,
                                               int B, int H, int W, int nH, int w, int s, float scale)
{
    wa_bwd<float>(qkv, table, tdt, y, lse, dy, dqkv, dtab_part, B, H, W, nH, w, s, scale);
}
extern "C" __global__ void window_attn_bwd_bf16(const bf16* qkv, const void* table, int tdt, const bf16* y, const float* lse,
                                                const bf16* dy, bf16* dqkv, float* dtab_part,
                                                int B, int H, int W, int nH, int w, int s, float scale)
{
    wa_bwd<bf16>(qkv, table, tdt, y, lse, dy, dqkv, dtab_part, B, H, W, nH, w, s, scale);
}

// dtable[e, h] += Σ_win part[win, h, e] (window order: deterministic). One thread per (h, e), e fastest
// so a warp's loads of one window's partial row are contiguous.
extern "C" __global__ void window_attn_dbias_reduce(const float* part, int nwin, int nH, int T2, void* dtable, int tdt)
{
    FIBER_GRID_LOOP(k, (i64)T2 * nH)
    {
        int h = (int)(k / T2), e = (int)(k % T2);
        float acc = 0.0f;
        for (int win = 0; win < nwin; win++) acc += part[((i64)win * nH + h) * T2 + e];
        i64 o = (i64)e * nH + h;
        store_dyn(dtable, o, tdt, load_dyn(dtable, o, tdt) + acc);
    }
}
