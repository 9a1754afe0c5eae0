"""Writing results: CSV, run metadata, plots, the summary table, run-to-run comparison."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

from . import startup

COLUMNS = ["loss", "op", "backend", "dtype", "n", "seconds_median", "seconds_min",
           "seconds_max", "gbps", "roofline_fraction"]
KEY = ("loss", "op", "backend", "dtype", "n")


def _key(r: dict) -> tuple:
    """A row's identity across runs: two shapes may have one n (cross-entropy's rows), so
    the shape where the CSV has one (older CSVs have n alone)."""
    return (*(r[k] for k in KEY[:-1]), r.get("shape") or r["n"])


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
        # the row losses against their classes: 1024 x 32000 and 256 x 128256 are as many
        # elements, and drawn at one x they hid each other
        rows_case = loss in _ROW_CASES
        size = (lambda r: float(str(r["shape"]).split("x")[-1])) if rows_case else (
            lambda r: float(r["n"]))
        by_backend = defaultdict(list)
        for r in group:
            by_backend[r["backend"]].append((size(r), float(r["gbps"])))
        # a hue per provider (tab20: a dark and a light shade of each), the light one and
        # square markers for its preallocated form ("numba:out"), dotted lines for plain
        # cross-entropy beside a row option ("numba:plain", "numba:plain:out"):
        # matplotlib's default cycle has 10 colours, and a case has up to 13 lines
        providers = sorted({backend.split(":")[0] for backend in by_backend})
        shades = plt.get_cmap("tab20").colors
        for backend, points in sorted(by_backend.items()):
            points.sort()
            name, _, form = backend.partition(":")
            preallocated = form.endswith("out")
            ax.plot([n for n, _ in points], [g for _, g in points],
                    marker="s" if preallocated else "o",
                    linestyle=":" if "plain" in form else "-",
                    color=shades[(2 * providers.index(name) + preallocated) % len(shades)],
                    label=backend)
        local = sorted({(size(r), float(r["roofline_gbps"])) for r in group
                        if r.get("roofline_gbps")})
        if local and device == "host":  # each size's own triad (see benchmarks.__main__._around)
            ax.plot([n for n, _ in local], [g for _, g in local], color="black", linestyle="--",
                    linewidth=1, label="triad, measured around each size")
        else:
            roof = rooflines[device]
            ax.axhline(roof, color="black", linestyle="--", linewidth=1,
                       label=f"roofline {roof:.0f} GB/s")
        ax.set_xscale("log")
        ax.set_xlabel("classes (a point per rows x classes shape)" if rows_case
                      else "elements")
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
    other = [r for r in rows if r["op"] not in ("value", "grad", "value_and_grad")
             and r["loss"] != "startup"]  # (in seconds: ``startup.lines``)
    for r in other:
        lines.append(f"{r['device']:6s} {r['loss']:33s} {r['op']:14s} {r['backend']:7s} "
                     f"n={r['n']}: median {1e6 * float(r['seconds_median']):.2f} us")
    return "\n".join(lines)


def add_peer_ratios(rows: list[dict]) -> None:
    """On each row of ours (and the seed's), in place: the best peer of the same case and
    op, like with like (our default call against the peers' allocating forms, our ``out=``
    against their preallocated forms): ``best_peer``, ``best_peer_gbps`` and
    ``vs_best_peer`` (our GB/s over theirs; above 1 is faster). ``rows`` is one case; plain
    cross-entropy's rows beside a row option (``numba:plain``) compute another loss than
    the peers: none."""
    for r in rows:
        if r.get("peer") or "form" not in r or ":plain" in r["backend"]:
            continue
        peers = [q for q in rows if q.get("peer") and q["op"] == r["op"]
                 and q["form"] == r["form"]]
        if peers:
            best = max(peers, key=lambda q: float(q["gbps"]))
            r.update(best_peer=best["backend"], best_peer_gbps=best["gbps"],
                     vs_best_peer=float(r["gbps"]) / float(best["gbps"]))


_ROW_CASES = ("cross_entropy", "cross_entropy_z_loss", "cross_entropy_softcap",
              "multiclass_hinge")  # benchmarks.core.ROW_LOSSES (report reads only results)
_SHORT = {"mse": "MSE", "binary_cross_entropy": "BCE, labels 0/1",
          "binary_cross_entropy_probability_labels": "BCE, probability labels",
          "binary_cross_entropy_with_logits": "BCE with logits", "hinge": "hinge",
          "cross_entropy": "CE", "cross_entropy_z_loss": "CE z-loss",
          "cross_entropy_softcap": "CE softcap", "multiclass_hinge": "multiclass hinge"}


def _case_name(r, dtype: bool = False) -> str:
    """The case as the tables name it; with ``dtype`` (a run of several), its dtype too."""
    suffix = f" ({r['dtype']})" if dtype else ""
    if r["loss"] in _ROW_CASES:
        return (_SHORT[r["loss"]] + " " + str(r.get("shape", r["n"])).replace("x", " x ")
                + suffix)
    n = int(r["n"])
    exponent = math.log10(n)
    size = f"1e{exponent:g}" if exponent == int(exponent) else f"{n:.3g}"
    return f"{_SHORT.get(r['loss'], r['loss'])} n = {size}{suffix}"


def _by_case(rows: list[dict], keep) -> tuple[dict, bool]:
    """{(loss, shape or n, dtype): {backend: row}} of the rows ``keep`` takes, and whether
    the tables name each case's dtype: where they hold several (a run with ``--dtypes
    float32 float64`` showed one of the two under each case's name) or another than
    float32."""
    cases: dict = {}
    for r in rows:
        if keep(r):
            cases.setdefault((r["loss"], r.get("shape", r["n"]), r["dtype"]), {})[
                r["backend"]] = r
    dtypes = {dtype for _, _, dtype in cases}
    return cases, dtypes != {"float32"} and bool(dtypes)


def host_table(rows: list[dict], backend: str = "numba") -> str:
    """The host table of docs/guide/performance.md (markdown): per ``value_and_grad``
    case, the triad measured around it, our default call and our ``out=`` call (GB/s of
    minimum traffic, % of that triad), the default call as a fraction of ``out=``, and each
    against the best peer of the same case, like with like."""
    if not any(r["backend"] == backend for r in rows):
        backend = "numpy"
    cases, dtypes = _by_case(rows, lambda r: r["op"] == "value_and_grad"
                             and r.get("device", "host") == "host")
    lines = [f"| case | triad GB/s | {backend} default | {backend} out= | default / out= "
             "| best allocating peer | default / it | best preallocated peer | out= / it |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cell(r):
        return f"{float(r['gbps']):.1f} ({100 * float(r['roofline_fraction']):.0f} %)"

    def peer(r):
        if not r or not r.get("best_peer"):
            return "–", "–"
        return (f"{r['best_peer']} {float(r['best_peer_gbps']):.1f}",
                f"{float(r['vs_best_peer']):.2f}x")

    for by in cases.values():
        default, out = by.get(backend), by.get(backend + ":out")
        if default is None or out is None:
            continue
        triad = float(default.get("roofline_gbps") or 0)
        ratio = float(out["seconds_median"]) / float(default["seconds_median"])
        alloc_peer, alloc_ratio = peer(default)
        out_peer, out_ratio = peer(out)
        lines.append(f"| {_case_name(default, dtypes)} | {triad:.1f} | {cell(default)} | {cell(out)} "
                     f"| {100 * ratio:.0f} % | {alloc_peer} | {alloc_ratio} | {out_peer} "
                     f"| {out_ratio} |")
    if len(lines) == 2:
        lines = ["(The host table covers `value_and_grad`, which this run did not measure: "
                 "see results_host.csv.)"]
    for r in rows:
        if r["op"] in ("call_n1000", "call_n1000_out", "dispatch_overhead"):
            what = {"call_n1000": "whole public call, n = 1000",
                    "call_n1000_out": "whole public call with out=, n = 1000",
                    "dispatch_overhead": "dispatch layer over the kernel, n = 1000"}[r["op"]]
            lines.append(f"\n{what} ({r['backend']}): "
                         f"{1e6 * float(r['seconds_median']):.2f} µs (median)")
    lines += ["\n" + line for line in startup.lines(rows)]
    return "\n".join(lines)


def option_table(rows: list[dict], backend: str = "numba") -> str:
    """The row options (z-loss, softcap, multiclass hinge) against plain cross-entropy on
    the same logits, measured in turn with them (``providers.plain_cross_entropy``): plain's
    time over the option's, the default call and ``out=`` (1: as fast; the issue's bar is
    0.9). Markdown, or "" when the run measured no such pair."""
    cases, dtypes = _by_case(rows, lambda r: r["op"] == "value_and_grad"
                             and r["loss"] in _ROW_CASES and r["loss"] != "cross_entropy")
    lines = []
    for by in cases.values():
        pairs = [(by.get(backend + form), by.get(f"{backend}:plain{form}"))
                 for form in ("", ":out")]
        if not all(option and plain for option, plain in pairs):
            continue
        ratios = [float(plain["seconds_median"]) / float(option["seconds_median"])
                  for option, plain in pairs]
        lines.append(f"| {_case_name(pairs[0][0], dtypes)} | " + " | ".join(f"{x:.2f}x" for x in ratios)
                     + " |")
    if not lines:
        return ""
    return "\n".join([f"| row option against plain cross-entropy ({backend}, in turn) "
                      "| default call | out= |", "|---|---|---|", *lines])


def _results(path: Path) -> list[dict]:
    """The rows of a results CSV of the suite, or a ValueError that says it is not one."""
    try:
        rows = read_csv(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path} is not a results_*.csv of the suite ({exc})") from None
    if rows and not {*KEY[:-1], "seconds_median"} <= set(rows[0]):
        raise ValueError(f"{path} is not a results_*.csv of the suite (results_host.csv, "
                         "results_gpu.csv): it has no loss, op, backend, dtype or "
                         "seconds_median column")
    return rows


def compare(a_path: Path, b_path: Path, threshold: float = 0.10) -> int:
    """Row-by-row time ratio B/A; prints the table and returns how many rows of B are
    slower than A by more than ``threshold``."""
    a, b = ({_key(r): r for r in _results(path) if r["loss"] != "roofline"}
            for path in (a_path, b_path))
    devices = [{r.get("device") or "host" for r in run.values()} for run in (a, b)]
    if devices[0] and devices[1] and not devices[0] & devices[1]:
        raise ValueError(f"{a_path} ran on {', '.join(sorted(devices[0]))} and {b_path} on "
                         f"{', '.join(sorted(devices[1]))}: compare runs of one device")
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError(f"{a_path} and {b_path} have no row in common (loss, op, backend, "
                         "dtype and size): nothing to compare")
    slower = 0
    print(f"{'loss':33s} {'op':16s} {'backend':18s} {'dtype':8s} {'shape':>12s} {'A s':>11s} "
          f"{'B s':>11s} {'B/A':>6s}")
    for key in common:
        ta, tb = float(a[key]["seconds_median"]), float(b[key]["seconds_median"])
        ratio = tb / ta
        flag = "  SLOWER" if ratio > 1 + threshold else ""
        slower += bool(flag)
        loss, op, backend, dtype, n = key
        print(f"{loss:33s} {op:16s} {backend:18s} {dtype:8s} {n:>12s} {ta:11.3e} {tb:11.3e} "
              f"{ratio:6.2f}{flag}")
    only = (set(a) ^ set(b))
    if only:
        print(f"{len(only)} rows appear in one run only")
    print(f"{len(common)} rows compared, {slower} slower by more than {threshold:.0%}")
    return slower
