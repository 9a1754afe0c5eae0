"""Writing and reading benchmark results."""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ["loss", "op", "backend", "dtype", "n", "seconds_median", "seconds_min",
           "seconds_max", "gbps", "roofline_fraction"]


def write_csv(path: Path, rows: list[dict]) -> None:
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS + extra)
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
