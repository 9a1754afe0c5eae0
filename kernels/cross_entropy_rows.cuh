// Cross-entropy with the row in registers (see cross_entropy.cu).
#pragma once

#include "cross_entropy_row.cuh"

// ---------------------------------------------------------------------------------------
// A row in registers. Thread `lane` of the THREADS sharing a row holds, for pack k < VPT / W,
// the W columns starting at (k * THREADS + lane) * W: consecutive threads read
// consecutive 16-byte packs. One reduction per row; each exp computed once.

// v = load(x) of this thread's columns (-inf past the row's end), by packs where `packed`.
template <typename T, int THREADS, int VPT, typename Load>
__device__ __forceinline__ void load_row(const T* x_row, int lane, i64 classes, int packed,
                                         typename AccOf<T>::type (&v)[VPT], Load load) {
    typedef typename AccOf<T>::type A;
    const int W = VecWidth<T>::value;
#pragma unroll
    for (int k = 0; k < VPT / W; ++k) {
        const i64 col = ((i64)k * THREADS + lane) * W;
        if (packed && col + W <= classes) {
            const Pack<T> pk = *reinterpret_cast<const Pack<T>*>(x_row + col);
#pragma unroll
            for (int e = 0; e < W; ++e) v[k * W + e] = load(to_acc(pk.v[e]));
        } else {
#pragma unroll
            for (int e = 0; e < W; ++e)
                v[k * W + e] = col + e < classes ? load(to_acc(x_row[col + e])) : neg_inf<A>();
        }
    }
}

template <typename T, int THREADS, int VPT, int ROWS>
__device__ __forceinline__ void ce_rows_body(
    const T* logits, const i64* __restrict__ labels, const T* __restrict__ probs,
    const T* __restrict__ class_weight, T* grad, typename AccOf<T>::type* row_loss, T* row_out,
    i64 rows, i64 classes, i64 ignore_index, typename AccOf<T>::type smoothing,
    typename AccOf<T>::type scale, const typename AccOf<T>::type* scale_ptr, T* hess,
    typename AccOf<T>::type z_loss, const typename AccOf<T>::type* z_factor_ptr,
    typename AccOf<T>::type softcap, int packed) {
    typedef typename AccOf<T>::type A;
    const int W = VecWidth<T>::value;
    // a thread's values are whole packs: VPT below a pack would read nothing
    static_assert(VPT % VecWidth<T>::value == 0, "VPT must be a multiple of the pack width");
    const int PACKS = VPT / W;
    const int lane = THREADS == 32 ? (threadIdx.x & 31) : threadIdx.x;
    const i64 row = THREADS == 32 ? (i64)blockIdx.x * ROWS + (threadIdx.x >> 5) : (i64)blockIdx.x;
    if (THREADS == 32 && row >= rows) return;  // whole warps leave; no block barrier follows
    const T* x_row = logits + row * classes;
    const T* probs_row = probs ? probs + row * classes : 0;
    const RowTarget t = row_target(labels, row, classes, ignore_index);
    const A inv_classes = A(1) / A(classes);
    const A inv_cap = softcap > A(0) ? A(1) / softcap : A(0);

    A v[VPT];
    load_row<T, THREADS, VPT>(x_row, lane, classes, packed, v,
                              [&](A x) { return cap_logit<T, A>(x, softcap, inv_cap); });
    RowState<A> st = empty_state<A>();
#pragma unroll
    for (int k = 0; k < VPT; ++k) st.m = fmax(st.m, v[k]);
    const A own_max = st.m;
    A others = 0;
    bool skipped = false;
#pragma unroll
    for (int k = 0; k < PACKS; ++k) {
#pragma unroll
        for (int e = 0; e < W; ++e) {
            const i64 col = ((i64)k * THREADS + lane) * W + e;
            const A z = shifted(v[k * W + e], own_max);
            if (col < classes)
                gather_terms<T, A>(z, col, t, probs_row, class_weight, smoothing, inv_classes,
                                   st.ts);
            v[k * W + e] = col < classes ? row_exp<T>(z) : A(0);  // each exp once
            if (col < classes) add_other(v[k * W + e], z, others, skipped);
        }
    }
    st.rest = rest_of(others, skipped);
    st = row_combine<THREADS>(st);
    A zc;
    const A grad_coef = finish_row<T, A>(st, t, class_weight, smoothing, inv_classes, z_loss,
                                         z_factor_ptr, lane == 0, row, row_loss, row_out, zc);
    if (grad || hess) {
        const A sc = read_scale(scale_ptr, scale);
        // softmax = exp(x - own_max) * exp(own_max - row max) / s: one exp per thread
        // (times: a thread whose max is far below the row's has softmaxes of 0, where an
        // overflowed z-loss coefficient would make the scale 0 * inf)
        const A prob_scale = times(exp(shifted(own_max, st.m)), grad_coef / row_sum(st));
        const A softmax_scale = exp(shifted(own_max, st.m)) / row_sum(st);
        // (this thread's exps are against its own max: an exp of 1 is at the row's max
        // where that is the row's)
        const A label_grad = own_max == st.m
            ? label_grad_at_max<T, A>(t, st.m, st.rest, zc, grad_coef, class_weight,
                                      smoothing, sc)
            : quiet_nan<A>();
        T* g_row = grad ? grad + row * classes : 0;
        T* h_row = hess ? hess + row * classes : 0;
        // the exps of the elements below the row's max, over its sum (see hess_of): this
        // thread's elements at its own max are at the row's when that is the row's max
        A rest_share = 0;
        if (hess) {
            const bool at_top = own_max == st.m;
            A part = 0;
#pragma unroll
            for (int k = 0; k < VPT; ++k) part += (at_top && v[k] == A(1)) ? A(0) : v[k];
            part *= softmax_scale;
            if (THREADS <= 32) {
                rest_share = warp_sum(part);
            } else {
                __shared__ A scratch[32];
                rest_share = block_sum<THREADS>(part, scratch);
            }
        }
#pragma unroll
        for (int k = 0; k < PACKS; ++k) {
            const i64 col = ((i64)k * THREADS + lane) * W;
            Pack<T> pk, hk;
#pragma unroll
            for (int e = 0; e < W; ++e) {
                // the row's padding past `classes` is never stored, and must not read the
                // probabilities or class weights past their ends either
                const bool inside = col + e < classes;
                A g = inside ? grad_of<T, A>(v[k * W + e], col + e, t, prob_scale, probs_row,
                                             class_weight, smoothing, inv_classes, sc,
                                             label_grad)
                             : A(0);
                // the chain rule's logit: this thread's own element, read again from cache
                // (only with softcap), before this thread overwrites it
                A slope = A(1), curve = A(0);
                if (softcap != A(0) && inside)
                    slope = cap_slopes<T, A>(to_acc(x_row[col + e]), softcap, inv_cap, curve);
                if (h_row)
                    hk.v[e] = from_acc<T>(finish_hess<A>(
                        hess_of<A>(v[k * W + e] * softmax_scale, rest_share, grad_coef, zc, sc), g,
                        slope, curve, t));
                g *= slope;
                if (t.kind == 0) g = 0;
                if (t.kind == 2) g = quiet_nan<A>();
                pk.v[e] = from_acc<T>(g);
            }
            if (packed && col + W <= classes) {
                if (g_row) *reinterpret_cast<Pack<T>*>(g_row + col) = pk;
                if (h_row) *reinterpret_cast<Pack<T>*>(h_row + col) = hk;
            } else {
#pragma unroll
                for (int e = 0; e < W; ++e)
                    if (col + e < classes) {
                        if (g_row) g_row[col + e] = pk.v[e];
                        if (h_row) h_row[col + e] = hk.v[e];
                    }
            }
        }
    }
}

#define CE_ROWS_ARGS                                                                          \
    const T *logits, const i64 *__restrict__ labels, const T *__restrict__ probs,             \
        const T *__restrict__ class_weight, T *grad, typename AccOf<T>::type *row_loss,       \
        T *row_out, i64 rows, i64 classes, i64 ignore_index,                                  \
        typename AccOf<T>::type smoothing, typename AccOf<T>::type scale,                     \
        const typename AccOf<T>::type *scale_ptr, T *hess, typename AccOf<T>::type z_loss,    \
        const typename AccOf<T>::type *z_factor_ptr, typename AccOf<T>::type softcap, int packed
#define CE_ROWS_CALL                                                                          \
    logits, labels, probs, class_weight, grad, row_loss, row_out, rows, classes,              \
        ignore_index, smoothing, scale, scale_ptr, hess, z_loss, z_factor_ptr, softcap, packed

// MIN_BLOCKS: the blocks per SM the registers must allow (__launch_bounds__' second bound)
template <typename T, int THREADS, int VPT, int ROWS, int MIN_BLOCKS>
__global__ void __launch_bounds__(THREADS * ROWS, MIN_BLOCKS) ce_rows(CE_ROWS_ARGS) {
    ce_rows_body<T, THREADS, VPT, ROWS>(CE_ROWS_CALL);
}

// ---------------------------------------------------------------------------------------
// The plain call's warp-per-row kernel (class labels; no probabilities, class weights,
// smoothing, softcap or Hessian: the host launches it only then; z_loss stays an option).
// ce_rows_body tests every option per element, which the compiler cannot drop from one
// kernel serving all of them; a row of 1000 classes then took about 1.5x the instructions
// of 2026-11-26's kernel, and its H200 time went from 59 % to 27 % of copy (a helper's
// count in SASS, 2026-12-04; benchmarks/gpu_sweep.py times both). Here: z = x - own max
// (shifted() when that max is finite), no per-element label test (the label's lane reads
// its logit again, computes its z and exp as the loop does, and writes its gradient over
// the plain one after the row's), the gradient fma(e, prob_scale, -0) * scale (grad_of's
// with q = 0). A warp whose row has an ignored or bad label, a logit of +inf, no finite
// logit, or an overflowed z-loss scale runs ce_rows_body instead, with the plain options
// as constants.
// The same bits as ce_rows (tests/test_cuda_host.py).
template <typename T, int THREADS, int VPT, int ROWS>
__device__ __forceinline__ bool ce_rows_plain_try(CE_ROWS_ARGS) {
    static_assert(THREADS == 32, "a warp per row: its votes are warp votes");
    typedef typename AccOf<T>::type A;
    const int W = VecWidth<T>::value;
    const int PACKS = VPT / W;
    const int lane = threadIdx.x & 31;
    const i64 row = (i64)blockIdx.x * ROWS + (threadIdx.x >> 5);
    if (row >= rows) return true;  // whole warps leave
    const T* x_row = logits + row * classes;
    const RowTarget t = row_target(labels, row, classes, ignore_index);
    // the label's column is (k THREADS + lane) W + e: this lane's when rel is k THREADS W + e
    const i64 rel = t.label - (i64)lane * W;
    const bool own = t.kind == 1 && rel >= 0 && rel < (i64)PACKS * THREADS * W
                     && rel % (THREADS * W) < W;
    A x_label = 0;
    if (own) x_label = to_acc(x_row[t.label]);  // (its line is in flight with the row's)
    A v[VPT];
    load_row<T, THREADS, VPT>(x_row, lane, classes, packed, v, [](A x) { return x; });
    RowState<A> st = empty_state<A>();
#pragma unroll
    for (int k = 0; k < VPT; ++k) st.m = fmax(st.m, v[k]);
    const A own_max = st.m;
    if (__any_sync(0xffffffffu, t.kind != 1 || own_max == -neg_inf<A>())) return false;
    // a lane of padding, -inf or NaN only (its own max -inf, as a short row's last lanes):
    // its exps against 0, all 0, as ce_rows_body's state for it weighs nothing either
    const A base = own_max == neg_inf<A>() ? A(0) : own_max;
    A others = 0;
    bool skipped = false;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
        const A z = v[k] - base;  // (padding: -inf, whose exp is 0)
        v[k] = row_exp<T>(z);
        add_other(v[k], z, others, skipped);
    }
    const A z_label = x_label - base;
    if (own) {  // gather_terms' sums, for the label alone
        st.ts.a = A(0) + z_label;
        st.ts.wa = A(1);
    }
    st.rest = rest_of(others, skipped);
    st = row_combine<THREADS>(st);
    if (!isfinite(st.m)) return false;  // (a row of -inf: every lane holds the same st.m)
    A zc;
    const A grad_coef = finish_row<T, A>(st, t, (const T*)0, A(0), A(0), z_loss, z_factor_ptr,
                                         lane == 0, row, row_loss, row_out, zc);
    if (grad == 0) return true;
    const A sc = read_scale(scale_ptr, scale);
    const A prob_scale = times(exp(shifted(own_max, st.m)), grad_coef / row_sum(st));
    if (__any_sync(0xffffffffu, isinf(prob_scale))) return false;  // (the row's loss: the same)
    T* g_row = grad + row * classes;
#pragma unroll
    for (int k = 0; k < PACKS; ++k) {
        const i64 col = ((i64)k * THREADS + lane) * W;
        Pack<T> pk;
#pragma unroll
        for (int e = 0; e < W; ++e) pk.v[e] = from_acc<T>(fma(v[k * W + e], prob_scale, A(-0.0)) * sc);
        if (packed && col + W <= classes) {
            *reinterpret_cast<Pack<T>*>(g_row + col) = pk;
        } else {
#pragma unroll
            for (int e = 0; e < W; ++e)
                if (col + e < classes) g_row[col + e] = pk.v[e];
        }
    }
    if (own) {  // (after this thread's own store of the same element)
        const A e_label = row_exp<T>(z_label);
        const A label_grad = own_max == st.m
            ? label_grad_at_max<T, A>(t, st.m, st.rest, zc, grad_coef, (const T*)0, A(0), sc)
            : quiet_nan<A>();
        g_row[t.label] = from_acc<T>(e_label == A(1) && !isnan(label_grad)
                                     ? label_grad : fma(e_label, prob_scale, A(-1)) * sc);
    }
    return true;
}

template <typename T, int THREADS, int VPT, int ROWS, int MIN_BLOCKS>
__global__ void __launch_bounds__(THREADS * ROWS, MIN_BLOCKS) ce_rows_plain(CE_ROWS_ARGS) {
    typedef typename AccOf<T>::type A;
    if (ce_rows_plain_try<T, THREADS, VPT, ROWS>(CE_ROWS_CALL)) return;
    ce_rows_body<T, THREADS, VPT, ROWS>(logits, labels, (const T*)0, (const T*)0, grad, row_loss,
                                        row_out, rows, classes, ignore_index, A(0), scale,
                                        scale_ptr, (T*)0, z_loss, z_factor_ptr, A(0), packed);
}
