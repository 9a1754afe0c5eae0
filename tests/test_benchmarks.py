"""The benchmark suite runs and writes well-formed outputs (tiny sizes; no timing is
asserted: speed is shown by the suite itself, not by tests)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_run_writes_csv_json_and_plots(tmp_path):
    out = tmp_path / "bench"
    subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out),
                    "--backends", "numpy", "numba", "seed"], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    rows = list(csv.DictReader(open(out / "smoke_results_host.csv")))
    columns = {"loss", "op", "backend", "dtype", "n", "seconds_median", "seconds_min",
               "seconds_max", "gbps", "roofline_fraction"}
    assert columns <= set(rows[0])
    measured = [r for r in rows if r["op"] == "value_and_grad"]
    assert {r["loss"] for r in measured} == {"mse", "binary_cross_entropy",
                                             "binary_cross_entropy_with_logits", "hinge",
                                             "cross_entropy"}
    assert {"numpy", "numba", "seed"} <= {r["backend"] for r in measured}
    for r in measured:
        assert float(r["seconds_min"]) <= float(r["seconds_median"]) <= float(r["seconds_max"])
        assert float(r["gbps"]) > 0 and float(r["roofline_fraction"]) > 0
    meta = json.loads((out / "smoke_run_host.json").read_text())
    assert meta["rooflines_gbps"]["host"] > 0 and "numpy" in meta and "cpu" in meta
    assert len(list(out.glob("smoke_host_*_value_and_grad_float32.png"))) == 5


def test_compare_reports_ratios(tmp_path):
    header = "loss,op,backend,dtype,n,seconds_median,seconds_min,seconds_max,gbps,roofline_fraction\n"
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(header + "mse,value,numba,float32,1000,1.0,1,1,1,1\n")
    b.write_text(header + "mse,value,numba,float32,1000,2.0,2,2,1,1\n")
    out = subprocess.run([sys.executable, "-m", "benchmarks", "compare", str(a), str(b)],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert "2.00  SLOWER" in out and "1 rows compared, 1 slower" in out
