"""Compile every CUDA module of the CuPy backend with NVRTC, as the backend does at run time.

No GPU or driver is needed: NVRTC comes from PyPI (``cuda-bindings``, ``nvidia-cuda-nvrtc``).
Prints registers and spills per assembled kernel; fails on any compile error and on any
spill in an assembled kernel narrower than float64 (float64's spills are allowed).

By default (CI, no GPU), the float32 modules are assembled for sm_90, the cards we target,
with their registers and spills checked, every row configuration of cross-entropy
included; the float16, bfloat16 and float64 modules compile to PTX for sm_90
(``compute_90``: the front end and NVVM, which are what reject code; ptxas took two thirds
of the time, and a float16 or bfloat16 kernel computes in float32, so its registers follow
the float32 one's), of the row configurations the smallest only (they differ in template
integers, which float32 checks; the others took a quarter of the time). For sm_80 only
the bfloat16 modules compile (to PTX): bfloat16 arithmetic is the one part of the CUDA
headers that differs between sm_80 and sm_90, and the sources' own (``ce_small``'s launch
bound) changes registers, not what compiles. ``--all`` assembles every module for both,
registers and spills of every type reported and checked, but ``ACCEPTED_SPILLS``
(``ci/kernels``; on a GPU, CuPy builds what ``ci/gpu`` runs). ``--sweep`` assembles the
candidates of the GPU sweep (``benchmarks/gpu_sweep.py``) for sm_90 instead, spills
reported, not failed.
"""

from __future__ import annotations

import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lossbackends._cuda_sources import (  # noqa: E402
    OPTIONS,
    ROW_CONFIGS,
    TYPE_NAMES,
    all_modules,
)
from lossbackends.backends import _nvrtc  # noqa: E402

# Spills known and accepted, each at most its size in bytes (a larger one, or a spill in any
# other kernel narrower than float64, fails): the block-per-row kernels of 512 and 1024
# threads run only with a Hessian (rows of 4097-16384 classes; the streaming kernel takes
# those rows otherwise), and in float16 and bfloat16 they need a register or two beyond
# the 64 that 1024 threads per SM leave on sm_90 (float32's take 63); not measured on a
# card (--all only: CI compiles these types to PTX).
ACCEPTED_SPILLS = {(f"ce_rows<{t}, {threads}, 16, 1, {blocks}>", "sm_90"): 16
                   for t in ("half_t", "bf16_t") for threads, blocks in ((512, 2), (1024, 1))}

_FUNCTION = re.compile(r"Compiling entry function '(\S+)' for 'sm_(\d+)'")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def compile_module(filename: str, expressions: list[str], target: str) -> tuple[str, dict]:
    """Compile for ``target``: ``sm_XX`` (assembled, ptxas's report in the log) or
    ``compute_XX`` (PTX only), as the CuPy backend does (``_nvrtc.compile_module``)."""
    verbose = ("--ptxas-options=-v",) if target.startswith("sm_") else ()
    compiled = _nvrtc.compile_module(filename, expressions, target, verbose)
    return compiled.log, {symbol: e for e, symbol in compiled.lowered.items()}


def _compile_job(job: tuple[str, list[str], int]) -> tuple[str, dict] | str:
    try:
        return compile_module(*job)
    except RuntimeError as exc:
        return str(exc)


def main() -> int:
    failures = 0
    print(f"NVRTC {'.'.join(map(str, _nvrtc.version()))}, options {' '.join(OPTIONS)}")
    every = "--all" in sys.argv[1:]
    smallest_rows = {ROW_CONFIGS[0].expression(t) for t in TYPE_NAMES.values()}
    assembled = "<float"  # the type whose spills CI checks (all of them with --all)
    jobs = []
    sweep = "--sweep" in sys.argv[1:]
    if sweep:  # the GPU sweep's candidates (benchmarks/gpu_sweep.py)
        from benchmarks.gpu_sweep import sweep_modules

        jobs = [(filename, expressions, "sm_90") for filename, expressions in sweep_modules()]
    for filename, expressions in ([] if jobs else all_modules()):
        first = expressions[0]
        if every:
            jobs += [(filename, expressions, "sm_90"), (filename, expressions, "sm_80")]
            continue
        if assembled in first:
            jobs.append((filename, expressions, "sm_90"))
            continue
        # the other types: one row configuration each (the smallest); the configurations
        # differ in template integers only, all compiled (and assembled) in float32
        if first.startswith("ce_rows<") and first not in smallest_rows:
            continue
        jobs.append((filename, expressions, "compute_90"))
        if "<bf16_t" in first:
            jobs.append((filename, expressions, "compute_80"))
    jobs.sort(key=lambda job: not job[1][0].startswith("ce_rows<"))  # the longest first
    # one process per core: the modules compile independently (half the CI time on 2 cores)
    with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        results = list(pool.map(_compile_job, jobs))
    for (_, _, target), result in zip(jobs, results, strict=True):
        if isinstance(result, str):
            print(f"FAIL {result}")
            failures += 1
            continue
        log, lowered = result
        current = None
        for line in log.splitlines():
            m = _FUNCTION.search(line)
            if m:
                current = lowered.get(m.group(1), m.group(1))
                continue
            m = _SPILLS.search(line)
            if m and current:
                spills = int(m.group(1)) + int(m.group(2))
                accepted = ACCEPTED_SPILLS.get((current, target), 0)
                if spills > accepted and "double" not in current and not sweep:  # (candidates may)
                    print(f"FAIL spills in {current} {target}: {line.strip()}")
                    failures += 1
                accepted_note = " (accepted)" if spills <= accepted else ""
                spill_note = f", SPILLS {spills} bytes{accepted_note}" if spills else ""
                continue
            m = _REGISTERS.search(line)
            if m and current:
                print(f"{target} {current:55s} {m.group(1):>3} registers{spill_note}")
                current = None
    print("all kernels compiled" if not failures else f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
