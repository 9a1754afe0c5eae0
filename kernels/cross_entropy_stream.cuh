// Cross-entropy for any C, streamed: a block per row (see cross_entropy.cu).
#pragma once

#include "cross_entropy_row.cuh"

// ---------------------------------------------------------------------------------------
// Any C: a block of THREADS threads per row; online max and sum, then the gradient pass.
// Each thread keeps IN_FLIGHT 16-byte packs in flight (their loads issued before any is
// used) and folds a whole pack into its running state at once (independent exps).

// Calls use(pack, k) on packs k = threadIdx.x, threadIdx.x + THREADS, ... below `packs`,
// IN_FLIGHT at a time, all their loads issued before the first use.
template <typename T, int IN_FLIGHT, int THREADS, typename Use>
__device__ __forceinline__ void for_packs_in_flight(const Pack<T>* x_packs, i64 packs, Use use) {
    for (i64 k0 = threadIdx.x; k0 < packs; k0 += IN_FLIGHT * THREADS) {
        Pack<T> pk[IN_FLIGHT];
#pragma unroll
        for (int j = 0; j < IN_FLIGHT; ++j)
            if (k0 + j * THREADS < packs) pk[j] = x_packs[k0 + j * THREADS];
#pragma unroll
        for (int j = 0; j < IN_FLIGHT; ++j)
            if (k0 + j * THREADS < packs) use(pk[j], k0 + j * THREADS);
    }
}

// The same, from the top down: packs end - 1 - threadIdx.x, ... at or above `begin`. The
// gradient's pass reads the row again in this order, so that it starts with what the first
// pass read last, the part of the row most likely still in L2 (from the bottom up, each
// read would find its line evicted first, once the rows in flight exceed L2).
template <typename T, int IN_FLIGHT, int THREADS, typename Use>
__device__ __forceinline__ void for_packs_in_flight_down(const Pack<T>* x_packs, i64 begin,
                                                         i64 end, Use use) {
    for (i64 k0 = end - 1 - threadIdx.x; k0 >= begin; k0 -= IN_FLIGHT * THREADS) {
        Pack<T> pk[IN_FLIGHT];
#pragma unroll
        for (int j = 0; j < IN_FLIGHT; ++j)
            if (k0 - j * THREADS >= begin) pk[j] = x_packs[k0 - j * THREADS];
#pragma unroll
        for (int j = 0; j < IN_FLIGHT; ++j)
            if (k0 - j * THREADS >= begin) use(pk[j], k0 - j * THREADS);
    }
}

// KEEP_T: the soft-capped logits' tanh(x / softcap) go to `kept` as they are found (the
// row's staged end, float32 and float64: the gradient's pass then needs no second tanh),
// or x / softcap itself beyond +-1 (kept_of_capped).
template <typename T, bool KEEP_T = false>
__device__ __forceinline__ void stream_fold(const Pack<T>& pk, int valid, i64 first_col,
                                            const RowTarget& t,
                                            const T* probs_row, const T* class_weight,
                                            typename AccOf<T>::type smoothing,
                                            typename AccOf<T>::type inv_classes,
                                            typename AccOf<T>::type softcap,
                                            typename AccOf<T>::type inv_cap,
                                            RowState<typename AccOf<T>::type>& st,
                                            typename AccOf<T>::type* kept = 0) {
    typedef typename AccOf<T>::type A;
    const int W = VecWidth<T>::value;
    A x[W];
    A top = st.m;
#pragma unroll
    for (int e = 0; e < W; ++e) {
        if (KEEP_T && e < valid) {  // cap_logit, its tanh kept (the logit when off)
            const A v = to_acc(pk.v[e]), u = v * inv_cap;
            const A t = softcap > A(0) ? row_tanh<T>(u) : v;
            kept[e] = softcap > A(0) ? kept_of_capped(u, t) : v;
            x[e] = softcap > A(0) ? softcap * t : v;
        } else {
            x[e] = e < valid ? cap_logit<T, A>(to_acc(pk.v[e]), softcap, inv_cap) : neg_inf<A>();
        }
        top = fmax(top, x[e]);
    }
    // the state moves to the new max, its own max's 1 joining the others (the empty
    // state's 1 + rest is 0), and one element of the pack at the new max is left out
    const bool same_top = top == st.m;
    A others = same_top ? st.rest : (st.rest + A(1)) * exp(shifted(st.m, top));
    bool skipped = same_top;
    reshift_sums(st.ts, st.m, top);
#pragma unroll
    for (int e = 0; e < W; ++e) {
        if (e < valid) {
            const A z = shifted(x[e], top);
            gather_terms<T, A>(z, first_col + e, t, probs_row, class_weight, smoothing,
                               inv_classes, st.ts);
            add_other(row_exp<T>(z), z, others, skipped);
        }
    }
    st.rest = others;  // (a new top came from an element: skipped)
    st.m = top;
}

// FROM_T: `pk` holds what stream_fold's KEEP_T kept of soft-capped logits, not the logits:
// cap_with_slope's result and slope from it (capped_from_kept).
template <typename T, bool FROM_T = false>
__device__ __forceinline__ void stream_store(const Pack<T>& pk, i64 k, T* g_row, const RowTarget& t,
                                             typename AccOf<T>::type m,
                                             typename AccOf<T>::type prob_scale,
                                             const T* probs_row, const T* class_weight,
                                             typename AccOf<T>::type smoothing,
                                             typename AccOf<T>::type inv_classes,
                                             typename AccOf<T>::type sc,
                                             typename AccOf<T>::type softcap,
                                             typename AccOf<T>::type inv_cap,
                                             typename AccOf<T>::type label_grad) {
    typedef typename AccOf<T>::type A;
    const int W = VecWidth<T>::value;
    Pack<T> out;
#pragma unroll
    for (int e = 0; e < W; ++e) {
        A slope, xe;
        if (FROM_T && softcap > A(0))
            xe = capped_from_kept<T, A>(to_acc(pk.v[e]), softcap, slope);
        else
            xe = cap_with_slope<T, A>(to_acc(pk.v[e]), softcap, inv_cap, slope);
        A g = grad_of<T, A>(row_exp<T>(shifted(xe, m)), k * W + e, t, prob_scale, probs_row,
                            class_weight, smoothing, inv_classes, sc, label_grad) * slope;
        if (t.kind == 0) g = 0;
        if (t.kind == 2) g = quiet_nan<A>();
        out.v[e] = from_acc<T>(g);
    }
    reinterpret_cast<Pack<T>*>(g_row)[k] = out;
}

// HESS: the instance that writes `hess` alone, launched before the other one (a second read
// of the row, only for grad_and_hess above 16384 classes; first, as the other one may write
// the gradient over the logits): both in one kernel spilled in
// bf16 (64 registers without the Hessian). CAPPED: soft-capping compiled in (its registers
// cost the plain kernel's packs in flight: the host asks for one pack fewer in flight).
// THREADS: 256, 512 or 1024; the registers allow 1024 threads per SM at least.
// DOWN: the gradient's pass reads the row from the top down (for_packs_in_flight_down).
// STAGED: the row's last STAGED packs (at most) are kept in dynamic shared memory by the
// first pass (the launch gives STAGED * 16 bytes), and the gradient's pass takes them from
// there instead of reading them again: at 128256 float32 classes the rows in flight far
// exceed L2, and the second read came mostly from DRAM (a third of the traffic more).
template <typename T, bool HESS, int CAPPED, int THREADS, int IN_FLIGHT, bool DOWN = false,
          int STAGED = 0>
__global__ void __launch_bounds__(THREADS, 1024 / THREADS) ce_stream(CE_ROWS_ARGS) {
    typedef typename AccOf<T>::type A;
    // the staged packs are read by other threads after row_combine's barriers (none below
    // a warp)
    static_assert(STAGED == 0 || THREADS > 32, "a staged row needs a block above a warp");
    if (!CAPPED) softcap = A(0);  // a constant: the capping code compiles away
    const int W = VecWidth<T>::value;
    const i64 row = blockIdx.x;
    const T* x_row = logits + row * classes;
    const T* probs_row = probs ? probs + row * classes : 0;
    const RowTarget t = row_target(labels, row, classes, ignore_index);
    const A inv_classes = A(1) / A(classes);
    const A inv_cap = softcap > A(0) ? A(1) / softcap : A(0);
    const Pack<T>* x_packs = reinterpret_cast<const Pack<T>*>(x_row);
    const i64 packs = packed ? classes / W : 0;
    RowState<A> st = empty_state<A>();
    extern __shared__ unsigned char smem_raw[];
    Pack<T>* staged = reinterpret_cast<Pack<T>*>(smem_raw);
    const i64 first_staged = STAGED > 0 && packs > STAGED ? packs - STAGED : (STAGED > 0 ? 0 : packs);
    // soft-capped rows of float32 and float64 stage the logits' tanh, the others the logits
    constexpr bool keep_t = CAPPED && STAGED > 0 && sizeof(T) == sizeof(A);
    for_packs_in_flight<T, IN_FLIGHT, THREADS>(x_packs, packs, [&](const Pack<T>& pk, i64 k) {
        if (STAGED > 0 && k >= first_staged) {
            if (keep_t) {
                stream_fold<T, keep_t>(pk, W, k * W, t, probs_row, class_weight, smoothing,
                                       inv_classes, softcap, inv_cap, st,
                                       reinterpret_cast<A*>(&staged[k - first_staged]));
                return;
            }
            staged[k - first_staged] = pk;
        }
        stream_fold<T>(pk, W, k * W, t, probs_row, class_weight, smoothing, inv_classes, softcap,
                       inv_cap, st);
    });
    for (i64 c = packs * W + threadIdx.x; c < classes; c += THREADS) {
        Pack<T> one;
        one.v[0] = x_row[c];  // a pack of one valid element
        stream_fold<T>(one, 1, c, t, probs_row, class_weight, smoothing, inv_classes, softcap,
                       inv_cap, st);
    }
    st = row_combine<THREADS>(st);
    const A m = st.m;
    A zc;
    const A grad_coef = finish_row<T, A>(st, t, class_weight, smoothing, inv_classes, z_loss,
                                         z_factor_ptr, threadIdx.x == 0, row, row_loss, row_out,
                                         zc);
    const A sc = read_scale(scale_ptr, scale);
    const A label_grad = label_grad_at_max<T, A>(t, st.m, st.rest, zc, grad_coef, class_weight,
                                                 smoothing, sc);
    if (HESS) {  // the Hessian alone: the gradient is ce_stream<T, false, ...>'s, launched after
        const A inv_s = A(1) / row_sum(st);
        // the exps of the elements below the max, over the row's sum (see hess_of): one
        // more read of the row, only for grad_and_hess
        A part = 0;
        for (i64 c = threadIdx.x; c < classes; c += THREADS) {
            const A zc_ = shifted(cap_logit<T, A>(to_acc(x_row[c]), softcap, inv_cap), m);
            if (zc_ != A(0)) part += row_exp<T>(zc_);
        }
        __shared__ A scratch[32];
        const A rest_share = block_sum<THREADS>(part, scratch) * inv_s;
        const A prob_scale = grad_coef / row_sum(st);
        T* h_row = hess + row * classes;
        for (i64 c = threadIdx.x; c < classes; c += THREADS) {  // element by element, coalesced
            A slope, curve;
            const A x = to_acc(x_row[c]);
            slope = cap_slopes<T, A>(x, softcap, inv_cap, curve);
            const A e = row_exp<T>(shifted(cap_logit<T, A>(x, softcap, inv_cap), m));
            const A g = grad_of<T, A>(e, c, t, prob_scale, probs_row, class_weight, smoothing,
                                      inv_classes, sc, label_grad);
            h_row[c] = from_acc<T>(finish_hess<A>(hess_of<A>(e * inv_s, rest_share, grad_coef, zc, sc),
                                                  g, slope, curve, t));
        }
        return;
    }
    if (grad == 0) return;
    const A prob_scale = grad_coef / row_sum(st);
    T* g_row = grad + row * classes;
    // the second read of the row: from L2 while the rows in flight fit there
    const auto store = [&](const Pack<T>& pk, i64 k) {
        stream_store<T>(pk, k, g_row, t, m, prob_scale, probs_row, class_weight, smoothing,
                        inv_classes, sc, softcap, inv_cap, label_grad);
    };
    if (DOWN)
        for_packs_in_flight_down<T, IN_FLIGHT, THREADS>(x_packs, 0, first_staged, store);
    else
        for_packs_in_flight<T, IN_FLIGHT, THREADS>(x_packs, first_staged, store);
    if (STAGED > 0) {  // (row_combine's barriers made every thread's staged packs visible)
        for (i64 k = first_staged + threadIdx.x; k < packs; k += THREADS) {
            const Pack<T> pk = staged[k - first_staged];  // (one 16-byte load, not W)
            stream_store<T, keep_t>(pk, k, g_row, t, m, prob_scale, probs_row, class_weight,
                                    smoothing, inv_classes, sc, softcap, inv_cap, label_grad);
        }
    }
    for (i64 c = packs * W + threadIdx.x; c < classes; c += THREADS) {
        A slope;
        const A xc = cap_with_slope<T, A>(to_acc(x_row[c]), softcap, inv_cap, slope);
        A g = grad_of<T, A>(row_exp<T>(shifted(xc, m)), c, t, prob_scale, probs_row,
                            class_weight, smoothing, inv_classes, sc, label_grad) * slope;
        if (t.kind == 0) g = 0;
        if (t.kind == 2) g = quiet_nan<A>();
        g_row[c] = from_acc<T>(g);
    }
}
