// Elementwise losses: value and gradient in one pass, the reduction fused.
//
// `elementwise<T, LOSS>` reads y and p once (16-byte packs where every pointer allows),
// writes the gradient and/or the per-element losses, and accumulates w * loss per block.
// One block: it writes the final value itself (one launch for small inputs). Several:
// each writes a partial sum and `finalize<T>` adds them in a fixed order (bitwise
// reproducible, no floating-point atomics). All indices are 64-bit.
#include "common.cuh"
#include "losses.cuh"

enum { MSE = 0, BCE = 1, BCE_LOGITS = 2, HINGE = 3, MAE = 4, HUBER = 5, SMOOTH_L1 = 6,
       LOG_COSH = 7, SQUARED_HINGE = 8, SOFT_MARGIN = 9, SIGMOID_FOCAL = 10, POISSON_NLL = 11,
       KL_DIV = 12, PINBALL = 13 };  // lossbackends/_cuda_sources.py LOSS_IDS

// 1 / (1 + t) for t in [0, 1]. In float, __fdividef: within 2 ulp for a denominator in
// [1, 2]; the IEEE division's slow path (for operands near the range limits, never met
// here) made ptxas spill in BCE_LOGITS.
__device__ __forceinline__ float reciprocal_of_1p(float t) { return __fdividef(1.0f, 1.0f + t); }
__device__ __forceinline__ double reciprocal_of_1p(double t) { return 1.0 / (1.0 + t); }

// The mathematics of each loss, once: the loss of one element, its derivative in p and
// its second derivative `h` (unused, hence removed by the compiler, without a Hessian).
// `o.a` is eps (BCE, already max(eps, dtype eps)) or the margin (hinge); `pos` is the
// pos_weight of the element where `has_pos` (BCE with logits). The second set's
// mathematics: losses.cuh.
template <int LOSS, typename A>
__device__ __forceinline__ void loss_and_derivative(A y, A p, Options<A> o, bool has_pos, A pos,
                                                    A& loss, A& d, A& h) {
    const A param = o.a;
    if constexpr (LOSS == MSE) {
        const A diff = p - y;
        loss = diff * diff;
        d = A(2) * diff;
        h = A(2);
    } else if constexpr (LOSS == BCE) {
        // clip(p, e, 1 - e) by comparisons, so that NaN stays NaN (fmin and fmax drop it)
        const A high = A(1) - param;
        const A pc = p < param ? param : (p > high ? high : p);
        // log1p(-pc): log(1 - pc) lost pc's low digits as 1 - pc rounded
        loss = -(y * log(pc) + (A(1) - y) * log1p(-pc));
        d = (pc - y) / (pc * (A(1) - pc));
        // y / pc^2 + (1 - y) / (1 - pc)^2 at the clipped p: two terms >= 0, no cancellation
        const A q = A(1) - pc;
        h = y / (pc * pc) + (A(1) - y) / (q * q);
    } else if constexpr (LOSS == BCE_LOGITS) {
        // PyTorch's (1 - y) x + lw softplus(-x), lw = 1 + (q - 1) y = (1 - y) + q y,
        // written c |x| + lw log1p(t), t = exp(-|x|), c = 1 - y for x >= 0 and q y below:
        // terms of one sign for labels in [0, 1], nothing cancels; c = 0 at an infinite x
        // gives the limit 0, not 0 * inf = NaN. Gradient lw sigma(x) - q y =
        // (1 - y) sigma(x) - q y sigma(-x): no sigma(x) - 1 to cancel. A NaN x is not
        // >= 0, and flows through t.
        const A t = exp(-fabs(p));
        const bool positive = p >= A(0);
        const A keep = A(1) - y, hit = has_pos ? pos * y : y;
        const A coef = positive ? keep : hit;
        const A linear = coef == A(0) ? A(0) : coef * fabs(p);
        // lw is 1 without pos_weight (as NumPy and Numba): (1 - y) + y is not, for a NaN
        // or infinite label, y = -2^24 or |y| > 2^24 in float32
        const A lw = has_pos ? keep + hit : A(1);
        loss = linear + lw * log1p(t);
        // sigma(x) = 1 / (1 + t) for x >= 0, t / (1 + t) below; sigma(-x) the other one
        const A r = reciprocal_of_1p(t), tr = t * r;
        d = keep * (positive ? r : tr) - hit * (positive ? tr : r);
        h = lw * (tr * r);  // lw sigma(x) sigma(-x) = lw t / (1 + t)^2: no 1 - sigma
    } else if constexpr (LOSS == HINGE) {
        // max(0, m - t s); -t where m - t s > 0 (0 at the kink), NaN for NaN
        // a label of 0 times an infinite score is 0 (the limit), not NaN
        const A product = (y == A(0) && isinf(p)) ? A(0) : y * p;
        const A slack = param - product;
        loss = slack <= A(0) ? A(0) : slack;  // max(slack, 0), NaN kept (fmax drops it)
        d = slack > A(0) ? -y : (slack <= A(0) ? A(0) : slack);
        h = slack == slack ? A(0) : slack;  // piecewise linear: 0, NaN for NaN
    } else if constexpr (LOSS == MAE) {
        mae(y, p, o, loss, d, h);
    } else if constexpr (LOSS == HUBER) {
        huber(y, p, o, loss, d, h);
    } else if constexpr (LOSS == SMOOTH_L1) {
        smooth_l1(y, p, o, loss, d, h);
    } else if constexpr (LOSS == LOG_COSH) {
        log_cosh(y, p, o, loss, d, h);
    } else if constexpr (LOSS == SQUARED_HINGE) {
        squared_hinge(y, p, o, loss, d, h);
    } else if constexpr (LOSS == SOFT_MARGIN) {
        soft_margin(y, p, o, loss, d, h);
    } else if constexpr (LOSS == SIGMOID_FOCAL) {
        sigmoid_focal(y, p, o, loss, d, h);
    } else if constexpr (LOSS == POISSON_NLL) {
        poisson_nll(y, p, o, loss, d, h);
    } else if constexpr (LOSS == KL_DIV) {
        kl_div(y, p, o, loss, d, h);
    } else if constexpr (LOSS == PINBALL) {
        pinball(y, p, o, loss, d, h);
    } else {  // (a branch per id: a new id without one fails to compile, not runs another)
        static_assert(LOSS == PINBALL, "a loss id of LOSS_IDS without its branch here");
    }
}

template <typename T, int LOSS, bool HESS>
__device__ __forceinline__ typename AccOf<T>::type element(
    const T* __restrict__ y, const T* p, const T* __restrict__ weight,
    const T* __restrict__ pos_weight, i64 pos_len, T* grad, T* losses, T* __restrict__ hess,
    typename AccOf<T>::type scale, Options<typename AccOf<T>::type> param, i64 i, T yi, T pi) {
    typedef typename AccOf<T>::type A;
    const bool has_pos = LOSS == BCE_LOGITS && pos_weight;
    const A pos = has_pos ? to_acc(pos_weight[i % pos_len]) : A(1);
    A loss, d, h;
    loss_and_derivative<LOSS, A>(to_acc(yi), to_acc(pi), param, has_pos, pos, loss, d, h);
    if (weight) {
        const A w = to_acc(weight[i]);
        loss *= w;
        d *= w;
        h *= w;
    }
    if (HESS) hess[i] = from_acc<T>(h * scale);
    if (grad) grad[i] = from_acc<T>(d * scale);
    if (losses) losses[i] = from_acc<T>(loss);
    return loss;
}

// One 16-byte pack: the plain value+gradient paths stay vectorised, weights and
// pos_weight go element by element. Returns the pack's share of the sum.
template <typename T, int LOSS, bool HESS>
__device__ __forceinline__ typename AccOf<T>::type pack_step(
    const T* __restrict__ y, const T* p, const T* __restrict__ weight,
    const T* __restrict__ pos_weight, i64 pos_len, T* grad, T* losses, T* __restrict__ hess,
    typename AccOf<T>::type scale, Options<typename AccOf<T>::type> param, i64 k, const Pack<T>& yv,
    const Pack<T>& pv) {
    typedef typename AccOf<T>::type A;
    const int W = VecWidth<T>::value;
    A total = 0;
    // (a Hessian goes element by element: a third pack in registers would spill)
    if (!HESS && losses == 0 && weight == 0 && !(LOSS == BCE_LOGITS && pos_weight)) {
        Pack<T> gv;
#pragma unroll
        for (int e = 0; e < W; ++e) {
            A loss, d, h;
            loss_and_derivative<LOSS, A>(to_acc(yv.v[e]), to_acc(pv.v[e]), param, false, A(1),
                                         loss, d, h);
            total += loss;
            gv.v[e] = from_acc<T>(d * scale);
        }
        if (grad) reinterpret_cast<Pack<T>*>(grad)[k] = gv;
    } else {
#pragma unroll
        for (int e = 0; e < W; ++e)
            total += element<T, LOSS, HESS>(y, p, weight, pos_weight, pos_len, grad, losses,
                                            hess, scale, param, k * W + e, yv.v[e], pv.v[e]);
    }
    return total;
}

// p and grad may be the same array (out=y_pred): each element is read before it is written.
// HESS: `hess` receives the Hessian's diagonal (it is never p); a separate instance, so the
// value and gradient kernels stay exactly what they are without it.
template <typename T, int LOSS, bool HESS>
__global__ void __launch_bounds__(256) elementwise(
    const T* __restrict__ y, const T* p, const T* __restrict__ weight,
    const T* __restrict__ pos_weight, i64 pos_len, T* grad, T* losses, T* __restrict__ hess,
    typename AccOf<T>::type* partials, T* value, i64 n, int packed,
    typename AccOf<T>::type scale, typename AccOf<T>::type option0,
    typename AccOf<T>::type option1, typename AccOf<T>::type option2) {
    typedef typename AccOf<T>::type A;
    const Options<A> param = {option0, option1, option2};  // the loss's options
    const int W = VecWidth<T>::value;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    const i64 first = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    A total = 0;
    i64 tail = 0;
    if (packed) {  // every pointer is 16-byte aligned: whole packs, then the tail below
        const Pack<T>* y_packs = reinterpret_cast<const Pack<T>*>(y);
        const Pack<T>* p_packs = reinterpret_cast<const Pack<T>*>(p);
        const i64 packs = n / W;
        // two packs in flight per thread: both loads are issued before either is used
        for (i64 k = first; k < packs; k += 2 * stride) {
            const i64 k2 = k + stride;
            const Pack<T> y0 = y_packs[k], p0 = p_packs[k];
            Pack<T> y1, p1;
            if (k2 < packs) {
                y1 = y_packs[k2];
                p1 = p_packs[k2];
            }
            total += pack_step<T, LOSS, HESS>(y, p, weight, pos_weight, pos_len, grad, losses,
                                              hess, scale, param, k, y0, p0);
            if (k2 < packs)
                total += pack_step<T, LOSS, HESS>(y, p, weight, pos_weight, pos_len, grad,
                                                  losses, hess, scale, param, k2, y1, p1);
        }
        tail = packs * W;
    }
    for (i64 i = tail + first; i < n; i += stride)
        total += element<T, LOSS, HESS>(y, p, weight, pos_weight, pos_len, grad, losses, hess,
                                        scale, param, i, y[i], p[i]);
    if (partials == 0 && value == 0) return;
    __shared__ A scratch[32];
    total = block_sum<256>(total, scratch);
    if (threadIdx.x == 0) {
        if (gridDim.x == 1 && value) *value = from_acc<T>(total * scale);
        else partials[blockIdx.x] = total;
    }
}

// The value from the per-block partial sums, in a fixed order, times the reduction scale.
template <typename T>
__global__ void __launch_bounds__(1024) finalize(const typename AccOf<T>::type* partials, i64 count,
                                                 T* value, typename AccOf<T>::type scale) {
    typedef typename AccOf<T>::type A;
    __shared__ A scratch[32];
    const A total = block_sum_of<A>(partials, count, scratch);
    if (threadIdx.x == 0) *value = from_acc<T>(total * scale);
}
