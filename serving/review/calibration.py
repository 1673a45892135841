"""Per-class score bands proposed from reviewer corrections (pure).

Labels come from the radiographs reviewers corrected (a reviewer who marks findings is
looking at them): every detection the case view showed (score at least ``min_score``)
that was not marked wrong counts as a true finding at its score, one marked wrong as a
false one; a missed finding counts as a true finding at the score of the weak detection
under the drawn box (IoU at least ``MISSED_MATCH_IOU``), or at 0 where the models saw
nothing there (no band can catch those: they are for retraining).

For each class with enough labels, the proposal is
- ``support``: the lowest score at which the detections at or above it are true at least
  ``target_precision`` of the time (never below ``min_score``: nothing lower was shown,
  so nothing lower was judged);
- ``absent``: the highest score, a margin below ``support`` and never above ``min_score``,
  under which at most ``max_miss_rate`` of the true findings fall (below ``absent`` the
  validation layer reads "the models see nothing"; below ``min_score`` reviewers judged
  nothing, so nothing there was shown to be false: the band does not rise into it).
A class without enough labels keeps its band, and the report says why."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from models.detections import ImageReading
from models.findings import FindingClass
from models.postprocess import box_iou
from serving.evidence_matrix import Band, Thresholds
from serving.review.corrections import MATCH_IOU
from serving.review.dispositions import Correction, FindingWrong, MissedFinding

MISSED_MATCH_IOU = 0.3  # a drawn box is rough: a weak detection under it is the same finding
GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


@dataclass(frozen=True)
class Label:
    finding_class: FindingClass
    score: float
    true: bool


@dataclass(frozen=True)
class CalibrationPolicy:
    target_precision: float = 0.9
    max_miss_rate: float = 0.05
    min_labels: int = 30  # per class
    min_each: int = 5  # true and false labels, each
    min_score: float = 0.3  # what the case view showed by default
    absent_margin: float = 0.05  # absent stays at least this far below support


@dataclass(frozen=True)
class ClassProposal:
    finding_class: FindingClass
    labels: int
    true: int
    false: int
    missed_entirely: int
    current: Band
    proposed: Band
    precision_current: float | None  # of the labelled detections at or above support
    precision_proposed: float | None
    miss_rate_current: float | None  # of the true findings, the share below absent
    miss_rate_proposed: float | None
    note: str


def _overlaps(box: Sequence[float], boxes: list[Sequence[float]]) -> np.ndarray:
    if not boxes:
        return np.zeros(0)
    return box_iou(np.asarray([box], dtype=np.float64), np.asarray(boxes, dtype=np.float64))[0]


def labels_of(reading: ImageReading, corrections: Iterable[Correction], min_score: float) -> list[Label]:
    """The labelled detections of one corrected radiograph (see the module docstring)."""
    mine = [c for c in corrections if c.image_id == reading.image_id]
    shown = [f for f in reading.findings if f.score >= min_score]
    wrong = [False] * len(shown)
    for c in mine:
        if isinstance(c, FindingWrong):
            same = [i for i, f in enumerate(shown) if f.finding_class is c.finding_class and not wrong[i]]
            overlaps = _overlaps(c.box_xyxy_px, [shown[i].box_xyxy_px for i in same])
            if overlaps.size and overlaps.max() >= MATCH_IOU:
                wrong[same[int(overlaps.argmax())]] = True
    labels = [Label(f.finding_class, f.score, not w) for f, w in zip(shown, wrong, strict=True)]
    for c in mine:
        if isinstance(c, MissedFinding):
            weak = [f for f in reading.findings if f.finding_class is c.finding_class and f.score < min_score]
            overlaps = _overlaps(c.box_xyxy_px, [f.box_xyxy_px for f in weak])
            score = weak[int(overlaps.argmax())].score if overlaps.size and overlaps.max() >= MISSED_MATCH_IOU else 0.0
            labels.append(Label(c.finding_class, score, True))
    return labels


def _precision(scores: np.ndarray, truth: np.ndarray, at: float) -> float | None:
    above = scores >= at
    return float(truth[above].mean()) if above.any() else None


def _miss_rate(true_scores: np.ndarray, below: float) -> float | None:
    return float((true_scores < below).mean()) if true_scores.size else None


def propose_band(finding_class: FindingClass, labels: Sequence[Label], current: Band,
                 policy: CalibrationPolicy) -> ClassProposal:
    scores = np.asarray([x.score for x in labels], dtype=np.float64)
    truth = np.asarray([x.true for x in labels], dtype=bool)
    true_scores = scores[truth]
    n_true, n_false = int(truth.sum()), int((~truth).sum())
    entirely = int((true_scores == 0.0).sum())

    def proposal(band: Band, note: str) -> ClassProposal:
        return ClassProposal(finding_class, len(labels), n_true, n_false, entirely, current, band,
                             _precision(scores, truth, current.support), _precision(scores, truth, band.support),
                             _miss_rate(true_scores, current.absent), _miss_rate(true_scores, band.absent), note)

    if len(labels) < policy.min_labels or n_true < policy.min_each or n_false < policy.min_each:
        return proposal(current, f"kept: {len(labels)} labels ({n_true} true, {n_false} false); needs "
                                 f"{policy.min_labels} with {policy.min_each} of each")
    support = next((float(t) for t in GRID if t >= policy.min_score
                    and (p := _precision(scores, truth, t)) is not None and p >= policy.target_precision
                    and (scores >= t).sum() >= policy.min_each), None)
    notes = []
    if support is None:
        support = current.support
        notes.append(f"no score reaches precision {policy.target_precision:.0%} on these labels: support kept")
    ceiling = max(min(support - policy.absent_margin, policy.min_score), 0.0)
    fits = [float(t) for t in GRID if t <= ceiling and (_miss_rate(true_scores, t) or 0.0) <= policy.max_miss_rate]
    if fits:
        absent = fits[-1]
    else:
        absent = float(GRID[0]) if ceiling >= GRID[0] else 0.0
        notes.append(f"{entirely} of {n_true} true findings had no detection at all: retrain for them "
                     "(no band catches what the models do not see)" if entirely else
                     f"the true findings score too low for a miss rate of {policy.max_miss_rate:.0%}")
    return proposal(Band(support=round(support, 2), absent=round(min(absent, support), 2)),
                    "; ".join(notes) or "proposed")


def propose_thresholds(current: Thresholds, labels: Iterable[Label], policy: CalibrationPolicy,
                       version: str) -> tuple[Thresholds, list[ClassProposal]]:
    """A new thresholds version (bands per finding class; tooth presence and root count as
    they were) and the per-class report."""
    by_class: dict[FindingClass, list[Label]] = {c: [] for c in current.findings}
    for label in labels:
        by_class.setdefault(label.finding_class, []).append(label)
    proposals = [propose_band(c, by_class[c], band, policy) for c, band in current.findings.items()]
    values = current.model_dump(mode="json")
    values.update(version=version, findings={p.finding_class.value: p.proposed.model_dump() for p in proposals})
    return Thresholds.model_validate(values), proposals
