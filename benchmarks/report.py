"""Writing results: CSV, run metadata, plots, the summary table, run-to-run comparison."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

COLUMNS = ["loss", "op", "backend", "dtype", "n", "seconds_median", "seconds_min",
           "seconds_max", "gbps", "roofline_fraction"]
KEY = ("loss", "op", "backend", "dtype", "n")


def write_csv(path: Path, rows: list[dict]) -> None:
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS + extra)
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_json(path: Path, meta: dict) -> None:
    path.write_text(json.dumps(meta, indent=2, default=str) + "\n")


def plot(out: Path, rows: list[dict], rooflines: dict[str, float], prefix: str) -> list[Path]:
    """One PNG per (loss, op, dtype): GB/s against size, a line per backend or peer, the
    roofline drawn in (on the host, the triad measured around each size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = defaultdict(list)
    for r in rows:
        if r["op"] in ("value", "grad", "value_and_grad"):
            groups[r["loss"], r["op"], r["dtype"], r["device"]].append(r)
    paths = []
    for (loss, op, dtype, device), group in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        by_backend = defaultdict(list)
        for r in group:
            by_backend[r["backend"]].append((float(r["n"]), float(r["gbps"])))
        for backend, points in sorted(by_backend.items()):
            points.sort()
            ax.plot([n for n, _ in points], [g for _, g in points], marker="o", label=backend)
        local = sorted({(float(r["n"]), float(r["roofline_gbps"])) for r in group
                        if r.get("roofline_gbps")})
        if local and device == "host":  # each size's own triad (see benchmarks.__main__._around)
            ax.plot([n for n, _ in local], [g for _, g in local], color="black", linestyle="--",
                    linewidth=1, label="triad, measured around each size")
        else:
            roof = rooflines[device]
            ax.axhline(roof, color="black", linestyle="--", linewidth=1,
                       label=f"roofline {roof:.0f} GB/s")
        ax.set_xscale("log")
        ax.set_xlabel("elements" + (" (rows x classes)" if loss == "cross_entropy" else ""))
        ax.set_ylabel("GB/s of minimum traffic")
        ax.set_title(f"{loss} {op} {dtype} ({device})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{prefix}{device}_{loss}_{op}_{dtype}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths


def summary(rows: list[dict]) -> str:
    """A table: per (loss, op, dtype, size), GB/s and % of roofline of each backend/peer."""
    backends = sorted({r["backend"] for r in rows if r["op"] in ("value", "grad", "value_and_grad")},
                      key=lambda b: (b not in ("numpy", "numba", "cupy"), b))
    cells = defaultdict(dict)
    for r in rows:
        if r["op"] in ("value", "grad", "value_and_grad"):
            key = (r["device"], r["loss"], r["op"], r["dtype"], int(r["n"]), r.get("shape", ""))
            cells[key][r["backend"]] = r
    header = f"{'device':6s} {'loss':33s} {'op':14s} {'dtype':7s} {'size':>14s} " + " ".join(
        f"{b:>16s}" for b in backends)
    lines = [header, "-" * len(header)]
    for key in sorted(cells):
        device, loss, op, dtype, n, shape = key
        parts = []
        for b in backends:
            r = cells[key].get(b)
            parts.append(f"{float(r['gbps']):7.1f} ({100 * float(r['roofline_fraction']):3.0f}%)"
                         if r else f"{'-':>16s}")
        lines.append(f"{device:6s} {loss:33s} {op:14s} {dtype:7s} {shape or n:>14} "
                     + " ".join(f"{p:>16s}" for p in parts))
    other = [r for r in rows if r["op"] not in ("value", "grad", "value_and_grad")]
    for r in other:
        lines.append(f"{r['device']:6s} {r['loss']:33s} {r['op']:14s} {r['backend']:7s} "
                     f"n={r['n']}: median {1e6 * float(r['seconds_median']):.2f} us")
    return "\n".join(lines)


def compare(a_path: Path, b_path: Path, threshold: float = 0.10) -> int:
    """Row-by-row time ratio B/A; prints the table and returns how many rows of B are
    slower than A by more than ``threshold``."""
    a = {tuple(r[k] for k in KEY): r for r in read_csv(a_path)}
    b = {tuple(r[k] for k in KEY): r for r in read_csv(b_path)}
    common = sorted(set(a) & set(b))
    slower = 0
    print(f"{'loss':33s} {'op':16s} {'backend':14s} {'dtype':8s} {'n':>12s} {'A s':>11s} "
          f"{'B s':>11s} {'B/A':>6s}")
    for key in common:
        ta, tb = float(a[key]["seconds_median"]), float(b[key]["seconds_median"])
        ratio = tb / ta
        flag = "  SLOWER" if ratio > 1 + threshold else ""
        slower += bool(flag)
        loss, op, backend, dtype, n = key
        print(f"{loss:33s} {op:16s} {backend:14s} {dtype:8s} {n:>12s} {ta:11.3e} {tb:11.3e} "
              f"{ratio:6.2f}{flag}")
    only = (set(a) ^ set(b))
    if only:
        print(f"{len(only)} rows appear in one run only")
    print(f"{len(common)} rows compared, {slower} slower by more than {threshold:.0%}")
    return slower
