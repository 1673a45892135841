"""A kept radiograph drawn for people: the teeth the models numbered and the boxes a
decision cites as evidence. Shared by the false-positive report and the appeal packet."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from datasets.annotations import FindingAnnotation, ImageAnnotations, ToothAnnotation
from datasets.preview import overlay_png_base64
from datasets.readers import read_radiograph
from models.findings import FindingClass
from models.radiographs import RadiographKind

TOOTH_MIN_SCORE = 0.5  # teeth drawn with their numbers


def cited_evidence(line: dict[str, Any], actions: tuple[str, ...] = ("flag", "downcode", "reject")) -> list[dict[str, Any]]:
    """The image evidence (with a box) of a decided line's fired hits of these actions."""
    return [e for h in line.get("rule_hits", []) if h.get("fired", True) and h["action"] in actions
            for e in h.get("evidence", []) if e.get("box_xyxy_px") and e.get("image_id")]


def evidence_png_base64(media: bytes, kind: str, image_id: str, reading: dict[str, Any] | None,
                        evidence: Iterable[dict[str, Any]], max_side: int) -> str:
    """The radiograph (a file as received) with the numbered teeth of its reading and the
    cited finding boxes drawn, as a base64 PNG."""
    pixels = np.asarray(read_radiograph(media).pixels_unit, dtype=np.float32)
    teeth = tuple(ToothAnnotation(t["fdi"], tuple(t["box_xyxy_px"]), t.get("root_count"))
                  for t in (reading or {}).get("teeth", []) if t["score"] >= TOOTH_MIN_SCORE)
    findings = tuple(FindingAnnotation(FindingClass(e["finding_class"]), tuple(e["box_xyxy_px"]))
                     for e in evidence if e["image_id"] == image_id and e.get("finding_class"))
    h, w = pixels.shape
    labels = ImageAnnotations(image_id, "", w, h, RadiographKind(kind) if kind != "unknown" else None, teeth, findings)
    return overlay_png_base64(pixels, labels, max_side=max_side)
