// Shared device helpers: element types, accumulation types, 16-byte packs, reductions.
// No CUDA headers are included, so NVRTC compiles these sources with no toolkit present.
#pragma once

typedef long long i64;

// float16 as raw bits, converted with PTX (no cuda_fp16.h needed). Host code names it
// "half_t" in name expressions.
struct half_t {
    unsigned short bits;
};

// bfloat16 as raw bits ("bf16_t" in name expressions), computed in float32 like half_t:
// loads widen exactly by a shift (any architecture), stores round to nearest even with PTX
// cvt.rn.bf16.f32 (sm_80 and later).
struct bf16_t {
    unsigned short bits;
};

// Accumulate float16, bfloat16 and float32 in float, float64 in double.
template <typename T> struct AccOf { typedef float type; };
template <> struct AccOf<double> { typedef double type; };

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(half_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
    return f;
}

// (unsigned: a signed shift into the sign bit is undefined in C++)
__device__ __forceinline__ float to_acc(bf16_t h) {
    return __uint_as_float(((unsigned int)h.bits) << 16);
}

template <typename T> __device__ __forceinline__ T from_acc(float x);
template <> __device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16_t from_acc<bf16_t>(float x) {
    bf16_t h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h.bits) : "f"(x));
    return h;
}
template <> __device__ __forceinline__ half_t from_acc<half_t>(float x) {
    half_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(x));
    return h;
}
template <typename T> __device__ __forceinline__ T from_acc(double x);
template <> __device__ __forceinline__ double from_acc<double>(double x) { return x; }

// A 16-byte pack of elements: one vector load or store.
template <typename T> struct VecWidth { static const int value = 16 / sizeof(T); };
template <typename T> struct __align__(16) Pack {
    T v[VecWidth<T>::value];
};

template <typename A> __device__ __forceinline__ A neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return -__int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double neg_inf<double>() {
    return -__longlong_as_double(0x7ff0000000000000LL);
}
template <typename A> __device__ __forceinline__ A quiet_nan();
template <> __device__ __forceinline__ float quiet_nan<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ __forceinline__ double quiet_nan<double>() {
    return __longlong_as_double(0x7ff8000000000000LL);
}

// log, NaN below 0: CUDA's double log gave -inf for a negative subnormal, as for -0
// (an H200, 2026-12-04), where NumPy and the host's log give NaN
template <typename A> __device__ __forceinline__ A log_of(A v) { return v < A(0) ? quiet_nan<A>() : log(v); }

// Warp and block reductions in a fixed order: the same bits on every run.
template <typename A> __device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}
template <typename A> __device__ __forceinline__ A warp_max(A v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Sum over a block of THREADS threads (a multiple of 32); every thread gets the result.
// `scratch` holds 32 values; the trailing barrier lets the caller reuse it at once.
template <int THREADS, typename A> __device__ __forceinline__ A block_sum(A v, A* scratch) {
    v = warp_sum(v);
    if (THREADS <= 32) return v;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < THREADS / 32 ? scratch[lane] : A(0);
    v = warp_sum(v);
    __syncthreads();
    return v;
}
template <int THREADS, typename A> __device__ __forceinline__ A block_max(A v, A* scratch) {
    v = warp_max(v);
    if (THREADS <= 32) return v;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < THREADS / 32 ? scratch[lane] : neg_inf<A>();
    v = warp_max(v);
    __syncthreads();
    return v;
}

// A thread's running sum with Neumaier's compensation: each addition's rounding error kept
// apart and added at the end, so a sum of many terms is within an ulp or two of its value
// (a plain running sum of k terms errs by up to k ulps: 400 000 float64 row losses, 390
// per thread, came out 6e-15 relative off; the contract asks for pairwise accuracy).
// Infinities and NaN: the plain sum's (the compensation of an infinite sum is NaN). For
// the finishing sums (block_sum_of); the elementwise kernel's hot loop keeps a plain sum
// (its few hundred terms per thread at 1e8 are within the contract's 1e-5), as the
// compensation's registers spilled there and cut occupancy, unmeasured on a GPU.
template <typename A> struct CompensatedSum {
    A sum = 0, carry = 0;
    __device__ __forceinline__ void add(A v) {
        const A t = sum + v;
        carry += fabs(sum) >= fabs(v) ? (sum - t) + v : (v - t) + sum;
        sum = t;
    }
    __device__ __forceinline__ A value() const { return isfinite(sum) ? sum + carry : sum; }
};

// Sum of n values by one block of blockDim.x threads (a power of two <= 1024), in a fixed
// order: each thread adds a strided slice (compensated), then a tree. The result is valid
// in thread 0.
template <typename A> __device__ A block_sum_of(const A* values, i64 n, A* scratch) {
    CompensatedSum<A> slice;
    // eight loads in flight before their additions (a loop that waits for each load
    // spends a memory latency per term), the additions in the same order
    constexpr int BATCH = 8;
    const i64 step = blockDim.x;
    i64 i = threadIdx.x;
    for (; i + (BATCH - 1) * step < n; i += BATCH * step) {
        A batch[BATCH];
#pragma unroll
        for (int k = 0; k < BATCH; ++k) batch[k] = values[i + k * step];
#pragma unroll
        for (int k = 0; k < BATCH; ++k) slice.add(batch[k]);
    }
    for (; i < n; i += step) slice.add(values[i]);
    A acc = warp_sum(slice.value());
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) scratch[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        acc = lane < (int)(blockDim.x >> 5) ? scratch[lane] : A(0);
        acc = warp_sum(acc);
    }
    return acc;
}

// Whether this block is the grid's last to get here: each block's writes before the call
// are then visible to the block it returns true in (the threadfence-reduction pattern of
// CUDA's samples), which finishes what the grid wrote in the same launch. `done` counts
// the blocks; the last block sets it back to 0 for the next launch.
__device__ __forceinline__ bool last_block(unsigned* done) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(done, 1u) == gridDim.x - 1;
        if (last) *done = 0;
    }
    __syncthreads();
    if (last) __threadfence();  // (ordered after the count: the others' writes, read next)
    return last;
}

// exp of a row's logits. Rows of float16 and bfloat16 use the hardware approximation (__expf, a few
// float32 ulps): far below what float16 results resolve, and it halves their arithmetic.
template <typename T> __device__ __forceinline__ typename AccOf<T>::type row_exp(typename AccOf<T>::type x) {
    return exp(x);
}
template <> __device__ __forceinline__ float row_exp<half_t>(float x) { return __expf(x); }
template <> __device__ __forceinline__ float row_exp<bf16_t>(float x) { return __expf(x); }

// k v, 0 where k = 0 and v is infinite: a term of coefficient 0 contributes nothing (a
// loss's limit at an infinite prediction, as 0 log 0 = 0; a softmax of 0 times an
// overflowed z-loss coefficient); NaN kept
template <typename A> __device__ __forceinline__ A times(A k, A v) {
    return k == A(0) && isinf(v) ? A(0) : k * v;
}
