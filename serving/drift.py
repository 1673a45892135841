"""Model drift in production, per tenant and model version (pure).

For a window of decided claims: how many detections per radiograph each class gets (at
or above a fixed reporting score, so that a threshold change does not read as drift), the
distribution of detection scores per class (ten bins), and the share of billed lines
sent to review. A window is compared with the version's release baseline: an alert is
raised when a class's rate moves by more than a factor of ``rate_ratio`` either way, a
score distribution's population stability index reaches ``psi``, or the flag rate moves by
``flag_rate_delta`` or more. Too few radiographs on either side raise no alert (the
signal says so instead)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from models.config_loading import FrozenConfig

BINS = 10
TOOTH = "tooth"  # the "class" of the tooth-numbering model's detections
MONITORED = ("findings", "tooth-numbering")  # the models whose detections are monitored


class DriftBounds(FrozenConfig):
    rate_ratio: float = Field(1.5, gt=1.0)
    psi: float = Field(0.2, gt=0.0)
    flag_rate_delta: float = Field(0.1, gt=0.0)


class MonitoringSettings(FrozenConfig):
    finding_score: float = Field(0.5, ge=0.0, le=1.0)  # detections counted in the rates
    window_days: int = Field(7, ge=1)  # the current window, ending now
    baseline_days: int = Field(14, ge=1)  # without a set baseline: the version's first days in service
    min_images: int = Field(50, ge=1)  # per window, for an alert
    refresh_s: float = Field(300.0, gt=0)  # how long /metrics reuses a computed assessment
    bounds: DriftBounds = DriftBounds()


@dataclass
class WindowStats:
    """One window's figures for one (tenant, model, version)."""

    images: int = 0
    lines: int = 0
    flagged: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # class -> detections at or above the reporting score
    histograms: dict[str, list[int]] = field(default_factory=dict)  # class -> counts per score bin

    def rate(self, cls: str) -> float:
        return self.counts.get(cls, 0) / self.images if self.images else 0.0

    @property
    def flag_rate(self) -> float:
        return self.flagged / self.lines if self.lines else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "lines": self.lines, "flagged": self.flagged, "counts": self.counts,
                "histograms": self.histograms}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> WindowStats:
        return cls(value["images"], value["lines"], value["flagged"], dict(value["counts"]),
                   {k: list(v) for k, v in value["histograms"].items()})


def _bin(score: float) -> int:
    return min(int(score * BINS), BINS - 1)


def _detections(model: str, reading: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(class, score) of every detection ``model`` made in a reading as stored (``to_json``)."""
    if model == "tooth-numbering":
        return [(TOOTH, t["score"]) for t in reading.get("teeth", [])]
    return [(f["class"], f["score"]) for f in reading.get("findings", [])]


def monitored_version(model: str, versions: Mapping[str, str]) -> str:
    """The version a model's detection scores are monitored under: the finding detector's
    scores of the classes a finding verifier re-scores are both models' together, so a
    new verifier is a new release of what is monitored (``0.5.0+int8+verifier-0.1.0``),
    not drift of the detector."""
    version = versions[model]
    if model == "findings" and "finding-verifier" in versions:
        version += f"+verifier-{versions['finding-verifier']}"
    return version


def score_summary(readings: Iterable[Mapping[str, Any]], lines: int) -> dict[str, Any]:
    """What drift needs of one decided claim, kept beside its readings so that a window is
    summed from a few hundred bytes per claim instead of every detection's box and
    attributes: the billed line count and, per monitored model version, how many
    radiographs it read and every detection score by class (scores, not counts, so that
    any reporting score can be applied later)."""
    models: dict[tuple[str, str], dict[str, Any]] = {}
    for reading in readings:
        versions = reading.get("model_versions", {})
        for model in MONITORED:
            if model not in versions:
                continue
            version = monitored_version(model, versions)
            entry = models.setdefault((model, version), {"model": model, "version": version, "images": 0, "scores": {}})
            entry["images"] += 1
            for cls, score in _detections(model, reading):
                entry["scores"].setdefault(cls, []).append(score)
    return {"lines": lines, "models": list(models.values())}


def add_summary(stats: WindowStats, entry: Mapping[str, Any], finding_score: float) -> None:
    """Count one claim's radiographs read by one model version (an entry of ``score_summary``)."""
    stats.images += entry["images"]
    for cls, scores in entry["scores"].items():
        histogram = stats.histograms.setdefault(cls, [0] * BINS)
        for score in scores:
            histogram[_bin(score)] += 1
        above = sum(1 for score in scores if score >= finding_score)
        if above:
            stats.counts[cls] = stats.counts.get(cls, 0) + above


def psi(expected: list[int], actual: list[int]) -> float:
    """Population stability index of two binned distributions (empty bins smoothed)."""
    e_total, a_total = sum(expected), sum(actual)
    if not e_total or not a_total:
        return 0.0
    value = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe, pa = max(e / e_total, 1e-4), max(a / a_total, 1e-4)
        value += (pa - pe) * math.log(pa / pe)
    return value


@dataclass(frozen=True)
class Signal:
    tenant: str
    model: str
    version: str
    kind: str  # finding_rate, score_psi, flag_rate, insufficient_data
    subject: str  # the class, or "" for the flag rate
    baseline: float
    current: float
    alert: bool
    text: str


def compare(tenant: str, model: str, version: str, baseline: WindowStats, current: WindowStats,
            settings: MonitoringSettings) -> list[Signal]:
    """Every signal of one (tenant, model, version): each class's rate and score PSI, the flag rate."""
    key = (tenant, model, version)
    if baseline.images < settings.min_images or current.images < settings.min_images:
        return [Signal(*key, "insufficient_data", "", baseline.images, current.images, False,
                       f"{baseline.images} radiographs in the baseline, {current.images} now; "
                       f"{settings.min_images} needed on each side")]
    bounds = settings.bounds
    out = []
    for cls in sorted(set(baseline.histograms) | set(current.histograms)):
        before, now = baseline.rate(cls), current.rate(cls)
        ratio = (now + 0.01) / (before + 0.01)  # smoothed: a class absent on one side is not an infinite change
        moved = ratio > bounds.rate_ratio or ratio < 1.0 / bounds.rate_ratio
        out.append(Signal(*key, "finding_rate", cls, round(before, 4), round(now, 4), moved,
                          f"{cls}: {now:.3f} per radiograph against {before:.3f} in the baseline (x{ratio:.2f})"))
        index = psi(baseline.histograms.get(cls, [0] * BINS), current.histograms.get(cls, [0] * BINS))
        out.append(Signal(*key, "score_psi", cls, 0.0, round(index, 4), index >= bounds.psi,
                          f"{cls}: score distribution PSI {index:.3f} (bound {bounds.psi})"))
    delta = current.flag_rate - baseline.flag_rate
    out.append(Signal(*key, "flag_rate", "", round(baseline.flag_rate, 4), round(current.flag_rate, 4),
                      abs(delta) >= bounds.flag_rate_delta,
                      f"{current.flag_rate:.1%} of lines flagged against {baseline.flag_rate:.1%} in the baseline"))
    return out


def alerts(signals: Iterable[Signal]) -> list[Signal]:
    return [s for s in signals if s.alert]
