"""The losses over classes or distributions: cross-entropy and multiclass hinge (logits
with a class axis) and kl_div (a target distribution). One ``Loss`` object each, with its
formula; ``losses`` gathers every family.
"""

from __future__ import annotations

from ._loss import Loss
from ._prepare import prepare_kl_div
from ._prepare_rows import prepare_cross_entropy, prepare_multiclass_hinge

cross_entropy = Loss(
    "cross_entropy",
    prepare_cross_entropy,
    r"""Softmax cross-entropy on logits (PyTorch's ``cross_entropy``).

    .. math::
        \ell_i = \sum_c w_c q_{ic} \left(\mathrm{logsumexp}(x_i) - x_{ic}\right),
        \qquad \partial \ell_i / \partial x_{ic} = \mathrm{softmax}(x_i)_c \sum_k w_k q_{ik} - w_c q_{ic}

    .. math::
        \partial^2 \ell_i / \partial x_{ic}^2
            = \sum_k w_k q_{ik}\; \mathrm{softmax}(x_i)_c \left(1 - \mathrm{softmax}(x_i)_c\right)

    (the diagonal of the row's Hessian, what XGBoost's and LightGBM's softmax objectives
    use; ``grad_and_hess`` scales it as the gradient, and ignored rows get 0).

    ``y_pred`` are logits with the classes on ``axis`` (default -1). ``y_true`` is either
    integer class indices (the logits' shape without ``axis``; ``q`` is then one-hot) or
    probabilities shaped like the logits. ``label_smoothing=ε`` uses
    ``q = (1 - ε) q + ε / C``; ``class_weight`` (length ``C``, finite and ``>= 0``: else
    ``ValueError``, except on a GPU, where it is not checked) gives ``w``; rows whose label is
    ``ignore_index`` (default -100) have loss 0 and gradient 0 (with probabilities, which
    have no label to ignore, an ``ignore_index >= 0`` is a ``ValueError``, as in PyTorch).
    ``reduction="mean"`` divides by the summed weight :math:`w_{y_i}` of the kept rows with
    class indices (their count without weights) and by the number of rows with
    probabilities, as PyTorch does.

    Two options follow Liger-Kernel, fused in the same pass. ``z_loss=z`` (default 0)
    adds PaLM's auxiliary loss :math:`z\,\mathrm{lse}(x_i)^2` to each kept row, gradient
    :math:`2 z\,\mathrm{lse}(x_i)\,\mathrm{softmax}(x_i)_c`; class weights and label
    smoothing leave that term alone, ignored rows have none, and ``"mean"`` divides it by
    the number of kept rows (not their summed weights). ``softcap=c`` (default None: off)
    replaces every logit by :math:`c \tanh(x / c)` first, Gemma 2's soft-capping; the
    gradient then carries the chain rule's factor :math:`1 - \tanh^2(x / c)`, as ``1 - t *
    t`` within the cap and :math:`4 s / (1 + s)^2`, :math:`s = e^{-2|x| / c}`, beyond it,
    accurate relative to itself where ``1 - t * t`` (PyTorch's autograd of ``c * tanh(x /
    c)``) cancels, and is 0 in float32 from logits of about 8 ``c``: what remains is the
    rounding of ``x / c`` (about ``2|x| / c`` ulps) and, through each exp, of the capped
    logits (about ``c`` ulps). ``c`` is a normal number of the computing dtype (float32's
    for float16 logits), else ``ValueError``.
    ``grad_and_hess`` takes both: with the z-loss the Hessian's diagonal is
    :math:`(W_i + 2 z\,\mathrm{lse})\, s_c (1 - s_c) + 2 z s_c^2` (:math:`W_i = \sum_k w_k
    q_{ik}`, :math:`s = \mathrm{softmax}`), and with soft-capping, :math:`t = \tanh(x / c)`,
    it is :math:`h (1 - t^2)^2 - 2 g\, t (1 - t^2) / c`, where ``g`` and ``h`` are the
    gradient and the Hessian in the capped logits (so it may be negative). At ``s_c`` near
    1, ``1 - s_c`` is the other classes' share, exact to the last bit.

    Infinite logits equal to their row's max count as equal to it (the limit where they
    grow together): one ``+inf`` logit gives loss 0 for its own label and ``inf`` for any
    other, with a finite gradient; a NaN logit makes its row NaN.

    A label outside ``[0, C)`` raises ``ValueError``. On the GPU that check costs one small
    device-to-host synchronisation per call, on a pass over the labels that runs before the
    logits are read; ``check_labels=False`` skips it, and rows with a bad label then get
    NaN loss and gradient (never an out-of-bounds access).

    >>> import lossbackends as lb
    >>> print(f"{lb.cross_entropy([0, 2], [[2.0, 1.0, 0.1], [0.5, 0.2, 3.0]]):.6f}")
    0.275297
    >>> print(f"{lb.cross_entropy([0, 2], [[2.0, 1.0, 0.1], [0.5, 0.2, 3.0]], z_loss=1e-2):.6f}")
    0.353604
    >>> print(f"{lb.cross_entropy([0, 2], [[2.0, 1.0, 0.1], [0.5, 0.2, 3.0]], softcap=2.0):.6f}")
    0.482705
    >>> grad, hess = lb.cross_entropy.grad_and_hess([0], [[2.0, 1.0, 0.1]])
    >>> print(grad.round(6), hess.round(6))
    [[-0.340999  0.242433  0.098566]] [[0.224719 0.183659 0.088851]]
    """,
    class_indices=True,
)

multiclass_hinge = Loss(
    "multiclass_hinge",
    prepare_multiclass_hinge,
    r"""Crammer-Singer multiclass hinge loss on scores, with integer class labels.

    .. math::
        \ell_i = w_i \max\left(0,\ m + \max_{j \ne y_i} s_{ij} - s_{iy_i}\right), \qquad
        \partial \ell_i / \partial s_{ic} = w_i\,[\ell_i > 0]\,([c = j_i] - [c = y_i]),
        \qquad \partial^2 \ell_i / \partial s_{ic}^2 = 0

    where :math:`j_i` is the arg-max of the other classes' scores (the lowest index at a
    tie). ``y_pred`` are scores with the classes on ``axis`` (default -1), ``y_true`` one
    class index per row (the scores' shape without ``axis``); a label outside ``[0, C)``
    raises ``ValueError`` (on the GPU after one small synchronisation, which
    ``check_labels=False`` skips: the row's loss and gradient are then NaN). ``margin``
    ``m`` (finite in the computing dtype, else ``ValueError``) defaults to 1; ``weight``
    (optional) has the labels' shape, or broadcasts to it. A weight of 0 gives its row 0,
    even at an infinite loss; a NaN or infinite weight on a row of loss 0 gives a NaN loss
    there and leaves its gradient 0. ``reduction="mean"`` divides by the number of rows. The
    gradient is 0 at the kink (``\ell = 0`` exactly). The loss is piecewise linear: its
    Hessian is 0 away from the kink, and ``grad_and_hess`` gives 0 at the kink too. Equal
    infinite scores count as equal (``s_j - s_y = 0``); a NaN score makes its row NaN. With
    one class the loss is 0. The definition of optax's ``multiclass_hinge_loss`` and
    scikit-learn's ``hinge_loss`` with more than two classes.

    >>> import lossbackends as lb
    >>> scores = [[2.0, 1.5, -1.0], [0.2, 0.5, 0.1]]
    >>> print(f"{lb.multiclass_hinge([0, 2], scores):.4f}")
    0.9500
    >>> print(lb.multiclass_hinge.grad([0, 2], scores))
    [[-0.5  0.5  0. ]
     [ 0.   0.5 -0.5]]
    >>> print(lb.multiclass_hinge.grad_and_hess([0, 2], scores)[1])  # the diagonal
    [[0. 0. 0.]
     [0. 0. 0.]]
    """,
    class_indices=True,
)

kl_div = Loss(
    "kl_div",
    prepare_kl_div,
    r"""Kullback-Leibler divergence with log-probability predictions (PyTorch's
    ``kl_div``), option ``log_target=False``.

    .. math::
        \ell_i = w_i\, y_i (\log y_i - x_i), \qquad \partial \ell_i / \partial x_i = -w_i y_i,
        \qquad \partial^2 \ell_i / \partial x_i^2 = 0

    ``y_pred`` are log-probabilities ``x``. With ``log_target=True``, ``y_true`` holds
    log-probabilities too: :math:`\ell = e^{y} (y - x)`, gradient :math:`-e^{y}`. An element
    whose target probability is 0 costs 0, even where ``x = -inf``. As in PyTorch,
    ``reduction="mean"`` divides by the number of elements (PyTorch's ``"batchmean"`` is
    ``reduction="sum"`` divided by the batch size).

    >>> import lossbackends as lb, numpy as np
    >>> y, x = [0.2, 0.8, 0.0], np.log([0.5, 0.4, 0.1])
    >>> print(f"{lb.kl_div(y, x, reduction='sum'):.6f}")
    0.371260
    >>> print(lb.kl_div.grad(y, x, reduction="sum"))
    [-0.2 -0.8 -0. ]
    >>> print(lb.kl_div.grad_and_hess(y, x, reduction="sum")[1])  # linear in x
    [0. 0. 0.]
    """,
)
