"""Fit the float32 polynomials of the Numba backend: the tanh functions of
``lossbackends/backends/_numba_math.py`` and log cosh's of ``_numba_losses.py``.

The rational one: tanh(x) = x P(t) / Q(t), t = (x / 10)^2, P of degree 6 and Q of degree 3
in t with Q(0) = 1, on 0 < x <= 10: Lawson's iteration (iteratively reweighted least
squares) on the relative error, linearised as x P - tanh(x) Q over the previous Q. The
polynomial one near zero: tanh(x) = x + x z R(z), z = x^2, R of degree 6, on 0 < x <= 1,
by the same iteration (linear there). log cosh a = z (1/2 + z L(z)), z = a^2, L of degree 5,
on 0 < a <= 1, by the same iteration; beyond, log1p(t) = t + t^2 M(t) for t = exp(-2a) <=
exp(-2), M of degree 3, by the same iteration, and the same form on 0 < t <= 1, M of
degree 8 (the general float32 log1p of ``_numba_math.py``). Prints the coefficients in powers of x^2, rounded to
float32 (P(0) rounds to 1), as the modules hold them.
Run: python ci/fit_polynomials.py
"""

from __future__ import annotations

import numpy as np

LIMIT = 10.0  # beyond it tanh rounds to +-1 in float32; the kernel clamps there
NUMERATOR, DENOMINATOR = 7, 4  # coefficients of P and Q
NEAR, NEAR_TERMS = 1.0, 7  # the polynomial's range and its coefficients
LOG_COSH, LOG_COSH_TERMS = 1.0, 6  # log cosh's series: its range and L's coefficients
LOG1P_SMALL, LOG1P_SMALL_TERMS = float(np.exp(-2.0)), 4  # log cosh's log1p beyond the series
LOG1P_TERMS = 9  # the general log1p's M, on (0, 1]


def fit(iterations: int = 60) -> tuple[np.ndarray, np.ndarray, float]:
    x = np.sort(np.concatenate([np.linspace(1e-4, LIMIT, 200_000), np.geomspace(1e-4, 1, 20_000)]))
    t = (x / LIMIT) ** 2
    f = np.tanh(x)
    weights = np.ones_like(x)
    previous_q = np.ones_like(x)
    for _ in range(iterations):
        system = np.hstack([x[:, None] * t[:, None] ** np.arange(NUMERATOR),
                            -f[:, None] * t[:, None] ** np.arange(1, DENOMINATOR)])
        scale = np.sqrt(weights) / (f * previous_q)
        solution = np.linalg.lstsq(system * scale[:, None], f * scale, rcond=None)[0]
        p = solution[:NUMERATOR]
        q = np.concatenate([[1.0], solution[NUMERATOR:]])
        previous_q = np.polyval(q[::-1], t)
        error = (x * np.polyval(p[::-1], t) / previous_q - f) / f
        weights = weights * np.abs(error)
        weights /= weights.sum()
    # in powers of x^2 rather than of t
    p = p / LIMIT ** (2 * np.arange(NUMERATOR))
    q = q / LIMIT ** (2 * np.arange(DENOMINATOR))
    return p, q, float(np.abs(error).max())


def fit_near_zero(iterations: int = 100) -> tuple[np.ndarray, float]:
    x = np.sort(np.concatenate([np.linspace(1e-4, NEAR, 200_000), np.geomspace(1e-6, NEAR, 20_000)]))
    z = x * x
    f = np.tanh(x)
    powers = z[:, None] ** np.arange(NEAR_TERMS)
    weights = np.ones_like(x)
    for _ in range(iterations):
        # the relative error of x + x z R(z) is (x z R - (f - x)) / f: linear in R
        scale = np.sqrt(weights) * x * z / f
        r = np.linalg.lstsq(powers * scale[:, None], (f - x) / (x * z) * scale, rcond=None)[0]
        error = (x + x * z * (powers @ r) - f) / f
        weights = weights * np.abs(error)
        weights /= weights.sum()
    return r, float(np.abs(error).max())


def fit_log_cosh(iterations: int = 100) -> tuple[np.ndarray, float]:
    a = np.sort(np.concatenate([np.linspace(1e-4, LOG_COSH, 200_000),
                                np.geomspace(1e-6, LOG_COSH, 20_000)]))
    z = a * a
    f = np.log1p(2 * np.sinh(a / 2) ** 2)  # cosh a - 1 = 2 sinh^2(a/2): exact near 0
    powers = z[:, None] ** np.arange(LOG_COSH_TERMS)
    weights = np.ones_like(a)
    for _ in range(iterations):
        # the relative error of z (1/2 + z L(z)) is (z^2 L - (f - z / 2)) / f: linear in L
        scale = np.sqrt(weights) * z * z / f
        ell = np.linalg.lstsq(powers * scale[:, None], (f - z / 2) / (z * z) * scale,
                              rcond=None)[0]
        error = (z * (0.5 + z * (powers @ ell)) - f) / f
        weights = weights * np.abs(error)
        weights /= weights.sum()
    return ell, float(np.abs(error).max())


def fit_log1p(top: float, terms: int, iterations: int = 100) -> tuple[np.ndarray, float]:
    t = np.sort(np.concatenate([np.linspace(1e-6, top, 200_000), np.geomspace(1e-12, top, 20_000)]))
    f = np.log1p(t)
    powers = t[:, None] ** np.arange(terms)
    weights = np.ones_like(t)
    for _ in range(iterations):
        # the relative error of t + t^2 M(t) is (t^2 M - (f - t)) / f: linear in M
        scale = np.sqrt(weights) * t * t / f
        m = np.linalg.lstsq(powers * scale[:, None], (f - t) / (t * t) * scale, rcond=None)[0]
        error = (t + t * t * (powers @ m) - f) / f
        weights = weights * np.abs(error)
        weights /= weights.sum()
    return m, float(np.abs(error).max())


if __name__ == "__main__":
    p, q, error = fit()
    r, near_error = fit_near_zero()
    ell, log_cosh_error = fit_log_cosh()
    small, small_error = fit_log1p(LOG1P_SMALL, LOG1P_SMALL_TERMS)
    m, log1p_error = fit_log1p(1.0, LOG1P_TERMS)
    print(f"largest relative error in float64: {error:.2e} (rational), {near_error:.2e} (near "
          f"zero), {log_cosh_error:.2e} (log cosh), {small_error:.2e} (log cosh's log1p), "
          f"{log1p_error:.2e} (log1p)")
    for name, values in (("TANH_P", p), ("TANH_Q", q), ("TANH_NEAR_R", r), ("LOG_COSH_L", ell),
                         ("LOG1P_SMALL_M", small), ("LOG1P_M", m)):
        for k, value in enumerate(values):
            print(f"{name}{k} = _f32({float(np.float32(value))!r})")
