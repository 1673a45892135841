"""Prometheus metrics of the API (``GET /metrics``): requests by route and status, latency
histograms per stage, decisions by action, and the model versions in use. Each app gets
its own registry, so in-process tests and several replicas never share counters.

The same stage times go back with each answer as a ``Server-Timing`` header (the W3C
header browsers and HTTP tools show): an integrator sees where a slow answer's time went
without access to the metrics, and a benchmark can pair a request's own model time with
its latency."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serving.api.request_context import current_request

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("dxv_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram("dxv_stage_seconds", "Time per stage of a request", ["stage"], buckets=_BUCKETS,
                                 registry=self.registry)
        self.decisions = Counter("dxv_line_decisions", "Claim lines decided, by action", ["action"],
                                 registry=self.registry)
        self.models = Gauge("dxv_model_version_info", "Model versions in use (value 1)", ["model", "version"],
                            registry=self.registry)
        self.waiting = Gauge("dxv_requests_waiting_for_models", "Requests waiting for a turn at the models",
                             registry=self.registry)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(name, time.perf_counter() - start)

    def observe(self, name: str, seconds: float) -> None:
        """A stage timed elsewhere (in the model replica)."""
        self.latency.labels(stage=name).observe(seconds)
        request = current_request()
        if request is not None:
            request.stages_s[name] = request.stages_s.get(name, 0.0) + seconds

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def server_timing(spent: dict[str, float], total_s: float) -> bytes:
    """The ``Server-Timing`` header value: each stage's milliseconds and the total so far."""
    parts = [f"{name};dur={seconds * 1000:.1f}" for name, seconds in spent.items()]
    parts.append(f"total;dur={total_s * 1000:.1f}")
    return ", ".join(parts).encode("ascii")
