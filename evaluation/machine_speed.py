"""A fixed reference workload, timed and printed with each benchmark, so that figures
taken on different days of a shared machine whose speed drifts (by half between sessions
here) can be told apart from changes in the code: compare a benchmark's figure with the
reference's time taken in the same minutes.

The workload is what the service's request path is made of: Python objects, dicts and
strings, JSON, sorting, hashing, and small numpy products. It always computes the same
result (``CHECKSUM``), so a change to it cannot pass unnoticed."""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from typing import Any

import numpy as np

CHECKSUM = "ea1fa3796342f1a0"


def _workload() -> str:
    rows: list[dict[str, Any]] = [
        {"claim": f"C-{i:05d}", "line": str(i % 7), "code": f"D{1000 + i % 997}", "fee": (i * 37) % 1000 / 4}
        for i in range(6000)]
    rows.sort(key=lambda r: (r["code"], -r["fee"]))
    by_code: dict[str, float] = {}
    for row in rows:
        by_code[row["code"]] = by_code.get(row["code"], 0.0) + row["fee"]
    text = json.dumps(rows[:2000], sort_keys=True) + json.dumps(by_code, sort_keys=True)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 10, (48, 48)).astype(np.float32)  # whole numbers: every product exact on any BLAS
    total = 0.0
    for _ in range(300):
        total += float((a @ a.T).max())
    digest = hashlib.sha256((text + f"{total:.0f}").encode()).hexdigest()
    return digest[:16]


def reference_ms(repeats: int = 7) -> float:
    """Median wall time of eight turns of the workload, in milliseconds (about 55 ms on
    this machine on 2026-11-24, a fast day)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(8):
            result = _workload()
        times.append(time.perf_counter() - start)
        if result != CHECKSUM:
            raise RuntimeError(f"the reference workload changed (result {result}, expected {CHECKSUM})")
    return statistics.median(times) * 1000


def describe() -> str:
    return f"machine reference workload: {reference_ms():.1f} ms (evaluation/machine_speed.py; lower is faster)"
