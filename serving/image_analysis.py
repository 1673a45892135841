"""One radiograph file in, its reading and fingerprint out: decoding, the kind, the
perceptual fingerprint and the three models, in the process that holds the models.

The service's ingress sends the file as received (tens to hundreds of KB) to the model
replica rather than decoded float32 pixels (about 1.3 MB for a periapical), so the
pixels never cross a process boundary and are decoded once. A file that cannot be read
comes back as the error it raised (``ImageAnalysisRefused``), never as a failed batch:
one bad image must not fail the other requests batched with it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from datasets.radiograph import ReaderLimits
from datasets.readers import read_radiograph
from models.detections import ImageReading
from models.errors import DxvError
from models.radiographs import RadiographKind
from serving.fingerprints import fingerprint
from serving.rules.recycled import ImagePrint


@dataclass(frozen=True)
class ImageAnalysis:
    reading: ImageReading
    printed: ImagePrint
    decode_s: float  # decoding and fingerprinting
    models_s: float  # the three models, pre- and post-processing included


@dataclass(frozen=True)
class ImageAnalysisRefused:
    """The file could not be read; ``error`` is the project error it raised (re-raised by
    the caller, so the API answers with its code)."""

    error: DxvError


def analyze_file(models: Any, image_id: str, data: bytes, kind: RadiographKind | None,
                 limits: ReaderLimits) -> ImageAnalysis:
    """``models`` is a ``models.inference.DentalReader``; every detection above the
    candidate threshold is kept, because the validation layer applies its own bands."""
    start = time.perf_counter()
    radiograph = read_radiograph(data, limits=limits, kind_hint=kind)
    pixels = radiograph.pixels_unit
    chosen = radiograph.kind_or_guess(kind)
    printed = ImagePrint(image_id, chosen.value, fingerprint(pixels))
    decoded = time.perf_counter()
    reading = models.read(image_id, pixels, chosen, operating_point=False)
    return ImageAnalysis(reading, printed, decoded - start, time.perf_counter() - decoded)


def analyze_or_refuse(models: Any, image_id: str, data: bytes, kind: RadiographKind | None,
                      limits: ReaderLimits) -> ImageAnalysis | ImageAnalysisRefused:
    try:
        return analyze_file(models, image_id, data, kind, limits)
    except DxvError as exc:
        return ImageAnalysisRefused(exc)


def raise_if_refused(outcome: ImageAnalysis | ImageAnalysisRefused) -> ImageAnalysis:
    if isinstance(outcome, ImageAnalysisRefused):
        raise outcome.error
    return outcome
