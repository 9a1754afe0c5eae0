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
// log of the sum is log1p of the sum less the max's exp(0) = 1 (see RowState): exact for
// a confident row, whose loss is the small rest.
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
//   threads share a row: a warp (ROWS rows per block) or a whole block. (The host takes
//   them up to 2048 classes, up to 16384 with the Hessian: above 2048 ce_stream with the
//   row's end in shared memory ran faster on an H200.)
// - ce_stream<T, HESS, CAPPED, THREADS, IN_FLIGHT[, DOWN, STAGED]>: any C. A block per
//   row, an online max/sum pass, then the gradient pass (its second read served from
//   shared memory for the staged end, mostly from L2 for the rest). On an
//   H200 it beat register-resident rows spread over thread-block clusters of 2 to 8 blocks
//   at 32000 and 128256 classes (2026-11-26: 60 % against 46 %, 64 % against 43 % of copy),
//   and (2026-12-04) ce_stream itself with a cluster of 2 to 8 blocks per row, each
//   streaming a slice (0.12-0.57 of copy against 0.58-0.62 at 32000 and 128256 classes,
//   float32; benchmarks/results/gpu-h200/kernel-variants-2026-12-04.csv): both removed.
// Options as Liger-Kernel defines them: `softcap` > 0 replaces each logit by
// softcap tanh(x / softcap) as it is loaded (0: off), and the gradient gets the chain
// rule's 1 - tanh^2 as it is stored (from the logit read again: its own element, from
// cache, before it is overwritten); `z_loss` adds zc lse^2 per kept row, lse = m + log s,
// and 2 zc lse to the softmax's coefficient, zc = z_loss * (*z_factor_ptr when given:
// "mean" with class weights divides the z-loss by the kept rows' count, not their weights).
//
// Row losses go to `row_loss` (float accumulation, for a reduction) or `row_out` (the
// user's "none" array). A label outside [0, C) that is not ignore_index never indexes
// memory: its row gets NaN and `error` is set when given.
//
// The kernels are in the headers below, a family each (cross_entropy_small, _rows,
// _stream); this file holds what finishes a launch. lossbackends/_cuda_sources.py inlines
// the headers, so a change to any of them changes CuPy's cache key.
#include "common.cuh"
#include "cross_entropy_row.cuh"
#include "cross_entropy_small.cuh"
#include "cross_entropy_rows.cuh"
#include "cross_entropy_stream.cuh"
#include "multiclass_hinge.cuh"

// ---------------------------------------------------------------------------------------
// The labels' pass, before the logits are read: the label check (`error` set when a label
// outside [0, C) is not ignore_index; the host waits for this launch alone, not for the
// main kernel queued behind it) and, for "mean" (`scale_out` given), the gradient's scale,
// 1 / the summed weights of the kept rows: blocks write partial sums, the last block adds
// them in a fixed order and writes the scale (one launch).
template <typename T>
__global__ void __launch_bounds__(1024) ce_labels(const i64* labels, i64 rows,
                                                  const T* class_weight, i64 classes,
                                                  i64 ignore_index,
                                                  typename AccOf<T>::type* partials,
                                                  unsigned* done,
                                                  typename AccOf<T>::type* scale_out,
                                                  int* error) {
    typedef typename AccOf<T>::type A;
    __shared__ A scratch[32];
    A total = 0;
    bool bad = false;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < rows; i += (i64)gridDim.x * blockDim.x) {
        const i64 y = labels[i];
        if (y == ignore_index) continue;
        if (y >= 0 && y < classes)
            total += class_weight ? to_acc(class_weight[y]) : A(1);
        else
            bad = true;
    }
    if (bad && error) *error = 1;
    if (!scale_out) return;
    total = block_sum<1024>(total, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
    if (!last_block(done)) return;
    const A all = block_sum_of<A>(partials, gridDim.x, scratch);
    if (threadIdx.x == 0) *scale_out = A(1) / all;  // all rows ignored: inf, value NaN
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
