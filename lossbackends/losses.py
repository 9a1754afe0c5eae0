"""The losses: one ``Loss`` object each, with its formula, and the seed's drop-ins.

Each backend states the mathematics once per loss in its own module
(``lossbackends/backends/*``, ``kernels/*.cu``); the options are checked once, in
``_prepare.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._dispatch import device_of
from ._loss import Loss
from ._prepare import (
    prepare_bce,
    prepare_bce_with_logits,
    prepare_hinge,
    prepare_huber,
    prepare_kl_div,
    prepare_log_cosh,
    prepare_mae,
    prepare_mse,
    prepare_pinball,
    prepare_poisson_nll,
    prepare_sigmoid_focal,
    prepare_smooth_l1,
    prepare_soft_margin,
    prepare_squared_hinge,
)
from ._prepare_rows import prepare_cross_entropy, prepare_multiclass_hinge

mse = Loss(
    "mse",
    prepare_mse,
    r"""Mean squared error (PyTorch's ``mse_loss``, scikit-learn's ``mean_squared_error``).

    .. math::
        \ell_i = w_i (p_i - y_i)^2, \qquad \partial \ell_i / \partial p_i = 2 w_i (p_i - y_i),
        \qquad \partial^2 \ell_i / \partial p_i^2 = 2 w_i

    ``y_true`` and ``y_pred`` have the same shape; ``weight`` (optional) broadcasts to it.
    ``reduction="mean"`` divides the sum by the number of elements (weighted or not).

    >>> import lossbackends as lb
    >>> print(f"{lb.mse([3, -0.5, 2, 7], [2.5, 0.0, 2, 8]):.4f}")
    0.3750
    >>> print(lb.mse.grad([3, -0.5, 2, 7], [2.5, 0.0, 2, 8]))
    [-0.25  0.25  0.    0.5 ]
    >>> print(lb.mse.grad_and_hess([3, -0.5, 2, 7], [2.5, 0.0, 2, 8], reduction="sum")[1])
    [2. 2. 2. 2.]
    """,
)

binary_cross_entropy = Loss(
    "binary_cross_entropy",
    prepare_bce,
    r"""Binary cross-entropy on probabilities.

    .. math::
        \ell_i = -w_i \left(y_i \log \hat p_i + (1 - y_i) \log(1 - \hat p_i)\right),
        \qquad \partial \ell_i / \partial p_i = w_i \frac{\hat p_i - y_i}{\hat p_i (1 - \hat p_i)},
        \qquad \partial^2 \ell_i / \partial p_i^2 = w_i \left(\frac{y_i}{\hat p_i^2}
            + \frac{1 - y_i}{(1 - \hat p_i)^2}\right)

    with :math:`\hat p = \mathrm{clip}(p, e, 1 - e)`, ``e = max(eps, finfo(dtype).eps)``,
    ``eps=1e-15`` by default (the seed's value). Outside ``[e, 1 - e]`` the gradient and the
    Hessian are those of the unclipped formula at the bound (as PyTorch's and Keras's
    gradients), not the 0 of a clipped function: the Hessian stays positive, what a Newton
    step needs (in float16, ``1 / e^2`` at the bound is 2^20, beyond its largest number: inf
    there, and the gradient ±1024; float32 keeps both finite). ``y_pred`` outside ``[0, 1]``
    is clipped alike, with no error (PyTorch's raises; NaN stays NaN): logits passed here by
    mistake give a finite loss. Prefer ``binary_cross_entropy_with_logits`` when you have
    logits: it is exact where this one must clip.

    The definition is PyTorch's ``binary_cross_entropy`` (and Keras's), with the seed's
    clip where PyTorch clamps each log at -100.

    >>> import lossbackends as lb
    >>> print(f"{lb.binary_cross_entropy([0, 1, 1, 0], [0.1, 0.8, 0.9, 0.2]):.6f}")
    0.164252
    >>> grad, hess = lb.binary_cross_entropy.grad_and_hess([0, 1], [0.1, 0.8], reduction="sum")
    >>> print(grad.round(6), hess.round(6))
    [ 1.111111 -1.25    ] [1.234568 1.5625  ]
    """,
)

binary_cross_entropy_with_logits = Loss(
    "binary_cross_entropy_with_logits",
    prepare_bce_with_logits,
    r"""Binary cross-entropy on logits, in PyTorch's stable form.

    .. math::
        \ell_i = w_i \left((1 - y_i) x_i + (1 + (q - 1) y_i)\,\mathrm{softplus}(-x_i)\right),
        \qquad \partial \ell_i / \partial x_i = w_i \left((1 + (q - 1) y_i)\,\sigma(x_i) - q y_i\right),

    .. math::
        \partial^2 \ell_i / \partial x_i^2 = w_i (1 + (q - 1) y_i)\,\sigma(x_i)\,\sigma(-x_i)

    where ``q`` is ``pos_weight`` (default 1; a scalar or a vector broadcast on the last axis;
    finite and ``>= 0``, else ``ValueError``, except on a GPU, where it is not checked: the
    check would wait for the GPU) and ``softplus(-x) = max(-x, 0) + log1p(exp(-|x|))``, finite for every finite ``x``. At
    ``x = +-inf`` the limits: loss 0 where the label agrees (``y = 1`` at ``+inf``), ``inf``
    otherwise; gradient ``1 - y`` at ``+inf``, ``-q y`` at ``-inf``; Hessian 0. The Hessian
    is computed as ``t / (1 + t)^2``, ``t = exp(-|x|)``: no ``1 - sigma`` to cancel.

    >>> import lossbackends as lb
    >>> print(f"{lb.binary_cross_entropy_with_logits([0, 1], [-2.0, 3.0]):.6f}")
    0.087758
    >>> grad, hess = lb.binary_cross_entropy_with_logits.grad_and_hess(
    ...     [0, 1], [-2.0, 3.0], reduction="sum")
    >>> print(grad.round(6), hess.round(6))
    [ 0.119203 -0.047426] [0.104994 0.045177]
    """,
)

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
    gradient then carries the chain rule's factor :math:`1 - \tanh^2(x / c)`, computed from
    the capped logit as ``1 - t * t`` (as autograd of ``c * tanh(x / c)`` does in PyTorch):
    it rounds to 0 from logits of about 10 ``c`` in float32 (19 ``c`` in float64), where
    the exact factor is below the dtype's epsilon. ``c`` is a normal number of the
    computing dtype (float32's for float16 logits), else ``ValueError``.
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

hinge = Loss(
    "hinge",
    prepare_hinge,
    r"""Hinge loss on scores, with labels used as given (±1 expected, as in optax).

    .. math::
        \ell_i = w_i \max(0, m - t_i s_i), \qquad
        \partial \ell_i / \partial s_i = -w_i t_i \,[m - t_i s_i > 0], \qquad
        \partial^2 \ell_i / \partial s_i^2 = 0

    ``margin`` ``m`` (finite in the computing dtype, float32 for float16 inputs, else
    ``ValueError``) defaults to 1. The gradient at exactly ``m - t s = 0`` is 0. The loss
    is piecewise linear: its Hessian is 0 away from the kink, and ``grad_and_hess`` gives
    0 at the kink too (a boosting objective floors it: see ``lossbackends.xgboost``).
    Labels of 0 and 1 are not mapped to -1 and +1 (scikit-learn's ``hinge_loss`` and our
    boosting objectives map them): a label 0 gives a constant loss ``m`` and no gradient;
    pass ``2 * y - 1``.

    >>> import lossbackends as lb
    >>> print(f"{lb.hinge([-1, 1, 1, -1], [-1.5, 1.2, 0.9, -0.8]):.3f}")
    0.075
    >>> print(lb.hinge.grad([-1, 1, 1, -1], [-1.5, 1.2, 0.9, -0.8], reduction="sum"))
    [ 0.  0. -1.  1.]
    >>> print(lb.hinge.grad_and_hess([-1, 1, 1, -1], [-1.5, 1.2, 0.9, -0.8],
    ...                              reduction="sum")[1])
    [0. 0. 0. 0.]
    """,
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

# --- the second set (the contract's "More losses"); e = p - y -----------------------------

mae = Loss(
    "mae",
    prepare_mae,
    r"""Mean absolute error (PyTorch's ``l1_loss``).

    .. math:: \ell_i = w_i |p_i - y_i|, \qquad \partial \ell_i / \partial p_i = w_i \,\mathrm{sign}(p_i - y_i),
        \qquad \partial^2 \ell_i / \partial p_i^2 = 0

    The gradient is 0 at a tie (``sign(0) = 0``, as PyTorch). Piecewise linear: its second
    derivative is 0 away from the kink, and ``grad_and_hess`` gives 0 at it too (a boosting
    objective uses the sample weight instead: see ``lossbackends.xgboost``). Shapes and
    ``weight`` as for ``mse``.

    >>> import lossbackends as lb
    >>> print(f"{lb.mae([3, -0.5, 2, 7], [2.5, 0.0, 2, 8]):.4f}")
    0.5000
    >>> print(lb.mae.grad([3, -0.5, 2, 7], [2.5, 0.0, 2, 8]))
    [-0.25  0.25  0.    0.25]
    >>> print(lb.mae.grad_and_hess([3, -0.5, 2, 7], [2.5, 0.0, 2, 8], reduction="sum")[1])
    [0. 0. 0. 0.]
    """,
)

huber = Loss(
    "huber",
    prepare_huber,
    r"""Huber loss (PyTorch's ``huber_loss``, optax's ``huber_loss``), option ``delta=1.0``.

    .. math::
        \ell_i = w_i \begin{cases} e_i^2 / 2 & |e_i| \le \delta \\
                                   \delta (|e_i| - \delta / 2) & \text{otherwise} \end{cases},
        \qquad \partial \ell_i / \partial p_i = w_i \,\mathrm{clip}(e_i, -\delta, \delta),
        \qquad \partial^2 \ell_i / \partial p_i^2 = w_i\,[|e_i| \le \delta]

    with :math:`e = p - y`; ``delta`` must be > 0 and not so small that it would round to 0
    or a subnormal in the computing dtype (float32's for float16 inputs; ``ValueError``
    otherwise); ``delta=inf`` is half the squared error, as in PyTorch. At
    ``|e| = delta`` the Hessian is the quadratic branch's 1, the branch the value takes
    there (a convention at the kink: PyTorch's autograd reads 0 there, optax's 0.25).

    >>> import lossbackends as lb
    >>> print(f"{lb.huber([0.0, 0.0, 0.0], [0.5, -2.0, 3.0]):.6f}")
    1.375000
    >>> print(lb.huber.grad([0.0, 0.0, 0.0], [0.5, -2.0, 3.0], reduction="sum"))
    [ 0.5 -1.   1. ]
    >>> print(lb.huber.grad_and_hess([0.0, 0.0, 0.0], [0.5, -1.0, 3.0], reduction="sum")[1])
    [1. 1. 0.]
    """,
)

smooth_l1 = Loss(
    "smooth_l1",
    prepare_smooth_l1,
    r"""Smooth L1 loss (PyTorch's ``smooth_l1_loss``), option ``beta=1.0``.

    .. math::
        \ell_i = w_i \begin{cases} e_i^2 / (2\beta) & |e_i| < \beta \\
                                   |e_i| - \beta / 2 & \text{otherwise} \end{cases},
        \qquad \partial \ell_i / \partial p_i = w_i \begin{cases} e_i / \beta & |e_i| < \beta \\
                                   \mathrm{sign}(e_i) & \text{otherwise} \end{cases},
        \qquad \partial^2 \ell_i / \partial p_i^2 = \frac{w_i}{\beta}\,[|e_i| < \beta]

    ``beta=0`` is ``mae``; a negative ``beta``, or one between 0 and the computing dtype's
    smallest normal number, is a ``ValueError``. Equal, to rounding, to
    ``huber(delta=beta) / beta`` for ``beta > 0``, except the Hessian at ``|e| = beta``: 0
    here, the branch the value takes there (PyTorch's second derivative too).

    >>> import lossbackends as lb
    >>> print(f"{lb.smooth_l1([0.0, 0.0, 0.0], [0.5, -2.0, 3.0], beta=2.0):.6f}")
    1.020833
    >>> print(lb.smooth_l1.grad([0.0, 0.0, 0.0], [0.5, -2.0, 3.0], beta=2.0, reduction="sum"))
    [ 0.25 -1.    1.  ]
    >>> print(lb.smooth_l1.grad_and_hess([0.0, 0.0, 0.0], [0.5, -2.0, 3.0], beta=2.0,
    ...                                  reduction="sum")[1])
    [0.5 0.  0. ]
    """,
)

log_cosh = Loss(
    "log_cosh",
    prepare_log_cosh,
    r"""Log-cosh loss (optax's ``log_cosh``).

    .. math::
        \ell_i = w_i \log\cosh(e_i) = w_i \left(|e_i| + \mathrm{log1p}(e^{-2|e_i|}) - \log 2\right),
        \qquad \partial \ell_i / \partial p_i = w_i \tanh(e_i),
        \qquad \partial^2 \ell_i / \partial p_i^2 = w_i \,\mathrm{sech}^2(e_i)
            = w_i \frac{4 t_i}{(1 + t_i)^2}, \quad t_i = e^{-2|e_i|}

    The second forms are the ones computed: they never overflow (``cosh`` does past
    ``|e| ~ 89`` in float32), and the Hessian has no ``1 - tanh^2`` to cancel.

    >>> import lossbackends as lb
    >>> print(f"{lb.log_cosh([0.0, 0.0, 0.0], [0.5, -2.0, 100.0], reduction='sum'):.6f}")
    100.751970
    >>> print(lb.log_cosh.grad([0.0, 0.0, 0.0], [0.5, -2.0, 100.0], reduction="sum"))
    [ 0.46211716 -0.96402758  1.        ]
    >>> print(lb.log_cosh.grad_and_hess([0.0, 0.0, 0.0], [0.5, -2.0, 30.0], reduction="sum")[1])
    [7.86447733e-01 7.06508249e-02 3.50260431e-26]
    """,
)

squared_hinge = Loss(
    "squared_hinge",
    prepare_squared_hinge,
    r"""Squared hinge loss on scores (Keras's ``squared_hinge``), option ``margin=1.0``
    (at most the square root of the computing dtype's largest number, float32's for
    float16 inputs, beyond which every loss near a score of 0 overflows; else
    ``ValueError``).

    .. math::
        \ell_i = w_i \max(0, m - t_i s_i)^2, \qquad
        \partial \ell_i / \partial s_i = -2 w_i t_i \max(0, m - t_i s_i), \qquad
        \partial^2 \ell_i / \partial s_i^2 = 2 w_i t_i^2 \,[m - t_i s_i > 0]

    Labels ``t`` are used as given, ±1 expected (as ``hinge``; Keras remaps ``{0, 1}``
    labels, we do not). At the kink (``m = t s``) the Hessian is 0, as the gradient.

    >>> import lossbackends as lb
    >>> print(f"{lb.squared_hinge([-1, 1, 1, -1], [-1.5, 1.2, 0.9, -0.8]):.4f}")
    0.0125
    >>> print(lb.squared_hinge.grad([-1, 1, 1, -1], [-1.5, 1.2, 0.9, -0.8], reduction="sum"))
    [ 0.  -0.  -0.2  0.4]
    >>> print(lb.squared_hinge.grad_and_hess([-1, 1, 1, -1], [-1.5, 1.2, 0.9, -0.8],
    ...                                      reduction="sum")[1])
    [0. 0. 2. 2.]
    """,
)

soft_margin = Loss(
    "soft_margin",
    prepare_soft_margin,
    r"""Soft-margin (logistic) loss on scores (PyTorch's ``soft_margin_loss``).

    .. math::
        \ell_i = w_i \log(1 + e^{-t_i s_i}), \qquad
        \partial \ell_i / \partial s_i = -w_i t_i \,\sigma(-t_i s_i), \qquad
        \partial^2 \ell_i / \partial s_i^2 = w_i t_i^2 \,\sigma(t_i s_i)\,\sigma(-t_i s_i)

    computed as ``softplus(-t s) = max(-t s, 0) + log1p(exp(-|t s|))`` with a sigmoid that
    never overflows, and the Hessian as ``t^2 u / (1 + u)^2``, ``u = exp(-|t s|)``; labels
    ``t`` are ±1.

    >>> import lossbackends as lb
    >>> print(f"{lb.soft_margin([-1, 1, 1], [-1.5, 0.2, -3.0]):.6f}")
    1.282713
    >>> print(lb.soft_margin.grad([-1, 1, 1], [-1.5, 0.2, -3.0], reduction="sum"))
    [ 0.18242552 -0.450166   -0.95257413]
    >>> print(lb.soft_margin.grad_and_hess([-1, 1, 1], [-1.5, 0.2, -3.0], reduction="sum")[1])
    [0.14914645 0.24751657 0.04517666]
    """,
)

sigmoid_focal = Loss(
    "sigmoid_focal",
    prepare_sigmoid_focal,
    r"""Sigmoid focal loss on logits (torchvision's ``sigmoid_focal_loss``), options
    ``alpha=0.25`` (``None``: no balancing) and ``gamma=2.0``.

    .. math::
        \ell_i = w_i \alpha_t q_i^\gamma\, \mathrm{ce}_i, \qquad
        \partial \ell_i / \partial x_i = w_i \alpha_t q_i^\gamma
            \left((p_i - y_i) + \gamma\, s_i r_i\, \mathrm{ce}_i\right)

    .. math::
        \partial^2 \ell_i / \partial x_i^2 = w_i \alpha_t q_i^\gamma \left(
            \gamma (\gamma - 1) s_i^2 r_i^2 \mathrm{ce}_i + \gamma s_i r_i (1 - 2 p_i) \mathrm{ce}_i
            + 2 \gamma s_i r_i (p_i - y_i) + p_i (1 - p_i)\right)

    with :math:`p = \sigma(x)`, :math:`\mathrm{ce} = \mathrm{BCE\_with\_logits}(x, y)`,
    :math:`q = 1 - p_t = p (1 - y) + (1 - p) y`, :math:`s = 1 - 2y` (so that
    :math:`dq/dx = p (1 - p) s`), :math:`\alpha_t = \alpha y + (1 - \alpha)(1 - y)` (1 without
    balancing) and :math:`r = p (1 - p) / q` (0 where ``q`` is 0; at most 1). All three are
    finite for every finite ``x``; ``p - y`` is computed as ``q - 2 y (1 - p)``, with no
    ``p - 1`` to cancel for a label of 1. The loss is not convex: the Hessian is negative
    for badly misclassified samples (from about ``|x| = 3`` on the wrong side: 3.1 at
    ``gamma = 1``, 2.8-2.9 for ``gamma`` 2 to 4). ``alpha`` must be in [0, 1] and
    ``gamma`` ``>= 0`` and at most the square root of the computing dtype's largest number
    (1.8e19 for float16 and float32 inputs, 1.3e154 for float64; a ``ValueError``
    otherwise). Integer ``gamma`` (0 to 4) is computed by multiplications, any other by
    ``pow``.

    >>> import lossbackends as lb
    >>> print(f"{lb.sigmoid_focal([1, 0, 1], [2.0, 0.5, -1.0], reduction='sum'):.6f}")
    0.458977
    >>> print(lb.sigmoid_focal.grad([1, 0, 1], [2.0, 0.5, -1.0], reduction="sum"))
    [-0.00121774  0.39461387 -0.19205868]
    >>> print(lb.sigmoid_focal.grad_and_hess([1, 0, 1, 1], [2.0, 0.5, -1.0, -6.0],
    ...                                      reduction="sum")[1])
    [ 0.00316939  0.36979627  0.11311617 -0.00426159]
    """,
)

poisson_nll = Loss(
    "poisson_nll",
    prepare_poisson_nll,
    r"""Poisson negative log-likelihood (PyTorch's ``poisson_nll_loss``), options
    ``log_input=True``, ``full=False``, ``eps=1e-8``.

    .. math::
        \ell_i = w_i \begin{cases} e^{x_i} - y_i x_i & \texttt{log\_input} \\
                                   x_i - y_i \log(x_i + \epsilon) & \text{otherwise} \end{cases},
        \qquad \partial \ell_i / \partial x_i = w_i \begin{cases} e^{x_i} - y_i \\
                                   1 - y_i / (x_i + \epsilon) \end{cases},
        \qquad \partial^2 \ell_i / \partial x_i^2 = w_i \begin{cases} e^{x_i} \\
                                   y_i / (x_i + \epsilon)^2 \end{cases}

    ``full=True`` adds Stirling's term :math:`y \log y - y + \log(2 \pi y) / 2` where
    ``y > 1`` (0 elsewhere), as PyTorch; it does not change the gradient. A term whose
    label is 0 is 0 (``0 * log 0 = 0``).

    >>> import lossbackends as lb
    >>> print(f"{lb.poisson_nll([0, 2, 5], [0.1, 0.7, 1.5]):.6f}")
    -0.433129
    >>> print(f"{lb.poisson_nll([0, 2, 5], [0.1, 0.7, 1.5], log_input=False, full=True):.6f}")
    2.136226
    >>> print(lb.poisson_nll.grad([0, 2, 5], [0.1, 0.7, 1.5], reduction="sum"))
    [ 1.10517092  0.01375271 -0.51831093]
    >>> print(lb.poisson_nll.grad_and_hess([0, 2, 5], [0.1, 0.7, 1.5], log_input=False,
    ...                                    reduction="sum")[1])
    [0.         4.08163254 2.22222219]
    """,
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

pinball = Loss(
    "pinball",
    prepare_pinball,
    r"""Pinball (quantile) loss (scikit-learn's ``mean_pinball_loss``), option
    ``quantile=0.5``.

    .. math::
        \ell_i = w_i \left(\tau \max(y_i - p_i, 0) + (1 - \tau) \max(p_i - y_i, 0)\right),
        \qquad \partial \ell_i / \partial p_i = w_i \begin{cases} -\tau & p_i < y_i \\
                                   1 - \tau & p_i > y_i \\ 0 & p_i = y_i \end{cases},
        \qquad \partial^2 \ell_i / \partial p_i^2 = 0

    with :math:`\tau` = ``quantile`` in [0, 1]. Piecewise linear: its second derivative is 0
    away from the kink, and ``grad_and_hess`` gives 0 at it too (a boosting objective uses
    the sample weight instead, as LightGBM's quantile objective). ``quantile=0.5`` is half
    ``mae``. At ``quantile`` 0 or 1 a term of coefficient 0 is 0 even where the difference
    is infinite (``max(p - y, 0)`` at ``p = -inf``), not ``0 * inf``.

    >>> import lossbackends as lb
    >>> print(f"{lb.pinball([1.0, 2.0, 3.0], [1.5, 1.0, 3.0], quantile=0.9):.6f}")
    0.316667
    >>> print(lb.pinball.grad([1.0, 2.0, 3.0], [1.5, 1.0, 3.0], quantile=0.9, reduction="sum"))
    [ 0.1 -0.9  0. ]
    >>> print(lb.pinball.grad_and_hess([1.0, 2.0, 3.0], [1.5, 1.0, 3.0], quantile=0.9,
    ...                                reduction="sum")[1])
    [0. 0. 0.]
    """,
)

LOSSES = {
    loss.name: loss
    for loss in (mse, binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, hinge,
                 mae, huber, smooth_l1, log_cosh, squared_hinge, soft_margin, sigmoid_focal,
                 poisson_nll, kl_div, pinball, multiclass_hinge)
}


# --- the seed's functions, same names, signatures and results --------------------------
# On host arrays they run on the NumPy backend, whose sums are NumPy's own (pairwise), and
# divide the sum by n as np.mean does (the losses' "mean" multiplies by 1 / n, which
# differs in the last bit about one time in five), so for float64 inputs they return the
# seed's results to the last bit; GPU arrays stay on the GPU.


def _seed_mean(loss: Loss, y_true: Any, y_pred: Any, **options: Any) -> Any:
    """np.mean of ``loss``'s elements, as the seed takes it: their pairwise sum over n."""
    backend = "cupy" if device_of(y_pred) == "cuda" else "numpy"
    total = loss(y_true, y_pred, reduction="sum", backend=backend, **options)
    shape = getattr(y_pred, "shape", None)  # every array library's; np.shape for lists
    size = math.prod(np.shape(y_pred) if shape is None else shape)
    if size == 0:  # the loss's own mean: NaN, with its warning
        return loss(y_true, y_pred, backend=backend, **options)
    return total / size


def mse_loss(y_true: Any, y_pred: Any) -> Any:
    """The seed's ``np.mean((y_true - y_pred) ** 2)``.

    >>> import numpy as np, lossbackends as lb
    >>> float(lb.mse_loss(np.array([3, -0.5, 2, 7]), np.array([2.5, 0.0, 2, 8])))
    0.375
    """
    return _seed_mean(mse, y_true, y_pred)


def binary_cross_entropy_loss(y_true: Any, y_pred: Any) -> Any:
    """The seed's binary cross-entropy, ``epsilon = 1e-15``.

    >>> import numpy as np, lossbackends as lb
    >>> float(lb.binary_cross_entropy_loss(np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.9, 0.2])))
    0.164252033486018
    """
    return _seed_mean(binary_cross_entropy, y_true, y_pred, eps=1e-15)


def hinge_loss(y_true: Any, y_pred: Any) -> Any:
    """The seed's ``np.mean(np.maximum(0, 1 - y_true * y_pred))``.

    >>> import numpy as np, lossbackends as lb
    >>> float(lb.hinge_loss(np.array([-1, 1, 1, -1]), np.array([-1.5, 1.2, 0.9, -0.8])))
    0.07499999999999998
    """
    return _seed_mean(hinge, y_true, y_pred, margin=1.0)
