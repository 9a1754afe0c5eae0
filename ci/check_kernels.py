"""Compile every CUDA module of the CuPy backend with NVRTC, as CuPy does at run time.

No GPU or driver is needed: NVRTC comes from PyPI (``cuda-bindings``, ``nvidia-cuda-nvrtc``).
Prints registers and spills per kernel; fails on any compile error and on any spill in a
float32 or float16 kernel.
"""

from __future__ import annotations

import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cuda.bindings import nvrtc  # noqa: E402

from lossbackends._cuda_sources import OPTIONS, all_modules, source  # noqa: E402

ARCHS = (80, 90)
_FUNCTION = re.compile(r"Compiling entry function '(\S+)' for 'sm_(\d+)'")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def check(result):
    err = result[0]
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"NVRTC error {err}")
    return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)


def compile_module(filename: str, expressions: list[str], arch: int) -> tuple[str, dict]:
    code = source(filename).encode()
    program = check(nvrtc.nvrtcCreateProgram(code, filename.encode(), 0, [], []))
    for expression in expressions:
        check(nvrtc.nvrtcAddNameExpression(program, expression.encode()))
    options = [o.encode() for o in (*OPTIONS, f"-arch=sm_{arch}", "--ptxas-options=-v")]
    status = nvrtc.nvrtcCompileProgram(program, len(options), options)[0]
    size = check(nvrtc.nvrtcGetProgramLogSize(program))
    log = b" " * size
    check(nvrtc.nvrtcGetProgramLog(program, log))
    log = log.decode(errors="replace").rstrip("\x00")
    if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"{filename} {expressions} sm_{arch} failed:\n{log}")
    lowered = {}
    for expression in expressions:
        lowered[check(nvrtc.nvrtcGetLoweredName(program, expression.encode())).decode()] = expression
    nvrtc.nvrtcDestroyProgram(program)
    return log, lowered


def _compile_job(job: tuple[str, list[str], int]) -> tuple[str, dict] | str:
    try:
        return compile_module(*job)
    except RuntimeError as exc:
        return str(exc)


def main() -> int:
    failures = 0
    print(f"NVRTC {'.'.join(map(str, check(nvrtc.nvrtcVersion())))}, options {' '.join(OPTIONS)}")
    jobs = [(filename, expressions, arch) for filename, expressions in all_modules()
            for arch in ARCHS]
    # one process per core: the modules compile independently (half the CI time on 2 cores)
    with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        results = list(pool.map(_compile_job, jobs))
    for (_, _, arch), result in zip(jobs, results, strict=True):
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
                if spills and "double" not in current:
                    print(f"FAIL spills in {current} sm_{arch}: {line.strip()}")
                    failures += 1
                spill_note = f", SPILLS {spills} bytes" if spills else ""
                continue
            m = _REGISTERS.search(line)
            if m and current:
                print(f"sm_{arch} {current:55s} {m.group(1):>3} registers{spill_note}")
                current = None
    print("all kernels compiled" if not failures else f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
