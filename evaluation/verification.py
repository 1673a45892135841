"""How a finding verifier's re-scoring does on candidates already read: AP50 of the
verified classes with the detector's own scores and with the combined ones, the fusion
weight with the best AP50, and each verified class's operating threshold. Used at the
end of ``dxv train`` for a verifier, where the candidates and their crops are at hand and
reading the images again for every weight would cost minutes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from evaluation.detection_metrics import Box, ImageBoxes, coco_ap
from evaluation.thresholds import class_f1_curves, class_thresholds
from models.detections import BoxXYXY, FindingDetection, ImageReading
from models.findings import FindingClass
from models.inference import verified_score
from models.radiographs import RadiographKind


class ScoredCandidate(Protocol):
    @property
    def image_id(self) -> str: ...
    @property
    def kind(self) -> RadiographKind: ...
    @property
    def finding_class(self) -> FindingClass: ...
    @property
    def box_xyxy_px(self) -> BoxXYXY: ...
    @property
    def score(self) -> float | None: ...


def combined_scores(candidates: Sequence[ScoredCandidate], probabilities: np.ndarray, weight: float,
                    min_score: float) -> np.ndarray:
    """What serving scores each candidate: verified (detector's score at least
    ``min_score``) or its own score."""
    detector = np.array([c.score for c in candidates], np.float64)
    return np.where(detector >= min_score, verified_score(detector, probabilities, weight), detector)


def candidate_readings(samples: Sequence, candidates: Sequence[ScoredCandidate], scores: np.ndarray) -> list[ImageReading]:
    """One reading per sample holding its candidates with ``scores`` (what the reader
    would report for the verified classes)."""
    by_image: dict[str, list[FindingDetection]] = {s.image_id: [] for s in samples}
    for c, score in zip(candidates, scores, strict=True):
        by_image[c.image_id].append(FindingDetection(c.finding_class, c.box_xyxy_px, float(score)))
    return [ImageReading(s.image_id, s.kind, s.annotations.width_px, s.annotations.height_px,
                         findings=tuple(by_image[s.image_id])) for s in samples]


def classes_ap50(samples: Sequence, readings: Sequence[ImageReading], classes: Sequence[FindingClass],
                 kind: RadiographKind | None = None) -> dict[str, float]:
    """COCO AP50 (pycocotools) of each of ``classes`` over the samples (of one ``kind``)."""
    chosen = [i for i, s in enumerate(samples) if kind is None or s.kind is kind]
    names = [c.value for c in classes]
    gt = [ImageBoxes(samples[i].image_id, samples[i].annotations.width_px, samples[i].annotations.height_px,
                     tuple(Box(f.box_xyxy_px, f.finding_class.value) for f in samples[i].annotations.findings
                           if f.finding_class in classes)) for i in chosen]
    pred = [ImageBoxes(readings[i].image_id, readings[i].width_px, readings[i].height_px,
                       tuple(Box(f.box_xyxy_px, f.finding_class.value, f.score) for f in readings[i].findings))
            for i in chosen]
    return {name: float(ap.ap50) for name, ap in coco_ap(gt, pred, names).items() if ap.ap50 is not None}


def mean_ap50(aps: dict[str, float]) -> float:
    return float(np.mean(list(aps.values()))) if aps else 0.0


def choose_weight(samples: Sequence, candidates: Sequence[ScoredCandidate], probabilities: np.ndarray,
                  classes: Sequence[FindingClass], weights: Sequence[float], min_score: float
                  ) -> tuple[float, dict[float, float]]:
    """The fusion weight with the best mean AP50 over ``classes`` (ties to the smaller
    weight: the lighter change to the detector's scores), and the AP50 at each weight."""
    at = {w: mean_ap50(classes_ap50(samples, candidate_readings(samples, candidates, combined_scores(
        candidates, probabilities, w, min_score)), classes)) for w in weights}
    best = max(at.values())
    return min(w for w, v in at.items() if v >= best - 1e-9), at


def verified_thresholds(samples: Sequence, readings: Sequence[ImageReading],
                        classes: Sequence[FindingClass]) -> dict[str, float]:
    """Each verified class's operating threshold on the combined scores: its best F1."""
    names = {c.value for c in classes}
    return {k: v for k, v in class_thresholds(class_f1_curves(samples, readings)).items() if k in names}
