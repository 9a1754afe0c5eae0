"""The benchmark suite runs and writes well-formed outputs (tiny sizes; no timing is
asserted: speed is shown by the suite itself, not by tests)."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _suite_cases() -> tuple:
    """Every case of the suite (``benchmarks.core.LOSSES`` and binary cross-entropy with
    probability labels), imported from the repository root whatever the working directory
    of the test run."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import core
    finally:
        sys.path.remove(str(ROOT))
    return (*core.LOSSES, core.PROBABILITY_LABELS)


def test_smoke_run_writes_csv_json_and_plots(tmp_path):
    out = tmp_path / "bench"
    subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out),
                    "--backends", "numpy", "numba", "numba:out", "numba:plain",
                    "numba:plain:out", "seed"], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    rows = list(csv.DictReader(open(out / "smoke_results_host.csv")))
    columns = {"loss", "op", "backend", "dtype", "n", "seconds_median", "seconds_min",
               "seconds_max", "gbps", "roofline_fraction"}
    assert columns <= set(rows[0])
    measured = [r for r in rows if r["op"] == "value_and_grad"]
    from benchmarks import core

    assert {r["loss"] for r in measured} == set(core.LOSSES)  # every loss of the suite
    assert {"numpy", "numba", "numba:out", "seed"} <= {r["backend"] for r in measured}
    assert {r["form"] for r in measured if r["backend"] == "numba:out"} == {"out"}
    assert {r["form"] for r in measured if r["backend"] == "numba"} == {"alloc"}
    for r in measured:
        assert float(r["seconds_min"]) <= float(r["seconds_median"]) <= float(r["seconds_max"])
        assert float(r["gbps"]) > 0 and float(r["roofline_fraction"]) > 0
    meta = json.loads((out / "smoke_run_host.json").read_text())
    assert meta["rooflines_gbps"]["host"] > 0 and "numpy" in meta and "cpu" in meta
    # what was measured: the command as run, the rounds a smoke run takes (7), the commit
    assert meta["command"].startswith("python -m benchmarks --smoke") and meta["rounds"] == 7
    assert meta["commit"] is None or len(meta["commit"].split("-")[0]) >= 7
    roofline = next(r for r in rows if r["loss"] == "roofline")  # its gbps: the roofline
    assert float(roofline["gbps"]) == pytest.approx(meta["rooflines_gbps"]["host"])
    assert float(roofline["roofline_fraction"]) == pytest.approx(1.0)
    assert len(list(out.glob("smoke_host_*_value_and_grad_float32.png"))) == len(core.LOSSES)
    table = (out / "smoke_summary_host.md").read_text()
    assert "| MSE n = 1e3 |" in table and "| CE 16 x 10 |" in table
    # plain cross-entropy in turn with each row option, on its logits, checked as its own
    plain = {r["loss"] for r in measured if r["backend"] == "numba:plain"}
    assert plain == set(core.ROW_LOSSES) - {"cross_entropy"}
    options = table[table.index("| row option against plain cross-entropy"):]
    assert "| CE softcap 16 x 10 |" in options and "| multiclass hinge 16 x 10 |" in options
    # the start-up rows (fresh processes): the import loads no backend's library
    startup = {r["op"]: r for r in rows if r["loss"] == "startup"}
    assert startup["import"]["loaded"] == "" and float(startup["import"]["seconds_median"]) > 0
    assert startup["first_call"]["backend"] == "numpy"  # (a smoke run's: nothing compiled)
    assert "import lossbackends after NumPy, fresh process: " in table
    assert "first calls in a fresh process (numpy, caches warm" in table
    boosting = list(csv.DictReader(open(out / "smoke_results_boosting.csv")))
    assert {r["objective"] for r in boosting} == {"logistic", "focal", "softmax_10"}
    assert all(float(r["speedup_vs_numpy"]) > 0 for r in boosting)


def test_user_mistakes_are_errors_not_tracebacks(tmp_path):
    """A misspelt provider stops the run before it measures (it measured nothing and
    exited 0); compare names a missing file."""
    run = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--out",
                          str(tmp_path), "--backends", "nmba"], cwd=ROOT, capture_output=True,
                         text=True)
    assert run.returncode == 1 and "no provider named nmba on the host; choose from" in run.stderr
    assert "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, "-m", "benchmarks", "compare", str(tmp_path / "a.csv"),
                          str(tmp_path / "b.csv")], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "compare: no file" in run.stderr
    for bad in ("0", "inf", "1.5"):  # argparse's own error, before anything runs
        run = subprocess.run([sys.executable, "-m", "benchmarks", "--sizes", bad, "--out",
                              str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
        assert run.returncode == 2 and "give a whole number of elements >= 1" in run.stderr
    run = subprocess.run([sys.executable, "-m", "benchmarks", "--budget", "-1", "--out",
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "give seconds >= 0" in run.stderr  # (it skipped every peer)


@pytest.mark.parametrize("case", _suite_cases())
def test_host_peers_compute_the_same_values(case):
    """Every host peer (torch eager by hand and by autograd, torch.compile, jax.jit) on a
    tiny case, checked as the suite checks each row. torch.compile runs through Dynamo with
    its "eager" backend here: the graphs the suite compiles, without inductor's C++ build
    (seconds per shape)."""
    from benchmarks import core, providers, providers_torch

    found = [p for p in providers.providers("host") if p.peer]
    if not found:
        pytest.skip("neither PyTorch nor JAX is installed (pip install 'lossbackends[peers]')")
    found = [p for p in found if not p.name.startswith("torch.compile")]
    if importlib.util.find_spec("torch") is not None:
        found += [providers.Provider(f"compile{out}", "host", providers_torch.torch_host(
            "compile", out, dynamic=True, compile_backend="eager")) for out in (False, True)]
    probability_labels = case == core.PROBABILITY_LABELS
    loss = "binary_cross_entropy" if probability_labels else case
    shape = (8, 30) if loss in core.ROW_LOSSES else (500,)
    inputs = core.host_inputs(loss, shape, "float32", probability_labels=probability_labels)
    if loss == "binary_cross_entropy":  # labels strictly between 0 and 1 only there
        assert probability_labels == bool(np.any((inputs["y"] > 0) & (inputs["y"] < 1)))
    expected = core.reference(loss, "value_and_grad", inputs)
    for provider in found:
        call = provider.make(loss, "value_and_grad", inputs)
        if call is None and loss in core.ROW_LOSSES[1:]:
            # the row cases: torch autograd and torch.compile only (no eager hand-written
            # form, no JAX form)
            assert provider.name in ("torch-hand", "torch-hand:out", "jax"), provider.name
            continue
        assert call is not None, provider.name
        for _ in range(2):  # the preallocated forms reuse their buffer
            core.check(call(), expected, "float32")


def test_peer_ratios_are_like_with_like():
    from benchmarks import report

    def row(backend, form, gbps, peer, dtype="float32"):
        return {"loss": "mse", "op": "value_and_grad", "backend": backend, "n": 10**7,
                "dtype": dtype, "form": form, "peer": peer, "gbps": gbps,
                "seconds_median": 1.2e-7 / gbps, "roofline_fraction": gbps / 40,
                "roofline_gbps": 40.0, "device": "host"}

    rows = [row("numba", "alloc", 30.0, False), row("numba:out", "out", 32.0, False),
            row("torch", "alloc", 5.0, True), row("jax", "alloc", 10.0, True),
            row("torch-hand:out", "out", 16.0, True)]
    report.add_peer_ratios(rows)
    assert rows[0]["best_peer"] == "jax" and rows[0]["vs_best_peer"] == 3.0
    assert rows[1]["best_peer"] == "torch-hand:out" and rows[1]["vs_best_peer"] == 2.0
    assert "best_peer" not in rows[2]
    table = report.host_table(rows)
    assert "| MSE n = 1e7 | 40.0 | 30.0 (75 %) | 32.0 (80 %) | 94 % | jax 10.0 | 3.00x " \
           "| torch-hand:out 16.0 | 2.00x |" in table
    # a run of two dtypes: a line for each, named (one showed under the case's name alone)
    wide = [row("numba", "alloc", 20.0, False, "float64"),
            row("numba:out", "out", 25.0, False, "float64")]
    table = report.host_table(rows + wide).splitlines()
    assert [line.split(" |")[0] for line in table[2:4]] == ["| MSE n = 1e7 (float32)",
                                                            "| MSE n = 1e7 (float64)"]
    # a run of one dtype other than float32 names it too; a run of no value_and_grad says so
    assert report.host_table(wide).splitlines()[2].startswith("| MSE n = 1e7 (float64) |")
    assert "covers `value_and_grad`, which this run did not measure" in report.host_table(
        [dict(r, op="grad") for r in rows])


def test_compare_reports_ratios(tmp_path):
    header = "loss,op,backend,dtype,n,seconds_median,seconds_min,seconds_max,gbps,roofline_fraction\n"
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(header + "mse,value,numba,float32,1000,1.0,1,1,1,1\n")
    b.write_text(header + "mse,value,numba,float32,1000,2.0,2,2,1,1\n")
    out = subprocess.run([sys.executable, "-m", "benchmarks", "compare", str(a), str(b)],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert "2.00  SLOWER" in out and "1 rows compared, 1 slower" in out
    # --fail makes a slower row the exit status (a gate for scripts); the order of the
    # arguments is free
    failed = subprocess.run([sys.executable, "-m", "benchmarks", "compare", "--fail", str(a),
                             str(b)], cwd=ROOT, capture_output=True, text=True)
    assert failed.returncode == 1 and "1 slower" in failed.stdout
    faster = subprocess.run([sys.executable, "-m", "benchmarks", "compare", str(b), str(a),
                             "--fail"], cwd=ROOT, capture_output=True, text=True)
    assert faster.returncode == 0 and "0 slower" in faster.stdout
    # what is not comparable is an error that says why, not a traceback or "0 rows compared"
    from benchmarks import report

    other, gpu, boosting = tmp_path / "c.csv", tmp_path / "g.csv", tmp_path / "x.csv"
    other.write_text(header + "mae,value,numba,float32,1000,1.0,1,1,1,1\n")
    gpu.write_text(header.rstrip() + ",device\nmse,value,cupy,float32,1000,1.0,1,1,1,1,gpu\n")
    boosting.write_text("objective,provider,n,seconds\nlogistic,lossbackends,1000,1.0\n")
    for b_path, message in ((other, "no row in common"), (gpu, "compare runs of one device"),
                            (boosting, "is not a results_\\*.csv of the suite")):
        with pytest.raises(ValueError, match=message):
            report.compare(a, b_path)
    run = subprocess.run([sys.executable, "-m", "benchmarks", "compare", str(a), str(boosting)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "compare: " in run.stderr and "Traceback" not in run.stderr


def test_gpu_sweep_plan_is_well_formed():
    """The GPU sweep's plan (``--list`` runs without a GPU): the default settings first in
    every case, each candidate meant for some case, and only settings the CuPy backend
    reads on each call (told from its source: CuPy is not installed here)."""
    import ast

    from benchmarks import gpu_sweep

    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu_sweep", "--list"], cwd=ROOT,
                            check=True, capture_output=True, text=True)
    plan = [line.split(None, 1) for line in result.stdout.splitlines()[:-1]]
    assert result.stdout.splitlines()[-1] == f"{len(plan)} measurements"
    for case in gpu_sweep.CASES:
        assert [v for c, v in plan if c == case.name][0] == "default"
    assert {v for _, v in plan} == {v.name for v in gpu_sweep.variants()}
    source = (ROOT / "lossbackends/backends/cupy_backend.py").read_text()
    tree = ast.parse(source)
    module_names = {alias.asname or alias.name for node in tree.body
                    if isinstance(node, ast.ImportFrom) for alias in node.names}
    module_names |= {t.id for node in tree.body if isinstance(node, ast.Assign)
                     for t in node.targets if isinstance(t, ast.Name)}
    for variant in gpu_sweep.variants():
        assert set(variant.settings) <= module_names & {"ROW_CONFIGS", "STREAM", "SMALL_ROWS",
                                                        "CE_ROWS_PLAIN", "ROW_STREAM",
                                                        "ROWS_MAX_CLASSES"}, variant
    # every candidate's kernels have names ci/check_kernels.py --sweep compiles
    names = [e for _, expressions in gpu_sweep.sweep_modules() for e in expressions]
    assert len(names) == len(set(names)) and any("ce_stream<float, false, 0, 256, 2>" in e
                                                  for e in names)
