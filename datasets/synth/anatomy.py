"""Sizes and shapes of teeth (mm), from standard dental anatomy tables (rounded)."""

from __future__ import annotations

from dataclasses import dataclass

from models.teeth import Arch, Tooth, ToothType


@dataclass(frozen=True)
class ToothDimensions:
    crown_width_mm: float  # mesio-distal
    crown_height_mm: float
    root_length_mm: float


# (arch, position) -> dimensions of permanent teeth.
_PERMANENT: dict[tuple[Arch, int], ToothDimensions] = {
    (Arch.MAXILLARY, 1): ToothDimensions(8.5, 10.5, 13.0),
    (Arch.MAXILLARY, 2): ToothDimensions(6.5, 9.0, 13.0),
    (Arch.MAXILLARY, 3): ToothDimensions(7.5, 10.0, 17.0),
    (Arch.MAXILLARY, 4): ToothDimensions(7.0, 8.5, 14.0),
    (Arch.MAXILLARY, 5): ToothDimensions(6.5, 8.5, 14.0),
    (Arch.MAXILLARY, 6): ToothDimensions(10.0, 7.5, 12.5),
    (Arch.MAXILLARY, 7): ToothDimensions(9.0, 7.0, 11.5),
    (Arch.MAXILLARY, 8): ToothDimensions(8.5, 6.5, 11.0),
    (Arch.MANDIBULAR, 1): ToothDimensions(5.0, 9.0, 12.5),
    (Arch.MANDIBULAR, 2): ToothDimensions(5.5, 9.5, 14.0),
    (Arch.MANDIBULAR, 3): ToothDimensions(7.0, 11.0, 16.0),
    (Arch.MANDIBULAR, 4): ToothDimensions(7.0, 8.5, 14.0),
    (Arch.MANDIBULAR, 5): ToothDimensions(7.0, 8.0, 14.5),
    (Arch.MANDIBULAR, 6): ToothDimensions(11.0, 7.5, 14.0),
    (Arch.MANDIBULAR, 7): ToothDimensions(10.5, 7.0, 13.0),
    (Arch.MANDIBULAR, 8): ToothDimensions(10.0, 7.0, 11.0),
}


def tooth_dimensions(tooth: Tooth) -> ToothDimensions:
    return _PERMANENT[(tooth.arch, tooth.position)]


def crown_squareness(tooth: Tooth) -> float:
    """Exponent of the crown outline: high for boxy molars, low for tapered incisors."""
    return {ToothType.INCISOR: 2.2, ToothType.CANINE: 2.0, ToothType.PREMOLAR: 2.8, ToothType.MOLAR: 3.6}[
        tooth.tooth_type
    ]


# Image order of the teeth of each arch: the patient's right is on the viewer's left.
MAXILLARY_ORDER: tuple[int, ...] = (18, 17, 16, 15, 14, 13, 12, 11, 21, 22, 23, 24, 25, 26, 27, 28)
MANDIBULAR_ORDER: tuple[int, ...] = (48, 47, 46, 45, 44, 43, 42, 41, 31, 32, 33, 34, 35, 36, 37, 38)


def mesial_sign(tooth: Tooth) -> int:
    """+1 when the tooth's mesial surface faces image right (teeth of the patient's right)."""
    return 1 if tooth.quadrant in (1, 4, 5, 8) else -1
