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
// Partial windows: H×W is the padded map (multiples of w); only its top-left Hr×Wr tokens are stored in
// qkv and y ([B, Hr·Wr, ...]). A padding token takes q, k, v from `pad` [3C] (the qkv Linear's bias: the
// detection Swin zero-pads the normalised map; zeros when pad is null), attends and is attended to, and is
// never stored; in the backward its k, v gradients go to per-block partial sums (dpad_part) instead of dqkv.
// Scores S = scale·q·kᵀ + table[rel(i,j), h] + mask, mask = −100 where the two tokens' regions of the
// shifted image differ (rows split at H−w and H−s, columns at W−w and W−s; s > 0 only), as the
// official attn_mask. Math is fp32 whatever T is (window_attn_fwd_tc_bf16 and window_attn_bwd_tc_bf16, further
// down, are the tensor-core forward and backward for bf16: bf16 operands, fp32 accumulation, P (and in the
// backward dS) rounded to bf16 as mma operands).
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
    int H, W, Hr, Wr, w, s, nH, nWh, nWw, N;
    int b, wr, wc, h;
};

__device__ __forceinline__ WaGeom wa_geom(int B, int H, int W, int Hr, int Wr, int nH, int w, int s)
{
    WaGeom g;
    g.H = H; g.W = W; g.Hr = Hr; g.Wr = Wr; g.w = w; g.s = s; g.nH = nH;
    g.nWh = H / w; g.nWw = W / w; g.N = w * w;
    int win = blockIdx.x;
    g.b = win / (g.nWh * g.nWw);
    int r = win % (g.nWh * g.nWw);
    g.wr = r / g.nWw; g.wc = r % g.nWw;
    g.h = blockIdx.y;
    return g;
}

// Stored token index (batch included) of window token i, undoing the cyclic shift; −1 for a padding token.
__device__ __forceinline__ i64 wa_token(const WaGeom& g, int i)
{
    int Y = g.wr * g.w + i / g.w, X = g.wc * g.w + i % g.w;
    int y = Y + g.s; if (y >= g.H) y -= g.H;
    int x = X + g.s; if (x >= g.W) x -= g.W;
    if (y >= g.Hr || x >= g.Wr) return -1;
    return (i64)g.b * g.Hr * g.Wr + (i64)y * g.Wr + x;
}

// Element c of part p (0 q, 1 k, 2 v) of head h for token t, the pad row's for a padding token.
template <typename T>
__device__ __forceinline__ float wa_qkv(const T* qkv, const T* pad, const WaGeom& g, i64 t, int p, int c)
{
    const int C = g.nH * WA_D;
    if (t >= 0) return to_f(qkv[(t * 3 + p) * C + g.h * WA_D + c]);
    return pad != nullptr ? to_f(pad[p * C + g.h * WA_D + c]) : 0.0f;
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
__device__ __forceinline__ void wa_load_part(const T* qkv, const T* pad, const WaGeom& g, int p, float* rows)
{
    for (int e = threadIdx.x; e < g.N * WA_D; e += blockDim.x)
    {
        int i = e >> 5, c = e & 31;
        rows[i * WA_LD + c] = wa_qkv(qkv, pad, g, wa_token(g, i), p, c);
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
__device__ __forceinline__ void wa_fwd(const T* qkv, const void* table, int tdt, T* y, float* lse, const T* pad,
                                       int B, int H, int W, int Hr, int Wr, int nH, int w, int s, float scale)
{
    FIBER_DYNAMIC_SMEM(float, sm);
    WaGeom g = wa_geom(B, H, W, Hr, Wr, nH, w, s);
    const int N = g.N, T2 = (2 * w - 1) * (2 * w - 1), C = nH * WA_D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    float* Ks = sm;
    float* Vs = Ks + N * WA_LD;
    float* wbuf = Vs + N * WA_LD;                 // nwarps × (64 + 2N), 8-byte aligned (offsets are even)
    float* btab = wbuf + nwarps * (2 * WA_D + 2 * N);
    int* lab = (int*)(btab + T2);
    float* qrow = wbuf + warp * (2 * WA_D + 2 * N);  // the pair's two q rows
    WaF2* prow = (WaF2*)(qrow + 2 * WA_D);           // exp(s − max) of both rows, interleaved

    wa_load_part(qkv, pad, g, 1, Ks);
    wa_load_part(qkv, pad, g, 2, Vs);
    wa_load_tables(table, tdt, g, btab, lab);
    __syncthreads();

    // A warp takes two query rows at a time so every K and V value read from shared memory feeds two
    // FMAs. Row i1 may be past the end (odd N): it is computed on row i0's data and never stored.
    for (int i0 = 2 * warp; i0 < N; i0 += 2 * nwarps)
    {
        const bool has1 = i0 + 1 < N;
        const int i1 = has1 ? i0 + 1 : i0;
        const i64 t0 = wa_token(g, i0), t1 = wa_token(g, i1);
        qrow[lane] = wa_qkv(qkv, pad, g, t0, 0, lane);
        qrow[WA_D + lane] = wa_qkv(qkv, pad, g, t1, 0, lane);
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
        if (t0 >= 0) y[t0 * C + g.h * WA_D + lane] = from_f<T>(oa / suma);
        if (lane == 0) lrow[i0] = ma + logf(suma);
        if (has1)
        {
            if (t1 >= 0) y[t1 * C + g.h * WA_D + lane] = from_f<T>(ob / sumb);
            if (lane == 0) lrow[i1] = mb + logf(sumb);
        }
        __syncwarp(); // qrow/prow are rewritten by the next pair
    }
}

// The backwards' block results: the warps' private bias-table copies (wtab [nwarps][T2]) and padding dK|dV
// copies (wpad [nwarps][64]) summed in warp order into this block's rows of dtab_part and dpad_part.
__device__ __forceinline__ void wa_write_partials(float* dtab_part, float* dpad_part, const float* wtab, const float* wpad,
                                                  int nwarps, int T2, int nH, int h)
{
    if (dtab_part != nullptr)
    {
        float* out = dtab_part + ((i64)blockIdx.x * nH + h) * T2;
        for (int e = threadIdx.x; e < T2; e += blockDim.x)
        {
            float acc = 0.0f;
            for (int k = 0; k < nwarps; k++) acc += wtab[k * T2 + e];
            out[e] = acc;
        }
    }
    if (dpad_part != nullptr)
    {
        float* out = dpad_part + ((i64)blockIdx.x * nH + h) * 64;
        for (int e = threadIdx.x; e < 64; e += blockDim.x)
        {
            float acc = 0.0f;
            for (int k = 0; k < nwarps; k++) acc += wpad[k * 64 + e];
            out[e] = acc;
        }
    }
}

// Backward. Phase 0 loads Q, K, V, dO and D_i = Σ_c dO_ic·O_ic; phase 1 (warp per query row i) gives dQ;
// phase 2 (warp per key row j, lanes own queries i) gives dK, dV and the bias-table gradient. The table
// gradient is deterministic: within a key row j the queries i map to distinct relative indices, so each
// warp adds into its own private [(2w−1)²] copy without conflicts; the copies are summed in warp order
// into this block's row of `dtab_part` [B·nW, nH, (2w−1)²] and wa_dbias_reduce adds those over windows
// in window order. dqkv: each token belongs to one window, so a block owns its q/k/v gradient slices and
// adds (+=) with plain loads and stores.
// Padding tokens: their dO is 0 (nothing is stored for them), so their rows add nothing; their keys' dK, dV
// are summed per warp in key order into private [64] copies, then in warp order into this block's row of
// `dpad_part` [B·nW, nH, 64] (k channels, then v), which wa_dpad_reduce adds over windows into dpad.
// Shared memory: Q, K, V, dO [N][33]; lse, D [N]; per warp two float-pair rows [4N] + dtab [(2w−1)²]; btab;
// lab [N]; per warp the padding tokens' dK|dV [64].
template <typename T>
__device__ __forceinline__ void wa_bwd(const T* qkv, const void* table, int tdt, const T* y, const float* lse,
                                       const T* dy, T* dqkv, float* dtab_part, const T* pad, float* dpad_part,
                                       int B, int H, int W, int Hr, int Wr, int nH, int w, int s, float scale)
{
    FIBER_DYNAMIC_SMEM(float, sm);
    WaGeom g = wa_geom(B, H, W, Hr, Wr, nH, w, s);
    const int N = g.N, T2 = (2 * w - 1) * (2 * w - 1), C = nH * WA_D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    float* Qs = sm;
    float* Ks = Qs + N * WA_LD;
    float* Vs = Ks + N * WA_LD;
    float* dOs = Vs + N * WA_LD;
    float* Ls = dOs + N * WA_LD;
    float* Ds = Ls + N;
    float* wbuf = Ds + N;                            // nwarps × 4N (two arrays of N float pairs)
    float* wtab = wbuf + nwarps * 4 * N;             // nwarps × T2
    float* btab = wtab + nwarps * T2;
    int* lab = (int*)(btab + T2);
    float* wpad = (float*)(lab + N);                  // nwarps × 64
    float* bufA = wbuf + warp * 4 * N;
    WaF2* bufD = (WaF2*)(bufA + 2 * N);
    float* mytab = wtab + warp * T2;
    float* mypad = wpad + warp * 64;

    wa_load_part(qkv, pad, g, 0, Qs);
    wa_load_part(qkv, pad, g, 1, Ks);
    wa_load_part(qkv, pad, g, 2, Vs);
    wa_load_tables(table, tdt, g, btab, lab);
    for (int e = threadIdx.x; e < nwarps * T2; e += blockDim.x) wtab[e] = 0.0f;
    for (int e = threadIdx.x; e < nwarps * 64; e += blockDim.x) wpad[e] = 0.0f;
    const float* lrow = lse + ((i64)blockIdx.x * nH + g.h) * N;
    for (int e = threadIdx.x; e < N; e += blockDim.x) Ls[e] = lrow[e];
    for (int i = warp; i < N; i += nwarps)
    {
        const i64 t = wa_token(g, i);
        float d = t >= 0 ? to_f(dy[t * C + g.h * WA_D + lane]) : 0.0f;
        float o = t >= 0 ? to_f(y[t * C + g.h * WA_D + lane]) : 0.0f;
        dOs[i * WA_LD + lane] = d;
        float dd = warp_sum(d * o);
        if (lane == 0) Ds[i] = dd;
    }
    __syncthreads();

    // Both phases take two rows per warp step (as the forward) so each shared-memory read of the
    // other operand feeds two FMAs; the second row may be past the end (odd N) and is then not stored.
    WaF2* buf = (WaF2*)bufA; // N pairs, 8-byte aligned (every offset before it is even)

    // Phase 1: dQ_i = scale·Σ_j dS_ij·k_j, dS_ij = P_ij·(dO_i·v_j − D_i).
    for (int i0 = 2 * warp; i0 < N; i0 += 2 * nwarps)
    {
        const bool has1 = i0 + 1 < N;
        const int i1 = has1 ? i0 + 1 : i0;
        const int la = lab[i0], lb = lab[i1];
        const float La = Ls[i0], Lb = Ls[i1], Da = Ds[i0], Db = Ds[i1];
        float qa[WA_D], qb[WA_D], da[WA_D], db[WA_D];
        wa_regs(Qs + i0 * WA_LD, qa); wa_regs(Qs + i1 * WA_LD, qb);
        wa_regs(dOs + i0 * WA_LD, da); wa_regs(dOs + i1 * WA_LD, db);
        for (int j = lane; j < N; j += 32)
        {
            const float* kj = Ks + j * WA_LD;
            const float* vj = Vs + j * WA_LD;
            float xa = 0.0f, xb = 0.0f, ya = 0.0f, yb = 0.0f;
#pragma unroll
            for (int c = 0; c < WA_D; c++)
            {
                float k = kj[c], v = vj[c];
                xa += qa[c] * k; xb += qb[c] * k;
                ya += da[c] * v; yb += db[c] * v;
            }
            const int lj = lab[j];
            float va = scale * xa + btab[wa_rel(i0, j, w)];
            float vb = scale * xb + btab[wa_rel(i1, j, w)];
            if (lj != la) va += -100.0f;
            if (lj != lb) vb += -100.0f;
            WaF2 d2;
            d2.x = expf(va - La) * (ya - Da);
            d2.y = expf(vb - Lb) * (yb - Db);
            buf[j] = d2;
        }
        __syncwarp();
        float dqa = 0.0f, dqb = 0.0f;
        for (int j = 0; j < N; j++)
        {
            WaF2 d2 = buf[j];
            float k = Ks[j * WA_LD + lane];
            dqa += d2.x * k; dqb += d2.y * k;
        }
        // A padding row's dQ is 0 (its dO is): nothing to store.
        const i64 ta = wa_token(g, i0), tb = wa_token(g, i1);
        if (ta >= 0)
        {
            T* dst = dqkv + (ta * 3 + 0) * C + g.h * WA_D + lane;
            *dst = from_f<T>(to_f(*dst) + scale * dqa);
        }
        if (has1 && tb >= 0)
        {
            T* dst1 = dqkv + (tb * 3 + 0) * C + g.h * WA_D + lane;
            *dst1 = from_f<T>(to_f(*dst1) + scale * dqb);
        }
        __syncwarp();
    }

    // Phase 2: dV_j = Σ_i P_ij·dO_i, dK_j = scale·Σ_i dS_ij·q_i, dtable[rel(i,j)] += dS_ij, for a pair
    // of keys (j0, j1). For one key the lanes' queries have distinct relative indices, but an index of
    // j0 may equal another lane's index of j1, so the two private-table updates are separated by
    // __syncwarp (the loop runs the same trip count on every lane for that).
    for (int j0 = 2 * warp; j0 < N; j0 += 2 * nwarps)
    {
        const bool has1 = j0 + 1 < N;
        const int j1 = has1 ? j0 + 1 : j0;
        const int la = lab[j0], lb = lab[j1];
        float ka[WA_D], kb[WA_D], va_[WA_D], vb_[WA_D];
        wa_regs(Ks + j0 * WA_LD, ka); wa_regs(Ks + j1 * WA_LD, kb);
        wa_regs(Vs + j0 * WA_LD, va_); wa_regs(Vs + j1 * WA_LD, vb_);
        for (int ib = 0; ib < N; ib += 32)
        {
            const int i = ib + lane;
            const bool ok = i < N;
            float dsa = 0.0f, dsb = 0.0f;
            int ra = 0, rb = 0;
            if (ok)
            {
                const float* qi = Qs + i * WA_LD;
                const float* di = dOs + i * WA_LD;
                float xa = 0.0f, xb = 0.0f, ya = 0.0f, yb = 0.0f;
#pragma unroll
                for (int c = 0; c < WA_D; c++)
                {
                    float q = qi[c], d = di[c];
                    xa += ka[c] * q; xb += kb[c] * q;
                    ya += va_[c] * d; yb += vb_[c] * d;
                }
                const int li = lab[i];
                ra = wa_rel(i, j0, w); rb = wa_rel(i, j1, w);
                float sa = scale * xa + btab[ra];
                float sb = scale * xb + btab[rb];
                if (li != la) sa += -100.0f;
                if (li != lb) sb += -100.0f;
                const float L = Ls[i], Di = Ds[i];
                float pa = expf(sa - L), pb = expf(sb - L);
                dsa = pa * (ya - Di); dsb = pb * (yb - Di);
                WaF2 p2; p2.x = pa; p2.y = pb;
                WaF2 d2; d2.x = dsa; d2.y = dsb;
                buf[i] = p2;
                bufD[i] = d2;
                mytab[ra] += dsa;
            }
            __syncwarp();
            if (ok && has1) mytab[rb] += dsb;
            __syncwarp();
        }
        float dva = 0.0f, dvb = 0.0f, dka = 0.0f, dkb = 0.0f;
        for (int i = 0; i < N; i++)
        {
            WaF2 p2 = buf[i], d2 = bufD[i];
            float d = dOs[i * WA_LD + lane], q = Qs[i * WA_LD + lane];
            dva += p2.x * d; dvb += p2.y * d;
            dka += d2.x * q; dkb += d2.y * q;
        }
        {
            const i64 t = wa_token(g, j0);
            if (t >= 0)
            {
                T* dk_dst = dqkv + (t * 3 + 1) * C + g.h * WA_D + lane;
                T* dv_dst = dqkv + (t * 3 + 2) * C + g.h * WA_D + lane;
                *dk_dst = from_f<T>(to_f(*dk_dst) + scale * dka);
                *dv_dst = from_f<T>(to_f(*dv_dst) + dva);
            }
            else { mypad[lane] += scale * dka; mypad[32 + lane] += dva; }
        }
        if (has1)
        {
            const i64 t = wa_token(g, j1);
            if (t >= 0)
            {
                T* dk_dst = dqkv + (t * 3 + 1) * C + g.h * WA_D + lane;
                T* dv_dst = dqkv + (t * 3 + 2) * C + g.h * WA_D + lane;
                *dk_dst = from_f<T>(to_f(*dk_dst) + scale * dkb);
                *dv_dst = from_f<T>(to_f(*dv_dst) + dvb);
            }
            else { mypad[lane] += scale * dkb; mypad[32 + lane] += dvb; }
        }
        __syncwarp();
    }
    __syncthreads();
    wa_write_partials(dtab_part, dpad_part, wtab, wpad, nwarps, T2, nH, g.h);
}

// ---------------------------------------------------------------------------------------------
// Tensor-core forward for bf16 inputs (FlashAttention-2 style), same semantics and outputs as wa_fwd.
// Q, K, V of the window are staged as bf16 rows of WA_TC_LD elements (80 bytes: 16-byte aligned for
// ldmatrix, and the 8 rows of one 8x8 matrix start in 8 distinct 4-bank groups); N is rounded up to
// Npad = 16·⌈N/16⌉ with zero rows, the extra keys masked to −inf and the extra query rows never stored.
// Each warp owns 16 query rows (one m-tile) at a time: S = Q·Kᵀ with m16n8k16 (d = 32: two k-steps)
// over chunks of WA_TC_KC keys, bias + mask added in the accumulator layout, online softmax per row
// (each row lives in the 4 lanes of a quad), P rounded to bf16 as the A operand of P·V (the accumulators
// of two adjacent n8 key tiles are exactly the A fragment of one k16 step), V as the B operand through
// ldmatrix .trans, fp32 accumulators. Scores are kept in the log2 domain (scale, bias and mask
// pre-multiplied by log2 e) so each probability is one exp2; lse is converted back to natural log.
// It writes the same y and lse as the fp32-math forward, so either backward (wa_bwd, wa_bwd_tc) follows either forward.
// y leaves through the warp's own Q rows (free once its Q fragments are in registers): the accumulator
// layout gives each lane 4-byte pieces of two rows, the staged rows go out as whole 16-byte chunks.
// Shared memory: Q, K, V [Npad][WA_TC_LD] bf16; key info [Npad] int; btab·log2e [(2w−1)²] f32.
#define WA_TC_LD 40
#define WA_TC_KC 64

__device__ __forceinline__ void wa_tc_stage(const bf16* qkv, const bf16* pad, const WaGeom& g, int Npad, u16* Qs, u16* Ks, u16* Vs)
{
    const int C = g.nH * WA_D;
    const bool vec = aligned16(qkv);
    // 12 16-byte chunks per token: 3 parts × 4 chunks of 8 channels.
    for (int e = threadIdx.x; e < Npad * 12; e += blockDim.x)
    {
        const int i = e / 12, r = e - 12 * i, p = r >> 2, c = (r & 3) * 8;
        u16* dst = (p == 0 ? Qs : p == 1 ? Ks : Vs) + i * WA_TC_LD + c;
        const i64 t = i < g.N ? wa_token(g, i) : -1;
        if (t >= 0)
        {
            const bf16* src = qkv + (t * 3 + p) * C + g.h * WA_D + c;
            if (vec) cp_async_cg_16(dst, src);
            else
                for (int k = 0; k < 8; k++) dst[k] = src[k].bits;
        }
        else if (i < g.N && pad != nullptr) // a padding token of the map: the pad row
        {
            const bf16* src = pad + p * C + g.h * WA_D + c;
            for (int k = 0; k < 8; k++) dst[k] = src[k].bits;
        }
        else
        {
            for (int k = 0; k < 8; k++) dst[k] = 0; // V rows must be 0 (0·garbage could be NaN)
        }
    }
    cp_async_wait_all();
}

__device__ __forceinline__ float wa_quad_max(float v)
{
    v = fmaxf(v, __shfl_xor_sync(FIBER_FULL_MASK, v, 1));
    return fmaxf(v, __shfl_xor_sync(FIBER_FULL_MASK, v, 2));
}
__device__ __forceinline__ float wa_quad_sum(float v)
{
    v += __shfl_xor_sync(FIBER_FULL_MASK, v, 1);
    return v + __shfl_xor_sync(FIBER_FULL_MASK, v, 2);
}

__device__ __forceinline__ void wa_fwd_tc(const bf16* qkv, const void* table, int tdt, bf16* y, float* lse, const bf16* pad,
                                          int B, int H, int W, int Hr, int Wr, int nH, int w, int s, float scale)
{
    FIBER_DYNAMIC_SMEM(u16, sm);
    WaGeom g = wa_geom(B, H, W, Hr, Wr, nH, w, s);
    const int N = g.N, Npad = (N + 15) & ~15, W2 = 2 * w - 1, T2 = W2 * W2, C = nH * WA_D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int gq = lane >> 2, tq = lane & 3;
    const float L2E = 1.4426950408889634f;
    u16* Qs = sm;
    u16* Ks = Qs + Npad * WA_TC_LD;
    u16* Vs = Ks + Npad * WA_TC_LD;
    int* kinfo = (int*)(Vs + Npad * WA_TC_LD); // koff(j)·16 + label(j): one 8-byte load gives a lane both of its keys
    float* btab = (float*)(kinfo + Npad);

    wa_tc_stage(qkv, pad, g, Npad, Qs, Ks, Vs);
    for (int e = threadIdx.x; e < T2; e += blockDim.x) btab[e] = L2E * load_dyn(table, (i64)e * g.nH + g.h, tdt);
    // rel(i, j) = base(i) − koff(j) with base(i) = (ri+w−1)(2w−1) + ci+w−1 and koff(j) = rj(2w−1) + cj.
    for (int j = threadIdx.x; j < Npad; j += blockDim.x) kinfo[j] = j < N ? ((j / w) * W2 + j % w) * 16 + wa_label(g, j) : 0;
    __syncthreads();

    const float sc2 = scale * L2E, mask2 = -100.0f * L2E;
    const bool yal = aligned16(y);
    for (int mt = warp; mt < (Npad >> 4); mt += nwarps)
    {
        const int r0 = mt * 16;
        u32 qa[2][4];
#pragma unroll
        for (int kk = 0; kk < 2; kk++)
            ldmatrix_x4(qa[kk], Qs + (r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * WA_TC_LD + kk * 16 + (lane >> 4) * 8);
        // This lane's rows: r0+gq (accumulator elements 0, 1) and r0+gq+8 (elements 2, 3). Pad rows
        // borrow row N−1's geometry so their table reads stay in range; they are never stored.
        const int ia = r0 + gq, ib = ia + 8;
        const int ca = ia < N ? ia : N - 1, cb = ib < N ? ib : N - 1;
        const int basea = (ca / w + w - 1) * W2 + ca % w + w - 1, baseb = (cb / w + w - 1) * W2 + cb % w + w - 1;
        const int laba = wa_label(g, ca), labb = wa_label(g, cb);
        float ma = fiber_neg_inf(), mb = fiber_neg_inf(), la = 0.0f, lb = 0.0f;
        float o[4][4];
#pragma unroll
        for (int n = 0; n < 4; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

        for (int jc = 0; jc < Npad; jc += WA_TC_KC)
        {
            // Every chunk holds a real key (jc ≤ Npad−16 < N), so the chunk maxima below are finite.
            float sa[8][4];
            float cma = ma, cmb = mb;
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
            {
                const int j0 = jc + 8 * nt;
                sa[nt][0] = sa[nt][1] = sa[nt][2] = sa[nt][3] = fiber_neg_inf();
                if (j0 < Npad)
                {
                    u32 kb[4];
                    ldmatrix_x4(kb, Ks + (j0 + (lane & 7)) * WA_TC_LD + (lane >> 3) * 8);
                    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                    mma_m16n8k16_bf16(acc, qa[0], kb, acc);
                    mma_m16n8k16_bf16(acc, qa[1], kb + 2, acc);
                    const int2 ki = *(const int2*)(kinfo + j0 + 2 * tq);
#pragma unroll
                    for (int e = 0; e < 4; e++)
                    {
                        const int j = j0 + 2 * tq + (e & 1), kj = (e & 1) ? ki.y : ki.x;
                        if (j < N)
                        {
                            float v = sc2 * acc[e] + btab[(e < 2 ? basea : baseb) - (kj >> 4)];
                            if ((kj & 15) != (e < 2 ? laba : labb)) v += mask2;
                            sa[nt][e] = v;
                        }
                    }
                    cma = fmaxf(cma, fmaxf(sa[nt][0], sa[nt][1]));
                    cmb = fmaxf(cmb, fmaxf(sa[nt][2], sa[nt][3]));
                }
            }
            cma = wa_quad_max(cma); cmb = wa_quad_max(cmb);
            const float aa = exp2f(ma - cma), ab = exp2f(mb - cmb); // 0 on the first chunk (ma = −inf)
            ma = cma; mb = cmb;
            la *= aa; lb *= ab;
#pragma unroll
            for (int n = 0; n < 4; n++) { o[n][0] *= aa; o[n][1] *= aa; o[n][2] *= ab; o[n][3] *= ab; }
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
            {
                sa[nt][0] = exp2f(sa[nt][0] - ma); sa[nt][1] = exp2f(sa[nt][1] - ma);
                sa[nt][2] = exp2f(sa[nt][2] - mb); sa[nt][3] = exp2f(sa[nt][3] - mb);
                la += sa[nt][0] + sa[nt][1];
                lb += sa[nt][2] + sa[nt][3];
            }
#pragma unroll
            for (int kk = 0; kk < WA_TC_KC / 16; kk++)
            {
                const int jb = jc + 16 * kk;
                if (jb < Npad)
                {
                    u32 pa[4];
                    pa[0] = bf16x2_bits(sa[2 * kk][0], sa[2 * kk][1]);
                    pa[1] = bf16x2_bits(sa[2 * kk][2], sa[2 * kk][3]);
                    pa[2] = bf16x2_bits(sa[2 * kk + 1][0], sa[2 * kk + 1][1]);
                    pa[3] = bf16x2_bits(sa[2 * kk + 1][2], sa[2 * kk + 1][3]);
#pragma unroll
                    for (int hf = 0; hf < 2; hf++)
                    {
                        u32 vb[4];
                        ldmatrix_x4_trans(vb, Vs + (jb + (lane & 7) + ((lane >> 3) & 1) * 8) * WA_TC_LD + 16 * hf + (lane >> 4) * 8);
                        mma_m16n8k16_bf16(o[2 * hf], pa, vb, o[2 * hf]);
                        mma_m16n8k16_bf16(o[2 * hf + 1], pa, vb + 2, o[2 * hf + 1]);
                    }
                }
            }
        }
        la = wa_quad_sum(la); lb = wa_quad_sum(lb);
        const float ra = 1.0f / la, rb = 1.0f / lb;
        float* lrow = lse + ((i64)blockIdx.x * nH + g.h) * N;
        const float LN2 = 0.6931471805599453f;
        if (tq == 0 && ia < N) lrow[ia] = (ma + log2f(la)) * LN2;
        if (tq == 0 && ib < N) lrow[ib] = (mb + log2f(lb)) * LN2;
        u16* st = Qs + r0 * WA_TC_LD; // this m-tile's 16 Q rows
#pragma unroll
        for (int n = 0; n < 4; n++)
        {
            *(u32*)(st + gq * WA_TC_LD + 8 * n + 2 * tq) = bf16x2_bits(o[n][0] * ra, o[n][1] * ra);
            *(u32*)(st + (gq + 8) * WA_TC_LD + 8 * n + 2 * tq) = bf16x2_bits(o[n][2] * rb, o[n][3] * rb);
        }
        __syncwarp();
        // 16 rows × 4 chunks of 8 channels: two chunks per lane, a quad writes a row's 64 bytes.
#pragma unroll
        for (int c = lane; c < 64; c += 32)
        {
            const int row = c >> 2, ch = (c & 3) * 8;
            const i64 t = r0 + row < N ? wa_token(g, r0 + row) : -1;
            if (t >= 0)
            {
                const u16* srcp = st + row * WA_TC_LD + ch;
                bf16* dst = y + t * C + g.h * WA_D + ch;
                if (yal) *(uint4*)dst = *(const uint4*)srcp;
                else
                    for (int k = 0; k < 8; k++) dst[k].bits = srcp[k];
            }
        }
    }
}

// The backward's paired products over one 8-row tile starting at row r0 of two staged arrays (d = 32: two k16
// steps each): st = A·Xᵀ and dp = B·Yᵀ for the warp's 16-row A and B fragments. Pass 1 calls it with (K, Q) and
// (V, dO), pass 2 with (Q, K) and (dO, V).
__device__ __forceinline__ void wa_tc_two_tiles(const u32 (&a)[2][4], const u16* X, const u32 (&b)[2][4], const u16* Y,
                                                int r0, int lane, float (&st)[4], float (&dp)[4])
{
    u32 xb[4], yb[4];
    const int off = (r0 + (lane & 7)) * WA_TC_LD + (lane >> 3) * 8;
    ldmatrix_x4(xb, X + off);
    ldmatrix_x4(yb, Y + off);
#pragma unroll
    for (int e = 0; e < 4; e++) st[e] = dp[e] = 0.0f;
    mma_m16n8k16_bf16(st, a[0], xb, st);
    mma_m16n8k16_bf16(st, a[1], xb + 2, st);
    mma_m16n8k16_bf16(dp, b[0], yb, dp);
    mma_m16n8k16_bf16(dp, b[1], yb + 2, dp);
}

// ---------------------------------------------------------------------------------------------
// Tensor-core backward for bf16 inputs (FlashAttention-2 style), same semantics and outputs as wa_bwd
// (dqkv +=, dtab_part and dpad_part rows for the same reduce kernels). Q, K, V, dO of the window are
// staged as bf16 rows of WA_TC_LD (N rounded up to Npad = 16·⌈N/16⌉, zero rows, masked), lse·log2e and
// D_i = Σ_c dO_ic·y_ic (fp32, from y and dy as stored) beside them. P is recomputed in the log2 domain
// as in the forward: P = exp2(S·scale·log2e + bias·log2e + mask·log2e − lse·log2e).
// Two passes, so every output element is produced by one warp in a fixed order (deterministic, no atomics):
//   pass 1, a warp per 16 keys j (A operands K_j, V_j in registers), over chunks of 32 queries i:
//     Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ (Q, dO rows as B operands), dSᵀ = Pᵀ ⊙ (dPᵀ − D_i); the accumulators of
//     two adjacent n8 query tiles are the A fragment of one k16 step, so dV += Pᵀ·dO and dK += dSᵀ·Q with
//     dO, Q through ldmatrix .trans (Pᵀ, dSᵀ rounded to bf16, fp32 accumulators). The fp32 dSᵀ tile goes
//     to a per-warp buffer and is added into the warp's private bias-table copy one key at a time with the
//     32 queries on the lanes: for a fixed key the queries' relative indices are distinct, so the adds of
//     one step never collide (as in wa_bwd). dK|dV leave through the same buffer, a row (key) at a time:
//     stored tokens += into dqkv, padding tokens into the warp's private [64] pad copy, in key order.
//   pass 2, a warp per 16 queries i (A operands Q_i, dO_i), over steps of 16 keys: S, dP and dS again in
//     the row layout, dQ += dS·K (K through ldmatrix .trans), then dqkv's q slice += scale·dQ.
// Pass 2 recomputes S and dP (2 of its 3 mma groups) instead of sharing dS through memory or atomics.
// Shared memory: Q, K, V, dO [Npad][WA_TC_LD] bf16; lse·log2e, D, key info [Npad]; btab·log2e [(2w−1)²];
// per warp a table copy [(2w−1)²], the padding tokens' dK|dV [64] and a staging tile [16][WA_TCB_LD] f32.
#define WA_TCB_LD 68

__device__ __forceinline__ void wa_bwd_tc(const bf16* qkv, const void* table, int tdt, const bf16* y, const float* lse,
                                          const bf16* dy, bf16* dqkv, float* dtab_part, const bf16* pad, float* dpad_part,
                                          int B, int H, int W, int Hr, int Wr, int nH, int w, int s, float scale)
{
    FIBER_DYNAMIC_SMEM(u16, sm);
    WaGeom g = wa_geom(B, H, W, Hr, Wr, nH, w, s);
    const int N = g.N, Npad = (N + 15) & ~15, W2 = 2 * w - 1, T2 = W2 * W2, C = nH * WA_D;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int gq = lane >> 2, tq = lane & 3;
    const float L2E = 1.4426950408889634f;
    u16* Qs = sm;
    u16* Ks = Qs + Npad * WA_TC_LD;
    u16* Vs = Ks + Npad * WA_TC_LD;
    u16* dOs = Vs + Npad * WA_TC_LD;
    float* Ls = (float*)(dOs + Npad * WA_TC_LD); // lse·log2e (0 on the extra rows)
    float* Ds = Ls + Npad;
    int* kinfo = (int*)(Ds + Npad);               // koff(j)·16 + label(j), 8-byte aligned (Npad is a multiple of 16)
    float* btab = (float*)(kinfo + Npad);
    float* wtab = btab + T2;                      // nwarps × T2
    float* wpad = wtab + nwarps * T2;             // nwarps × 64
    float* wbuf = wpad + nwarps * 64;             // nwarps × 16 × WA_TCB_LD
    float* mytab = wtab + warp * T2;
    float* mypad = wpad + warp * 64;
    float* mybuf = wbuf + warp * 16 * WA_TCB_LD;

    wa_tc_stage(qkv, pad, g, Npad, Qs, Ks, Vs);
    for (int e = threadIdx.x; e < T2; e += blockDim.x) btab[e] = L2E * load_dyn(table, (i64)e * g.nH + g.h, tdt);
    for (int j = threadIdx.x; j < Npad; j += blockDim.x) kinfo[j] = j < N ? ((j / w) * W2 + j % w) * 16 + wa_label(g, j) : 0;
    for (int e = threadIdx.x; e < nwarps * T2; e += blockDim.x) wtab[e] = 0.0f;
    for (int e = threadIdx.x; e < nwarps * 64; e += blockDim.x) wpad[e] = 0.0f;
    const float* lrow = lse + ((i64)blockIdx.x * nH + g.h) * N;
    for (int i = threadIdx.x; i < Npad; i += blockDim.x) Ls[i] = i < N ? L2E * lrow[i] : 0.0f;
    // dO rows keep dy's bits; a padding token's (and an extra row's) dO is 0.
    for (int i = warp; i < Npad; i += nwarps)
    {
        const i64 t = i < N ? wa_token(g, i) : -1;
        u16 bits = 0;
        float d = 0.0f, o = 0.0f;
        if (t >= 0)
        {
            const bf16 dv = dy[t * C + g.h * WA_D + lane];
            bits = dv.bits; d = to_f(dv); o = to_f(y[t * C + g.h * WA_D + lane]);
        }
        dOs[i * WA_TC_LD + lane] = bits;
        const float dd = warp_sum(d * o);
        if (lane == 0) Ds[i] = dd;
    }
    __syncthreads();

    const float sc2 = scale * L2E, mask2 = -100.0f * L2E;
    const int rb0 = (w - 1) * (W2 + 1); // rel(i, j) = koff(i) + rb0 − koff(j)

    // Pass 1: dK, dV, the table gradient and the padding tokens' dK|dV.
    for (int kt = warp; kt < (Npad >> 4); kt += nwarps)
    {
        const int j0 = kt * 16;
        u32 ka[2][4], va[2][4];
#pragma unroll
        for (int kk = 0; kk < 2; kk++)
        {
            const int off = (j0 + (lane & 7) + ((lane >> 3) & 1) * 8) * WA_TC_LD + kk * 16 + (lane >> 4) * 8;
            ldmatrix_x4(ka[kk], Ks + off);
            ldmatrix_x4(va[kk], Vs + off);
        }
        const int ja = j0 + gq, jb = ja + 8; // this lane's keys: accumulator elements 0, 1 and 2, 3
        const bool oka = ja < N, okb = jb < N;
        const int kia = kinfo[ja], kib = kinfo[jb];
        float dk[4][4], dv[4][4];
#pragma unroll
        for (int n = 0; n < 4; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) dk[n][e] = dv[n][e] = 0.0f;

        for (int ic = 0; ic < Npad; ic += 32)
        {
            float p[4][4], ds[4][4];
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
            {
                const int i0 = ic + 8 * nt;
#pragma unroll
                for (int e = 0; e < 4; e++) p[nt][e] = ds[nt][e] = 0.0f;
                if (i0 < Npad)
                {
                    float st[4], dp[4];
                    wa_tc_two_tiles(ka, Qs, va, dOs, i0, lane, st, dp); // Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ
                    const int2 qi = *(const int2*)(kinfo + i0 + 2 * tq);
#pragma unroll
                    for (int e = 0; e < 4; e++)
                    {
                        const int i = i0 + 2 * tq + (e & 1), qn = (e & 1) ? qi.y : qi.x, kj = e < 2 ? kia : kib;
                        if (i < N && (e < 2 ? oka : okb))
                        {
                            float v = sc2 * st[e] + btab[(qn >> 4) + rb0 - (kj >> 4)] - Ls[i];
                            if ((kj & 15) != (qn & 15)) v += mask2;
                            const float pv = exp2f(v);
                            p[nt][e] = pv;
                            ds[nt][e] = pv * (dp[e] - Ds[i]);
                        }
                    }
                }
            }
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) mybuf[(gq + 8 * (e >> 1)) * WA_TCB_LD + 8 * nt + 2 * tq + (e & 1)] = ds[nt][e];
#pragma unroll
            for (int kk = 0; kk < 2; kk++)
            {
                const int ib = ic + 16 * kk;
                if (ib < Npad)
                {
                    u32 pa[4], sa[4];
                    pa[0] = bf16x2_bits(p[2 * kk][0], p[2 * kk][1]);
                    pa[1] = bf16x2_bits(p[2 * kk][2], p[2 * kk][3]);
                    pa[2] = bf16x2_bits(p[2 * kk + 1][0], p[2 * kk + 1][1]);
                    pa[3] = bf16x2_bits(p[2 * kk + 1][2], p[2 * kk + 1][3]);
                    sa[0] = bf16x2_bits(ds[2 * kk][0], ds[2 * kk][1]);
                    sa[1] = bf16x2_bits(ds[2 * kk][2], ds[2 * kk][3]);
                    sa[2] = bf16x2_bits(ds[2 * kk + 1][0], ds[2 * kk + 1][1]);
                    sa[3] = bf16x2_bits(ds[2 * kk + 1][2], ds[2 * kk + 1][3]);
#pragma unroll
                    for (int hf = 0; hf < 2; hf++)
                    {
                        const int off = (ib + (lane & 7) + ((lane >> 3) & 1) * 8) * WA_TC_LD + 16 * hf + (lane >> 4) * 8;
                        u32 ob[4], qb[4];
                        ldmatrix_x4_trans(ob, dOs + off);
                        mma_m16n8k16_bf16(dv[2 * hf], pa, ob, dv[2 * hf]);
                        mma_m16n8k16_bf16(dv[2 * hf + 1], pa, ob + 2, dv[2 * hf + 1]);
                        ldmatrix_x4_trans(qb, Qs + off);
                        mma_m16n8k16_bf16(dk[2 * hf], sa, qb, dk[2 * hf]);
                        mma_m16n8k16_bf16(dk[2 * hf + 1], sa, qb + 2, dk[2 * hf + 1]);
                    }
                }
            }
            __syncwarp();
            {
                const int i = ic + lane;
                const bool iok = i < N;
                const int qoff = iok ? (kinfo[i] >> 4) + rb0 : 0;
                for (int r = 0; r < 16; r++)
                {
                    if (iok && j0 + r < N) mytab[qoff - (kinfo[j0 + r] >> 4)] += mybuf[r * WA_TCB_LD + lane];
                    __syncwarp(); // another lane's next key may hit this key's index
                }
            }
        }
#pragma unroll
        for (int n = 0; n < 4; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
            {
                const int at = (gq + 8 * (e >> 1)) * WA_TCB_LD + 8 * n + 2 * tq + (e & 1);
                mybuf[at] = scale * dk[n][e];
                mybuf[at + 32] = dv[n][e];
            }
        __syncwarp();
        for (int r = 0; r < 16; r++)
        {
            const int j = j0 + r;
            if (j >= N) break; // warp-uniform
            const i64 t = wa_token(g, j);
            const float dkv = mybuf[r * WA_TCB_LD + lane], dvv = mybuf[r * WA_TCB_LD + 32 + lane];
            if (t >= 0)
            {
                bf16* dk_dst = dqkv + (t * 3 + 1) * C + g.h * WA_D + lane;
                bf16* dv_dst = dqkv + (t * 3 + 2) * C + g.h * WA_D + lane;
                *dk_dst = from_f<bf16>(to_f(*dk_dst) + dkv);
                *dv_dst = from_f<bf16>(to_f(*dv_dst) + dvv);
            }
            else { mypad[lane] += dkv; mypad[32 + lane] += dvv; }
        }
        __syncwarp(); // mybuf is rewritten by the next key tile
    }

    // Pass 2: dQ.
    for (int mt = warp; mt < (Npad >> 4); mt += nwarps)
    {
        const int i0 = mt * 16;
        u32 qa[2][4], da[2][4];
#pragma unroll
        for (int kk = 0; kk < 2; kk++)
        {
            const int off = (i0 + (lane & 7) + ((lane >> 3) & 1) * 8) * WA_TC_LD + kk * 16 + (lane >> 4) * 8;
            ldmatrix_x4(qa[kk], Qs + off);
            ldmatrix_x4(da[kk], dOs + off);
        }
        const int ia = i0 + gq, ib = ia + 8;
        const bool oka = ia < N, okb = ib < N;
        const int qia = kinfo[ia], qib = kinfo[ib];
        const float La = Ls[ia], Lb = Ls[ib], Da = Ds[ia], Db = Ds[ib];
        float dq[4][4];
#pragma unroll
        for (int n = 0; n < 4; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) dq[n][e] = 0.0f;
        for (int jb = 0; jb < Npad; jb += 16)
        {
            float ds[2][4];
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
            {
                const int j0 = jb + 8 * nt;
                float st[4], dp[4];
                wa_tc_two_tiles(qa, Ks, da, Vs, j0, lane, st, dp); // S = Q·Kᵀ, dP = dO·Vᵀ
                const int2 ki = *(const int2*)(kinfo + j0 + 2 * tq);
#pragma unroll
                for (int e = 0; e < 4; e++)
                {
                    const int j = j0 + 2 * tq + (e & 1), kj = (e & 1) ? ki.y : ki.x, qn = e < 2 ? qia : qib;
                    ds[nt][e] = 0.0f;
                    if (j < N && (e < 2 ? oka : okb))
                    {
                        float v = sc2 * st[e] + btab[(qn >> 4) + rb0 - (kj >> 4)] - (e < 2 ? La : Lb);
                        if ((kj & 15) != (qn & 15)) v += mask2;
                        ds[nt][e] = exp2f(v) * (dp[e] - (e < 2 ? Da : Db));
                    }
                }
            }
            u32 sa[4];
            sa[0] = bf16x2_bits(ds[0][0], ds[0][1]);
            sa[1] = bf16x2_bits(ds[0][2], ds[0][3]);
            sa[2] = bf16x2_bits(ds[1][0], ds[1][1]);
            sa[3] = bf16x2_bits(ds[1][2], ds[1][3]);
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
            {
                u32 kb[4];
                ldmatrix_x4_trans(kb, Ks + (jb + (lane & 7) + ((lane >> 3) & 1) * 8) * WA_TC_LD + 16 * hf + (lane >> 4) * 8);
                mma_m16n8k16_bf16(dq[2 * hf], sa, kb, dq[2 * hf]);
                mma_m16n8k16_bf16(dq[2 * hf + 1], sa, kb + 2, dq[2 * hf + 1]);
            }
        }
        // A padding row's dQ is 0 (its dO is): nothing to store.
        const i64 ta = oka ? wa_token(g, ia) : -1, tb = okb ? wa_token(g, ib) : -1;
#pragma unroll
        for (int n = 0; n < 4; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
            {
                const i64 t = e < 2 ? ta : tb;
                if (t >= 0)
                {
                    bf16* dst = dqkv + (t * 3) * C + g.h * WA_D + 8 * n + 2 * tq + (e & 1);
                    *dst = from_f<bf16>(to_f(*dst) + scale * dq[n][e]);
                }
            }
    }
    __syncthreads();
    wa_write_partials(dtab_part, dpad_part, wtab, wpad, nwarps, T2, nH, g.h);
}

extern "C" __global__ void window_attn_fwd_f32(const float* qkv, const void* table, int tdt, float* y, float* lse, const float* pad,
                                               int B, int H, int W, int Hr, int Wr, int nH, int w, int s, float scale)
{
    wa_fwd<float>(qkv, table, tdt, y, lse, pad, B, H, W, Hr, Wr, nH, w, s, scale);
}
extern "C" __global__ void window_attn_fwd_bf16(const bf16* qkv, const void* table, int tdt, bf16* y, float* lse, const bf16* pad,
                                                int B, int H, int W, int Hr, int Wr, int nH, int w, int s, float scale)
{
    wa_fwd<bf16>(qkv, table, tdt, y, lse, pad, B, H, W, Hr, Wr, nH, w, s, scale);
}
extern "C" __global__ void window_attn_fwd_tc_bf16(const bf16* qkv, const void* table, int tdt, bf16* y, float* lse, const bf16* pad,
                                                   int B, int H, int W, int Hr, int Wr, int nH, int w, int s, float scale)
{
    wa_fwd_tc(qkv, table, tdt, y, lse, pad, B, H, W, Hr, Wr, nH, w, s, scale);
}
extern "C" __global__ void window_attn_bwd_f32(const float* qkv, const void* table, int tdt, const float* y, const float* lse,
                                               const float* dy, float* dqkv, float* dtab_part, const float* pad, float* dpad_part,
                                               int B, int H, int W, int Hr, int Wr, int nH, int w, int s, float scale)
{
    wa_bwd<float>(qkv, table, tdt, y, lse, dy, dqkv, dtab_part, pad, dpad_part, B, H, W, Hr, Wr, nH, w, s, scale);
}
extern "C" __global__ void window_attn_bwd_bf16(const bf16* qkv, const void* table, int tdt, const bf16* y, const float* lse,
                                                const bf16* dy, bf16* dqkv, float* dtab_part, const bf16* pad, float* dpad_part,
                                                int B, int H, int W, int Hr, int Wr, int nH, int w, int s, float scale)
{
    wa_bwd<bf16>(qkv, table, tdt, y, lse, dy, dqkv, dtab_part, pad, dpad_part, B, H, W, Hr, Wr, nH, w, s, scale);
}

extern "C" __global__ void window_attn_bwd_tc_bf16(const bf16* qkv, const void* table, int tdt, const bf16* y, const float* lse,
                                                   const bf16* dy, bf16* dqkv, float* dtab_part, const bf16* pad, float* dpad_part,
                                                   int B, int H, int W, int Hr, int Wr, int nH, int w, int s, float scale)
{
    wa_bwd_tc(qkv, table, tdt, y, lse, dy, dqkv, dtab_part, pad, dpad_part, B, H, W, Hr, Wr, nH, w, s, scale);
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

// dpad[p·C + h·32 + c] += Σ_win part[win, h, (p−1)·32 + c] for p = 1 (k), 2 (v) (window order: deterministic).
extern "C" __global__ void window_attn_dpad_reduce(const float* part, int nwin, int nH, void* dpad, int dt)
{
    FIBER_GRID_LOOP(k, (i64)nH * 64)
    {
        int h = (int)(k / 64), e = (int)(k % 64);
        float acc = 0.0f;
        for (int win = 0; win < nwin; win++) acc += part[((i64)win * nH + h) * 64 + e];
        i64 o = (i64)(1 + e / 32) * nH * WA_D + h * WA_D + (e % 32);
        store_dyn(dpad, o, dt, load_dyn(dpad, o, dt) + acc);
    }
}
