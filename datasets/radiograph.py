"""The radiograph as every later stage sees it: float32 pixels plus de-identified metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.radiographs import RadiographKind


@dataclass(frozen=True)
class ReaderLimits:
    """Limits checked before any pixel is decoded (decompression bombs, oversized uploads)."""

    max_pixels: int = 50_000_000
    max_bytes: int = 128 * 1024 * 1024
    # IO intra-oral, PX panoramic, DX digital radiography, CR computed radiography.
    allowed_modalities: frozenset[str] = frozenset({"IO", "PX", "DX", "CR"})


@dataclass(frozen=True)
class RadiographMetadata:
    source_format: str  # "dicom", "png", "jpeg" or "tiff"
    width_px: int
    height_px: int
    bits_stored: int
    photometric_interpretation: str  # of the file; pixels are always MONOCHROME2 after reading
    kind: RadiographKind | None
    kind_source: str  # "dicom-modality", "dicom-description", "caller" or "unknown"
    pixel_spacing_mm: tuple[float, float] | None  # (row, column) spacing
    modality: str | None = None
    transfer_syntax_uid: str | None = None
    transfer_syntax_name: str | None = None
    number_of_frames: int = 1
    voi_applied: str = "none"  # "window", "voi-lut" or "none"
    # De-identified header summary: acquisition facts only, never names, IDs or dates (a DICOM
    # file's when read with ``with_header=True``, as ``dxv inspect`` does).
    header: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True, eq=False)
class Radiograph:
    """``pixels_unit`` is float32, shape (height, width), 0 = least and 1 = most
    attenuating (radiopaque is bright, whatever the file's photometric interpretation)."""

    pixels_unit: np.ndarray
    metadata: RadiographMetadata

    @property
    def shape_hw(self) -> tuple[int, int]:
        return (int(self.pixels_unit.shape[0]), int(self.pixels_unit.shape[1]))

    def kind_or_guess(self, hint: RadiographKind | None = None) -> RadiographKind:
        """The kind the caller states, else the file's (DICOM), else a guess from the shape."""
        from models.preprocess import guess_kind

        return RadiographKind(hint or self.metadata.kind or guess_kind(*self.shape_hw))
