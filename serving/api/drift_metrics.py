"""Drift on ``GET /metrics``: per tenant and model version, each class's finding rate
(current window and baseline), the score distribution's PSI, the flag rate, and an alert
gauge per signal. Computed from the store when scraped, reused for ``refresh_s``; a
failure to compute leaves the drift families out of that scrape, never the endpoint."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from serving.drift import MonitoringSettings, Signal
from serving.store import drift
from serving.store.database import Store

log = logging.getLogger("dxv.drift")
_LABELS = ["tenant", "model", "version"]


class DriftCollector(Collector):
    def __init__(self, store: Store, settings: MonitoringSettings, now: Callable[[], dt.datetime]) -> None:
        self.store, self.settings, self.now = store, settings, now
        self._lock = threading.Lock()
        self._signals: list[Signal] = []
        self._at = -float("inf")

    def signals(self) -> list[Signal]:
        with self._lock:
            if time.monotonic() - self._at >= self.settings.refresh_s:
                with self.store.reading() as session:
                    assessed = drift.assess(session, self.now(), self.settings)
                self._signals = [s for a in assessed for s in a.signals]
                self._at = time.monotonic()
            return self._signals

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            signals = self.signals()
        except Exception as exc:  # monitoring must never take /metrics down
            log.warning("drift not computed: %s", type(exc).__name__)
            return
        rate = GaugeMetricFamily("dxv_drift_finding_rate", "Detections per radiograph at or above the reporting score",
                                 labels=[*_LABELS, "finding_class", "window"])
        index = GaugeMetricFamily("dxv_drift_score_psi", "Population stability index of the detection scores against "
                                  "the baseline", labels=[*_LABELS, "finding_class"])
        flags = GaugeMetricFamily("dxv_drift_flag_rate", "Share of billed lines sent to review",
                                  labels=[*_LABELS, "window"])
        alert = GaugeMetricFamily("dxv_drift_alert", "1 where a drift signal is beyond its configured bound",
                                  labels=[*_LABELS, "signal", "subject"])
        for s in signals:
            key = [s.tenant, s.model, s.version]
            if s.kind == "finding_rate":
                rate.add_metric([*key, s.subject, "baseline"], s.baseline)
                rate.add_metric([*key, s.subject, "current"], s.current)
            elif s.kind == "score_psi":
                index.add_metric([*key, s.subject], s.current)
            elif s.kind == "flag_rate":
                flags.add_metric([*key, "baseline"], s.baseline)
                flags.add_metric([*key, "current"], s.current)
            if s.kind != "insufficient_data":
                alert.add_metric([*key, s.kind, s.subject], 1.0 if s.alert else 0.0)
        yield from (rate, index, flags, alert)
