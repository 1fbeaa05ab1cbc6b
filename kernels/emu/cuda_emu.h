// cuda_emu.h — an emulated GPU for CUDA C kernels, so CI can run the real kernels/*.cu without one.
//
// g++ force-includes this header before a kernel file:
//     g++ -std=c++17 -O2 -shared -fPIC -pthread -DFIBER_EMULATION -include kernels/emu/cuda_emu.h x.cu
// and the same source that NVRTC compiles for the GPU becomes a shared library. EmuCompiler.cs adds
// one C entry point per kernel, `int fiber_emu_launch_NAME(const emu_launch*, void** args)`, that
// calls fiber_emu::launch(NAME, cfg, args, "NAME") below and returns 0 or 1 (message in cfg->err).
// Platform: x86-64 Linux/glibc (the fiber context switch is x86-64 assembly).
//
// Model
//   * A launch runs its blocks on a pool of OS threads (the CPUs this process may use, or FIBER_EMU_WORKERS).
//     A worker runs one block at a time; the block's threads are user-mode fibers on that worker,
//     under one cooperative scheduler: a thread runs until it reaches __syncthreads, a warp
//     collective or its end, then the next runnable thread runs (see the resume order below).
//   * `__shared__` is `static thread_local`: one worker runs one block at a time, so a worker's
//     thread-local copy is exactly the running block's shared memory. Nothing is zeroed between
//     blocks (as on the GPU). Dynamic shared memory (emu_dynamic_smem) is filled with 0xFF bytes
//     before each block (NaN as f32 and bf16), so reads of never-written shared memory show up.
//   * __syncthreads is a real barrier of all the block's threads. A barrier that can never complete
//     because some threads exited (early `return` before a __syncthreads — undefined behaviour in
//     CUDA) is reported as an error, as is every other deadlock (threads stuck in a barrier or warp
//     collective with nobody left to run).
//   * Warp collectives (shuffles, votes, __syncwarp, reduce, and the ldmatrix/mma of ptx.cuh) are
//     exact: every non-exited lane named in the mask deposits its value, then all read. A lane that
//     calls a collective whose mask omits itself, or lanes that meet in different collectives with
//     the same mask, is an error.
//   * Atomics are real host atomics, so they are atomic across blocks running on different workers.
//   * cp.async (ptx.cuh) is deferred: copies are performed when a cp.async.wait_group that covers
//     them runs (or the thread ends), so reading the destination before waiting sees stale data.
//   * The order in which runnable threads resume (at the start and after each barrier or warp
//     collective) is thread-index order by default; a launch can ask for reverse or pseudo-random
//     order instead (EmulatedDevice.Schedule / FIBER_EMU_SCHEDULE). Running a kernel's tests in more
//     than one order exposes most missing __syncthreads/__syncwarp bugs: in forward order a thread
//     runs ahead of all higher-indexed threads, in reverse order behind them.
//   * Launch checks: block dims (x,y <= 1024, z <= 64, x*y*z <= 1024), grid dims, and the dynamic
//     shared memory size (<= the kernel's configured maximum and <= 227 KB) fail the launch with a
//     message the C# side throws.
//
// NOT modelled
//   * timing of any kind (clock(), clock64(), __nanosleep are absent and fail to compile), occupancy,
//     register limits, __launch_bounds__ (ignored), static shared-memory limits;
//   * the memory model: no lack of ordering and no races between blocks beyond what the host CPU
//     does; within a block, fibers are sequential, so a missing __syncthreads between a write and
//     another thread's read is only caught if the resume order exposes it (a thread runs until its
//     next barrier/collective, so running in forward and in reverse order shows most such bugs);
//   * warp-synchronous code that relies on lockstep execution without __syncwarp (pre-Volta idiom);
//   * preemption: threads are cooperative, so spinning on a value another thread of the same block
//     is to write (without a barrier or collective in the loop) never ends;
//   * the exact warp scheduling order, independent thread scheduling, divergence: __activemask()
//     waits for all non-exited lanes of the warp and returns them, even inside a divergent branch
//     (where other lanes waiting in a different warp collective make it an error);
//   * reading a shuffle source lane that exited, does not exist or is outside the mask (undefined on
//     the GPU) returns all-ones bits: NaN as float/double, -1 as an integer;
//   * async-copy overlap, L1/L2 cache hints (__ldg/__ldcs... are plain loads), texture/surface memory,
//     cooperative groups, grid sync, dynamic parallelism, `extern __shared__` (use FIBER_DYNAMIC_SMEM),
//     __CUDA_ARCH__ (not defined: device-only code paths must be guarded by FIBER_EMULATION);
//   * out-of-bounds accesses are not checked: they corrupt memory or crash the host process (a SIGSEGV
//     handler first prints the kernel, block and thread, or "fiber stack overflow" for a hit on a
//     fiber's guard page — FIBER_EMU_STACK_KB, default 128 KB per thread; FIBER_EMU_NO_CRASH_HANDLER=1
//     leaves signal handlers alone).
//   * Anything not declared here fails to compile — there is deliberately no catch-all.
//
// Dynamic shared memory macro (kernels/common.cuh):
//   CUDA:      #define FIBER_DYNAMIC_SMEM(type, name) extern __shared__ __align__(16) unsigned char name##_raw[]; type* name = (type*)name##_raw;
//   emulation: #define FIBER_DYNAMIC_SMEM(type, name) type* name = (type*)emu_dynamic_smem();
#pragma once
#ifndef FIBER_CUDA_EMU_H
#define FIBER_CUDA_EMU_H

#ifndef FIBER_EMULATION
#define FIBER_EMULATION 1
#endif

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "cuda_emu.h needs C++17 (g++ -std=c++17)"
#endif

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#include <utility>

// ------------------------------------------------------------------------------------------------
// C ABI shared with EmulatedDevice.cs (keep the layouts identical).
// ------------------------------------------------------------------------------------------------
extern "C" {
struct emu_launch
{
    unsigned grid[3];
    unsigned block[3];
    unsigned long long dyn_smem;      // bytes requested by this launch
    unsigned long long max_dyn_smem;  // the kernel's configured maximum (cudaFuncAttributeMaxDynamicSharedMemorySize)
    char* err;                        // message buffer for a failed launch
    unsigned long long err_cap;
    unsigned schedule;                // order in which runnable threads resume: 0 forward, 1 reverse, 2 random
    unsigned seed;                    // for the random order (mixed with the block index)
};
}

// ------------------------------------------------------------------------------------------------
// Qualifiers
// ------------------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __shared__ static thread_local
// __restrict__ is native to g++.

// ------------------------------------------------------------------------------------------------
// Built-in vector types
// ------------------------------------------------------------------------------------------------
#define FIBER_EMU_VEC(T, N2, N3, N4, A2, A4)                                                        \
    struct __attribute__((aligned(A2))) N2 { T x, y; };                                             \
    struct N3 { T x, y, z; };                                                                       \
    struct __attribute__((aligned(A4))) N4 { T x, y, z, w; };                                       \
    static inline N2 make_##N2(T x, T y) { N2 r; r.x = x; r.y = y; return r; }                      \
    static inline N3 make_##N3(T x, T y, T z) { N3 r; r.x = x; r.y = y; r.z = z; return r; }        \
    static inline N4 make_##N4(T x, T y, T z, T w) { N4 r; r.x = x; r.y = y; r.z = z; r.w = w; return r; }
FIBER_EMU_VEC(float, float2, float3, float4, 8, 16)
FIBER_EMU_VEC(int, int2, int3, int4, 8, 16)
FIBER_EMU_VEC(unsigned int, uint2, uint3, uint4, 8, 16)
FIBER_EMU_VEC(short, short2, short3, short4, 4, 8)
FIBER_EMU_VEC(unsigned short, ushort2, ushort3, ushort4, 4, 8)
FIBER_EMU_VEC(signed char, char2, char3, char4, 2, 4)
FIBER_EMU_VEC(unsigned char, uchar2, uchar3, uchar4, 2, 4)
FIBER_EMU_VEC(double, double2, double3, double4, 16, 16)
FIBER_EMU_VEC(long long, longlong2, longlong3, longlong4, 16, 16)
FIBER_EMU_VEC(unsigned long long, ulonglong2, ulonglong3, ulonglong4, 16, 16)
#undef FIBER_EMU_VEC

struct dim3
{
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

#define warpSize 32

// ------------------------------------------------------------------------------------------------
// Runtime: fibers, the per-block scheduler, the worker pool
// ------------------------------------------------------------------------------------------------
namespace fiber_emu {

enum : int { RUNNABLE = 0, AT_BARRIER = 1, AT_WARP = 2, DONE = 3 };
enum : int { BAR_PLAIN = 0, BAR_COUNT = 1, BAR_AND = 2, BAR_OR = 3 };

// A warp collective's completion: runs once, on the scheduler, when every participant has arrived.
// data[lane] is that lane's deposit (null for lanes not taking part); returns an error or null.
typedef const char* (*CollectiveFn)(void* const* data, unsigned participants);

struct AsyncCopy
{
    void* dst;
    const void* src;
    unsigned bytes, src_bytes;
    unsigned long long group;
};
enum { MAX_ASYNC_COPIES = 128, RUNQ_CAP = 1024 };

struct Fiber
{
    void* sp;
    uint3 tid;
    unsigned linear, lane, warp;
    int state;
    int bar_op, bar_value;
    unsigned coll_mask;
    CollectiveFn coll_fn;
    void* coll_data;
    const char* coll_name;
    unsigned long long async_group;  // number of cp.async.commit_group so far
    int n_async;
    AsyncCopy* async;                // MAX_ASYNC_COPIES slots (kept out of line: Fiber stays small)
};

struct Job
{
    void (*run)(void* ctx);
    void* ctx;
    dim3 grid, block;
    unsigned long long dyn_smem;
    unsigned long long nblocks;
    unsigned schedule, seed;
    const char* name;
    unsigned long long next;  // atomic
    int failed;               // atomic
    char err[1024];
};

struct Worker
{
    void* sched_sp;
    Fiber* cur;
    Fiber* fibers;
    unsigned* runq;                  // ring of RUNQ_CAP fiber indices; a fiber is queued at most once
    unsigned qhead, qtail, n;
    unsigned bar_arrived;
    unsigned warp_waiting[32], warp_done[32];  // lanes in a warp collective / exited, per warp
    unsigned* scratch;                         // RUNQ_CAP fiber indices
    unsigned schedule;
    unsigned long long rng;
    char* stacks;
    size_t stack_size;
    unsigned guarded;                          // fibers [0, guarded) have their guard page
    unsigned char* dyn;
    size_t dyn_cap;
    uint3 block_idx;
    dim3 block_dim, grid_dim;
    const Job* job;
    int failed;
    char fail_msg[768];
};

static thread_local Worker* t_worker;

static inline Worker* worker() { return t_worker; }
static inline Fiber* current() { return t_worker->cur; }

}  // namespace fiber_emu

#define threadIdx (::fiber_emu::t_worker->cur->tid)
#define blockIdx (::fiber_emu::t_worker->block_idx)
#define blockDim (::fiber_emu::t_worker->block_dim)
#define gridDim (::fiber_emu::t_worker->grid_dim)

extern "C" void fiber_emu_switch(void** save_sp, void* new_sp) __attribute__((visibility("hidden")));
extern "C" void fiber_emu_entry() __attribute__((visibility("hidden")));
extern "C" void fiber_emu_fiber_main(fiber_emu::Fiber* f) __attribute__((visibility("hidden"), noreturn, used));

#if defined(__x86_64__)
// Saves the callee-saved registers on the current stack, stores the stack pointer in *save_sp, and
// resumes the context whose stack pointer is new_sp. MXCSR and the x87 control word are not switched:
// every fiber runs with the worker's (kernels cannot change rounding modes on the GPU either).
__asm__(
    ".text\n"
    ".globl fiber_emu_switch\n"
    ".hidden fiber_emu_switch\n"
    ".type fiber_emu_switch,@function\n"
    "fiber_emu_switch:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size fiber_emu_switch,.-fiber_emu_switch\n"
    ".globl fiber_emu_entry\n"
    ".hidden fiber_emu_entry\n"
    ".type fiber_emu_entry,@function\n"
    "fiber_emu_entry:\n"
    "  movq %r12, %rdi\n"
    "  call fiber_emu_fiber_main@PLT\n"
    "  ud2\n"
    ".size fiber_emu_entry,.-fiber_emu_entry\n");
#else
#error "cuda_emu.h: the fiber context switch is written for x86-64 only"
#endif

namespace fiber_emu {

// A fresh fiber's stack looks like a suspended fiber_emu_switch whose return address is fiber_emu_entry
// and whose saved r12 is the fiber. After the pops and the ret, rsp = top - 16 is 16-byte aligned, so
// the call in fiber_emu_entry gives fiber_emu_fiber_main the ABI's entry alignment.
static inline void init_fiber_stack(Fiber* f, char* stack_top)
{
    unsigned long long top = ((unsigned long long)stack_top) & ~15ull;
    unsigned long long* sp = (unsigned long long*)(top - 16 - 56);
    sp[0] = 0;                          // r15
    sp[1] = 0;                          // r14
    sp[2] = 0;                          // r13
    sp[3] = (unsigned long long)f;      // r12
    sp[4] = 0;                          // rbx
    sp[5] = 0;                          // rbp
    sp[6] = (unsigned long long)&fiber_emu_entry;
    f->sp = sp;
}

// Back to the scheduler; returns when this fiber is scheduled again.
static inline void suspend()
{
    Worker* w = t_worker;
    Fiber* f = w->cur;
    __asm__ volatile("" ::: "memory");
    fiber_emu_switch(&f->sp, w->sched_sp);
    __asm__ volatile("" ::: "memory");
}

// Fails the whole launch from inside a thread; the thread never runs again.
__attribute__((noreturn, format(printf, 1, 2))) static void fail(const char* fmt, ...)
{
    Worker* w = t_worker;
    Fiber* f = w->cur;
    va_list ap;
    va_start(ap, fmt);
    int k = snprintf(w->fail_msg, sizeof w->fail_msg, "thread (%u,%u,%u) of block (%u,%u,%u): ", f->tid.x, f->tid.y,
                     f->tid.z, w->block_idx.x, w->block_idx.y, w->block_idx.z);
    if (k > 0 && (size_t)k < sizeof w->fail_msg) vsnprintf(w->fail_msg + k, sizeof w->fail_msg - k, fmt, ap);
    va_end(ap);
    w->failed = 1;
    fiber_emu_switch(&f->sp, w->sched_sp);
    __builtin_trap();
}

static inline void run_async_copy(const AsyncCopy& c)
{
    unsigned n = c.src_bytes < c.bytes ? c.src_bytes : c.bytes;
    if (n) memcpy(c.dst, c.src, n);
    if (n < c.bytes) memset((char*)c.dst + n, 0, c.bytes - n);
}

// Performs (in issue order) the pending copies of groups older than `keep_newest` committed groups.
static inline void async_wait(Fiber* f, unsigned long long keep_newest)
{
    unsigned long long limit = f->async_group >= keep_newest ? f->async_group - keep_newest : 0;
    int k = 0;
    for (int i = 0; i < f->n_async; i++)
    {
        if (f->async[i].group < limit) run_async_copy(f->async[i]);
        else f->async[k++] = f->async[i];
    }
    f->n_async = k;
}

static inline void async_copy(void* dst, const void* src, unsigned bytes, unsigned src_bytes)
{
    Fiber* f = current();
    if (((unsigned long long)dst | (unsigned long long)src) % bytes)
        fail("cp.async of %u bytes needs %u-byte aligned addresses (dst %p, src %p)", bytes, bytes, dst, src);
    if (f->n_async == MAX_ASYNC_COPIES)
        fail("more than %d cp.async copies outstanding in one thread (missing cp.async.wait_group?)", MAX_ASYNC_COPIES);
    AsyncCopy& c = f->async[f->n_async++];
    c.dst = dst;
    c.src = src;
    c.bytes = bytes;
    c.src_bytes = src_bytes;
    c.group = f->async_group;
}
static inline void async_commit() { current()->async_group++; }

}  // namespace fiber_emu

extern "C" __attribute__((visibility("hidden"), noreturn, used)) void fiber_emu_fiber_main(fiber_emu::Fiber* f)
{
    fiber_emu::Worker* w = fiber_emu::t_worker;
    w->job->run(w->job->ctx);
    f = fiber_emu::t_worker->cur;
    fiber_emu::async_wait(f, 0);
    fiber_emu::async_wait(f, 0);  // uncommitted copies too: the thread is ending
    for (int i = 0; i < f->n_async; i++) fiber_emu::run_async_copy(f->async[i]);
    f->n_async = 0;
    f->state = fiber_emu::DONE;
    fiber_emu_switch(&f->sp, w->sched_sp);
    __builtin_trap();
}

namespace fiber_emu {

// ---- warp collectives ----------------------------------------------------------------------------

// Blocks the calling lane until every non-exited lane named in `mask` has arrived at a collective
// with the same mask; then `fn` runs once over all deposits and every participant continues.
static inline void warp_collective(unsigned mask, CollectiveFn fn, void* data, const char* name)
{
    Fiber* f = current();
    if (!((mask >> f->lane) & 1u))
        fail("%s with mask 0x%08x that does not include the calling lane %u", name, mask, f->lane);
    f->coll_mask = mask;
    f->coll_fn = fn;
    f->coll_data = data;
    f->coll_name = name;
    f->state = AT_WARP;
    suspend();
}

static inline void push_runnable(Worker* w, Fiber* f)
{
    f->state = RUNNABLE;
    w->runq[w->qtail & (RUNQ_CAP - 1)] = f->linear;
    w->qtail++;
}

enum : unsigned { SCHEDULE_FORWARD = 0, SCHEDULE_REVERSE = 1, SCHEDULE_RANDOM = 2 };

// Queues the fibers idx[0..k) (given in thread-index order) in the launch's schedule order.
static void push_ordered(Worker* w, unsigned* idx, unsigned k)
{
    if (w->schedule == SCHEDULE_REVERSE)
    {
        for (unsigned i = k; i-- > 0;) push_runnable(w, &w->fibers[idx[i]]);
        return;
    }
    if (w->schedule == SCHEDULE_RANDOM)
        for (unsigned i = k; i > 1; i--)
        {
            w->rng ^= w->rng << 13;
            w->rng ^= w->rng >> 7;
            w->rng ^= w->rng << 17;
            unsigned j = (unsigned)(w->rng % i), t = idx[i - 1];
            idx[i - 1] = idx[j];
            idx[j] = t;
        }
    for (unsigned i = 0; i < k; i++) push_runnable(w, &w->fibers[idx[i]]);
}

// Completes every collective of warp `warp` whose participants have all arrived. Returns false on error.
// `arrived` is the fiber that just arrived at a collective, or null when a lane just exited.
static bool try_complete_warp(Worker* w, unsigned warp, Fiber* arrived)
{
    unsigned base = warp * 32, count = w->n - base < 32 ? w->n - base : 32;
    unsigned exists = count == 32 ? 0xffffffffu : ((1u << count) - 1u);
    unsigned done = w->warp_done[warp], waiting = w->warp_waiting[warp];
    // Fast path: some lane the new arrival needs has not reached any collective yet.
    if (arrived && ((arrived->coll_mask & exists & ~done) & ~waiting)) return true;
    if (!waiting) return true;
    while (waiting)
    {
        unsigned first = __builtin_ctz(waiting);
        unsigned mask = w->fibers[base + first].coll_mask;
        unsigned same = 0;
        for (unsigned l = 0; l < count; l++)
            if (((waiting >> l) & 1u) && w->fibers[base + l].coll_mask == mask) same |= 1u << l;
        waiting &= ~same;
        unsigned need = mask & exists & ~done;
        if ((need & ~same) != 0) continue;  // someone named in the mask has not arrived yet
        void* data[32];
        CollectiveFn fn = w->fibers[base + first].coll_fn;
        for (unsigned l = 0; l < 32; l++) data[l] = nullptr;
        for (unsigned l = 0; l < count; l++)
        {
            if (!((same >> l) & 1u)) continue;
            Fiber* g = &w->fibers[base + l];
            if (g->coll_fn != fn)
            {
                snprintf(w->fail_msg, sizeof w->fail_msg,
                         "block (%u,%u,%u) warp %u: lanes met in different warp collectives with mask 0x%08x (lane %u in %s, lane %u in %s)",
                         w->block_idx.x, w->block_idx.y, w->block_idx.z, warp, mask, first,
                         w->fibers[base + first].coll_name, l, g->coll_name);
                return false;
            }
            data[l] = g->coll_data;
        }
        const char* err = fn(data, same);
        if (err)
        {
            snprintf(w->fail_msg, sizeof w->fail_msg, "block (%u,%u,%u) warp %u: %s: %s", w->block_idx.x,
                     w->block_idx.y, w->block_idx.z, warp, w->fibers[base + first].coll_name, err);
            return false;
        }
        unsigned idx[32], k = 0;
        for (unsigned l = 0; l < count; l++)
            if ((same >> l) & 1u) idx[k++] = base + l;
        push_ordered(w, idx, k);
        w->warp_waiting[warp] &= ~same;
    }
    return true;
}

static void release_barrier(Worker* w)
{
    int count = 0, all = 1, any = 0;
    for (unsigned i = 0; i < w->n; i++)
    {
        int v = w->fibers[i].bar_value;
        count += v != 0;
        all &= v != 0;
        any |= v != 0;
    }
    for (unsigned i = 0; i < w->n; i++)
    {
        Fiber* f = &w->fibers[i];
        f->bar_value = f->bar_op == BAR_COUNT ? count : f->bar_op == BAR_AND ? all : f->bar_op == BAR_OR ? any : 0;
        w->scratch[i] = i;
    }
    push_ordered(w, w->scratch, w->n);
    w->bar_arrived = 0;
}

static void describe_deadlock(Worker* w)
{
    unsigned bar = 0, warp = 0, done = 0;
    int first_warp_lane = -1;
    for (unsigned i = 0; i < w->n; i++)
    {
        int s = w->fibers[i].state;
        bar += s == AT_BARRIER;
        done += s == DONE;
        if (s == AT_WARP)
        {
            if (first_warp_lane < 0) first_warp_lane = (int)i;
            warp++;
        }
    }
    int k = snprintf(w->fail_msg, sizeof w->fail_msg, "deadlock in block (%u,%u,%u) of %u threads: ", w->block_idx.x,
                     w->block_idx.y, w->block_idx.z, w->n);
    char* p = w->fail_msg + k;
    size_t cap = sizeof w->fail_msg - k;
    if (bar && done && !warp)
        snprintf(p, cap, "__syncthreads reached by %u threads while %u threads exited (a barrier after an early return or inside a branch not all threads take)", bar, done);
    else if (warp)
    {
        Fiber* f = &w->fibers[first_warp_lane];
        snprintf(p, cap, "%u threads wait at __syncthreads, %u in warp collectives (e.g. thread %u in %s with mask 0x%08x), %u exited", bar, warp,
                 f->linear, f->coll_name, f->coll_mask, done);
    }
    else
        snprintf(p, cap, "%u threads wait at __syncthreads, %u exited", bar, done);
}

static void ensure_worker_memory(Worker* w, unsigned nthreads, unsigned long long dyn)
{
    if (!w->fibers)
    {
        w->fibers = (Fiber*)calloc(1024, sizeof(Fiber));
        w->runq = (unsigned*)calloc(RUNQ_CAP, sizeof(unsigned));
        w->scratch = (unsigned*)calloc(RUNQ_CAP, sizeof(unsigned));
        AsyncCopy* copies = (AsyncCopy*)calloc((size_t)1024 * MAX_ASYNC_COPIES, sizeof(AsyncCopy));
        for (unsigned i = 0; i < 1024; i++) w->fibers[i].async = copies + (size_t)i * MAX_ASYNC_COPIES;
        size_t kb = 128;
        if (const char* s = getenv("FIBER_EMU_STACK_KB")) { long v = atol(s); if (v >= 16) kb = (size_t)v; }
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        w->stack_size = (kb * 1024 + page - 1) / page * page + page;  // + a guard page at the bottom
        void* m = mmap(nullptr, w->stack_size * 1024, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) { fprintf(stderr, "cuda_emu: cannot map fiber stacks\n"); abort(); }
        w->stacks = (char*)m;
        w->guarded = 0;
    }
    // Guard pages only for the fibers a launch uses: each one splits the mapping, and every kernel library has its
    // own workers, so guarding all 1024 up front ran the test process into vm.max_map_count (65530).
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (; w->guarded < nthreads; w->guarded++) mprotect(w->stacks + (size_t)w->guarded * w->stack_size, page, PROT_NONE);
    if (dyn > w->dyn_cap)
    {
        free(w->dyn);
        size_t cap = (dyn + 4095) & ~(size_t)4095;
        w->dyn = (unsigned char*)aligned_alloc(128, cap);
        w->dyn_cap = cap;
    }
}

// Runs block `b` of the current job on this worker. Returns false (with w->fail_msg) on error.
static bool run_block(Worker* w, unsigned long long b)
{
    const Job* job = w->job;
    unsigned n = job->block.x * job->block.y * job->block.z;
    ensure_worker_memory(w, n, job->dyn_smem);
    w->block_dim = job->block;
    w->grid_dim = job->grid;
    w->block_idx.x = (unsigned)(b % job->grid.x);
    w->block_idx.y = (unsigned)((b / job->grid.x) % job->grid.y);
    w->block_idx.z = (unsigned)(b / ((unsigned long long)job->grid.x * job->grid.y));
    if (job->dyn_smem) memset(w->dyn, 0xFF, job->dyn_smem);
    w->n = n;
    w->qhead = w->qtail = 0;
    w->bar_arrived = 0;
    w->failed = 0;
    memset(w->warp_waiting, 0, sizeof w->warp_waiting);
    memset(w->warp_done, 0, sizeof w->warp_done);
    w->schedule = job->schedule;
    w->rng = (job->seed + 1) * 0x9E3779B97F4A7C15ull ^ (b + 1) * 0xBF58476D1CE4E5B9ull;
    if (!w->rng) w->rng = 1;
    for (unsigned i = 0; i < n; i++)
    {
        Fiber* f = &w->fibers[i];
        f->linear = i;
        f->tid.x = i % job->block.x;
        f->tid.y = (i / job->block.x) % job->block.y;
        f->tid.z = i / (job->block.x * job->block.y);
        f->lane = i & 31;
        f->warp = i >> 5;
        f->bar_op = BAR_PLAIN;
        f->bar_value = 0;
        f->async_group = 0;
        f->n_async = 0;
        // Staggered tops keep the fibers' hot stack frames from all landing in the same cache sets.
        init_fiber_stack(f, w->stacks + (size_t)(i + 1) * w->stack_size - (i & 31) * 128);
        w->scratch[i] = i;
    }
    push_ordered(w, w->scratch, n);
    unsigned done = 0;
    while (w->qhead != w->qtail)
    {
        Fiber* f = &w->fibers[w->runq[w->qhead & (RUNQ_CAP - 1)]];
        w->qhead++;
        w->cur = f;
        fiber_emu_switch(&w->sched_sp, f->sp);
        w->cur = nullptr;
        if (w->failed) return false;
        switch (f->state)
        {
        case AT_BARRIER:
            if (++w->bar_arrived == n) release_barrier(w);
            break;
        case AT_WARP:
            w->warp_waiting[f->warp] |= 1u << f->lane;
            if (!try_complete_warp(w, f->warp, f)) return false;
            break;
        case DONE:
            done++;
            w->warp_done[f->warp] |= 1u << f->lane;
            if (!try_complete_warp(w, f->warp, nullptr)) return false;
            break;
        default:
            push_runnable(w, f);
            break;
        }
    }
    if (done != n)
    {
        describe_deadlock(w);
        return false;
    }
    return true;
}

// ---- the worker pool -----------------------------------------------------------------------------

struct Pool
{
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    pthread_mutex_t launch_mu;
    Job* job;
    unsigned long long generation;
    unsigned nworkers, busy;
    pthread_t threads[256];
};

static Pool* g_pool;
static pthread_once_t g_pool_once = PTHREAD_ONCE_INIT;

static void* worker_main(void* arg)
{
    Pool* p = (Pool*)arg;
    Worker* w = (Worker*)calloc(1, sizeof(Worker));
    t_worker = w;
    // The crash reporter must run even when a fiber overflowed its stack into the guard page.
    stack_t alt;
    alt.ss_size = 64 * 1024;
    alt.ss_sp = malloc(alt.ss_size);
    alt.ss_flags = 0;
    if (alt.ss_sp) sigaltstack(&alt, nullptr);
    unsigned long long seen = 0;
    for (;;)
    {
        pthread_mutex_lock(&p->mu);
        while (p->generation == seen) pthread_cond_wait(&p->work_cv, &p->mu);
        seen = p->generation;
        Job* job = p->job;
        pthread_mutex_unlock(&p->mu);

        w->job = job;
        for (;;)
        {
            if (__atomic_load_n(&job->failed, __ATOMIC_ACQUIRE)) break;
            unsigned long long b = __atomic_fetch_add(&job->next, 1ull, __ATOMIC_RELAXED);
            if (b >= job->nblocks) break;
            if (!run_block(w, b))
            {
                int expected = 0;
                if (__atomic_compare_exchange_n(&job->failed, &expected, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                    snprintf(job->err, sizeof job->err, "%s", w->fail_msg);
                break;
            }
        }
        w->job = nullptr;

        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0) pthread_cond_signal(&p->done_cv);
        pthread_mutex_unlock(&p->mu);
    }
    return nullptr;
}

// ---- crash reports -------------------------------------------------------------------------------
// A kernel's out-of-bounds access or a fiber stack overflow kills the host process, as a GPU fault
// would fail the context. Before that, say which kernel, block and thread it was. Faults on threads
// that are not this library's workers (e.g. the .NET runtime's own null-reference faults) go straight
// to the previously installed handler, untouched.
static struct sigaction g_prev_segv, g_prev_bus;

static bool on_worker_thread()
{
    Pool* p = __atomic_load_n(&g_pool, __ATOMIC_ACQUIRE);
    if (!p) return false;
    pthread_t self = pthread_self();
    for (unsigned i = 0; i < p->nworkers; i++)
        if (pthread_equal(p->threads[i], self)) return true;
    return false;
}

static void chain_signal(int sig, siginfo_t* si, void* uc)
{
    struct sigaction* prev = sig == SIGBUS ? &g_prev_bus : &g_prev_segv;
    if ((prev->sa_flags & SA_SIGINFO) && prev->sa_sigaction) { prev->sa_sigaction(sig, si, uc); return; }
    if (!(prev->sa_flags & SA_SIGINFO) && prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) { prev->sa_handler(sig); return; }
    signal(sig, SIG_DFL);  // returning re-runs the faulting instruction, which now terminates the process
}

static void crash_handler(int sig, siginfo_t* si, void* uc)
{
    if (on_worker_thread())
    {
        static char msg[1024];
        Worker* w = t_worker;
        const Job* job = w ? w->job : nullptr;
        Fiber* f = w ? w->cur : nullptr;
        const char* what = "invalid memory access";
        if (w && w->stacks && f)
        {
            size_t page = (size_t)sysconf(_SC_PAGESIZE);
            char* a = (char*)si->si_addr;
            for (unsigned i = 0; i < 1024; i++)
            {
                char* guard = w->stacks + (size_t)i * w->stack_size;
                if (a >= guard && a < guard + page) { what = "fiber stack overflow (raise FIBER_EMU_STACK_KB)"; break; }
            }
        }
        int k = snprintf(msg, sizeof msg, "\ncuda_emu: %s: %s at address %p in kernel %s", sig == SIGBUS ? "SIGBUS" : "SIGSEGV", what,
                         si->si_addr, job && job->name ? job->name : "?");
        if (f && k > 0 && (size_t)k < sizeof msg)
            k += snprintf(msg + k, sizeof msg - k, ", block (%u,%u,%u), thread (%u,%u,%u)", w->block_idx.x, w->block_idx.y,
                          w->block_idx.z, f->tid.x, f->tid.y, f->tid.z);
        if (k > 0 && (size_t)k < sizeof msg - 1) { msg[k++] = '\n'; }
        if (k > 0) { ssize_t r = write(2, msg, (size_t)k < sizeof msg ? (size_t)k : sizeof msg); (void)r; }
    }
    chain_signal(sig, si, uc);
}

static void install_crash_handler()
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = crash_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_prev_segv);
    sigaction(SIGBUS, &sa, &g_prev_bus);
}

// The pool is never torn down: worker threads blocked in pthread_cond_wait are harmless at exit.
static void create_pool()
{
    Pool* p = (Pool*)calloc(1, sizeof(Pool));
    pthread_mutex_init(&p->mu, nullptr);
    pthread_mutex_init(&p->launch_mu, nullptr);
    pthread_cond_init(&p->work_cv, nullptr);
    pthread_cond_init(&p->done_cv, nullptr);
    cpu_set_t cpus;
    long n = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : sysconf(_SC_NPROCESSORS_ONLN);
    if (const char* s = getenv("FIBER_EMU_WORKERS")) n = atol(s);
    if (n < 1) n = 1;
    if (n > 256) n = 256;
    p->nworkers = (unsigned)n;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20);
    for (long i = 0; i < n; i++)
    {
        if (pthread_create(&p->threads[i], &attr, worker_main, p) != 0) { fprintf(stderr, "cuda_emu: pthread_create failed\n"); abort(); }
        pthread_detach(p->threads[i]);
    }
    pthread_attr_destroy(&attr);
    __atomic_store_n(&g_pool, p, __ATOMIC_RELEASE);
    if (!getenv("FIBER_EMU_NO_CRASH_HANDLER")) install_crash_handler();
}

enum : unsigned long long { MAX_DYN_SMEM = 232448 };  // 227 KB, the sm_90 per-block opt-in limit

static int launch_error(const emu_launch* cfg, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static int launch_error(const emu_launch* cfg, const char* fmt, ...)
{
    if (cfg->err && cfg->err_cap)
    {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cfg->err, cfg->err_cap, fmt, ap);
        va_end(ap);
    }
    return 1;
}

static int launch_erased(void (*run)(void*), void* ctx, const emu_launch* cfg, const char* name)
{
    const unsigned* g = cfg->grid;
    const unsigned* b = cfg->block;
    if (!b[0] || !b[1] || !b[2] || b[0] > 1024 || b[1] > 1024 || b[2] > 64 ||
        (unsigned long long)b[0] * b[1] * b[2] > 1024)
        return launch_error(cfg, "invalid block dimensions (%u,%u,%u): each of x,y <= 1024, z <= 64, x*y*z <= 1024 and >= 1",
                            b[0], b[1], b[2]);
    if (!g[0] || !g[1] || !g[2] || g[0] > 2147483647u || g[1] > 65535 || g[2] > 65535)
        return launch_error(cfg, "invalid grid dimensions (%u,%u,%u): x < 2^31, y,z <= 65535, all >= 1", g[0], g[1], g[2]);
    if (cfg->dyn_smem > cfg->max_dyn_smem)
        return launch_error(cfg, "dynamic shared memory of %llu bytes exceeds the kernel's configured maximum of %llu bytes "
                                 "(raise MaxDynamicSharedBytes)", cfg->dyn_smem, cfg->max_dyn_smem);
    if (cfg->dyn_smem > MAX_DYN_SMEM)
        return launch_error(cfg, "dynamic shared memory of %llu bytes exceeds the device limit of %llu bytes", cfg->dyn_smem,
                            (unsigned long long)MAX_DYN_SMEM);

    pthread_once(&g_pool_once, create_pool);
    Pool* p = g_pool;
    Job* job = (Job*)calloc(1, sizeof(Job));
    job->run = run;
    job->ctx = ctx;
    job->grid = dim3(g[0], g[1], g[2]);
    job->block = dim3(b[0], b[1], b[2]);
    job->dyn_smem = cfg->dyn_smem;
    job->nblocks = (unsigned long long)g[0] * g[1] * g[2];
    if (cfg->schedule > SCHEDULE_RANDOM) { free(job); return launch_error(cfg, "unknown schedule order %u", cfg->schedule); }
    job->schedule = cfg->schedule;
    job->seed = cfg->seed;
    job->name = name;

    pthread_mutex_lock(&p->launch_mu);
    pthread_mutex_lock(&p->mu);
    p->job = job;
    p->busy = p->nworkers;
    p->generation++;
    pthread_cond_broadcast(&p->work_cv);
    while (p->busy) pthread_cond_wait(&p->done_cv, &p->mu);
    p->job = nullptr;
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->launch_mu);

    int rc = 0;
    if (job->failed) rc = launch_error(cfg, "%s", job->err);
    free(job);
    return rc;
}

template <class... P> struct KernelCall
{
    void (*fn)(P...);
    void** args;
    template <size_t... I> void call(std::index_sequence<I...>) { fn(*static_cast<P*>(args[I])...); }
    static void run(void* self) { static_cast<KernelCall*>(self)->call(std::index_sequence_for<P...>{}); }
};

// Launches `fn` with the arguments args[i] (pointers to each parameter's value, in order).
template <class... P> static int launch(void (*fn)(P...), const emu_launch* cfg, void** args, const char* name = "kernel")
{
    KernelCall<P...> call{fn, args};
    return launch_erased(&KernelCall<P...>::run, &call, cfg, name);
}

// ---- collectives used by the intrinsics ----------------------------------------------------------

enum : int { SHFL_IDX = 0, SHFL_UP = 1, SHFL_DOWN = 2, SHFL_BFLY = 3 };

struct ShflData
{
    unsigned long long value, out;
    int b, width, mode;
};

// PTX shfl.sync source-lane rules, with c = ((32 - width) << 8) | (mode == up ? 0 : 31) as CUDA's
// __shfl_*_sync pass it.
static const char* shfl_complete(void* const* data, unsigned participants)
{
    for (unsigned lane = 0; lane < 32; lane++)
    {
        ShflData* d = (ShflData*)data[lane];
        if (!d) continue;
        unsigned segmask = (unsigned)(32 - d->width) & 31u;
        unsigned clamp = d->mode == SHFL_UP ? 0u : 31u;
        int minLane = (int)(lane & segmask);
        int maxLane = (int)((lane & segmask) | (clamp & ~segmask));
        int j;
        bool ok;
        switch (d->mode)
        {
        case SHFL_UP: j = (int)lane - d->b; ok = j >= maxLane; break;
        case SHFL_DOWN: j = (int)lane + d->b; ok = j <= maxLane; break;
        case SHFL_BFLY: j = (int)(lane ^ (unsigned)d->b); ok = j <= maxLane; break;
        default: j = minLane | (int)((unsigned)d->b & ~segmask & 31u); ok = j <= maxLane; break;
        }
        if (!ok || j < 0 || j > 31) j = (int)lane;
        // A source lane that exited, does not exist or is outside the mask has no defined value on
        // the GPU; all-ones bits (NaN as float/double, -1 as an integer) make a use of it visible.
        d->out = ((participants >> j) & 1u) ? ((ShflData*)data[j])->value : ~0ull;
    }
    return nullptr;
}

template <class T> static inline T shfl(unsigned mask, T v, int b, int width, int mode, const char* name)
{
    static_assert(sizeof(T) <= 8, "shuffle payload");
    if (width < 1 || width > 32 || (width & (width - 1))) fail("%s with width %d (must be a power of two <= 32)", name, width);
    ShflData d;
    d.value = 0;
    memcpy(&d.value, &v, sizeof(T));
    d.b = b;
    d.width = width;
    d.mode = mode;
    warp_collective(mask, shfl_complete, &d, name);
    T r;
    memcpy(&r, &d.out, sizeof(T));
    return r;
}

struct VoteData
{
    int pred;
    unsigned ballot, participants;
};
static const char* vote_complete(void* const* data, unsigned participants)
{
    unsigned ballot = 0;
    for (unsigned l = 0; l < 32; l++)
        if (data[l] && ((VoteData*)data[l])->pred) ballot |= 1u << l;
    for (unsigned l = 0; l < 32; l++)
        if (data[l])
        {
            ((VoteData*)data[l])->ballot = ballot;
            ((VoteData*)data[l])->participants = participants;
        }
    return nullptr;
}
static inline VoteData vote(unsigned mask, int pred, const char* name)
{
    VoteData d;
    d.pred = pred;
    warp_collective(mask, vote_complete, &d, name);
    return d;
}

static const char* syncwarp_complete(void* const*, unsigned) { return nullptr; }

static const char* activemask_complete(void* const* data, unsigned participants)
{
    for (unsigned l = 0; l < 32; l++)
        if (data[l]) *(unsigned*)data[l] = participants;
    return nullptr;
}

enum : int { RED_ADD, RED_MIN, RED_MAX, RED_AND, RED_OR, RED_XOR };
struct ReduceData
{
    unsigned value;
    int op, is_signed;
    unsigned out;
};
static const char* reduce_complete(void* const* data, unsigned)
{
    ReduceData* first = nullptr;
    unsigned acc = 0;
    for (unsigned l = 0; l < 32; l++)
    {
        ReduceData* d = (ReduceData*)data[l];
        if (!d) continue;
        if (!first) { first = d; acc = d->value; continue; }
        if (d->op != first->op || d->is_signed != first->is_signed) return "lanes called different __reduce_*_sync";
        switch (d->op)
        {
        case RED_ADD: acc += d->value; break;
        case RED_MIN: acc = d->is_signed ? ((int)d->value < (int)acc ? d->value : acc) : (d->value < acc ? d->value : acc); break;
        case RED_MAX: acc = d->is_signed ? ((int)d->value > (int)acc ? d->value : acc) : (d->value > acc ? d->value : acc); break;
        case RED_AND: acc &= d->value; break;
        case RED_OR: acc |= d->value; break;
        default: acc ^= d->value; break;
        }
    }
    for (unsigned l = 0; l < 32; l++)
        if (data[l]) ((ReduceData*)data[l])->out = acc;
    return nullptr;
}
static inline unsigned warp_reduce(unsigned mask, unsigned v, int op, int is_signed, const char* name)
{
    ReduceData d;
    d.value = v;
    d.op = op;
    d.is_signed = is_signed;
    warp_collective(mask, reduce_complete, &d, name);
    return d.out;
}

static inline int barrier(int op, int value)
{
    Fiber* f = current();
    f->bar_op = op;
    f->bar_value = value;
    f->state = AT_BARRIER;
    suspend();
    return f->bar_value;
}

// Floating-point add as a compare-and-swap loop on the bits (what the GPU's red.add does atomically).
template <class T, class U> static inline T atomic_cas_loop_add(T* p, T v)
{
    static_assert(sizeof(T) == sizeof(U), "bits");
    U* q = (U*)p;
    U old = __atomic_load_n(q, __ATOMIC_RELAXED);
    for (;;)
    {
        T f;
        memcpy(&f, &old, sizeof f);
        f += v;
        U next;
        memcpy(&next, &f, sizeof next);
        if (__atomic_compare_exchange_n(q, &old, next, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
        {
            memcpy(&f, &old, sizeof f);
            return f;
        }
    }
}

}  // namespace fiber_emu

// ------------------------------------------------------------------------------------------------
// Dynamic shared memory (see FIBER_DYNAMIC_SMEM above): 128-byte aligned, sized by the launch.
// ------------------------------------------------------------------------------------------------
static inline void* emu_dynamic_smem() { return ::fiber_emu::t_worker->dyn; }

// ------------------------------------------------------------------------------------------------
// Synchronisation
// ------------------------------------------------------------------------------------------------
static inline void __syncthreads() { ::fiber_emu::barrier(::fiber_emu::BAR_PLAIN, 0); }
static inline int __syncthreads_count(int pred) { return ::fiber_emu::barrier(::fiber_emu::BAR_COUNT, pred != 0); }
static inline int __syncthreads_and(int pred) { return ::fiber_emu::barrier(::fiber_emu::BAR_AND, pred != 0); }
static inline int __syncthreads_or(int pred) { return ::fiber_emu::barrier(::fiber_emu::BAR_OR, pred != 0); }
static inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    ::fiber_emu::warp_collective(mask, ::fiber_emu::syncwarp_complete, nullptr, "__syncwarp");
}
static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline __attribute__((noreturn)) void __trap() { ::fiber_emu::fail("__trap()"); }

// With no divergence to model, __activemask is a convergence point of the warp's non-exited lanes
// and returns the lanes that reached it (independent of the order the emulator runs them in).
static inline unsigned __activemask()
{
    unsigned m = 0;
    ::fiber_emu::warp_collective(0xffffffffu, ::fiber_emu::activemask_complete, &m, "__activemask");
    return m;
}

// ------------------------------------------------------------------------------------------------
// Warp shuffles, votes, reductions
// ------------------------------------------------------------------------------------------------
#define FIBER_EMU_SHFL(T)                                                                                       \
    static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32)                                     \
    { return ::fiber_emu::shfl<T>(mask, v, src, width, ::fiber_emu::SHFL_IDX, "__shfl_sync"); }                  \
    static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32)                           \
    { return ::fiber_emu::shfl<T>(mask, v, (int)delta, width, ::fiber_emu::SHFL_UP, "__shfl_up_sync"); }         \
    static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)                         \
    { return ::fiber_emu::shfl<T>(mask, v, (int)delta, width, ::fiber_emu::SHFL_DOWN, "__shfl_down_sync"); }     \
    static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)                           \
    { return ::fiber_emu::shfl<T>(mask, v, lane_mask, width, ::fiber_emu::SHFL_BFLY, "__shfl_xor_sync"); }
FIBER_EMU_SHFL(int)
FIBER_EMU_SHFL(unsigned int)
FIBER_EMU_SHFL(long)
FIBER_EMU_SHFL(unsigned long)
FIBER_EMU_SHFL(long long)
FIBER_EMU_SHFL(unsigned long long)
FIBER_EMU_SHFL(float)
FIBER_EMU_SHFL(double)
#undef FIBER_EMU_SHFL

static inline int __all_sync(unsigned mask, int pred)
{
    ::fiber_emu::VoteData d = ::fiber_emu::vote(mask, pred, "__all_sync");
    return (d.ballot & d.participants) == d.participants;
}
static inline int __any_sync(unsigned mask, int pred) { return ::fiber_emu::vote(mask, pred, "__any_sync").ballot != 0; }
static inline unsigned __ballot_sync(unsigned mask, int pred) { return ::fiber_emu::vote(mask, pred, "__ballot_sync").ballot; }

static inline unsigned __reduce_add_sync(unsigned mask, unsigned v) { return ::fiber_emu::warp_reduce(mask, v, ::fiber_emu::RED_ADD, 0, "__reduce_add_sync"); }
static inline int __reduce_add_sync(unsigned mask, int v) { return (int)::fiber_emu::warp_reduce(mask, (unsigned)v, ::fiber_emu::RED_ADD, 1, "__reduce_add_sync"); }
static inline unsigned __reduce_min_sync(unsigned mask, unsigned v) { return ::fiber_emu::warp_reduce(mask, v, ::fiber_emu::RED_MIN, 0, "__reduce_min_sync"); }
static inline int __reduce_min_sync(unsigned mask, int v) { return (int)::fiber_emu::warp_reduce(mask, (unsigned)v, ::fiber_emu::RED_MIN, 1, "__reduce_min_sync"); }
static inline unsigned __reduce_max_sync(unsigned mask, unsigned v) { return ::fiber_emu::warp_reduce(mask, v, ::fiber_emu::RED_MAX, 0, "__reduce_max_sync"); }
static inline int __reduce_max_sync(unsigned mask, int v) { return (int)::fiber_emu::warp_reduce(mask, (unsigned)v, ::fiber_emu::RED_MAX, 1, "__reduce_max_sync"); }
static inline unsigned __reduce_and_sync(unsigned mask, unsigned v) { return ::fiber_emu::warp_reduce(mask, v, ::fiber_emu::RED_AND, 0, "__reduce_and_sync"); }
static inline unsigned __reduce_or_sync(unsigned mask, unsigned v) { return ::fiber_emu::warp_reduce(mask, v, ::fiber_emu::RED_OR, 0, "__reduce_or_sync"); }
static inline unsigned __reduce_xor_sync(unsigned mask, unsigned v) { return ::fiber_emu::warp_reduce(mask, v, ::fiber_emu::RED_XOR, 0, "__reduce_xor_sync"); }

// ------------------------------------------------------------------------------------------------
// Atomics (device-scope semantics; sequentially consistent on the host, which is stronger)
// ------------------------------------------------------------------------------------------------
#define FIBER_EMU_ATOMIC_INT(T)                                                                                  \
    static inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }                   \
    static inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }                   \
    static inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }                 \
    static inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }                   \
    static inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }                     \
    static inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }                   \
    static inline T atomicCAS(T* p, T compare, T v)                                                             \
    {                                                                                                           \
        __atomic_compare_exchange_n(p, &compare, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                  \
        return compare;                                                                                         \
    }                                                                                                           \
    static inline T atomicMax(T* p, T v)                                                                        \
    {                                                                                                           \
        T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                           \
        while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {} \
        return old;                                                                                             \
    }                                                                                                           \
    static inline T atomicMin(T* p, T v)                                                                        \
    {                                                                                                           \
        T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                           \
        while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {} \
        return old;                                                                                             \
    }
FIBER_EMU_ATOMIC_INT(int)
FIBER_EMU_ATOMIC_INT(unsigned int)
FIBER_EMU_ATOMIC_INT(unsigned long long)
#undef FIBER_EMU_ATOMIC_INT
static inline long long atomicMax(long long* p, long long v)
{
    long long old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {}
    return old;
}
static inline long long atomicMin(long long* p, long long v)
{
    long long old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {}
    return old;
}
static inline float atomicAdd(float* p, float v) { return ::fiber_emu::atomic_cas_loop_add<float, unsigned>(p, v); }
static inline double atomicAdd(double* p, double v) { return ::fiber_emu::atomic_cas_loop_add<double, unsigned long long>(p, v); }
static inline float atomicExch(float* p, float v)
{
    unsigned bits, old;
    memcpy(&bits, &v, 4);
    old = __atomic_exchange_n((unsigned*)p, bits, __ATOMIC_SEQ_CST);
    float r;
    memcpy(&r, &old, 4);
    return r;
}
static inline unsigned atomicInc(unsigned* p, unsigned limit)
{
    unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, old >= limit ? 0u : old + 1u, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {}
    return old;
}
static inline unsigned atomicDec(unsigned* p, unsigned limit)
{
    unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(p, &old, (old == 0 || old > limit) ? limit : old - 1u, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {}
    return old;
}

// ------------------------------------------------------------------------------------------------
// Math and bit intrinsics (<math.h> provides expf, logf, erff, sqrtf, tanhf, fabsf, fmaxf, fminf, ...)
// ------------------------------------------------------------------------------------------------
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
// glibc declares __expf, __logf, ... itself (as its internal names), so these are macros.
#define __expf(x) expf(x)
#define __exp10f(x) exp10f(x)
#define __logf(x) logf(x)
#define __log2f(x) log2f(x)
#define __log10f(x) log10f(x)
#define __powf(x, y) powf(x, y)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __tanf(x) tanf(x)
#define __sincosf(x, s, c) sincosf(x, s, c)
#define __tanhf(x) tanhf(x)
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline float __saturatef(float x) { return x > 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0
static inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
static inline int __float2int_rz(float x) { return (int)truncf(x); }
static inline int __float2int_rd(float x) { return (int)floorf(x); }
static inline int __float2int_ru(float x) { return (int)ceilf(x); }
static inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
static inline unsigned __float2uint_rz(float x) { return (unsigned)truncf(x); }
static inline long long __float2ll_rn(float x) { return (long long)nearbyintf(x); }
static inline long long __float2ll_rz(float x) { return (long long)truncf(x); }
static inline int __double2int_rn(double x) { return (int)nearbyint(x); }
static inline float __int2float_rn(int x) { return (float)x; }
static inline float __uint2float_rn(unsigned x) { return (float)x; }
static inline float __ll2float_rn(long long x) { return (float)x; }
static inline float __double2float_rn(double x) { return (float)x; }
static inline unsigned __float_as_uint(float x) { unsigned u; memcpy(&u, &x, 4); return u; }
static inline int __float_as_int(float x) { int u; memcpy(&u, &x, 4); return u; }
static inline float __uint_as_float(unsigned u) { float x; memcpy(&x, &u, 4); return x; }
static inline float __int_as_float(int u) { float x; memcpy(&x, &u, 4); return x; }
static inline long long __double_as_longlong(double x) { long long u; memcpy(&u, &x, 8); return u; }
static inline double __longlong_as_double(long long u) { double x; memcpy(&x, &u, 8); return x; }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned __brev(unsigned x)
{
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
    return __builtin_bswap32(x);
}
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s)
{
    unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; i++) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xFFu) << (8 * i);
    return r;
}
static inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s)
{
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned)((v << (s & 31u)) >> 32);
}
static inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s)
{
    unsigned long long v = ((unsigned long long)hi << 32) | lo;
    return (unsigned)(v >> (s & 31u));
}
static inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) { return (unsigned long long)(((unsigned __int128)a * b) >> 64); }
static inline int __mul24(int a, int b) { return (int)(((long long)(a << 8 >> 8)) * (b << 8 >> 8)); }
static inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xFFFFFFu) * (b & 0xFFFFFFu); }

// min/max as CUDA overloads them (mixed signed/unsigned picks the unsigned version).
#define FIBER_EMU_MINMAX(T)                                        \
    static inline T min(T a, T b) { return a < b ? a : b; }         \
    static inline T max(T a, T b) { return a > b ? a : b; }
FIBER_EMU_MINMAX(int)
FIBER_EMU_MINMAX(unsigned int)
FIBER_EMU_MINMAX(long)
FIBER_EMU_MINMAX(unsigned long)
FIBER_EMU_MINMAX(long long)
FIBER_EMU_MINMAX(unsigned long long)
#undef FIBER_EMU_MINMAX
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }
static inline unsigned min(int a, unsigned b) { return min((unsigned)a, b); }
static inline unsigned min(unsigned a, int b) { return min(a, (unsigned)b); }
static inline unsigned max(int a, unsigned b) { return max((unsigned)a, b); }
static inline unsigned max(unsigned a, int b) { return max(a, (unsigned)b); }
static inline long long min(long long a, int b) { return min(a, (long long)b); }
static inline long long min(int a, long long b) { return min((long long)a, b); }
static inline long long max(long long a, int b) { return max(a, (long long)b); }
static inline long long max(int a, long long b) { return max((long long)a, b); }

// Cache-hinted loads/stores are plain accesses here.
template <class T> static inline T __ldg(const T* p) { return *p; }
template <class T> static inline T __ldca(const T* p) { return *p; }
template <class T> static inline T __ldcg(const T* p) { return *p; }
template <class T> static inline T __ldcs(const T* p) { return *p; }
template <class T> static inline T __ldlu(const T* p) { return *p; }
template <class T> static inline T __ldcv(const T* p) { return *p; }
template <class T> static inline void __stwb(T* p, T v) { *p = v; }
template <class T> static inline void __stcg(T* p, T v) { *p = v; }
template <class T> static inline void __stcs(T* p, T v) { *p = v; }
template <class T> static inline void __stwt(T* p, T v) { *p = v; }

#endif  // FIBER_CUDA_EMU_H
