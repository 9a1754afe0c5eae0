// Softmax cross-entropy: the loss of each row and its gradient in one launch.
//
// Per row i with logits x, (smoothed) target q and class weights w, and z = x - max(x):
//   loss_i = coef * log(sum_c exp z_c) - dot,  coef = sum_c w_c q_c,  dot = sum_c w_c q_c z_c
//   grad_ic = (softmax(x)_c * coef - w_c q_c) * scale
//   hess_ic = (coef s_c (1 - s_c) + 2 zc s_c^2) * scale, s = softmax(x)   (when `hess` is not null;
//             coef with the z-loss's 2 zc lse, and softcap's chain rule: hess_of, finish_hess)
// For class indices q is (1 - e) onehot(y) + e / C, so coef = (1 - e) w_y + (e / C) W and
// dot = (1 - e) w_y z_y + (e / C) sum_c w_c z_c, with W = sum_c w_c.
// Both terms of the loss are >= 0, so nothing cancels (lse - x_y would, for large logits).
// z = 0 where a logit equals the max, also when both are infinite (not inf - inf = NaN):
// the limit where those logits grow together, so the softmax is uniform over them (over
// the whole row when every logit is -inf). A sum of w (x - ref) found against a part's
// own max ref moves to the row's max by adding W (ref - max): terms of one sign again.
//
// Kernels by class count (the host's choice and each template's settings:
// lossbackends/_cuda_sources.py; `python -m benchmarks.gpu_sweep` measures the others):
// - ce_small<T, ROWS>: C <= 32. A block stages ROWS rows in shared memory with coalesced
//   loads; a thread computes one row; the gradient leaves with coalesced stores.
// - ce_rows<T, THREADS, VPT, ROWS, MIN_BLOCKS>: the row lives in registers (VPT values per
//   thread), so the logits are read from DRAM once and the gradient written once. THREADS
//   threads share a row: a warp (ROWS rows per block) or a whole block.
// - ce_stream<T, HESS, CAPPED, THREADS, IN_FLIGHT>: any C. A block per row, an online
//   max/sum pass, then the gradient pass (its second read mostly served from L2). On an
//   H200 it beat register-resident rows spread over thread-block clusters of 2 to 8 blocks
//   at 32000 and 128256 classes (2026-11-26: 60 % against 46 %, 64 % against 43 % of copy).
// - ce_stream_cluster<T, CAPPED, THREADS, IN_FLIGHT, CLUSTER> (sm_90): ce_stream with a
//   cluster of blocks per row, each streaming a slice: fewer rows in flight, so the second
//   read stays in L2 at 128256 classes too. Not chosen by default until a GPU run shows it wins.
// Options as Liger-Kernel defines them: `softcap` > 0 replaces each logit by
// softcap tanh(x / softcap) as it is loaded (0: off), and the gradient gets the chain
// rule's 1 - tanh^2 as it is stored (from the logit read again: its own element, from
// cache, before it is overwritten); `z_loss` adds zc lse^2 per kept row, lse = m + log s,
// and 2 zc lse to the softmax's coefficient, zc = z_loss * (*z_factor_ptr when given:
// "mean" with class weights divides the z-loss by the kept rows' count, not their weights).
//
// Multiclass hinge (Crammer-Singer), `mh_rows`: THREADS threads per row read it once for
// the label's score and the best other one (lowest index at ties), then write the
// gradient row: zeros, +w at the best other class, -w at the label, where positive.
//
// Row losses go to `row_loss` (float accumulation, for a reduction) or `row_out` (the
// user's "none" array). A label outside [0, C) that is not ignore_index never indexes
// memory: its row gets NaN and `error` is set when given.
#include "common.cuh"

struct RowTarget {
    int kind;   // 0: ignored row, 1: valid label, 2: bad label, 3: probabilities
    i64 label;
};

__device__ __forceinline__ RowTarget row_target(const i64* labels, i64 row, i64 classes,
                                                i64 ignore_index, int* error) {
    RowTarget t;
    if (labels == 0) { t.kind = 3; t.label = -1; return t; }
    t.label = labels[row];
    if (t.label == ignore_index) t.kind = 0;
    else if (t.label >= 0 && t.label < classes) t.kind = 1;
    else {
        t.kind = 2;
        if (error) *error = 1;  // every writer stores the same 1
    }
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
// they resolve (and no call to the precise division's slow path, which spilled).
template <typename T> __device__ __forceinline__ typename AccOf<T>::type row_tanh(typename AccOf<T>::type u) {
    return tanh(u);
}
template <> __device__ __forceinline__ float row_tanh<half_t>(float u) {
    return copysignf(1.0f - __fdividef(2.0f, __expf(2.0f * fabsf(u)) + 1.0f), u);
}
template <> __device__ __forceinline__ float row_tanh<bf16_t>(float u) {
    return copysignf(1.0f - __fdividef(2.0f, __expf(2.0f * fabsf(u)) + 1.0f), u);
}

// softcap tanh(x / softcap), or x when softcap is 0 (off); inv_cap = 1 / softcap, found
// once per thread (a division per element calls the precise division's slow path).
template <typename T, typename A> __device__ __forceinline__ A cap_logit(A x, A softcap, A inv_cap) {
    return softcap > A(0) ? softcap * row_tanh<T>(x * inv_cap) : x;
}

// d/dx of cap_logit: 1 - tanh^2(x / softcap) (1 when off).
template <typename T, typename A> __device__ __forceinline__ A cap_slope(A x, A softcap, A inv_cap) {
    if (softcap == A(0)) return A(1);
    const A t = row_tanh<T>(x * inv_cap);
    return A(1) - t * t;
}

// d/dx and d^2/dx^2 of cap_logit: 1 - t^2 and -2 t (1 - t^2) / softcap, t = tanh(x / softcap)
// (1 and 0 when off), for the Hessian.
template <typename T, typename A> __device__ __forceinline__ A cap_slopes(A x, A softcap, A inv_cap, A& curve) {
    curve = A(0);
    if (softcap == A(0)) return A(1);
    const A t = row_tanh<T>(x * inv_cap);
    const A slope = A(1) - t * t;
    curve = A(-2) * t * slope * inv_cap;
    return slope;
}

// cap_logit(x) with its slope, one tanh for both.
template <typename T, typename A> __device__ __forceinline__ A cap_with_slope(A x, A softcap, A inv_cap, A& slope) {
    if (softcap == A(0)) {
        slope = A(1);
        return x;
    }
    const A t = row_tanh<T>(x * inv_cap);
    slope = A(1) - t * t;
    return softcap * t;
}

// The z-loss of a row, zc lse^2 (0 when off), adding its 2 zc lse to the softmax's
// coefficient in the gradient.
template <typename A> __device__ __forceinline__ A z_term(A zc, A m, A s, A& grad_coef) {
    if (zc == A(0)) return A(0);
    const A lse = m + log(s);
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

// The gradient of one element: (softmax * coef - w q) * scale, from e = exp(x - max).
template <typename T, typename A>
__device__ __forceinline__ A grad_of(A e, i64 c, const RowTarget& t, A prob_scale,
                                     const T* probs_row, const T* class_weight, A smoothing,
                                     A inv_classes, A scale) {
    A q;
    if (t.kind == 3) q = to_acc(probs_row[c]) * (A(1) - smoothing) + smoothing * inv_classes;
    else q = smoothing * inv_classes + (c == t.label ? (A(1) - smoothing) : A(0));
    if (class_weight && q != A(0)) q *= to_acc(class_weight[c]);
    return (e * prob_scale - q) * scale;
}

// The Hessian's diagonal of one element in the (capped) logits, times the scale:
// grad_coef s (1 - s) + 2 zc s^2 (grad_coef = coef + 2 zc lse). Where s > 1/2 (only a row's
// largest element, when it is the only one at the max) 1 - s is `rest_share`, the other
// elements' exps over the row's sum: 1 - s would round to 0 within an ulp of s = 1.
template <typename A>
__device__ __forceinline__ A hess_of(A softmax, A rest_share, A grad_coef, A zc, A scale) {
    const A rest = softmax > A(0.5) ? rest_share : A(1) - softmax;
    return scale * (grad_coef * (softmax * rest) + A(2) * zc * (softmax * softmax));
}

// The Hessian in the logits: softcap's chain rule h slope^2 + g curve (cap_slopes; g is the
// gradient before its own chain rule); 0 in an ignored row, NaN in a row with a bad label.
template <typename A>
__device__ __forceinline__ A finish_hess(A h, A g, A slope, A curve, const RowTarget& t) {
    if (t.kind == 0) return A(0);
    if (t.kind == 2) return quiet_nan<A>();
    return h * (slope * slope) + g * curve;
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
// C <= 32: ROWS rows per block, one per thread, staged through shared memory.
template <typename T, int ROWS>
__global__ void __launch_bounds__(ROWS) ce_small(
    const T* logits, const i64* __restrict__ labels, const T* __restrict__ probs,
    const T* __restrict__ class_weight, T* grad, typename AccOf<T>::type* row_loss, T* row_out,
    int* error, i64 rows, i64 classes, i64 ignore_index, typename AccOf<T>::type smoothing,
    typename AccOf<T>::type scale, const typename AccOf<T>::type* scale_ptr, T* hess,
    typename AccOf<T>::type z_loss, const typename AccOf<T>::type* z_factor_ptr,
    typename AccOf<T>::type softcap) {
    typedef typename AccOf<T>::type A;
    extern __shared__ unsigned char smem_raw[];
    A* tile = reinterpret_cast<A*>(smem_raw);
    const i64 first_row = (i64)blockIdx.x * ROWS;
    const i64 tile_rows = rows - first_row < ROWS ? rows - first_row : ROWS;
    const i64 count = tile_rows * classes;
    const T* src = logits + first_row * classes;
    const A inv_cap = softcap > A(0) ? A(1) / softcap : A(0);
    for (i64 k = threadIdx.x; k < count; k += ROWS) tile[k] = cap_logit<T, A>(to_acc(src[k]), softcap, inv_cap);
    __syncthreads();
    const A inv_classes = A(1) / A(classes);
    const A sc = read_scale(scale_ptr, scale);
    A block_loss = 0;
    if (threadIdx.x < tile_rows) {
        const i64 row = first_row + threadIdx.x;
        A* x = tile + threadIdx.x * classes;
        const RowTarget t = row_target(labels, row, classes, ignore_index, error);
        const T* probs_row = probs ? probs + row * classes : 0;
        A m = neg_inf<A>();
        for (i64 c = 0; c < classes; ++c) m = fmax(m, x[c]);
        TargetSums<A> ts = no_target_sums<A>();
        A s = 0;
        for (i64 c = 0; c < classes; ++c) {
            const A z = shifted(x[c], m);
            gather_terms<T, A>(z, c, t, probs_row, class_weight, smoothing, inv_classes, ts);
            const A e = row_exp<T>(z);
            x[c] = e;
            s += e;
        }
        A coef, dot;
        row_coefficients<T, A>(t, ts, class_weight, smoothing, inv_classes, coef, dot);
        A grad_coef = coef;
        const A zc = z_coefficient(z_loss, z_factor_ptr);
        A loss = coef * log(s) - dot + z_term(zc, m, s, grad_coef);
        if (t.kind == 0) loss = 0;
        if (t.kind == 2) loss = quiet_nan<A>();
        if (row_out) row_out[row] = from_acc<T>(loss);
        block_loss = loss;
        if (grad || hess) {
            const A prob_scale = grad_coef / s;
            const A inv_s = A(1) / s;
            // the Hessian leaves row by row (uncoalesced): only grad_and_hess asks for it
            T* h_row = hess ? hess + row * classes : 0;
            const T* x_row = logits + row * classes;  // the chain rule's logits, from cache
            // the exps of the elements below the max, over the row's sum (see hess_of); an
            // exp of 1 is at the max or close enough that no softmax exceeds 1/2
            A rest_share = 0;
            if (h_row) {
                for (i64 c = 0; c < classes; ++c) rest_share += x[c] == A(1) ? A(0) : x[c];
                rest_share *= inv_s;
            }
            for (i64 c = 0; c < classes; ++c) {
                A g = grad_of<T, A>(x[c], c, t, prob_scale, probs_row, class_weight,
                                    smoothing, inv_classes, sc);
                if (h_row) {
                    A curve;
                    const A slope = cap_slopes<T, A>(to_acc(x_row[c]), softcap, inv_cap, curve);
                    h_row[c] = from_acc<T>(finish_hess<A>(
                        hess_of<A>(x[c] * inv_s, rest_share, grad_coef, zc, sc), g, slope, curve, t));
                }
                if (softcap != A(0)) g *= cap_slope<T, A>(to_acc(x_row[c]), softcap, inv_cap);
                if (t.kind == 0) g = 0;
                if (t.kind == 2) g = quiet_nan<A>();
                x[c] = g;
            }
        }
    }
    if (row_loss) {  // one partial sum per block: the value's pass reads rows / ROWS numbers
        __shared__ A scratch[32];
        block_loss = block_sum<ROWS>(block_loss, scratch);
        if (threadIdx.x == 0) row_loss[blockIdx.x] = block_loss;
    }
    if (grad == 0) return;
    __syncthreads();
    T* dst = grad + first_row * classes;
    for (i64 k = threadIdx.x; k < count; k += ROWS) dst[k] = from_acc<T>(tile[k]);
}

// ---------------------------------------------------------------------------------------
// The state of a row's reduction, combined in one pass (online softmax): m the running max,
// s the sum of exp(x - m), and the target sums of gather_terms against m. Combining is
// commutative, so every lane of a butterfly ends with the same bits.
template <typename A> struct RowState {
    A m, s;
    TargetSums<A> ts;
};

template <typename A> __device__ __forceinline__ RowState<A> empty_state() {
    RowState<A> st;
    st.m = neg_inf<A>();
    st.s = 0;
    st.ts = no_target_sums<A>();
    return st;
}

template <typename A>
__device__ __forceinline__ RowState<A> combine(RowState<A> x, const RowState<A>& y) {
    const A top = fmax(x.m, y.m);
    // an empty part (m = -inf, s = 0) adds 0 * exp(finite) = 0
    x.s = x.s * exp(shifted(x.m, top)) + y.s * exp(shifted(y.m, top));
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
        y.s = __shfl_xor_sync(0xffffffffu, x.s, offset);
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
    const A z = z_term(zc, st.m, st.s, grad_coef);
    if (writes) {
        A loss = coef * log(st.s) - dot + z;
        if (t.kind == 0) loss = 0;
        if (t.kind == 2) loss = quiet_nan<A>();
        write_row_loss<T, A>(loss, row, row_loss, row_out);
    }
    return grad_coef;
}

// ---------------------------------------------------------------------------------------
// A row in registers. Thread `lane` of the THREADS sharing a row holds, for pack k < VPT / W,
// the W columns starting at (k * THREADS + lane) * W: consecutive threads read
// consecutive 16-byte packs. One reduction per row; each exp computed once.
template <typename T, int THREADS, int VPT, int ROWS>
__device__ __forceinline__ void ce_rows_body(
    const T* logits, const i64* __restrict__ labels, const T* __restrict__ probs,
    const T* __restrict__ class_weight, T* grad, typename AccOf<T>::type* row_loss, T* row_out,
    int* error, i64 rows, i64 classes, i64 ignore_index, typename AccOf<T>::type smoothing,
    typename AccOf<T>::type scale, const typename AccOf<T>::type* scale_ptr, T* hess,
    typename AccOf<T>::type z_loss, const typename AccOf<T>::type* z_factor_ptr,
    typename AccOf<T>::type softcap, int packed) {
    typedef typename AccOf<T>::type A;
    const int W = VecWidth<T>::value;
    const int PACKS = VPT / W;
    const int lane = THREADS == 32 ? (threadIdx.x & 31) : threadIdx.x;
    const i64 row = THREADS == 32 ? (i64)blockIdx.x * ROWS + (threadIdx.x >> 5) : (i64)blockIdx.x;
    if (THREADS == 32 && row >= rows) return;  // whole warps leave; no block barrier follows
    const T* x_row = logits + row * classes;
    const T* probs_row = probs ? probs + row * classes : 0;
    const RowTarget t = row_target(labels, row, classes, ignore_index, error);
    const A inv_classes = A(1) / A(classes);
    const A inv_cap = softcap > A(0) ? A(1) / softcap : A(0);

    A v[VPT];
#pragma unroll
    for (int k = 0; k < PACKS; ++k) {
        const i64 col = ((i64)k * THREADS + lane) * W;
        if (packed && col + W <= classes) {
            const Pack<T> pk = *reinterpret_cast<const Pack<T>*>(x_row + col);
#pragma unroll
            for (int e = 0; e < W; ++e) v[k * W + e] = cap_logit<T, A>(to_acc(pk.v[e]), softcap, inv_cap);
        } else {
#pragma unroll
            for (int e = 0; e < W; ++e)
                v[k * W + e] = col + e < classes ? cap_logit<T, A>(to_acc(x_row[col + e]), softcap, inv_cap)
                                                 : neg_inf<A>();
        }
    }
    RowState<A> st = empty_state<A>();
#pragma unroll
    for (int k = 0; k < VPT; ++k) st.m = fmax(st.m, v[k]);
    const A own_max = st.m;
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
            st.s += v[k * W + e];
        }
    }
    st = row_combine<THREADS>(st);
    A zc;
    const A grad_coef = finish_row<T, A>(st, t, class_weight, smoothing, inv_classes, z_loss,
                                         z_factor_ptr, lane == 0, row, row_loss, row_out, zc);
    if (grad || hess) {
        const A sc = read_scale(scale_ptr, scale);
        // softmax = exp(x - own_max) * exp(own_max - row max) / s: one exp per thread
        const A prob_scale = grad_coef / st.s * exp(shifted(own_max, st.m));
        const A softmax_scale = exp(shifted(own_max, st.m)) / st.s;
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
                A g = grad_of<T, A>(v[k * W + e], col + e, t, prob_scale, probs_row,
                                    class_weight, smoothing, inv_classes, sc);
                // the chain rule's logit: this thread's own element, read again from cache
                // (only with softcap), before this thread overwrites it
                A slope = A(1), curve = A(0);
                if (softcap != A(0) && col + e < classes)
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
        T *row_out, int *error, i64 rows, i64 classes, i64 ignore_index,                      \
        typename AccOf<T>::type smoothing, typename AccOf<T>::type scale,                     \
        const typename AccOf<T>::type *scale_ptr, T *hess, typename AccOf<T>::type z_loss,    \
        const typename AccOf<T>::type *z_factor_ptr, typename AccOf<T>::type softcap, int packed
#define CE_ROWS_CALL                                                                          \
    logits, labels, probs, class_weight, grad, row_loss, row_out, error, rows, classes,       \
        ignore_index, smoothing, scale, scale_ptr, hess, z_loss, z_factor_ptr, softcap, packed

// MIN_BLOCKS: the blocks per SM the registers must allow (__launch_bounds__' second bound)
template <typename T, int THREADS, int VPT, int ROWS, int MIN_BLOCKS>
__global__ void __launch_bounds__(THREADS * ROWS, MIN_BLOCKS) ce_rows(CE_ROWS_ARGS) {
    ce_rows_body<T, THREADS, VPT, ROWS>(CE_ROWS_CALL);
}

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

template <typename T>
__device__ __forceinline__ void stream_fold(const Pack<T>& pk, int valid, i64 first_col,
                                            const RowTarget& t,
                                            const T* probs_row, const T* class_weight,
                                            typename AccOf<T>::type smoothing,
                                            typename AccOf<T>::type inv_classes,
                                            typename AccOf<T>::type softcap,
                                            typename AccOf<T>::type inv_cap,
                                            RowState<typename AccOf<T>::type>& st) {
    typedef typename AccOf<T>::type A;
    const int W = VecWidth<T>::value;
    A x[W];
    A top = st.m;
#pragma unroll
    for (int e = 0; e < W; ++e) {
        x[e] = e < valid ? cap_logit<T, A>(to_acc(pk.v[e]), softcap, inv_cap) : neg_inf<A>();
        top = fmax(top, x[e]);
    }
    // the state moves to the new max (the empty state: m = -inf, s = 0 stays 0)
    A sum = st.s * exp(shifted(st.m, top));
    reshift_sums(st.ts, st.m, top);
#pragma unroll
    for (int e = 0; e < W; ++e) {
        if (e < valid) {
            const A z = shifted(x[e], top);
            gather_terms<T, A>(z, first_col + e, t, probs_row, class_weight, smoothing,
                               inv_classes, st.ts);
            sum += row_exp<T>(z);
        }
    }
    st.s = sum;
    st.m = top;
}

template <typename T>
__device__ __forceinline__ void stream_store(const Pack<T>& pk, i64 k, T* g_row, const RowTarget& t,
                                             typename AccOf<T>::type m,
                                             typename AccOf<T>::type prob_scale,
                                             const T* probs_row, const T* class_weight,
                                             typename AccOf<T>::type smoothing,
                                             typename AccOf<T>::type inv_classes,
                                             typename AccOf<T>::type sc,
                                             typename AccOf<T>::type softcap,
                                             typename AccOf<T>::type inv_cap) {
    typedef typename AccOf<T>::type A;
    const int W = VecWidth<T>::value;
    Pack<T> out;
#pragma unroll
    for (int e = 0; e < W; ++e) {
        A slope;
        const A xe = cap_with_slope<T, A>(to_acc(pk.v[e]), softcap, inv_cap, slope);
        A g = grad_of<T, A>(row_exp<T>(shifted(xe, m)), k * W + e, t, prob_scale, probs_row,
                            class_weight, smoothing, inv_classes, sc) * slope;
        if (t.kind == 0) g = 0;
        if (t.kind == 2) g = quiet_nan<A>();
        out.v[e] = from_acc<T>(g);
    }
    reinterpret_cast<Pack<T>*>(g_row)[k] = out;
}

// HESS: the instance that writes `hess` alone, launched after the other one (a second read
// of the row, only for grad_and_hess above 16384 classes): both in one kernel spilled in
// bf16 (64 registers without the Hessian). CAPPED: soft-capping compiled in (its registers
// cost the plain kernel's packs in flight: the host asks for one pack fewer in flight).
// THREADS: 256, 512 or 1024; the registers allow 1024 threads per SM at least.
template <typename T, bool HESS, int CAPPED, int THREADS, int IN_FLIGHT>
__global__ void __launch_bounds__(THREADS, 1024 / THREADS) ce_stream(CE_ROWS_ARGS) {
    typedef typename AccOf<T>::type A;
    if (!CAPPED) softcap = A(0);  // a constant: the capping code compiles away
    const int W = VecWidth<T>::value;
    const i64 row = blockIdx.x;
    const T* x_row = logits + row * classes;
    const T* probs_row = probs ? probs + row * classes : 0;
    const RowTarget t = row_target(labels, row, classes, ignore_index, error);
    const A inv_classes = A(1) / A(classes);
    const A inv_cap = softcap > A(0) ? A(1) / softcap : A(0);
    const Pack<T>* x_packs = reinterpret_cast<const Pack<T>*>(x_row);
    const i64 packs = packed ? classes / W : 0;
    RowState<A> st = empty_state<A>();
    for_packs_in_flight<T, IN_FLIGHT, THREADS>(x_packs, packs, [&](const Pack<T>& pk, i64 k) {
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
    if (HESS) {  // the Hessian alone: the gradient is ce_stream<T, false, ...>'s, launched first
        const A inv_s = A(1) / st.s;
        // the exps of the elements below the max, over the row's sum (see hess_of): one
        // more read of the row, only for grad_and_hess
        A part = 0;
        for (i64 c = threadIdx.x; c < classes; c += THREADS) {
            const A zc_ = shifted(cap_logit<T, A>(to_acc(x_row[c]), softcap, inv_cap), m);
            if (zc_ != A(0)) part += row_exp<T>(zc_);
        }
        __shared__ A scratch[32];
        const A rest_share = block_sum<THREADS>(part, scratch) * inv_s;
        const A prob_scale = grad_coef / st.s;
        T* h_row = hess + row * classes;
        for (i64 c = threadIdx.x; c < classes; c += THREADS) {  // element by element, coalesced
            A slope, curve;
            const A x = to_acc(x_row[c]);
            slope = cap_slopes<T, A>(x, softcap, inv_cap, curve);
            const A e = row_exp<T>(shifted(cap_logit<T, A>(x, softcap, inv_cap), m));
            const A g = grad_of<T, A>(e, c, t, prob_scale, probs_row, class_weight, smoothing,
                                      inv_classes, sc);
            h_row[c] = from_acc<T>(finish_hess<A>(hess_of<A>(e * inv_s, rest_share, grad_coef, zc, sc),
                                                  g, slope, curve, t));
        }
        return;
    }
    if (grad == 0) return;
    const A prob_scale = grad_coef / st.s;
    T* g_row = grad + row * classes;
    // the second read of the row: mostly from L2 while the rows in flight fit there
    for_packs_in_flight<T, IN_FLIGHT, THREADS>(x_packs, packs, [&](const Pack<T>& pk, i64 k) {
        stream_store<T>(pk, k, g_row, t, m, prob_scale, probs_row, class_weight, smoothing,
                        inv_classes, sc, softcap, inv_cap);
    });
    for (i64 c = packs * W + threadIdx.x; c < classes; c += THREADS) {
        A slope;
        const A xc = cap_with_slope<T, A>(to_acc(x_row[c]), softcap, inv_cap, slope);
        A g = grad_of<T, A>(row_exp<T>(shifted(xc, m)), c, t, prob_scale, probs_row,
                            class_weight, smoothing, inv_classes, sc) * slope;
        if (t.kind == 0) g = 0;
        if (t.kind == 2) g = quiet_nan<A>();
        g_row[c] = from_acc<T>(g);
    }
}

// ---------------------------------------------------------------------------------------
// sm_90: a cluster of CLUSTER blocks per row, each streaming its own slice of the row (an
// online max/sum pass, then the gradient pass over the slice again). Fewer rows are in
// flight than with ce_stream (a block per row), so the second read finds the slice in L2
// (or L1) where a block per row's did not (8192 x 128256 float32: 132 rows of 513 kB in
// flight, more than the 50-60 MB of L2). The blocks exchange their slices' states through
// distributed shared memory; each combines all of them in the same order (the same bits
// in every block). Packed rows only (the host checks): C a multiple of the pack, no tail.
// The PTX below is sm_90's; nothing else in this file needs it.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
__device__ __forceinline__ unsigned cluster_rank() {
    unsigned rank;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
    return rank;
}

// Every thread of every block of the cluster arrives, then waits (release, acquire).
__device__ __forceinline__ void cluster_barrier() {
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// The shared::cluster address of this block's shared `p` in block `rank` of the cluster.
__device__ __forceinline__ unsigned cluster_address(const void* p, unsigned rank) {
    unsigned local, remote;
    asm volatile("{\n\t.reg .u64 a;\n\tcvta.to.shared.u64 a, %1;\n\tcvt.u32.u64 %0, a;\n\t}"
                 : "=r"(local) : "l"(p));
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
    return remote;
}

template <typename A> __device__ __forceinline__ A cluster_load(unsigned address);
template <> __device__ __forceinline__ float cluster_load<float>(unsigned address) {
    float v;
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(address) : "memory");
    return v;
}
template <> __device__ __forceinline__ double cluster_load<double>(unsigned address) {
    double v;
    asm volatile("ld.shared::cluster.f64 %0, [%1];" : "=d"(v) : "r"(address) : "memory");
    return v;
}

// Block `rank`'s state, read from its shared `state` (six numbers: m, s and the sums).
template <typename A>
__device__ __forceinline__ RowState<A> remote_state(const RowState<A>* state, unsigned rank) {
    const unsigned at = cluster_address(state, rank);
    RowState<A> st;
    st.m = cluster_load<A>(at);
    st.s = cluster_load<A>(at + sizeof(A));
    st.ts.a = cluster_load<A>(at + 2 * sizeof(A));
    st.ts.wa = cluster_load<A>(at + 3 * sizeof(A));
    st.ts.b = cluster_load<A>(at + 4 * sizeof(A));
    st.ts.wb = cluster_load<A>(at + 5 * sizeof(A));
    return st;
}

template <typename T, int CAPPED, int THREADS, int IN_FLIGHT, int CLUSTER>
__global__ void __cluster_dims__(CLUSTER, 1, 1) __launch_bounds__(THREADS, 1024 / THREADS)
ce_stream_cluster(CE_ROWS_ARGS) {
    typedef typename AccOf<T>::type A;
    if (!CAPPED) softcap = A(0);
    const int W = VecWidth<T>::value;
    const unsigned rank = cluster_rank();
    const i64 row = blockIdx.x / CLUSTER;
    const T* x_row = logits + row * classes;
    const T* probs_row = probs ? probs + row * classes : 0;
    const RowTarget t = row_target(labels, row, classes, ignore_index, rank == 0 ? error : 0);
    const A inv_classes = A(1) / A(classes);
    const A inv_cap = softcap > A(0) ? A(1) / softcap : A(0);
    const i64 packs = classes / W;  // = C / W: packed rows only
    const i64 per_block = (packs + CLUSTER - 1) / CLUSTER;
    const i64 first = per_block * rank < packs ? per_block * rank : packs;
    const i64 slice = first + per_block < packs ? per_block : packs - first;
    const Pack<T>* x_packs = reinterpret_cast<const Pack<T>*>(x_row) + first;
    RowState<A> st = empty_state<A>();
    for_packs_in_flight<T, IN_FLIGHT, THREADS>(x_packs, slice, [&](const Pack<T>& pk, i64 k) {
        stream_fold<T>(pk, W, (first + k) * W, t, probs_row, class_weight, smoothing,
                       inv_classes, softcap, inv_cap, st);
    });
    st = row_combine<THREADS>(st);
    __shared__ RowState<A> own_state, row_state;
    if (threadIdx.x == 0) own_state = st;
    cluster_barrier();
    if (threadIdx.x < 32) {  // the row's state: lane r reads block r's, then one butterfly
        // (the same lanes, inputs and steps in every block: the same bits), the remote
        // reads in flight together rather than one round trip per block in turn
        const unsigned lane = threadIdx.x;
        const RowState<A> all = warp_combine(lane < CLUSTER ? remote_state(&own_state, lane)
                                                            : empty_state<A>());
        if (lane == 0) row_state = all;
    }
    cluster_barrier();  // (every block has read the others' states: they may leave)
    st = row_state;
    const A m = st.m;
    A zc;
    const A grad_coef = finish_row<T, A>(st, t, class_weight, smoothing, inv_classes, z_loss,
                                         z_factor_ptr, rank == 0 && threadIdx.x == 0, row,
                                         row_loss, row_out, zc);
    if (grad == 0) return;
    const A sc = read_scale(scale_ptr, scale);
    const A prob_scale = grad_coef / st.s;
    T* g_row = grad + row * classes;
    for_packs_in_flight<T, IN_FLIGHT, THREADS>(x_packs, slice, [&](const Pack<T>& pk, i64 k) {
        stream_store<T>(pk, first + k, g_row, t, m, prob_scale, probs_row, class_weight,
                        smoothing, inv_classes, sc, softcap, inv_cap);
    });
}
#endif

// ---------------------------------------------------------------------------------------
// "mean" with class indices: the denominator (summed weights of the kept rows) from the
// labels alone, before the gradient is written. Blocks write partial sums; ce_mean_scale
// adds them in a fixed order and writes the gradient scale.
template <typename T>
__global__ void __launch_bounds__(1024) ce_label_weights(const i64* labels, i64 rows,
                                                         const T* class_weight, i64 classes,
                                                         i64 ignore_index,
                                                         typename AccOf<T>::type* partials) {
    typedef typename AccOf<T>::type A;
    __shared__ A scratch[32];
    A total = 0;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < rows; i += (i64)gridDim.x * blockDim.x) {
        const i64 y = labels[i];
        if (y != ignore_index && y >= 0 && y < classes)
            total += class_weight ? to_acc(class_weight[y]) : A(1);
    }
    total = block_sum<1024>(total, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

template <typename T>
__global__ void __launch_bounds__(1024) ce_mean_scale(const typename AccOf<T>::type* partials,
                                                      i64 count,
                                                      typename AccOf<T>::type* scale_out) {
    typedef typename AccOf<T>::type A;
    __shared__ A scratch[32];
    const A total = block_sum_of<A>(partials, count, scratch);
    if (threadIdx.x == 0) *scale_out = A(1) / total;  // all rows ignored: inf, value NaN
}

// The value: the row losses (or ce_small's per-block sums) added in a fixed order, times
// the scale.
template <typename T>
__global__ void __launch_bounds__(1024) ce_finalize(const typename AccOf<T>::type* row_loss,
                                                    i64 rows, T* value,
                                                    typename AccOf<T>::type scale,
                                                    const typename AccOf<T>::type* scale_ptr) {
    typedef typename AccOf<T>::type A;
    __shared__ A scratch[32];
    const A total = block_sum_of<A>(row_loss, rows, scratch);
    if (threadIdx.x == 0) *value = from_acc<T>(total * read_scale(scale_ptr, scale));
}

// "mean" of the z-loss with class weights: the kept rows' summed weights over their count,
// from the weights' scale (1 / summed weights) and the count.
template <typename T>
__global__ void ce_z_factor(const typename AccOf<T>::type* scale_ptr, const i64* kept,
                            typename AccOf<T>::type* z_factor) {
    typedef typename AccOf<T>::type A;
    *z_factor = *kept ? A(1) / (*scale_ptr * A(*kept)) : A(1);
}

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
    typename AccOf<T>::type* row_loss, T* row_out, int* error, i64 rows, i64 classes,
    typename AccOf<T>::type margin, typename AccOf<T>::type scale) {
    typedef typename AccOf<T>::type A;
    const int lane = THREADS == 32 ? (threadIdx.x & 31) : threadIdx.x;
    const i64 row = THREADS == 32 ? (i64)blockIdx.x * ROWS + (threadIdx.x >> 5) : (i64)blockIdx.x;
    if (THREADS == 32 && row >= rows) return;  // whole warps leave; no block barrier follows
    const T* x_row = scores + row * classes;
    const i64 label = labels[row];
    const bool bad = label < 0 || label >= classes;
    if (bad && error) *error = 1;
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
