// Multiclass hinge (Crammer-Singer), `mh_rows`: compiled in the cross-entropy module
// (cross_entropy.cu), whose row helpers it uses.
#pragma once

#include "cross_entropy_row.cuh"

// ---------------------------------------------------------------------------------------
// Multiclass hinge, max(0, m + max_{j != y} s_j - s_y) per row: THREADS threads per row
// (a warp, ROWS rows per block, or a whole block), one read of the row, then the gradient
// row written: 0, +w at the best other class j (lowest index at ties), -w at y where the
// loss is positive; a NaN score makes its row NaN. `weight`: one per row, or null.
template <typename A> struct BestOther {
    A best;
    i64 cls;  // -1: none yet
    int nan;
};

template <typename A>
__device__ __forceinline__ BestOther<A> better(const BestOther<A>& a, const BestOther<A>& b) {
    BestOther<A> r;
    const bool take_b = a.cls < 0 || (b.cls >= 0 && (b.best > a.best || (b.best == a.best && b.cls < a.cls)));
    r.best = take_b ? b.best : a.best;
    r.cls = take_b ? b.cls : a.cls;
    r.nan = a.nan | b.nan;
    return r;
}

template <typename T, int THREADS, int ROWS>
__global__ void __launch_bounds__(THREADS * ROWS) mh_rows(
    const T* scores, const i64* __restrict__ labels, const T* __restrict__ weight, T* grad,
    typename AccOf<T>::type* row_loss, T* row_out, i64 rows, i64 classes,
    typename AccOf<T>::type margin, typename AccOf<T>::type scale) {
    typedef typename AccOf<T>::type A;
    const int lane = THREADS == 32 ? (threadIdx.x & 31) : threadIdx.x;
    const i64 row = THREADS == 32 ? (i64)blockIdx.x * ROWS + (threadIdx.x >> 5) : (i64)blockIdx.x;
    if (THREADS == 32 && row >= rows) return;  // whole warps leave; no block barrier follows
    const T* x_row = scores + row * classes;
    const i64 label = labels[row];
    const bool bad = label < 0 || label >= classes;
    BestOther<A> st;
    st.best = neg_inf<A>();
    st.cls = -1;
    st.nan = 0;
    A true_score = 0;
    for (i64 c = lane; c < classes; c += THREADS) {
        const A v = to_acc(x_row[c]);
        st.nan |= v != v;
        if (c == label) { true_score = v; continue; }
        if (st.cls < 0 || v > st.best) { st.best = v; st.cls = c; }
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        BestOther<A> o;
        o.best = __shfl_xor_sync(0xffffffffu, st.best, offset);
        o.cls = __shfl_xor_sync(0xffffffffu, st.cls, offset);
        o.nan = __shfl_xor_sync(0xffffffffu, st.nan, offset);
        st = better(st, o);
    }
    // the label's score: held by one lane
    const int owner = (int)(((label % THREADS) + THREADS) % THREADS);
    if (THREADS == 32) {
        true_score = __shfl_sync(0xffffffffu, true_score, owner);
    } else {
        __shared__ BestOther<A> warp_best[32];
        __shared__ A shared_true;
        __shared__ BestOther<A> block_best;
        const int warp = threadIdx.x >> 5;
        if ((threadIdx.x & 31) == 0) warp_best[warp] = st;
        if (!bad && threadIdx.x == owner) shared_true = true_score;
        __syncthreads();
        if (warp == 0) {
            BestOther<A> b = warp_best[0];
            for (int k = 1; k < THREADS / 32; ++k) b = better(b, warp_best[k]);
            if (threadIdx.x == 0) block_best = b;
        }
        __syncthreads();
        st = block_best;
        true_score = shared_true;
    }
    A slack;
    if (bad || st.nan) slack = quiet_nan<A>();
    else if (st.cls < 0) slack = neg_inf<A>();  // one class: nothing to beat
    else slack = margin + (st.best == true_score ? A(0) : st.best - true_score);
    const A w = weight ? to_acc(weight[row]) : A(1);
    if (lane == 0) {
        // a weight of 0 costs nothing, even against an infinite slack (0 inf = 0, as times())
        const A kept = slack > A(0) || slack != slack ? slack : A(0);
        const A loss = w == A(0) && isinf(kept) ? A(0) : kept * w;
        write_row_loss<T, A>(loss, row, row_loss, row_out);
    }
    if (grad == 0) return;
    const A d = w * scale;
    T* g_row = grad + row * classes;
    for (i64 c = lane; c < classes; c += THREADS) {
        A g = 0;
        if (slack != slack) g = quiet_nan<A>();
        else if (slack > A(0)) g = c == st.cls ? d : (c == label ? -d : A(0));
        g_row[c] = from_acc<T>(g);
    }
}
