"""Image formation: bone texture, exposure, contrast, blur, quantum noise, markers."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from datasets.synth.config import Difficulty, Range


def uniform(rng: np.random.Generator, value_range: Range) -> float:
    return float(rng.uniform(value_range.low, value_range.high))


_TILE = 1600  # side of the cached texture and noise fields, in pixels


@lru_cache(maxsize=4)
def _texture_tile(px_per_mm_key: float) -> np.ndarray:
    return _make_texture((_TILE, _TILE), px_per_mm_key, np.random.default_rng(20261123))


@lru_cache(maxsize=1)
def _noise_tile() -> np.ndarray:
    return np.random.default_rng(20261124).standard_normal((_TILE, _TILE), dtype=np.float32)


def _random_view(tile: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop of a cached field, randomly mirrored: as good as a fresh field for a
    single image, and deterministic given the image's own random stream."""
    y = int(rng.integers(0, tile.shape[0] - shape[0] + 1))
    x = int(rng.integers(0, tile.shape[1] - shape[1] + 1))
    view = tile[y:y + shape[0], x:x + shape[1]]
    if rng.random() < 0.5:
        view = view[:, ::-1]
    if rng.random() < 0.5:
        view = view[::-1, :]
    return view


def trabecular_texture(shape: tuple[int, int], px_per_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Cancellous bone: a network of trabeculae around marrow spaces, about 0.5-1.5 mm."""
    if shape[0] <= _TILE and shape[1] <= _TILE:
        return _random_view(_texture_tile(round(px_per_mm, 2)), shape, rng)
    return _make_texture(shape, px_per_mm, rng)


def _make_texture(shape: tuple[int, int], px_per_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Drawn at reduced resolution and enlarged, which is both faster and what the blur of a
    real sensor would leave of finer structure."""
    factor = max(1, round(px_per_mm * 0.25))  # low-res pixels of ~0.25 mm
    small = (shape[0] // factor + 2, shape[1] // factor + 2)
    noise = rng.standard_normal(small).astype(np.float32)
    fine = ndimage.gaussian_filter(noise, 1.2)
    coarse = ndimage.gaussian_filter(noise, 3.5)
    fine /= fine.std() + 1e-6
    coarse /= coarse.std() + 1e-6
    # Ridges of the fine field form the trabecular network.
    network = 1.0 - np.tanh(np.abs(fine) * 1.6)
    texture = 0.78 + 0.32 * network + 0.08 * coarse
    if factor > 1:  # bilinear enlargement (Pillow's is several times faster than ndimage.zoom)
        size = (small[1] * factor, small[0] * factor)
        texture = np.asarray(Image.fromarray(texture.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))
    return np.ascontiguousarray(texture[: shape[0], : shape[1]], dtype=np.float32)


def expose(attenuation: np.ndarray, difficulty: Difficulty, rng: np.random.Generator,
           blur_scale: float = 1.0) -> np.ndarray:
    """Detector signal in [0, 1]: 1 - exp(-k*A), gamma, blur and quantum noise whose
    spread grows with the square root of the signal."""
    k = uniform(rng, difficulty.exposure)
    signal = 1.0 - np.exp(-k * attenuation, dtype=np.float32)
    signal = np.power(np.clip(signal, 0.0, 1.0), uniform(rng, difficulty.gamma), dtype=np.float32)
    sigma = uniform(rng, difficulty.blur_sigma_px) * blur_scale
    if sigma > 0.05:
        signal = ndimage.gaussian_filter(signal, sigma, truncate=3.0)
    noise_level = uniform(rng, difficulty.noise_sigma)
    if signal.shape[0] <= _TILE and signal.shape[1] <= _TILE:
        noise = _random_view(_noise_tile(), signal.shape, rng)
    else:
        noise = rng.standard_normal(signal.shape, dtype=np.float32)
    signal = signal + noise_level * np.sqrt(signal + 0.02, dtype=np.float32) * noise
    return np.clip(signal, 0.0, 1.0).astype(np.float32)


def burn_in_marker(signal: np.ndarray, rng: np.random.Generator, text: str) -> np.ndarray:
    """A burned-in orientation dot and side letter, as some sensors and software add."""
    height, width = signal.shape
    size = max(6, int(min(height, width) * 0.035))
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    corner_x = int(rng.choice([size, width - 3 * size]))
    corner_y = int(rng.choice([size, height - 3 * size]))
    draw.ellipse((corner_x, corner_y, corner_x + size, corner_y + size), fill=255)
    draw.text((corner_x + int(1.4 * size), corner_y - size // 4), text, fill=255,
              font_size=int(size * 1.6))
    marks = np.asarray(image, dtype=np.float32) / 255.0
    return np.maximum(signal, marks * 0.97)


def quantise(signal: np.ndarray, bits: int) -> np.ndarray:
    top = 2**bits - 1
    return np.round(np.clip(signal, 0.0, 1.0) * top).astype(np.uint16)
