"""Fit the float32 tanh functions of ``lossbackends/backends/_numba_math.py``.

The rational one: tanh(x) = x P(t) / Q(t), t = (x / 10)^2, P of degree 6 and Q of degree 3
in t with Q(0) = 1, on 0 < x <= 10: Lawson's iteration (iteratively reweighted least
squares) on the relative error, linearised as x P - tanh(x) Q over the previous Q. The
polynomial one near zero: tanh(x) = x + x z R(z), z = x^2, R of degree 6, on 0 < x <= 1,
by the same iteration (linear there). Prints the coefficients in powers of x^2, rounded to
float32 (P(0) rounds to 1), as _numba_math holds them.
Run: python ci/fit_tanh.py
"""

from __future__ import annotations

import numpy as np

LIMIT = 10.0  # beyond it tanh rounds to +-1 in float32; the kernel clamps there
NUMERATOR, DENOMINATOR = 7, 4  # coefficients of P and Q
NEAR, NEAR_TERMS = 1.0, 7  # the polynomial's range and its coefficients


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


if __name__ == "__main__":
    p, q, error = fit()
    r, near_error = fit_near_zero()
    print(f"largest relative error in float64: {error:.2e} (rational), {near_error:.2e} (near zero)")
    for name, values in (("TANH_P", p), ("TANH_Q", q), ("TANH_NEAR_R", r)):
        for k, value in enumerate(values):
            print(f"{name}{k} = _f32({float(np.float32(value))!r})")
