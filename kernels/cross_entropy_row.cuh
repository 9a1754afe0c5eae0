// Cross-entropy: a row's mathematics and the reduction of its state, which every
// kernel of cross_entropy.cu shares (its overview gives the formulas): the row's target,
// shifted logits, soft-capping, the z-loss, the online softmax's state and a row's finish.
#pragma once

#include "common.cuh"

struct RowTarget {
    int kind;   // 0: ignored row, 1: valid label, 2: bad label, 3: probabilities
    i64 label;
};

// (a bad label gives its row NaN; the labels' pass, ce_labels, is what reports it)
__device__ __forceinline__ RowTarget row_target(const i64* labels, i64 row, i64 classes,
                                                i64 ignore_index) {
    RowTarget t;
    if (labels == 0) { t.kind = 3; t.label = -1; return t; }
    t.label = labels[row];
    if (t.label == ignore_index) t.kind = 0;
    else if (t.label >= 0 && t.label < classes) t.kind = 1;
    else t.kind = 2;
    return t;
}

// x - top, with 0 where x equals the max `top` (also when both are infinite).
template <typename A> __device__ __forceinline__ A shifted(A x, A top) {
    return x == top ? A(0) : x - top;
}

// A sum of weight * (x - ref) moved to the reference top >= ref. No weight, no change
// (0 * (-inf) = 0).
template <typename A> __device__ __forceinline__ A reshift(A sum, A weight, A ref, A top) {
    return weight == A(0) ? sum : sum + weight * shifted(ref, top);
}

// The running sums of a row: `a` with its weight sum `wa` and `b` with `wb`, each of
// weight * z: (z_y, 1) and (sum (e / C) w z, sum (e / C) w) for labels, (sum w q z,
// sum w q) for probabilities. Each term is weighted before the sum: terms of one sign,
// so a sum never overflows before its final value does.
template <typename A> struct TargetSums {
    A a, wa, b, wb;
};

template <typename A> __device__ __forceinline__ TargetSums<A> no_target_sums() {
    TargetSums<A> ts;
    ts.a = ts.wa = ts.b = ts.wb = 0;
    return ts;
}

template <typename A>
__device__ __forceinline__ void reshift_sums(TargetSums<A>& ts, A ref, A top) {
    ts.a = reshift(ts.a, ts.wa, ref, top);
    ts.b = reshift(ts.b, ts.wb, ref, top);
}

// The share of element c, with z = x_c - ref for the reference of the sums.
template <typename T, typename A>
__device__ __forceinline__ void gather_terms(A z, i64 c, const RowTarget& t, const T* probs_row,
                                             const T* class_weight, A smoothing, A inv_classes,
                                             TargetSums<A>& ts) {
    if (t.kind == 3) {
        A wq = to_acc(probs_row[c]) * (A(1) - smoothing) + smoothing * inv_classes;
        if (class_weight) wq *= to_acc(class_weight[c]);
        if (wq != A(0)) ts.a += wq * z;  // 0 * (-inf) = 0: a class of no probability costs nothing
        ts.wa += wq;
    } else {
        if (c == t.label) {
            ts.a += z;
            ts.wa += A(1);
        }
        if (smoothing != A(0)) {
            const A w = smoothing * inv_classes * (class_weight ? to_acc(class_weight[c]) : A(1));
            if (w != A(0)) ts.b += w * z;
            ts.wb += w;
        }
    }
}

// tanh of a row's logit. Rows of float16 and bfloat16 use 1 - 2 / (exp(2|u|) + 1) with
// the hardware exp and a fast division (as row_exp): a few float32 ulps, far below what
// they resolve (and no call to the precise division's slow path, which spilled). That
// form is an ulp of 1 off absolutely (about 1.4e-7), so below |u| = 2^-7 (where it would
// be 2e-5 off relatively, and more further down: 0 for every logit under a softcap of
// 3e38) tanh is u itself, within u^2 / 3 = 2e-5 (a select: a polynomial there spilled
// more registers).
__device__ __forceinline__ float fast_tanh(float u) {
    const float t = copysignf(1.0f - __fdividef(2.0f, __expf(2.0f * fabsf(u)) + 1.0f), u);
    return fabsf(u) < 0.0078125f ? u : t;
}
template <typename T> __device__ __forceinline__ typename AccOf<T>::type row_tanh(typename AccOf<T>::type u) {
    return tanh(u);
}
template <> __device__ __forceinline__ float row_tanh<half_t>(float u) { return fast_tanh(u); }
template <> __device__ __forceinline__ float row_tanh<bf16_t>(float u) { return fast_tanh(u); }

// softcap tanh(x / softcap), or x when softcap is 0 (off); inv_cap = 1 / softcap, found
// once per thread (a division per element calls the precise division's slow path).
template <typename T, typename A> __device__ __forceinline__ A cap_logit(A x, A softcap, A inv_cap) {
    return softcap > A(0) ? softcap * row_tanh<T>(x * inv_cap) : x;
}

// 1 - tanh^2(u) from t = tanh(u): 1 - t^2 where |u| <= 1 (nothing cancels), else
// 4 s / (1 + s)^2 with s = exp(-2|u|), which keeps a saturated logit's slope to its last
// bits (1 - t^2 is 0 in float32 from |u| = 8.3 on). 0 at an infinite u, NaN kept.
// (float's quotient by __fdividef, within 2 ulp for a divisor in [1, 1.3]: the IEEE
// division's slow path spilled ce_small's 40 registers)
__device__ __forceinline__ float quotient(float a, float b) { return __fdividef(a, b); }
__device__ __forceinline__ double quotient(double a, double b) { return a / b; }
template <typename A> __device__ __forceinline__ A sech_squared(A u, A t) {
    if (fabs(u) <= A(1)) return A(1) - t * t;
    const A s = exp(A(-2) * fabs(u));
    return quotient(A(4) * s, (A(1) + s) * (A(1) + s));
}

// d/dx of cap_logit: 1 - tanh^2(x / softcap) (1 when off).
template <typename T, typename A> __device__ __forceinline__ A cap_slope(A x, A softcap, A inv_cap) {
    if (softcap == A(0)) return A(1);
    const A u = x * inv_cap;
    return sech_squared(u, row_tanh<T>(u));
}

// d/dx and d^2/dx^2 of cap_logit: 1 - t^2 and -2 t (1 - t^2) / softcap, t = tanh(x / softcap)
// (1 and 0 when off), for the Hessian.
template <typename T, typename A> __device__ __forceinline__ A cap_slopes(A x, A softcap, A inv_cap, A& curve) {
    curve = A(0);
    if (softcap == A(0)) return A(1);
    const A u = x * inv_cap, t = row_tanh<T>(u);
    const A slope = sech_squared(u, t);
    curve = A(-2) * t * slope * inv_cap;
    return slope;
}

// What ce_stream keeps of a soft-capped logit (u = x / softcap) for the gradient's pass:
// t = tanh(u) where |u| <= 1, else u itself (|u| > 1 >= |t|: the two never mix up), whose
// slope 1 - t^2 would cancel (sech_squared). NaN kept.
template <typename A> __device__ __forceinline__ A kept_of_capped(A u, A t) {
    return fabs(u) <= A(1) ? t : u;
}

// softcap t and its slope 1 - t^2, from what kept_of_capped kept: no second tanh where
// |u| <= 1
template <typename T, typename A> __device__ __forceinline__ A capped_from_kept(A k, A softcap, A& slope) {
    if (fabs(k) <= A(1)) {
        slope = A(1) - k * k;
        return softcap * k;
    }
    const A t = row_tanh<T>(k);
    slope = sech_squared(k, t);
    return softcap * t;
}

// cap_logit(x) with its slope, one tanh for both.
template <typename T, typename A> __device__ __forceinline__ A cap_with_slope(A x, A softcap, A inv_cap, A& slope) {
    if (softcap == A(0)) {
        slope = A(1);
        return x;
    }
    const A u = x * inv_cap, t = row_tanh<T>(u);
    slope = sech_squared(u, t);
    return softcap * t;
}

// The z-loss of a row, zc lse^2 (0 when off), adding its 2 zc lse to the softmax's
// coefficient in the gradient; `rest` is the row's sum less its max's 1 (RowState).
template <typename A> __device__ __forceinline__ A z_term(A zc, A m, A rest, A& grad_coef) {
    if (zc == A(0)) return A(0);
    const A lse = m + log1p(rest);
    grad_coef += A(2) * zc * lse;
    return zc * lse * lse;
}

template <typename A> __device__ __forceinline__ A z_coefficient(A z_loss, const A* z_factor_ptr) {
    return z_factor_ptr ? z_loss * *z_factor_ptr : z_loss;
}

// coef and dot of a row from its reduced sums (against the row's max).
template <typename T, typename A>
__device__ __forceinline__ void row_coefficients(const RowTarget& t, const TargetSums<A>& ts,
                                                 const T* class_weight, A smoothing,
                                                 A inv_classes, A& coef, A& dot) {
    if (t.kind == 3) {
        coef = ts.wa;
        dot = ts.a;
        return;
    }
    const A label_w = (t.kind == 1 && class_weight) ? to_acc(class_weight[t.label]) : A(1);
    const A keep = (A(1) - smoothing) * label_w;
    coef = keep + ts.wb;
    dot = (keep == A(0) ? A(0) : keep * ts.a) + ts.b;
}

// The gradient at the label where its exp is 1 (at the row's max), for a class label
// without smoothing: (2 zc lse s - w (1 - s)) * scale with 1 - s = rest / (1 + rest), the
// other exps' share (RowState's rest; lse = m + log1p(rest), as z_term's). s - 1 cancels there: it
// rounds to 0 within an ulp of s = 1 (a label logit 25 above 999 zeros gave 0 for
// -1.4e-8), as the host backends' form does not. NaN where the plain form holds
// (probabilities, smoothing, an overflowed z-loss coefficient): grad_of then takes it.
template <typename T, typename A>
__device__ __forceinline__ A label_grad_at_max(const RowTarget& t, A m, A rest, A zc,
                                               A grad_coef, const T* class_weight, A smoothing,
                                               A scale) {
    if (t.kind != 1 || smoothing != A(0) || !isfinite(grad_coef)) return quiet_nan<A>();
    const A w = class_weight ? to_acc(class_weight[t.label]) : A(1);
    const A sum = rest + A(1);
    const A z_grad = zc == A(0) ? A(0) : A(2) * zc * (m + log1p(rest));
    return (z_grad / sum - w * (rest / sum)) * scale;
}

// The gradient of one element: (softmax * coef - w q) * scale, from e = exp(x - max);
// at the label with e = 1, `label_grad` (label_grad_at_max) unless NaN.
template <typename T, typename A>
__device__ __forceinline__ A grad_of(A e, i64 c, const RowTarget& t, A prob_scale,
                                     const T* probs_row, const T* class_weight, A smoothing,
                                     A inv_classes, A scale, A label_grad) {
    if (c == t.label && e == A(1) && !isnan(label_grad)) return label_grad;
    A q;
    if (t.kind == 3) q = to_acc(probs_row[c]) * (A(1) - smoothing) + smoothing * inv_classes;
    else q = smoothing * inv_classes + (c == t.label ? (A(1) - smoothing) : A(0));
    if (class_weight && q != A(0)) q *= to_acc(class_weight[c]);
    // e * prob_scale - q in one rounding; where the z-loss's 2 zc lse overflowed (an
    // infinite scale, the same for the whole row) a softmax of 0 gives its limit 0, not NaN
    return (e == A(0) && isinf(prob_scale) ? A(0) - q : fma(e, prob_scale, -q)) * scale;
}

// The Hessian's diagonal of one element in the (capped) logits, times the scale:
// grad_coef s (1 - s) + 2 zc s^2 (grad_coef = coef + 2 zc lse). Where s > 1/2 (only a row's
// largest element, when it is the only one at the max) 1 - s is `rest_share`, the other
// elements' exps over the row's sum: 1 - s would round to 0 within an ulp of s = 1.
template <typename A>
__device__ __forceinline__ A hess_of(A softmax, A rest_share, A grad_coef, A zc, A scale) {
    const A rest = softmax > A(0.5) ? rest_share : A(1) - softmax;
    return scale * (times(softmax * rest, grad_coef) + A(2) * zc * (softmax * softmax));
}

// The Hessian in the logits: softcap's chain rule h slope^2 + g curve (cap_slopes; g is the
// gradient before its own chain rule); 0 in an ignored row, NaN in a row with a bad label.
template <typename A>
__device__ __forceinline__ A finish_hess(A h, A g, A slope, A curve, const RowTarget& t) {
    if (t.kind == 0) return A(0);
    if (t.kind == 2) return quiet_nan<A>();
    // (times: without softcap the curve is 0, and an infinite gradient, an overflowed
    // z-loss coefficient's, adds nothing)
    return h * (slope * slope) + times(curve, g);
}

template <typename A>
__device__ __forceinline__ A read_scale(const A* scale_ptr, A scale) {
    return scale_ptr ? *scale_ptr : scale;
}

template <typename T, typename A>
__device__ __forceinline__ void write_row_loss(A loss, i64 row, A* row_loss, T* row_out) {
    if (row_loss) row_loss[row] = loss;
    if (row_out) row_out[row] = from_acc<T>(loss);
}

// ---------------------------------------------------------------------------------------
// The state of a row's reduction, combined in one pass (online softmax): m the running max,
// `rest` the sum of exp(x - m) over every element but one at the max (the row's sum is
// 1 + rest; -1 for no element), and the target sums of gather_terms against m. The max's
// own 1 is never added: a confident row's loss, log1p(rest), keeps `rest` to its own
// precision (a sum holding the 1 kept it to an ulp of 1: a loss of 6e-40 came out 0).
// Combining is commutative, so every lane of a butterfly ends with the same bits.
template <typename A> struct RowState {
    A m, rest;
    TargetSums<A> ts;
};

template <typename A> __device__ __forceinline__ A row_sum(const RowState<A>& st) {
    return st.rest + A(1);
}

template <typename A> __device__ __forceinline__ RowState<A> empty_state() {
    RowState<A> st;
    st.m = neg_inf<A>();
    st.rest = -1;
    st.ts = no_target_sums<A>();
    return st;
}

// Adds the exp `e` of an element (z = x - the part's max) to `others`, but not the first
// element's at the max, which `skipped` records.
template <typename A> __device__ __forceinline__ void add_other(A e, A z, A& others, bool& skipped) {
    const bool one = !skipped && z == A(0);
    skipped = skipped || one;
    others += one ? A(0) : e;
}

// `rest` of a part whose exps add_other summed: `others`, or where no element at the max
// was met (no element: -1; NaN ones: NaN) the sum less 1.
template <typename A> __device__ __forceinline__ A rest_of(A others, bool skipped) {
    return skipped ? others : others - A(1);
}

template <typename A>
__device__ __forceinline__ RowState<A> combine(RowState<A> x, const RowState<A>& y) {
    const A top = fmax(x.m, y.m);
    if (x.m == y.m) {
        x.rest = (x.rest + y.rest) + A(1);  // both at the top: one max's 1 joins the rest
    } else {  // the lower part's 1 + rest moves to the top (an empty part's is 0)
        const RowState<A>& high = x.m > y.m ? x : y;
        const RowState<A>& low = x.m > y.m ? y : x;
        x.rest = high.rest + (low.rest + A(1)) * exp(shifted(low.m, top));
    }
    reshift_sums(x.ts, x.m, top);
    TargetSums<A> ys = y.ts;
    reshift_sums(ys, y.m, top);
    x.ts.a += ys.a;
    x.ts.wa += ys.wa;
    x.ts.b += ys.b;
    x.ts.wb += ys.wb;
    x.m = top;
    return x;
}

template <typename A> __device__ __forceinline__ RowState<A> warp_combine(RowState<A> x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        RowState<A> y;
        y.m = __shfl_xor_sync(0xffffffffu, x.m, offset);
        y.rest = __shfl_xor_sync(0xffffffffu, x.rest, offset);
        y.ts.a = __shfl_xor_sync(0xffffffffu, x.ts.a, offset);
        y.ts.wa = __shfl_xor_sync(0xffffffffu, x.ts.wa, offset);
        y.ts.b = __shfl_xor_sync(0xffffffffu, x.ts.b, offset);
        y.ts.wb = __shfl_xor_sync(0xffffffffu, x.ts.wb, offset);
        x = combine(x, y);
    }
    return x;
}

// The state of the whole row, known to every thread of the THREADS sharing it: one warp
// butterfly, then (blocks) one pass through shared memory.
template <int THREADS, typename A>
__device__ __forceinline__ RowState<A> row_combine(RowState<A> st) {
    st = warp_combine(st);
    if (THREADS <= 32) return st;
    __shared__ RowState<A> warp_states[32];
    __shared__ RowState<A> block_state;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_states[warp] = st;
    __syncthreads();
    if (warp == 0) {
        st = warp_combine(lane < THREADS / 32 ? warp_states[lane] : empty_state<A>());
        if (lane == 0) block_state = st;
    }
    __syncthreads();
    return block_state;
}

// A row's loss from its reduced state, written by the one thread that ``writes``, and the
// softmax's coefficient in its gradient (coef, with the z-loss's 2 zc lse); zc goes out.
template <typename T, typename A>
__device__ __forceinline__ A finish_row(const RowState<A>& st, const RowTarget& t,
                                        const T* class_weight, A smoothing, A inv_classes,
                                        A z_loss, const A* z_factor_ptr, bool writes, i64 row,
                                        A* row_loss, T* row_out, A& zc) {
    A coef, dot;
    row_coefficients<T, A>(t, st.ts, class_weight, smoothing, inv_classes, coef, dot);
    A grad_coef = coef;
    zc = z_coefficient(z_loss, z_factor_ptr);
    const A z = z_term(zc, st.m, st.rest, grad_coef);
    if (writes) {
        A loss = coef * log1p(st.rest) - dot + z;
        if (t.kind == 0) loss = 0;
        if (t.kind == 2) loss = quiet_nan<A>();
        write_row_loss<T, A>(loss, row, row_loss, row_out);
    }
    return grad_coef;
}
