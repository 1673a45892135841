"""What the networks found on one radiograph, in the dental vocabulary and in original
image pixels, and the assignment of findings to teeth. Shared by evaluation and serving."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from models.findings import CariesDepth, FindingClass, Label
from models.postprocess import RawDetections, box_iou
from models.preprocess import InputGeometry
from models.radiographs import RadiographKind
from models.teeth import Tooth

BoxXYXY = tuple[float, float, float, float]


@dataclass(frozen=True)
class ToothDetection:
    fdi: int
    box_xyxy_px: BoxXYXY
    score: float
    fdi_runner_up: int | None = None  # second most likely number, for reviewers
    root_count: int | None = None  # 1, 2 or 3 (3+); None when not classified
    root_count_score: float | None = None


@dataclass(frozen=True)
class FindingDetection:
    finding_class: FindingClass
    box_xyxy_px: BoxXYXY
    score: float
    caries_depth: CariesDepth | None = None
    fdi: int | None = None  # the tooth it was assigned to, None when no tooth fits
    verified: bool = False  # its score combines the finding verifier's probability with the detector's


@dataclass(frozen=True)
class ImageReading:
    """Everything read from one image; ``model_versions`` maps model key -> version."""

    image_id: str
    kind: RadiographKind
    width_px: int
    height_px: int
    teeth: tuple[ToothDetection, ...] = ()
    findings: tuple[FindingDetection, ...] = ()
    model_versions: tuple[tuple[str, str], ...] = ()

    def tooth(self, fdi: int) -> ToothDetection | None:
        matches = [t for t in self.teeth if t.fdi == fdi]
        return max(matches, key=lambda t: t.score) if matches else None

    def findings_on(self, fdi: int) -> tuple[FindingDetection, ...]:
        return tuple(f for f in self.findings if f.fdi == fdi)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (the API's and the stored form); ``from_json`` reads it back."""
        return {
            "image_id": self.image_id, "kind": self.kind.value, "width_px": self.width_px, "height_px": self.height_px,
            "model_versions": dict(self.model_versions),
            "teeth": [{"fdi": t.fdi, "box_xyxy_px": list(t.box_xyxy_px), "score": round(t.score, 4),
                       "fdi_runner_up": t.fdi_runner_up, "root_count": t.root_count,
                       "root_count_score": None if t.root_count_score is None else round(t.root_count_score, 4)}
                      for t in self.teeth],
            "findings": [{"class": f.finding_class.value, "box_xyxy_px": list(f.box_xyxy_px), "score": round(f.score, 4),
                          "tooth_fdi": f.fdi, "caries_depth": f.caries_depth.value if f.caries_depth else None,
                          **({"verified": True} if f.verified else {})}  # absent for the detector's own scores
                         for f in self.findings],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageReading:
        return cls(
            image_id=data["image_id"], kind=RadiographKind(data["kind"]), width_px=int(data["width_px"]),
            height_px=int(data["height_px"]),
            teeth=tuple(ToothDetection(fdi=t["fdi"], box_xyxy_px=_box(t["box_xyxy_px"]), score=t["score"],
                                       fdi_runner_up=t.get("fdi_runner_up"), root_count=t.get("root_count"),
                                       root_count_score=t.get("root_count_score")) for t in data["teeth"]),
            findings=tuple(FindingDetection(finding_class=FindingClass(f["class"]), box_xyxy_px=_box(f["box_xyxy_px"]),
                                            score=f["score"], fdi=f.get("tooth_fdi"),
                                            caries_depth=CariesDepth(f["caries_depth"]) if f.get("caries_depth") else None,
                                            verified=bool(f.get("verified", False)))
                           for f in data["findings"]),
            model_versions=tuple(data.get("model_versions", {}).items()))


def _box(row: np.ndarray | list[float]) -> BoxXYXY:
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))


def unique_numbers(probs: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Class index per detected tooth such that no number is used twice among the eligible
    teeth (a mouth has one tooth 36): the assignment with the highest joint probability
    (Hungarian on -log p). Teeth that are not eligible keep their most likely number."""
    labels = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    chosen = np.flatnonzero(eligible)
    if len(chosen) > 1:
        rows, cols = linear_sum_assignment(-np.log(np.clip(probs[chosen], 1e-6, 1.0)))
        labels[chosen[rows]] = cols
    return labels


def teeth_from_raw(raw: RawDetections, geometry: InputGeometry, classes: tuple[Label, ...],
                   unique_at: float | None = None) -> list[ToothDetection]:
    """Teeth in original pixels. With ``unique_at``, the teeth scoring at least that much
    get distinct numbers (``unique_numbers``); the score stays the detection's own."""
    boxes = geometry.to_original(raw.boxes_xyxy)
    labels = raw.labels if unique_at is None else unique_numbers(raw.probs, raw.scores >= unique_at)
    teeth = []
    for box, score, label, probs in zip(boxes, raw.scores, labels, raw.probs, strict=True):
        tooth = classes[int(label)].tooth
        assert tooth is not None, "tooth detector class without a tooth"
        order = [int(i) for i in np.argsort(-probs) if int(i) != int(label)]
        runner = classes[order[0]].tooth if order else None
        teeth.append(ToothDetection(fdi=tooth.fdi, box_xyxy_px=_box(box), score=float(score),
                                    fdi_runner_up=runner.fdi if runner else None))
    return teeth


def findings_from_raw(raw: RawDetections, geometry: InputGeometry, classes: tuple[Label, ...]) -> list[FindingDetection]:
    boxes = geometry.to_original(raw.boxes_xyxy)
    found = []
    for box, score, label in zip(boxes, raw.scores, raw.labels, strict=True):
        if box[2] <= box[0] or box[3] <= box[1]:
            continue  # wholly past the edge of what was read: clipped to nothing
        cls = classes[int(label)]
        assert cls.finding is not None, "finding detector class without a finding"
        found.append(FindingDetection(finding_class=cls.finding, box_xyxy_px=_box(box), score=float(score),
                                      caries_depth=cls.caries_depth))
    return found


def apex_region(tooth: ToothDetection, fraction: float = 0.35) -> BoxXYXY:
    """The root-end part of a tooth box, grown a little: roots point up for maxillary teeth
    and down for mandibular teeth (radiographs are viewed crowns toward the occlusal plane)."""
    x0, y0, x1, y1 = tooth.box_xyxy_px
    h, w = y1 - y0, x1 - x0
    grow = 0.25 * w
    if Tooth.fdi_of(tooth.fdi).arch.value == "maxillary":
        return (x0 - grow, y0 - 0.25 * h, x1 + grow, y0 + fraction * h)
    return (x0 - grow, y1 - fraction * h, x1 + grow, y1 + 0.25 * h)


def _overlap_of_first(a: BoxXYXY, b: BoxXYXY) -> float:
    """Intersection area over the area of ``a``."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = max((a[2] - a[0]) * (a[3] - a[1]), 1e-9)
    return ix * iy / area


def implant_site(box: BoxXYXY, teeth: list[ToothDetection]) -> int | None:
    """The FDI number of the gap an implant fills: the implant stands where a tooth is
    missing, between the nearest teeth of its arch on either side. None when the
    neighbours are not both seen, or are not one position apart from the gap."""
    cy = (box[1] + box[3]) / 2
    cx = (box[0] + box[2]) / 2
    arch = [t for t in teeth if t.box_xyxy_px[1] <= cy <= t.box_xyxy_px[3]]
    left = [t for t in arch if (t.box_xyxy_px[0] + t.box_xyxy_px[2]) / 2 < cx]
    right = [t for t in arch if (t.box_xyxy_px[0] + t.box_xyxy_px[2]) / 2 > cx]
    if not left or not right:
        return None
    a = max(left, key=lambda t: t.box_xyxy_px[2]).fdi
    b = min(right, key=lambda t: t.box_xyxy_px[0]).fdi
    if a // 10 == b // 10 and abs(a % 10 - b % 10) == 2:
        return a // 10 * 10 + (a % 10 + b % 10) // 2
    # Across the midline: 12 and 21 leave 11, 11 and 22 leave 21 (and likewise below).
    if a // 10 != b // 10 and {a % 10, b % 10} == {1, 2}:
        return a // 10 * 10 + 1 if a % 10 == 2 else b // 10 * 10 + 1
    return None


def assign_findings(findings: list[FindingDetection], teeth: list[ToothDetection],
                    min_overlap: float = 0.25) -> list[FindingDetection]:
    """Give each finding the tooth it lies on: the largest overlap with a tooth box (with
    the apex region for periapical lesions). Impactions are teeth themselves, so they take
    the tooth box they match best. An implant takes the gap it fills between its
    neighbours. A finding no tooth fits keeps ``fdi=None``."""
    assigned = []
    for finding in findings:
        if finding.finding_class is FindingClass.IMPLANT:
            site = implant_site(finding.box_xyxy_px, teeth)
            if site is not None:
                assigned.append(replace(finding, fdi=site))
                continue
        best, best_overlap = None, min_overlap
        for tooth in teeth:
            if finding.finding_class is FindingClass.PERIAPICAL_LESION:
                overlap = _overlap_of_first(finding.box_xyxy_px, apex_region(tooth))
            elif finding.finding_class is FindingClass.IMPACTED_TOOTH:
                overlap = float(box_iou(np.asarray(finding.box_xyxy_px), np.asarray(tooth.box_xyxy_px))[0, 0])
            else:
                overlap = _overlap_of_first(finding.box_xyxy_px, tooth.box_xyxy_px)
            if overlap > best_overlap:
                best, best_overlap = tooth, overlap
        assigned.append(replace(finding, fdi=best.fdi if best else None))
    return assigned
