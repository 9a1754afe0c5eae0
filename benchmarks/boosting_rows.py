"""Boosting rows: one custom-objective call (per-sample gradient and Hessian, what XGBoost
calls each round) from ``lossbackends.xgboost.objective`` against the hand-written NumPy
objective a user writes today, on the same float32 margins, samples taken in turn.

    python -m benchmarks.boosting_rows [--n 1000000] [--classes 10] [--out DIR]

The suite's host run (``python -m benchmarks``, every loss) includes these rows, at
n = 1e6 (``DIR/results_boosting.csv``).

Cases: binary logistic and sigmoid focal (``n`` margins), softmax (``n`` rows of
``classes`` margins).
Each pair is checked for agreement before it is timed. Writes DIR/results_boosting.csv.
"""

from __future__ import annotations

import argparse
import csv
import functools
import statistics
from pathlib import Path

import numpy as np

import lossbackends as lb

from . import core


def numpy_logistic(labels, preds):
    """XGBoost's binary:logistic, as users write it (and XGBoost's demo does)."""
    prob = 1.0 / (1.0 + np.exp(-preds))
    grad = prob - labels
    hess = np.maximum(prob * (1.0 - prob), 1e-16)
    return grad, hess


def numpy_focal(labels, preds, alpha=0.25, gamma=2.0):
    """torchvision's sigmoid focal loss as a binary objective, its derivatives written out
    as users write them for 0/1 labels (p_t form), floored as XGBoost floors."""
    prob = 1.0 / (1.0 + np.exp(-preds))
    q = np.where(labels == 1, 1.0 - prob, prob)  # 1 - p_t
    alpha_t = np.where(labels == 1, alpha, 1.0 - alpha)
    ce = -(labels * np.log(prob) + (1.0 - labels) * np.log(1.0 - prob))
    s = 1.0 - 2.0 * labels  # dq/dx = p (1 - p) s
    u = prob * (1.0 - prob)
    grad = alpha_t * (gamma * q ** (gamma - 1) * u * s * ce + q**gamma * (prob - labels))
    hess = alpha_t * (gamma * (gamma - 1) * q ** (gamma - 2) * u * u * ce
                      + gamma * q ** (gamma - 1) * s * u * (1.0 - 2.0 * prob) * ce
                      + 2.0 * gamma * q ** (gamma - 1) * u * s * (prob - labels) + q**gamma * u)
    return grad, np.maximum(hess, 1e-16)


def numpy_softmax(labels, preds):
    """XGBoost's multi:softprob, as users write it (XGBoost's custom_softmax demo,
    vectorised)."""
    e = np.exp(preds - preds.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    grad = prob.copy()
    grad[np.arange(len(labels)), labels.astype(np.int64)] -= 1.0
    hess = np.maximum(2.0 * prob * (1.0 - prob), 1e-16)
    return grad, hess


def cases(n: int, classes: int, seed: int = 0):
    """(name, labels, margins, ours, the hand-written NumPy objective)."""
    rng = np.random.default_rng(seed)
    margins = rng.normal(0, 2, n).astype(np.float32)
    labels = (rng.random(n) < 0.5).astype(np.float32)  # XGBoost passes float32 labels
    yield ("logistic", labels, margins,
           lb.xgboost.objective(lb.binary_cross_entropy_with_logits), numpy_logistic)
    yield ("focal", labels, margins, lb.xgboost.objective(lb.sigmoid_focal), numpy_focal)
    margins = rng.normal(0, 2, (n, classes)).astype(np.float32)
    labels = rng.integers(0, classes, n).astype(np.float32)
    yield (f"softmax_{classes}", labels, margins, lb.xgboost.objective(lb.cross_entropy),
           numpy_softmax)


def run(n: int = 10**6, classes: int = 10, min_time: float = 1.0, repeats: int = 7) -> list[dict]:
    rows = []
    for name, labels, margins, ours, numpy_objective in cases(n, classes):
        for a, b in zip(ours(labels, margins), numpy_objective(labels, margins), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)  # the same objective
        calls = [functools.partial(f, labels, margins) for f in (ours, numpy_objective)]
        samples = core.time_host_in_turn(calls, min_time=min_time, repeats=repeats)
        medians = [statistics.median(s) for s in samples]
        for backend, times, median in zip(("lossbackends", "numpy_hand_written"), samples,
                                          medians, strict=True):
            rows.append({"objective": name, "backend": backend, "dtype": "float32", "n": n,
                         "elements": margins.size, "seconds_median": median,
                         "seconds_min": min(times), "seconds_max": max(times),
                         "speedup_vs_numpy": medians[1] / median})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.boosting_rows",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=float, default=1e6)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per case")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = run(int(args.n), args.classes, args.min_time)
    print(summary(rows))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write(args.out / "results_boosting.csv", rows)
    return 0


def summary(rows: list[dict]) -> str:
    return "\n".join(f"{r['objective']:12s} {r['backend']:20s} n={r['n']:>9d} "
                     f"{1e3 * r['seconds_median']:8.2f} ms  x{r['speedup_vs_numpy']:.1f}"
                     for r in rows)


def write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    raise SystemExit(main())
