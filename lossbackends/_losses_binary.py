"""The losses of a binary target (a label of 0 or 1, or a sign of -1 or +1, per
element): binary cross-entropy on probabilities and on logits, hinge, squared hinge, soft
margin, sigmoid focal. One ``Loss`` object each, with its formula; ``losses`` gathers
every family.
"""

from __future__ import annotations

from ._loss import Loss
from ._prepare import (
    prepare_bce,
    prepare_bce_with_logits,
    prepare_hinge,
    prepare_sigmoid_focal,
    prepare_soft_margin,
    prepare_squared_hinge,
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
    ``eps=1e-15`` by default (the seed's value), and :math:`\log(1 - \hat p)` computed as
    :math:`\mathrm{log1p}(-\hat p)`: to an ulp for a small :math:`\hat p`, whose digits
    :math:`1 - \hat p` would round away (PyTorch's likewise; the seed's drop-in
    ``binary_cross_entropy_loss`` keeps the seed's ``log(1 - p)``). Outside ``[e, 1 - e]`` the gradient and the
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
    0 at the kink too (a boosting objective uses the sample weight instead: see
    ``lossbackends.xgboost``).
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
    labels, we do not): a label 0 gives the constant ``m^2`` and no gradient, at an
    infinite score too (``t s = 0``, where NumPy's ``0 * inf`` is NaN). At the kink (``m =
    t s``) the Hessian is 0, as the gradient.

    >>> import lossbackends as lb
    >>> print(f"{lb.squared_hinge([-1, 1, 1, -1], [-1.5, 1.2, 0.9, -0.8]):.4f}")
    0.0125
    >>> print(lb.squared_hinge.grad([-1, 1, 1, -1], [-1.5, 1.2, 0.9, -0.8], reduction="sum"))
    [ 0.   0.  -0.2  0.4]
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
    ``t`` are ±1, used as given: a label 0 gives the constant ``log 2``, at an infinite
    score too (``t s = 0``, where NumPy's ``0 * inf`` is NaN).

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
