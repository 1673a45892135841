"""Kinds of dental radiograph the detectors serve."""

from __future__ import annotations

from enum import StrEnum


class RadiographKind(StrEnum):
    PERIAPICAL = "periapical"
    BITEWING = "bitewing"
    PANORAMIC = "panoramic"

    @property
    def is_intraoral(self) -> bool:
        return self is not RadiographKind.PANORAMIC

    @property
    def dicom_modality(self) -> str:
        """DICOM Modality: IO (intra-oral radiography) or PX (panoramic X-ray)."""
        return "IO" if self.is_intraoral else "PX"
