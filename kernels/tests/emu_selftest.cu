// emu_selftest.cu — kernels that exercise each primitive of the emulated GPU (kernels/emu/cuda_emu.h).
// Tests: tests/FiberCuda.Tests/Emulator/EmulatorTests.cs compares every output with values computed
// in C#. Self-contained (no common.cuh) so the emulator's tests do not depend on other kernel files;
// valid CUDA C too, so the same file can run on a real GPU.

#ifdef FIBER_EMULATION
#define SELFTEST_DYNAMIC_SMEM(type, name) type* name = (type*)emu_dynamic_smem();
#else
#define SELFTEST_DYNAMIC_SMEM(type, name) \
    extern __shared__ __align__(16) unsigned char name##_raw[]; \
    type* name = (type*)name##_raw;
#endif

// Per-block sum through a shared-memory tree (static __shared__ + __syncthreads). blockDim.x <= 1024, power of 2.
extern "C" __global__ void block_sum_tree(const float* x, float* out, int n)
{
    __shared__ float s[1024];
    int t = threadIdx.x;
    int i = blockIdx.x * blockDim.x + t;
    s[t] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1)
    {
        if (t < stride) s[t] += s[t + stride];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// Every built-in index: out[((block linear) * threads + thread linear) * 6 + k] = tid.x,y,z, bid.x,y,z;
// dims[0..5] = blockDim, gridDim (written by thread 0 of block 0).
extern "C" __global__ void index_probe(int* out, int* dims)
{
    int tl = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int bl = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int threads = blockDim.x * blockDim.y * blockDim.z;
    int* o = out + ((long long)bl * threads + tl) * 6;
    o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
    o[3] = blockIdx.x; o[4] = blockIdx.y; o[5] = blockIdx.z;
    if (tl == 0 && bl == 0)
    {
        dims[0] = blockDim.x; dims[1] = blockDim.y; dims[2] = blockDim.z;
        dims[3] = gridDim.x; dims[4] = gridDim.y; dims[5] = gridDim.z;
    }
}

// Each shuffle kind on int, float, double and long long. Thread t of the (one) block reads in[t];
// out has 16 slices of blockDim.x: [kind*4 + type] with kinds idx, up, down, xor and types int,
// float (in+0.5), double (in*2^40 via long long bits kept exact), long long (in<<33).
// `b` is srcLane / delta / laneMask; for idx the source is (lane*b + 3) to cover wrap-around.
extern "C" __global__ void shfl_probe(const int* in, long long* out, int b, int width)
{
    int t = threadIdx.x, n = blockDim.x;
    int lane = t & 31;
    int v = in[t];
    float vf = (float)v + 0.5f;
    double vd = (double)v * 1099511627776.0 + 0.25;
    long long vl = ((long long)v << 33) + 7;
    unsigned m = 0xffffffffu;
    int src = lane * b + 3;
    out[0 * n + t] = __shfl_sync(m, v, src, width);
    out[1 * n + t] = __float_as_int(__shfl_sync(m, vf, src, width));
    out[2 * n + t] = __double_as_longlong(__shfl_sync(m, vd, src, width));
    out[3 * n + t] = __shfl_sync(m, vl, src, width);
    out[4 * n + t] = __shfl_up_sync(m, v, b, width);
    out[5 * n + t] = __float_as_int(__shfl_up_sync(m, vf, b, width));
    out[6 * n + t] = __double_as_longlong(__shfl_up_sync(m, vd, b, width));
    out[7 * n + t] = __shfl_up_sync(m, vl, b, width);
    out[8 * n + t] = __shfl_down_sync(m, v, b, width);
    out[9 * n + t] = __float_as_int(__shfl_down_sync(m, vf, b, width));
    out[10 * n + t] = __double_as_longlong(__shfl_down_sync(m, vd, b, width));
    out[11 * n + t] = __shfl_down_sync(m, vl, b, width);
    out[12 * n + t] = __shfl_xor_sync(m, v, b, width);
    out[13 * n + t] = __float_as_int(__shfl_xor_sync(m, vf, b, width));
    out[14 * n + t] = __double_as_longlong(__shfl_xor_sync(m, vd, b, width));
    out[15 * n + t] = __shfl_xor_sync(m, vl, b, width);
}

// Warp sum by xor butterflies and by shfl_down (lane 0 then holds the total); out[2*warp + k].
extern "C" __global__ void warp_sums(const float* x, float* out)
{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    float a = x[t], b = x[t];
    for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
    for (int o = 16; o > 0; o >>= 1) b += __shfl_down_sync(0xffffffffu, b, o);
    int w = t >> 5;
    float lane0 = __shfl_sync(0xffffffffu, a, 0);  // every lane must agree with lane 0
    int agree = __all_sync(0xffffffffu, a == lane0);
    if ((t & 31) == 0) { out[2 * w] = agree ? a : -1.0f; out[2 * w + 1] = b; }
}

// Undefined on the GPU, poisoned on the emulator: the upper half-warp exits, then the lower half
// reads it with a full-mask shuffle. out[t] (t < 16) = the value read from lane t + 16.
extern "C" __global__ void shfl_from_exited(const float* x, float* out)
{
    int t = threadIdx.x;
    if (t >= 16) return;
    out[t] = __shfl_sync(0xffffffffu, x[t], t + 16);
}

// Votes with the full mask and, inside a branch, with the mask of the even lanes:
// out[t*6 + k] = ballot, all, any, ballot_even, all_even, any_even (the last three 0 for odd lanes),
// plus __syncthreads_count/and/or of pred at out[n*6 + t*3 + k].
extern "C" __global__ void vote_probe(const int* pred, unsigned* out)
{
    int t = threadIdx.x, n = blockDim.x;
    int p = pred[t];
    unsigned* o = out + t * 6;
    o[0] = __ballot_sync(0xffffffffu, p);
    o[1] = __all_sync(0xffffffffu, p);
    o[2] = __any_sync(0xffffffffu, p);
    o[3] = o[4] = o[5] = 0;
    if ((t & 1) == 0)
    {
        o[3] = __ballot_sync(0x55555555u, p);
        o[4] = __all_sync(0x55555555u, p);
        o[5] = __any_sync(0x55555555u, p);
        __syncwarp(0x55555555u);
    }
    __syncwarp();
    out[n * 6 + t * 3 + 0] = __syncthreads_count(p);
    out[n * 6 + t * 3 + 1] = __syncthreads_and(p);
    out[n * 6 + t * 3 + 2] = __syncthreads_or(p);
}

// Atomics from every thread of every block. vals[i] is thread i's value (any int).
// acc: [0] int add, [1] int max, [2] int min, [3] CAS-increment counter, [4] exch target,
// [5] and, [6] or, [7] xor; u: unsigned add; ull: u64 add; f: float add; d: double add;
// order: per-thread ticket from atomicAdd (each 0..n-1 exactly once).
extern "C" __global__ void atomics_probe(const int* vals, int* acc, unsigned* u, unsigned long long* ull, float* f,
                                         double* d, int* order, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int v = vals[i];
    atomicAdd(&acc[0], v);
    atomicMax(&acc[1], v);
    atomicMin(&acc[2], v);
    int old = acc[3];
    for (;;)
    {
        int seen = atomicCAS(&acc[3], old, old + 1);
        if (seen == old) break;
        old = seen;
    }
    atomicExch(&acc[4], i);
    atomicAnd(&acc[5], v | 0x0F0F0000);
    atomicOr(&acc[6], v);
    atomicXor(&acc[7], v);
    atomicAdd(u, (unsigned)v);
    atomicAdd(ull, (unsigned long long)(unsigned)v << 20);
    atomicAdd(f, 1.0f);
    atomicAdd(d, (double)v * 0.5);
    order[atomicAdd(&acc[8], 1)] = i;
}

// Dynamic shared memory: the block reverses its slice through dynamic smem of blockDim.x floats,
// and a second pass checks the block's buffer is private (stores block id, syncs, reads back).
extern "C" __global__ void dyn_smem_reverse(const float* x, float* y, int* clash)
{
    SELFTEST_DYNAMIC_SMEM(float, s)
    int t = threadIdx.x, n = blockDim.x;
    const float* xb = x + (long long)blockIdx.x * n;
    s[t] = xb[t];
    __syncthreads();
    y[(long long)blockIdx.x * n + t] = s[n - 1 - t];
    __syncthreads();
    s[t] = (float)blockIdx.x;
    __syncthreads();
    for (int k = 0; k < 200; k++)
        if (s[(t + k) % n] != (float)blockIdx.x) atomicAdd(clash, 1);
}

// Deliberately wrong: half the block returns before a barrier the other half waits at.
extern "C" __global__ void deadlock_early_return(float* out)
{
    if (threadIdx.x >= blockDim.x / 2) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

// Deliberately wrong: lane 0 waits in a full-warp shuffle while the other lanes wait at a barrier.
extern "C" __global__ void deadlock_warp(float* out)
{
    float v = 1.0f;
    if (threadIdx.x == 0) v = __shfl_sync(0xffffffffu, v, 1);
    __syncthreads();
    out[threadIdx.x] = v;
}

// Math intrinsics: out[i*NF + k] = f_k(x[i]).
#define SELFTEST_NF 16
extern "C" __global__ void math_probe(const float* x, float* out, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    float* o = out + (long long)i * SELFTEST_NF;
    o[0] = expf(v);
    o[1] = __expf(v);
    o[2] = logf(fabsf(v) + 1.0f);
    o[3] = erff(v);
    o[4] = rsqrtf(fabsf(v) + 0.5f);
    o[5] = sqrtf(fabsf(v));
    o[6] = fmaxf(v, 0.25f);
    o[7] = fminf(v, 0.25f);
    o[8] = tanhf(v);
    o[9] = fabsf(v);
    o[10] = __fdividef(v, 3.0f);
    o[11] = __uint_as_float(__float_as_uint(v) ^ 0x80000000u);
    o[12] = (float)__float2int_rn(v * 10.0f);
    o[13] = (float)min(__float2int_rz(v * 10.0f), 7);
    o[14] = max(v, -0.5f);
    o[15] = __ldg(&x[i]) * 2.0f;
}

// Warp reductions of sm_80 (__reduce_*_sync) and __activemask: out[warp*4 + k].
extern "C" __global__ void reduce_probe(const int* x, int* out)
{
    int t = threadIdx.x;
    int v = x[t];
    int w = t >> 5;
    int s = __reduce_add_sync(0xffffffffu, v);
    int mn = __reduce_min_sync(0xffffffffu, v);
    int mx = __reduce_max_sync(0xffffffffu, v);
    unsigned am = __activemask();
    if ((t & 31) == 0) { out[w * 4] = s; out[w * 4 + 1] = mn; out[w * 4 + 2] = mx; out[w * 4 + 3] = (int)am; }
}

// A scalar __shared__ written by one thread and read by all after a barrier, round after round
// (catches a compiler keeping shared memory in registers across __syncthreads). out[r*n + t] = x[r].
extern "C" __global__ void shared_scalar_broadcast(const int* x, int* out, int rounds)
{
    __shared__ int value;
    int t = threadIdx.x, n = blockDim.x;
    for (int r = 0; r < rounds; r++)
    {
        if (t == (r * 7) % n) value = x[r];
        __syncthreads();
        out[r * n + t] = value;
        __syncthreads();
    }
}

// Deliberately wrong: reads a neighbour's shared-memory slot without a barrier after the writes.
// y[t] = x[(t+1) % n] only if thread t+1 happened to run first.
extern "C" __global__ void missing_barrier(const float* x, float* y)
{
    SELFTEST_DYNAMIC_SMEM(float, s)
    int t = threadIdx.x, n = blockDim.x;
    s[t] = x[t];
    y[t] = s[(t + 1) % n];
}
