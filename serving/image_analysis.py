"""One radiograph file in, its reading and fingerprint out: decoding, the kind, the
perceptual fingerprint and the three models, in the process that holds the models.

The service's ingress sends the file as received (tens to hundreds of KB) to the model
replica rather than decoded float32 pixels (about 1.3 MB for a periapical), so the
pixels never cross a process boundary and are decoded once. A file that cannot be read
comes back as the error it raised (``ImageAnalysisRefused``), never as a failed batch:
one bad image must not fail the other requests batched with it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datasets.radiograph import ReaderLimits
from datasets.readers import read_radiograph
from models.detections import ImageReading
from models.errors import DxvError
from models.radiographs import RadiographKind
from serving.fingerprints import fingerprint
from serving.rules.recycled import ImagePrint


class ModelsUnavailableError(DxvError):
    """The models' deployment cannot take the request now (its queue is full, a replica
    went away, it failed to deploy): HTTP 503, to be retried."""

    code = "models.unavailable"


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


PrintsCallback = Callable[[tuple[ImagePrint, ...]], None]


def analyze_files(models: Any, files: list[tuple[str, bytes, RadiographKind | None, ReaderLimits]],
                  on_printed: PrintsCallback | None = None) -> list[ImageAnalysis | ImageAnalysisRefused]:
    """Each file (id, bytes, kind, limits) decoded and fingerprinted, then the decoded ones
    read together (``models.read_many``: each model's inputs of one shape as one batch, a
    GPU's pace; each reading the one the image gets alone). A file that cannot be read is
    refused on its own. ``models`` is a ``models.inference.DentalReader``; every detection
    above the candidate threshold is kept, because the validation layer applies its own
    bands. An image's ``models_s`` is its share of the batch's time. ``on_printed`` is
    called with the fingerprints, in the files' order, before the models read, when every
    file decoded (work that needs only them can run beside the models)."""
    out: list[ImageAnalysis | ImageAnalysisRefused | None] = [None] * len(files)
    decoded = []
    for index, (image_id, data, kind, limits) in enumerate(files):
        start = time.perf_counter()
        try:
            radiograph = read_radiograph(data, limits=limits, kind_hint=kind)
            chosen = radiograph.kind_or_guess(kind)
            printed = ImagePrint(image_id, chosen.value, fingerprint(radiograph.pixels_unit))
        except DxvError as exc:
            out[index] = ImageAnalysisRefused(exc)
            continue
        decoded.append((index, image_id, radiograph.pixels_unit, chosen, printed, time.perf_counter() - start))
    if not decoded:
        return [o for o in out if o is not None]
    if on_printed is not None and len(decoded) == len(files):
        on_printed(tuple(printed for _, _, _, _, printed, _ in decoded))
    start = time.perf_counter()
    try:
        readings = models.read_many([(image_id, pixels, kind) for _, image_id, pixels, kind, _, _ in decoded],
                                    operating_point=False)
    except DxvError:
        # One image the models refuse must not fail the others: read one by one to find it.
        readings = [_read_or_refuse(models, image_id, pixels, kind) for _, image_id, pixels, kind, _, _ in decoded]
    share = (time.perf_counter() - start) / len(decoded)
    for (index, _, _, _, printed, decode_s), reading in zip(decoded, readings, strict=True):
        out[index] = reading if isinstance(reading, ImageAnalysisRefused) else \
            ImageAnalysis(reading, printed, decode_s, share)
    return [o for o in out if o is not None]


def _read_or_refuse(models: Any, image_id: str, pixels: Any, kind: RadiographKind
                    ) -> ImageReading | ImageAnalysisRefused:
    try:
        return models.read(image_id, pixels, kind, operating_point=False)
    except DxvError as exc:
        return ImageAnalysisRefused(exc)


def raise_if_refused(outcome: ImageAnalysis | ImageAnalysisRefused) -> ImageAnalysis:
    if isinstance(outcome, ImageAnalysisRefused):
        raise outcome.error
    return outcome
