"""Readings and claims built by hand for the rule tests: teeth laid out in image order
with their crowns towards the occlusal plane, findings placed on named parts of a tooth."""

from __future__ import annotations

import datetime as dt

from datasets.synth.anatomy import MANDIBULAR_ORDER, MAXILLARY_ORDER
from models.detections import FindingDetection, ImageReading, ToothDetection
from models.findings import CariesDepth, FindingClass
from models.radiographs import RadiographKind
from models.surfaces import mesial_is_image_right
from models.teeth import Arch, NumberingSystem, Tooth
from serving.claims import Attachment, Claim, ClaimLine, Member, Provider

TOOTH_W, TOOTH_H, GAP = 100.0, 400.0, 10.0
Box = tuple[float, float, float, float]


def tooth_box(fdi: int) -> Box:
    tooth = Tooth.fdi_of(fdi)
    order = MAXILLARY_ORDER if tooth.arch is Arch.MAXILLARY else MANDIBULAR_ORDER
    x0 = 20.0 + order.index(fdi if fdi < 50 else fdi - 40) * (TOOTH_W + GAP)
    y0 = 20.0 if tooth.arch is Arch.MAXILLARY else 40.0 + TOOTH_H
    return (x0, y0, x0 + TOOTH_W, y0 + TOOTH_H)


def part(fdi: int, where: str) -> Box:
    """A box on part of a tooth: 'mesial', 'distal', 'occlusal', 'central' (crown middle,
    away from the occlusal edge), 'apex', 'crown', 'root', 'whole'."""
    tooth = Tooth.fdi_of(fdi)
    x0, y0, x1, y1 = tooth_box(fdi)
    up = tooth.arch is Arch.MANDIBULAR  # crown at the top of the box
    def rows(a: float, b: float) -> tuple[float, float]:  # fractions from the occlusal end
        return (y0 + a * TOOTH_H, y0 + b * TOOTH_H) if up else (y1 - b * TOOTH_H, y1 - a * TOOTH_H)
    right = mesial_is_image_right(tooth)
    if where in ("mesial", "distal"):
        on_right = (where == "mesial") == right
        xa, xb = (x1 - 25, x1) if on_right else (x0, x0 + 25)
        ya, yb = rows(0.15, 0.3)
        return (xa, ya, xb, yb)
    if where == "occlusal":
        ya, yb = rows(0.0, 0.1)
        return (x0 + 40, ya, x1 - 40, yb)
    if where == "central":
        ya, yb = rows(0.2, 0.35)
        return (x0 + 40, ya, x1 - 40, yb)
    if where == "apex":
        ya, yb = rows(0.9, 1.05)
        return (x0 + 20, ya, x1 - 20, yb)
    if where == "crown":
        ya, yb = rows(0.0, 0.4)
        return (x0, ya, x1, yb)
    if where == "root":
        ya, yb = rows(0.4, 0.95)
        return (x0 + 40, ya, x1 - 40, yb)
    return (x0, y0, x1, y1)


def tooth(fdi: int, score: float = 0.95, roots: int | None = None, roots_score: float = 0.95) -> ToothDetection:
    return ToothDetection(fdi=fdi, box_xyxy_px=tooth_box(fdi), score=score, root_count=roots,
                          root_count_score=roots_score if roots is not None else None)


def finding(cls: FindingClass | str, fdi: int, where: str = "whole", score: float = 0.9,
            depth: CariesDepth | str | None = None) -> FindingDetection:
    cls = FindingClass(cls)
    if cls is FindingClass.CARIES and depth is None:
        depth = CariesDepth.DENTIN
    return FindingDetection(finding_class=cls, box_xyxy_px=part(fdi, where), score=score,
                            caries_depth=CariesDepth(depth) if depth else None, fdi=fdi)


def reading(teeth: list[ToothDetection] | list[int], findings: list[FindingDetection] = (),  # type: ignore[assignment]
            kind: RadiographKind = RadiographKind.PERIAPICAL, image_id: str = "img-1") -> ImageReading:
    dets = [t if isinstance(t, ToothDetection) else tooth(t) for t in teeth]
    return ImageReading(image_id=image_id, kind=kind, width_px=1800, height_px=900, teeth=tuple(dets),
                        findings=tuple(findings), model_versions=(("tooth-numbering", "t1"), ("findings", "f1")))


def line(code: str, tooth_fdi: int | None = None, surfaces: str | None = None, *, line_id: str = "1",
         system: str = "CDT", quadrant: int | None = None, universal: bool = False) -> ClaimLine:
    tooth_text = None
    if tooth_fdi is not None:
        tooth_text = Tooth.fdi_of(tooth_fdi).universal if universal else str(tooth_fdi)
    return ClaimLine(line_id=line_id, code=code, code_system=system, tooth=tooth_text,
                     tooth_system=NumberingSystem.UNIVERSAL if universal else NumberingSystem.FDI,
                     surfaces=surfaces, quadrant=quadrant, fee=100.0)


def claim(lines: list[ClaimLine], readings: list[ImageReading], *, narrative: str = "", age: int = 40) -> Claim:
    service = dt.date(2026, 3, 2)
    return Claim(
        claim_id="C-1", tenant="t1", member=Member(member_id="M-1", birth_date=service.replace(year=service.year - age)),
        provider=Provider(provider_id="P-1"), date_of_service=service, lines=tuple(lines), narrative=narrative,
        attachments=tuple(Attachment(radiograph_id=r.image_id, kind=r.kind) for r in readings),
    )
