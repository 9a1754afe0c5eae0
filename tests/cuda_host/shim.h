// CUDA's device dialect on the host, as much of it as kernels/ uses: the kernels compile
// with g++ and run on the CPU, so their logic is tested where there is no GPU
// (tests/test_cuda_host.py). Blocks run one after another, each CUDA thread of a block a
// fiber (ucontext) of one CPU thread: a fiber runs until it waits at __syncthreads or, per
// warp, at a shuffle, and the next one runs (a thousand OS threads per block, woken at
// every barrier, took minutes). Not emulated: timing, memory ordering (fibers interleave
// only at barriers).
#pragma once

#include <ucontext.h>

#include <cstdlib>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <vector>

#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static  // blocks run one at a time: a static is the block's
#define __CUDA_ARCH__ 800  // an sm_80 device

using std::copysign;
using std::exp;
using std::expm1;
using std::fabs;
using std::fma;
using std::fmax;
using std::fmin;
using std::isfinite;
using std::isinf;
using std::isnan;
using std::log;
using std::log1p;
using std::pow;
using std::sinh;
using std::sqrt;
using std::tanh;

struct lb_dim3 {
    unsigned x = 0, y = 0, z = 0;
};
inline lb_dim3 threadIdx, blockIdx, blockDim, gridDim;

// One CUDA thread: its context, stack and state.
struct lb_fiber {
    ucontext_t context;
    void* stack = nullptr;
    unsigned index = 0;
    bool done = false;
};
inline ucontext_t lb_scheduler;
inline lb_fiber* lb_self = nullptr;
inline unsigned long long lb_progress = 0;  // barriers completed and fibers finished

inline void lb_yield() { swapcontext(&lb_self->context, &lb_scheduler); }

// A barrier of `count` fibers; a fiber that has left drops out of it.
struct lb_barrier {
    unsigned count = 0, arrived = 0;
    unsigned long long generation = 0;
    void complete() {
        arrived = 0;
        ++generation;
        ++lb_progress;
    }
    void arrive_and_wait() {
        const unsigned long long mine = generation;
        if (++arrived == count) {
            complete();
            return;
        }
        while (generation == mine) lb_yield();
    }
    void drop() {
        --count;
        if (arrived > 0 && arrived == count) complete();
    }
};

// The running block: its barrier, and per warp a barrier and the lanes' exchange slots.
struct lb_block {
    lb_barrier all;
    std::vector<lb_barrier> warps;
    std::vector<unsigned> lanes;            // each warp's threads at the launch
    std::vector<unsigned long long> slots;  // 32 per warp
    explicit lb_block(unsigned threads)
        : warps((threads + 31) / 32), lanes(warps.size()), slots(warps.size() * 32) {
        all.count = threads;
        for (unsigned w = 0; w < warps.size(); ++w)
            warps[w].count = lanes[w] = threads - w * 32 < 32 ? threads - w * 32 : 32;
    }
};
inline lb_block* lb_current = nullptr;

// dynamic shared memory (`extern __shared__`, which the build makes `extern`)
alignas(16) unsigned char smem_raw[227 * 1024];  // (sm_90's most, with the opt-in)

inline void __syncthreads() { lb_current->all.arrive_and_wait(); }
// blocks run one after another, a fiber until it waits: nothing to fence, nothing between
// an atomic's read and its write
inline void __threadfence() {}
inline unsigned atomicAdd(unsigned* address, unsigned v) {
    const unsigned old = *address;
    *address = old + v;
    return old;
}

template <typename V> inline V lb_exchange(V v, int source) {
    static_assert(sizeof(V) <= 8, "a shuffle moves at most 8 bytes");
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if ((unsigned)(source & 31) >= lb_current->lanes[warp])
        throw std::logic_error("a warp shuffle from a lane the block does not have");
    // a full-mask shuffle with a lane that has left is undefined on a GPU: fail here
    if (lb_current->warps[warp].count != lb_current->lanes[warp])
        throw std::logic_error("a warp shuffle after a lane of the warp returned");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    lb_current->slots[warp * 32 + lane] = bits;
    lb_current->warps[warp].arrive_and_wait();
    bits = lb_current->slots[warp * 32 + (source & 31)];
    lb_current->warps[warp].arrive_and_wait();  // (before a slot is written again)
    V r;
    std::memcpy(&r, &bits, sizeof r);
    return r;
}
template <typename V> inline V __shfl_xor_sync(unsigned, V v, int mask) {
    return lb_exchange(v, (threadIdx.x & 31) ^ mask);
}
template <typename V> inline V __shfl_sync(unsigned, V v, int lane) { return lb_exchange(v, lane); }
inline int __any_sync(unsigned mask, int predicate) {  // (a butterfly of the shuffles above)
    int any = predicate != 0;
    for (int offset = 16; offset > 0; offset >>= 1) any |= __shfl_xor_sync(mask, any, offset);
    return any;
}

inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __int_as_float(int i) { return std::bit_cast<float>(i); }
inline float __uint_as_float(unsigned i) { return std::bit_cast<float>(i); }
inline double __longlong_as_double(long long i) { return std::bit_cast<double>(i); }

// The PTX conversions (tests/cuda_host/__init__.py rewrites `asm("cvt.X %0, %1;" ...)`
// into calls of these).
inline float lb_cvt_f32_f16(unsigned short bits) {
    return (float)std::bit_cast<_Float16>(bits);
}
inline unsigned short lb_cvt_rn_f16_f32(float x) {
    return std::bit_cast<unsigned short>((_Float16)x);
}
inline unsigned short lb_cvt_rn_bf16_f32(float x) {
    const unsigned u = std::bit_cast<unsigned>(x);
    if (x != x) return 0x7FFF;  // the canonical NaN of cvt.rn.bf16.f32
    return (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);  // to nearest, even
}

// A launch: `grid` blocks of `block` threads, each thread a fiber calling `kernel()`.
// Returns 1 if a thread threw (a shim limit) or the block's fibers all wait on barriers
// that none of them can complete (a deadlock), else 0.
inline void (*lb_body)(void*) = nullptr;
inline void* lb_body_arg = nullptr;
inline bool lb_failed = false;

inline void lb_fiber_entry() {
    try {
        lb_body(lb_body_arg);
    } catch (...) {
        lb_failed = true;
    }
    // a thread that has left no longer holds back its block and warp
    lb_current->warps[lb_self->index / 32].drop();
    lb_current->all.drop();
    lb_self->done = true;
    ++lb_progress;
}  // (returns to lb_scheduler: uc_link)

template <typename F> inline int lb_run(unsigned grid, unsigned block, F kernel) {
    const std::size_t stack_size = 256 * 1024;
    static std::vector<void*> stacks;  // reused by every launch (pages touched stay few)
    while (stacks.size() < block) stacks.push_back(std::malloc(stack_size));
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    lb_body = [](void* k) { (*static_cast<F*>(k))(); };
    lb_body_arg = &kernel;
    lb_failed = false;
    // LOSSBACKENDS_CUDA_HOST_REVERSE: the fibers in reverse order, so that a kernel that
    // reads what another thread writes without a barrier between fails one of the orders
    static const bool reverse = std::getenv("LOSSBACKENDS_CUDA_HOST_REVERSE") != nullptr;
    std::vector<lb_fiber> fibers(block);
    for (unsigned b = 0; b < grid && !lb_failed; ++b) {
        lb_block state(block);
        lb_current = &state;
        std::memset(smem_raw, 0xFF, sizeof smem_raw);  // dynamic shared memory: NaN bits
        blockIdx = {b, 0, 0};
        for (unsigned t = 0; t < block; ++t) {
            lb_fiber& f = fibers[t];
            f.index = reverse ? block - 1 - t : t;
            f.done = false;
            getcontext(&f.context);
            f.context.uc_stack.ss_sp = stacks[t];
            f.context.uc_stack.ss_size = stack_size;
            f.context.uc_link = &lb_scheduler;
            makecontext(&f.context, lb_fiber_entry, 0);
        }
        for (unsigned left = block; left > 0;) {
            const unsigned long long before = lb_progress;
            for (lb_fiber& f : fibers) {
                if (f.done) continue;
                lb_self = &f;
                threadIdx = {f.index, 0, 0};
                swapcontext(&lb_scheduler, &f.context);
                if (f.done) --left;
            }
            if (left > 0 && lb_progress == before) {  // a round with no barrier passed
                lb_failed = true;
                break;
            }
        }
        lb_current = nullptr;
    }
    return lb_failed ? 1 : 0;
}
