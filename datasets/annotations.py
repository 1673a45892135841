"""Annotated radiographs in our own vocabulary, independent of any file format.

Boxes are ``box_xyxy_px``: pixel corners (x0, y0, x1, y1) in the original image, x to the
right, y down, x1/y1 exclusive (COCO's [x, y, w, h] converts exactly)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from models.findings import CariesDepth, FindingClass
from models.radiographs import RadiographKind
from models.teeth import Surface, Tooth, flip_fdi_horizontal

BoxXYXY = tuple[float, float, float, float]


def check_box(box: BoxXYXY, width: int, height: int, *, tolerance: float = 0.5) -> bool:
    """True when the box has positive size and lies inside a width x height image."""
    x0, y0, x1, y1 = box
    return (
        x1 > x0 and y1 > y0 and x0 >= -tolerance and y0 >= -tolerance
        and x1 <= width + tolerance and y1 <= height + tolerance
    )


def flip_box_horizontal(box: BoxXYXY, width: int) -> BoxXYXY:
    x0, y0, x1, y1 = box
    return (width - x1, y0, width - x0, y1)


@dataclass(frozen=True)
class ToothAnnotation:
    fdi: int
    box_xyxy_px: BoxXYXY
    root_count: int | None = None  # 1, 2 or 3 (3 = three or more)
    roots_visible: bool | None = None  # all apices inside the image
    truncated: bool = False  # cut by the image border

    def __post_init__(self) -> None:
        Tooth.fdi_of(self.fdi)  # validates
        if self.root_count is not None and self.root_count not in (1, 2, 3):
            raise ValueError(f"root count must be 1, 2 or 3 (3+), got {self.root_count}")


@dataclass(frozen=True)
class FindingAnnotation:
    finding_class: FindingClass
    box_xyxy_px: BoxXYXY
    fdi: int | None = None  # the tooth it belongs to (the site, for an implant)
    caries_depth: CariesDepth | None = None
    surfaces: frozenset[Surface] = frozenset()

    def __post_init__(self) -> None:
        if self.fdi is not None:
            Tooth.fdi_of(self.fdi)
        if self.caries_depth is not None and self.finding_class is not FindingClass.CARIES:
            raise ValueError("only caries has a depth")


@dataclass(frozen=True)
class ImageAnnotations:
    image_id: str
    file_name: str  # relative to the dataset root
    width_px: int
    height_px: int
    kind: RadiographKind | None = None
    teeth: tuple[ToothAnnotation, ...] = ()
    findings: tuple[FindingAnnotation, ...] = ()

    def tooth(self, fdi: int) -> ToothAnnotation | None:
        return next((t for t in self.teeth if t.fdi == fdi), None)

    def flipped_horizontal(self) -> ImageAnnotations:
        """Annotations of the left-right mirrored image: boxes mirrored and every tooth
        number moved to the patient's other side."""
        w = self.width_px
        teeth = tuple(
            replace(t, fdi=flip_fdi_horizontal(t.fdi), box_xyxy_px=flip_box_horizontal(t.box_xyxy_px, w))
            for t in self.teeth
        )
        findings = tuple(
            replace(f, fdi=None if f.fdi is None else flip_fdi_horizontal(f.fdi),
                    box_xyxy_px=flip_box_horizontal(f.box_xyxy_px, w))
            for f in self.findings
        )
        return replace(self, teeth=teeth, findings=findings)


@dataclass(frozen=True)
class AnnotatedDataset:
    images: tuple[ImageAnnotations, ...]
    # Categories found in the source that map to nothing of ours, with their counts.
    unmapped: Counter[str] = field(default_factory=Counter)
    source_format: str = ""

    def __len__(self) -> int:
        return len(self.images)
