"""Reviewer corrections turned into annotations for retraining (pure).

An image's labels start from what the models reported at or above ``min_score`` (what the
case view shows by default, and what the reviewer looked at), then the reviewer's
corrections apply: a finding marked wrong is removed, a missed finding is added with the
drawn box, a tooth read with the wrong number gets the right one. A correction names a
box as the case view showed it; it matches the detection whose box overlaps it most
(IoU at least ``MATCH_IOU``)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from datasets.annotations import FindingAnnotation, ImageAnnotations, ToothAnnotation
from models.detections import ImageReading
from models.postprocess import box_iou
from serving.review.dispositions import Correction, FindingWrong, MissedFinding, WrongToothNumber

MATCH_IOU = 0.9


def _best(box: tuple[float, float, float, float], candidates: list[tuple[float, float, float, float]]) -> int | None:
    if not candidates:
        return None
    overlaps = box_iou(np.asarray([box], dtype=np.float64), np.asarray(candidates, dtype=np.float64))[0]
    index = int(overlaps.argmax())
    return index if overlaps[index] >= MATCH_IOU else None


def corrected_annotations(reading: ImageReading, corrections: Iterable[Correction], file_name: str,
                          min_score: float = 0.3) -> tuple[ImageAnnotations, dict[str, int]]:
    """The image's annotations after the corrections, and what was applied (counts by
    correction type, plus ``unmatched`` for a correction whose box matched no detection)."""
    teeth = [t for t in reading.teeth if t.score >= min_score]
    numbers = [t.fdi for t in teeth]
    findings = [f for f in reading.findings if f.score >= min_score]
    kept = [True] * len(findings)
    added: list[FindingAnnotation] = []
    applied = {"finding_wrong": 0, "missed_finding": 0, "wrong_tooth_number": 0, "unmatched": 0}
    for c in corrections:
        if c.image_id != reading.image_id:
            continue
        if isinstance(c, FindingWrong):
            same_class = [i for i, f in enumerate(findings) if f.finding_class is c.finding_class and kept[i]]
            hit = _best(c.box_xyxy_px, [findings[i].box_xyxy_px for i in same_class])
            if hit is None:
                applied["unmatched"] += 1
                continue
            kept[same_class[hit]] = False
        elif isinstance(c, MissedFinding):
            added.append(FindingAnnotation(finding_class=c.finding_class, box_xyxy_px=c.box_xyxy_px, fdi=c.tooth_fdi))
        elif isinstance(c, WrongToothNumber):
            hit = _best(c.box_xyxy_px, [t.box_xyxy_px for t in teeth])
            if hit is None:
                applied["unmatched"] += 1
                continue
            numbers[hit] = c.correct_fdi
        applied[c.type] += 1
    renumbered = {old: new for old, new in zip((t.fdi for t in teeth), numbers, strict=True) if old != new}
    annotations = ImageAnnotations(
        image_id=reading.image_id, file_name=file_name, width_px=reading.width_px, height_px=reading.height_px,
        kind=reading.kind,
        teeth=tuple(ToothAnnotation(fdi=fdi, box_xyxy_px=t.box_xyxy_px) for t, fdi in zip(teeth, numbers, strict=True)),
        findings=tuple(FindingAnnotation(finding_class=f.finding_class, box_xyxy_px=f.box_xyxy_px,
                                         fdi=renumbered.get(f.fdi, f.fdi) if f.fdi is not None else None,
                                         caries_depth=f.caries_depth)
                       for f, keep in zip(findings, kept, strict=True) if keep) + tuple(added))
    return annotations, applied
