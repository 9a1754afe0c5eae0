// The mathematics of the second set of elementwise losses, once each: the loss of one
// element, its derivative in p and its second derivative `h` (NaN exactly where the
// derivative is; removed by the compiler where no Hessian is asked). `o` holds the loss's options as its preparation in
// lossbackends/_prepare.py gives them (padded with zeros to three; booleans are 1 and 0).
// Options are uniform across a launch, so branches on them do not diverge. Comparisons
// are written so that NaN propagates.
#pragma once

template <typename A> struct Options {
    A a, b, c;
};

// sign(e): +0 at +-0 (NumPy's and PyTorch's), NaN kept
template <typename A> __device__ __forceinline__ A sign_of(A e) {
    return e > A(0) ? A(1) : (e < A(0) ? A(-1) : (e == e ? A(0) : e));
}

// k / v, 0 where k = 0 and v = 0: as times(k, 1 / v), a label of 0 contributes nothing
template <typename A> __device__ __forceinline__ A over(A k, A v) {
    return k == A(0) && v == A(0) ? A(0) : k / v;
}

// 0, NaN where e is NaN: the second derivative of a piecewise-linear piece
template <typename A> __device__ __forceinline__ A zero_or_nan(A e) {
    return e == e ? A(0) : e;
}

template <typename A> __device__ __forceinline__ void mae(A y, A p, Options<A>, A& loss, A& d, A& h) {
    const A e = p - y;
    loss = fabs(e);
    d = sign_of(e);  // 0 at a tie
    h = zero_or_nan(e);  // piecewise linear: 0 (at the kink too)
}

template <typename A> __device__ __forceinline__ void huber(A y, A p, Options<A> o, A& loss, A& d, A& h) {
    const A delta = o.a, e = p - y, a = fabs(e);
    loss = a <= delta ? A(0.5) * e * e : delta * (a - A(0.5) * delta);
    d = e < -delta ? -delta : (e > delta ? delta : e);  // clip, NaN kept
    // 1 in the quadratic zone, |e| = delta included (the value's branch, as PyTorch), 0 beyond
    h = a <= delta ? A(1) : zero_or_nan(a);
}

template <typename A> __device__ __forceinline__ void smooth_l1(A y, A p, Options<A> o, A& loss, A& d, A& h) {
    const A beta = o.a, e = p - y, a = fabs(e);
    const bool inside = a < beta;  // never for beta = 0: the absolute error
    const A slope = e / beta;  // within +-1 inside: e^2 / 2 beta as e / 2 times it never overflows
    loss = inside ? A(0.5) * e * slope : a - A(0.5) * beta;
    d = inside ? slope : sign_of(e);
    h = inside ? A(1) / beta : zero_or_nan(a);  // 0 from |e| = beta on (as PyTorch)
}

template <typename A> __device__ __forceinline__ void log_cosh(A y, A p, Options<A>, A& loss, A& d, A& h) {
    const A e = p - y, a = fabs(e);
    // log cosh a = log1p(2 sinh(a/2)^2) while cosh is small (exact near 0, where the other
    // form is a difference of numbers near log 2); a + log1p(exp(-2a)) - log 2 beyond
    // (never overflows)
    const A s = sinh(A(0.5) * a), t = exp(A(-2) * a);
    loss = a < A(1) ? log1p(A(2) * s * s) : a + log1p(t) - A(0.69314718055994530942);
    d = tanh(e);
    h = A(4) * t / ((A(1) + t) * (A(1) + t));  // sech^2: no 1 - tanh^2 to cancel
}

template <typename A> __device__ __forceinline__ void squared_hinge(A y, A s, Options<A> o, A& loss, A& d, A& h) {
    const A slack = o.a - times(y, s);  // a label of 0 times an infinite score is 0, as hinge
    const A active = slack <= A(0) ? A(0) : slack;  // max(slack, 0), NaN kept
    loss = active * active;
    d = slack > A(0) ? A(-2) * y * active : zero_or_nan(slack);  // +0 where the margin holds, not -t 0
    h = slack > A(0) ? A(2) * y * y : zero_or_nan(slack);  // 0 from the kink on
}

template <typename A> __device__ __forceinline__ void soft_margin(A y, A s, Options<A>, A& loss, A& d, A& h) {
    // softplus(z), z = -t s: max(z, 0) + log1p(exp(-|z|)); derivative -t sigmoid(z),
    // second derivative t^2 sigmoid(z) sigmoid(-z) = t^2 e / (1 + e)^2, e = exp(-|z|)
    const A z = -times(y, s), t = exp(-fabs(z));
    loss = (z > A(0) ? z : A(0)) + log1p(t);
    d = -y * ((z >= A(0) ? A(1) : t) / (A(1) + t));
    h = y * y * t / ((A(1) + t) * (A(1) + t));
}

// torchvision's sigmoid_focal_loss: p = sigmoid(x), ce = BCE_with_logits(x, y),
// q = 1 - p_t = p (1 - y) + (1 - p) y, loss = alpha_t q^gamma ce, alpha_t = a y + b (1 - y);
// d loss / dx = alpha_t q^gamma ((p - y) + gamma r s ce), r = p (1 - p) / q (0 where q is
// 0: its limit), s = 1 - 2y; d2 loss / dx2 = alpha_t q^gamma (gamma (gamma - 1) s^2 r^2 ce
// + gamma s r (1 - 2p) ce + 2 gamma s r (p - y) + p (1 - p)) (the derivation: the NumPy
// backend). o = (a, b, gamma).
template <typename A> __device__ __forceinline__ void sigmoid_focal(A y, A x, Options<A> o, A& loss, A& d,
                                                                    A& h) {
    const A gamma = o.c, t = exp(-fabs(x)), inv = A(1) / (A(1) + t);
    const A p = (x >= A(0) ? A(1) : t) * inv, c = (x >= A(0) ? t : A(1)) * inv;
    const A q = p * (A(1) - y) + c * y;
    const A ce = times(x >= A(0) ? A(1) - y : -y, x) + log1p(t);
    const A qg = gamma == A(2) ? q * q : pow(q, gamma);
    const A alpha_t = o.a * y + o.b * (A(1) - y), modulator = alpha_t * qg;
    const A r = q != A(0) ? p * c / q : A(0);  // (q < 0 for a label beyond [0, 1])
    // at an infinite x, ce is inf: the loss is inf where alpha_t q > 0 (even if q^gamma
    // underflows), else 0
    const A limit = alpha_t > A(0) && q > A(0) ? ce : A(0);
    loss = isinf(ce) ? limit : modulator * ce;
    const A rce = times(r, ce), s = A(1) - A(2) * y;
    // p - y = q - 2 y (1 - p): no p - 1 to cancel for a label of 1 (q = 1 - p exactly)
    const A residual = q - A(2) * y * c;
    d = modulator * (residual + gamma * s * rce);
    h = modulator * (gamma * (gamma - A(1)) * s * s * r * rce + gamma * s * (c - p) * rce +
                     A(2) * gamma * s * r * residual + p * c);
}

// PyTorch's poisson_nll_loss; o = (log_input, full, eps)
template <typename A> __device__ __forceinline__ void poisson_nll(A y, A x, Options<A> o, A& loss, A& d, A& h) {
    if (o.a != A(0)) {  // x = log(rate): exp(x) - y x
        const A rate = exp(x);
        loss = rate - times(y, x);
        if (isinf(rate) && isfinite(y)) loss = rate;  // the limit at x = inf, not inf - inf; NaN y kept
        d = rate - y;
        h = rate;
    } else {  // x = rate: x - y log(x + eps)
        const A shifted = x + o.c;
        // y / (x + eps), then over it again: no reciprocal, which overflows for a subnormal
        // x + eps where y / (x + eps) does not, and no 1 / (x + eps)^2
        const A ratio = over(y, shifted);
        // y log(x + eps) of the exact sum s + r (r: the rounding of s, TwoSum): y log s +
        // y r / s. A rate near 1 loses eps in s; none to add where s is not finite
        const A bb = shifted - x;
        A correction = ratio * ((x - (shifted - bb)) + (o.c - bb));
        if (!isfinite(correction)) correction = A(0);
        loss = x - (times(y, log_of(shifted)) + correction);
        if (isinf(x) && x > A(0) && isfinite(y)) loss = x;  // the limit (x outgrows y log x), not inf - inf
        d = A(1) - ratio;
        h = over(ratio, shifted);
    }
    if (o.b != A(0) && y > A(1))  // Stirling's term where y > 1
        loss += y * log(y) - y + A(0.5) * log(A(6.28318530717958647692) * y);
}

// PyTorch's kl_div, x = log-probabilities; o.a = log_target
template <typename A> __device__ __forceinline__ void kl_div(A y, A x, Options<A> o, A& loss, A& d, A& h) {
    const bool log_target = o.a != A(0);
    const A target = log_target ? exp(y) : y;
    const A value = target * ((log_target ? y : log_of(y)) - x);
    // a target of probability 0 costs nothing, even at x = -inf; NaN x stays NaN
    loss = target == A(0) && x == x ? A(0) : value;
    d = -target;
    h = zero_or_nan(target);  // linear in x
}

// quantile max(y - p, 0) + (1 - quantile) max(p - y, 0); o.a = quantile, o.b = 1 - quantile
// (taken in float64 on the host: in float32 it loses the small side), o.c = 0 - quantile
template <typename A> __device__ __forceinline__ void pinball(A y, A p, Options<A> o, A& loss, A& d, A& h) {
    const A e = p - y, upper = o.b;
    // quantile 0 or 1: 0 inf = 0, the max's limit; quantile |e|: +0 at a tie (y = -0
    // included), not -0
    loss = e > A(0) ? times(upper, e) : times(o.a, fabs(e));
    d = e > A(0) ? upper : (e < A(0) ? o.c : A(0) * e + A(0));  // +0 at a tie (-0 + 0), NaN kept
    h = zero_or_nan(e);  // piecewise linear: 0 (at the kink too)
}
