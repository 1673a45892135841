"""What a radiograph goes through when it is sent again on another claim: re-encoding,
small crops, brightness, contrast and gamma changes, a smaller copy. Used to test and
measure the recycled-radiograph fingerprints (``serving.fingerprints``) on synthetic
images. Each takes and returns a 2-D float image in [0, 1]."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image


def jpeg(pixels: np.ndarray, quality: int = 70) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer), dtype=np.float32) / 255.0


def crop(pixels: np.ndarray, left: float, top: float, right: float, bottom: float) -> np.ndarray:
    """Cut the given fractions of the width or height off each side."""
    h, w = pixels.shape
    return pixels[int(h * top): h - int(h * bottom), int(w * left): w - int(w * right)]


def half_size(pixels: np.ndarray) -> np.ndarray:
    h, w = pixels.shape
    return np.asarray(Image.fromarray(pixels.astype(np.float32), mode="F").resize((w // 2, h // 2),
                                                                                   Image.Resampling.BILINEAR))


Alteration = Callable[[np.ndarray], np.ndarray]

ALTERATIONS: dict[str, Alteration] = {
    "re-encoded as JPEG": jpeg,
    "cropped 4 % on the left": lambda p: crop(p, 0.04, 0, 0, 0),
    "cropped 3 % on every side": lambda p: crop(p, 0.03, 0.03, 0.03, 0.03),
    "cropped 5 % top and right": lambda p: crop(p, 0, 0.05, 0.05, 0),
    "brighter and more contrast": lambda p: np.clip(p * 1.15 + 0.05, 0, 1),
    "gamma changed": lambda p: p ** 0.8,
    "cropped, darkened and re-encoded": lambda p: jpeg(np.clip(crop(p, 0.03, 0.02, 0, 0.04) ** 0.85 * 1.1, 0, 1)),
}
"""The alterations every test checks."""

MORE_ALTERATIONS: dict[str, Alteration] = {
    "re-encoded as JPEG at quality 40": lambda p: jpeg(p, 40),
    "cropped 5 % on every side": lambda p: crop(p, 0.05, 0.05, 0.05, 0.05),
    "darker": lambda p: p * 0.85,
    "gamma changed the other way": lambda p: p ** 1.25,
    "half size": half_size,
    "half size, cropped 4 % on the left, JPEG": lambda p: jpeg(half_size(crop(p, 0.04, 0, 0, 0)), 60),
}
"""Further alterations the benchmark measures as well."""
