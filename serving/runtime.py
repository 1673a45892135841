"""Settings for a long-running adjudication process (the service replicas, bulk runs)."""

from __future__ import annotations

import gc

GC_YOUNG_THRESHOLD = 100_000  # allocations between young-generation collections (CPython's default: 700)


def tune_gc() -> None:
    """Adjudicating a line allocates a few hundred short-lived objects (rule hits, history
    rows, row dicts); reference counting frees nearly all of them, yet with CPython's
    default thresholds the cyclic collector runs thousands of times per batch and walks
    every young object each time. Freeze what start-up loaded (modules, tables) out of the
    collector's reach and collect young objects less often: about a fifth less CPU per
    line in ``evaluation/bench_adjudication.py``. Cycles are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)


def limit_blas_threads() -> None:
    """The ingress's numpy work is small matrices (fingerprint comparisons of 24x24
    thumbnails); BLAS threads gain nothing there and, on a machine whose cores the model
    replica's ONNX Runtime threads keep busy, make each product wait for a core: measured
    here, 8 ms for one radiograph's comparisons on one thread against over 100 ms on two
    under load. The process keeps one BLAS thread."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
