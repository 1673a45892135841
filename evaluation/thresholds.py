"""Choosing a model's operating threshold on validation data: the score at which
detections are reported to the rules. Chosen for the best F1 (teeth: of correctly
numbered teeth; findings: mean over the pathology classes present)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluation.detection_metrics import Box, ImageBoxes, match_teeth, operating_point
from models.detections import ImageReading
from models.findings import FindingClass

CANDIDATE_THRESHOLDS: tuple[float, ...] = tuple(round(float(t), 2) for t in np.arange(0.1, 0.951, 0.05))


def _f1(precision: float | None, recall: float | None) -> float:
    if not precision or not recall:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def teeth_f1(images: Sequence, readings: Sequence[ImageReading], threshold: float) -> float:
    gt = [(im.annotations.image_id, [(t.box_xyxy_px, t.fdi) for t in im.annotations.teeth]) for im in images]
    pred = {r.image_id: [(t.box_xyxy_px, t.fdi) for t in r.teeth if t.score >= threshold] for r in readings}
    matching, _ = match_teeth(gt, pred)
    predicted = sum(len(v) for v in pred.values())
    precision = matching.correctly_numbered / predicted if predicted else None
    return _f1(precision, matching.numbering_accuracy)


def _finding_boxes(images: Sequence, readings: Sequence[ImageReading]) -> tuple[list[ImageBoxes], list[ImageBoxes]]:
    gt = [ImageBoxes(im.annotations.image_id, im.annotations.width_px, im.annotations.height_px,
                     tuple(Box(f.box_xyxy_px, f.finding_class.value) for f in im.annotations.findings)) for im in images]
    pred = [ImageBoxes(r.image_id, r.width_px, r.height_px,
                       tuple(Box(f.box_xyxy_px, f.finding_class.value, f.score) for f in r.findings)) for r in readings]
    return gt, pred


def class_f1_curves(images: Sequence, readings: Sequence[ImageReading],
                    candidates: Sequence[float] = CANDIDATE_THRESHOLDS) -> dict[str, dict[float, float]]:
    """Each finding class present in ``images``: its F1 at every candidate threshold."""
    gt, pred = _finding_boxes(images, readings)
    return {cls.value: {t: _f1(op.ppv, op.sensitivity)
                        for t in candidates for op in [operating_point(gt, pred, cls.value, t)]}
            for cls in FindingClass if any(b.label == cls.value for g in gt for b in g.boxes)}


def pathology_f1_curve(curves: dict[str, dict[float, float]],
                       candidates: Sequence[float] = CANDIDATE_THRESHOLDS) -> dict[float, float]:
    """The mean F1 over the pathology classes present, at every candidate threshold (0 when
    none is present): what one threshold for every class is chosen on."""
    pathology = [curve for name, curve in curves.items() if FindingClass(name).is_pathology]
    return {t: float(np.mean([curve[t] for curve in pathology])) if pathology else 0.0 for t in candidates}


def class_thresholds(curves: dict[str, dict[float, float]]) -> dict[str, float]:
    """Each class of ``class_f1_curves``: the candidate threshold with its best F1 (ties to
    the higher)."""
    return {name: choose_threshold(curve) for name, curve in curves.items()}


def choose_threshold(score_at: dict[float, float]) -> float:
    """The threshold with the best score; ties go to the higher threshold (fewer flags)."""
    best = max(score_at.values())
    return max(t for t, s in score_at.items() if s >= best - 1e-9)
