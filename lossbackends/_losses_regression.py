"""The regression losses (an error e = p - y per element): mse, mae, huber, smooth_l1,
log_cosh, pinball, poisson_nll. One ``Loss`` object each, with its formula; ``losses``
gathers every family.
"""

from __future__ import annotations

from ._loss import Loss
from ._prepare import (
    prepare_huber,
    prepare_log_cosh,
    prepare_mae,
    prepare_mse,
    prepare_pinball,
    prepare_poisson_nll,
    prepare_smooth_l1,
)

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
