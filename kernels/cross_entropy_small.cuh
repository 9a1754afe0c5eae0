// Cross-entropy for C <= 32 (see cross_entropy.cu).
#pragma once

#include "cross_entropy_row.cuh"

// ---------------------------------------------------------------------------------------
// C <= 32: ROWS rows per block, one per thread, staged through shared memory. On sm_90,
// 12 blocks of 128 threads per SM: ptxas then keeps the float types' kernels in 40
// registers without a spill, where its own choice spilled 8 bytes; on sm_80 the other way
// round (40 registers either way; NVRTC 13.5, ci/kernels). double's takes ptxas's (60-64).
#if __CUDA_ARCH__ >= 900
#define CE_SMALL_MIN_BLOCKS 12
#else
#define CE_SMALL_MIN_BLOCKS 0
#endif
template <typename T, int ROWS>
__global__ void __launch_bounds__(
    ROWS, sizeof(T) < 8 && ROWS * CE_SMALL_MIN_BLOCKS <= 2048 ? CE_SMALL_MIN_BLOCKS : 0) ce_small(
    const T* logits, const i64* __restrict__ labels, const T* __restrict__ probs,
    const T* __restrict__ class_weight, T* grad, typename AccOf<T>::type* row_loss, T* row_out,
    i64 rows, i64 classes, i64 ignore_index, typename AccOf<T>::type smoothing,
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
        const RowTarget t = row_target(labels, row, classes, ignore_index);
        const T* probs_row = probs ? probs + row * classes : 0;
        A m = neg_inf<A>();
        for (i64 c = 0; c < classes; ++c) m = fmax(m, x[c]);
        TargetSums<A> ts = no_target_sums<A>();
        A others = 0;  // the row's sum but the max's 1 (see RowState)
        bool skipped = false;
        for (i64 c = 0; c < classes; ++c) {
            const A z = shifted(x[c], m);
            gather_terms<T, A>(z, c, t, probs_row, class_weight, smoothing, inv_classes, ts);
            const A e = row_exp<T>(z);
            x[c] = e;
            add_other(e, z, others, skipped);
        }
        const A rest = rest_of(others, skipped), s = rest + A(1);
        A coef, dot;
        row_coefficients<T, A>(t, ts, class_weight, smoothing, inv_classes, coef, dot);
        A grad_coef = coef;
        const A zc = z_coefficient(z_loss, z_factor_ptr);
        A loss = coef * log1p(rest) - dot + z_term(zc, m, rest, grad_coef);
        if (t.kind == 0) loss = 0;
        if (t.kind == 2) loss = quiet_nan<A>();
        if (row_out) row_out[row] = from_acc<T>(loss);
        block_loss = loss;
        if (grad || hess) {
            const A prob_scale = grad_coef / s;
            const A inv_s = A(1) / s;
            const A label_grad = label_grad_at_max<T, A>(t, m, rest, zc, grad_coef,
                                                         class_weight, smoothing, sc);
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
                                    smoothing, inv_classes, sc, label_grad);
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
