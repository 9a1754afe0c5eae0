// CUDA's device dialect on the host, as much of it as kernels/ uses: the kernels compile
// with g++ and run on CPU threads, one thread per CUDA thread, so their logic is tested
// where there is no GPU (tests/test_cuda_host.py). Blocks run one after another; the
// threads of a block run concurrently, meeting at __syncthreads and, per warp, at the
// shuffles. Not emulated: timing, memory ordering beyond these barriers, clusters (sm_90).
#pragma once

#include <atomic>
#include <barrier>
#include <condition_variable>
#include <functional>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static  // blocks run one at a time: a static is the block's
#define __CUDA_ARCH__ 800  // (the sm_90 cluster kernel is not emulated)

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
inline thread_local lb_dim3 threadIdx, blockIdx;
inline lb_dim3 blockDim, gridDim;

// The running block: its barrier, and per warp a barrier and the lanes' exchange slots.
struct lb_block {
    std::barrier<> all;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<unsigned long long> slots;  // 32 per warp
    explicit lb_block(unsigned threads) : all(threads), slots(((threads + 31) / 32) * 32) {
        for (unsigned w = 0; w * 32 < threads; ++w)
            warps.emplace_back(new std::barrier<>(threads - w * 32 < 32 ? threads - w * 32 : 32));
    }
};
inline lb_block* lb_current = nullptr;

inline void __syncthreads() { lb_current->all.arrive_and_wait(); }

template <typename V> inline V lb_exchange(V v, int source) {
    static_assert(sizeof(V) <= 8, "a shuffle moves at most 8 bytes");
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    lb_current->slots[warp * 32 + lane] = bits;
    lb_current->warps[warp]->arrive_and_wait();
    bits = lb_current->slots[warp * 32 + (source & 31)];
    lb_current->warps[warp]->arrive_and_wait();  // (before a slot is written again)
    V r;
    std::memcpy(&r, &bits, sizeof r);
    return r;
}
template <typename V> inline V __shfl_xor_sync(unsigned, V v, int mask) {
    return lb_exchange(v, (threadIdx.x & 31) ^ mask);
}
template <typename V> inline V __shfl_sync(unsigned, V v, int lane) { return lb_exchange(v, lane); }

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

// The CPU threads that play a block's threads, made once and reused by every launch
// (creating a thousand threads per block cost more than the kernels).
class lb_pool {
  public:
    // Runs job(t) on threads t = 0 .. n - 1 at once; returns when all have finished.
    template <typename F> void run(unsigned n, F& job) {
        std::unique_lock<std::mutex> hold(lock_);
        while (workers_ < n) std::thread([this, id = workers_++] { loop(id); }).detach();
        job_ = [&job](unsigned t) { job(t); };
        active_ = remaining_ = n;
        ++generation_;
        wake_.notify_all();
        done_.wait(hold, [this] { return remaining_ == 0; });
    }

  private:
    void loop(unsigned id) {
        unsigned long long seen = 0;
        std::unique_lock<std::mutex> hold(lock_);
        for (;;) {
            wake_.wait(hold, [&] { return generation_ != seen; });
            seen = generation_;
            if (id >= active_) continue;
            hold.unlock();
            job_(id);
            hold.lock();
            if (--remaining_ == 0) done_.notify_all();
        }
    }
    std::mutex lock_;
    std::condition_variable wake_, done_;
    std::function<void(unsigned)> job_;
    unsigned workers_ = 0, active_ = 0, remaining_ = 0;
    unsigned long long generation_ = 0;
};
// never destroyed: its threads wait on it until the process ends (a destructor would
// wait for them)
inline lb_pool& lb_threads = *new lb_pool;

// A launch: `grid` blocks of `block` threads, each thread calling `kernel()`; the block's
// threads go through the blocks together. A thread's exception (a shim limit) fails the
// launch.
template <typename F> inline int lb_run(unsigned grid, unsigned block, F kernel) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    std::unique_ptr<lb_block> state(new lb_block(block));
    lb_current = state.get();
    std::barrier next(block, [&]() noexcept {  // every thread is done with the block
        state.reset(new lb_block(block));
        lb_current = state.get();
    });
    std::atomic<bool> failed{false};
    auto job = [&](unsigned t) {
        for (unsigned b = 0; b < grid; ++b) {
            threadIdx = {t, 0, 0};
            blockIdx = {b, 0, 0};
            try {
                kernel();
            } catch (...) {
                failed = true;
            }
            // a thread that has left no longer holds back its block and warp
            lb_current->warps[t / 32]->arrive_and_drop();
            lb_current->all.arrive_and_drop();
            next.arrive_and_wait();
        }
    };
    lb_threads.run(block, job);
    lb_current = nullptr;
    return failed ? 1 : 0;
}
