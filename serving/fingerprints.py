"""Perceptual fingerprints of radiographs, to find one image sent again on another claim.

A recycled radiograph is rarely byte-identical: it is re-encoded (DICOM to JPEG and back),
cropped by a few per cent, brightened. A 64-bit perceptual hash flips too many bits under a
3-4 % crop, so the comparison here is a small image alignment instead:

* the fingerprint keeps a 48x48 thumbnail of the whole image (area-averaged) and a coarse
  8x8 vector of its central part (for ranking candidates);
* ``similarities`` takes the central part of each candidate's thumbnail as a template and
  searches the query over scale (x and y apart, +-8 %) and shift, first on 24x24 copies
  with plain normalised cross-correlation (invariant to brightness and contrast; all
  candidates in one matrix product per scale, well under a millisecond each), then, for
  those that pass, around the best alignment on the full thumbnails with their low
  frequencies removed, which is where two different radiographs of a kind stop looking alike.

On synthetic radiographs (periapical, bitewing, panoramic) the same image re-encoded,
cropped by up to 5 % on two sides, brightened or gamma-shifted scores 0.88 or more; two
different images of the same kind score 0.83 or less (panoramics, which look most alike;
periapicals and bitewings 0.77); ``MATCH_THRESHOLD`` sits between.
The test suite checks each alteration. Pure numpy/scipy; no I/O."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, gaussian_filter1d

THUMB_PX = 48
MARGIN_PX = 6  # the template leaves this border out, which allows crops and shifts up to about 10 %
COARSE_GRID = 8
MATCH_THRESHOLD = 0.86
GATE_THRESHOLD = 0.80  # the quick 24x24 search: below this, not the same image
FULL_COMPARISONS = 3  # candidates past the gate compared in full, best first
FINGERPRINT_VERSION = "1"
_SCALES = np.linspace(0.92, 1.08, 5)
_REFINE = np.array([-0.02, 0.0, 0.02])


@dataclass(frozen=True, eq=False)
class Fingerprint:
    thumb: np.ndarray  # THUMB_PX x THUMB_PX, uint8, contrast-stretched
    coarse: np.ndarray  # COARSE_GRID**2 float32, zero mean, unit length

    def to_bytes(self) -> tuple[bytes, bytes]:
        return self.thumb.astype(np.uint8).tobytes(), self.coarse.astype(np.float16).tobytes()

    @classmethod
    def from_bytes(cls, thumb: bytes, coarse: bytes) -> Fingerprint:
        return cls(np.frombuffer(thumb, dtype=np.uint8).reshape(THUMB_PX, THUMB_PX),
                   np.frombuffer(coarse, dtype=np.float16).astype(np.float32))


def _resize(pixels: np.ndarray, width: int, height: int, resample: Image.Resampling) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels.astype(np.float32), mode="F").resize((width, height), resample),
                      dtype=np.float32)


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-9)


def fingerprint(pixels: np.ndarray) -> Fingerprint:
    """The fingerprint of a radiograph given as a 2-D array (any intensity scale)."""
    image = np.asarray(pixels, dtype=np.float32)
    if image.ndim != 2 or min(image.shape) < 16:
        raise ValueError(f"a fingerprint needs a 2-D image of at least 16x16 pixels, got shape {image.shape}")
    thumb = _resize(image, THUMB_PX, THUMB_PX, Image.Resampling.BOX)
    low, high = float(thumb.min()), float(thumb.max())
    stretched = np.round((thumb - low) / (high - low + 1e-9) * 255.0).astype(np.uint8)
    h, w = image.shape
    centre = image[h // 10: h - h // 10, w // 10: w - w // 10]
    coarse = _unit_rows(_resize(centre, COARSE_GRID, COARSE_GRID, Image.Resampling.BOX).reshape(1, -1))[0]
    return Fingerprint(stretched, coarse.astype(np.float32))


def coarse_similarity(query: Fingerprint, others: np.ndarray) -> np.ndarray:
    """Cosine similarity of the coarse vectors: ranks candidates, decides nothing."""
    return others @ query.coarse if len(others) else np.zeros(0, dtype=np.float32)


def _windows(image: np.ndarray, side: int) -> np.ndarray:
    """Every ``side`` x ``side`` window of ``image``, one per row."""
    return np.lib.stride_tricks.sliding_window_view(image, (side, side)).reshape(-1, side * side)


def _ncc(windows: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of every window (rows of raw pixels) with every unit,
    zero-mean template (rows). The template's zero mean drops the window's mean out of the
    product, so each window needs only its centred norm (from its sum and sum of squares,
    in float64) instead of a centred, normalised copy: half the time of ``_unit_rows``. A
    flat window correlates with nothing (0), as a centred copy would give."""
    n = windows.shape[1]
    sums = windows.sum(axis=1, dtype=np.float64)
    squares = np.einsum("ij,ij->i", windows, windows, dtype=np.float64)
    norms = np.sqrt(np.maximum(squares - sums * sums / n, 0.0))
    flat = norms < 1e-3
    scores = (windows @ templates.T) / np.where(flat, 1.0, norms).astype(np.float32)[:, None]
    scores[flat] = 0.0
    return scores


def _high_pass(image: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` less its Gaussian blur (scipy's, as matrix products)."""
    height, width = image.shape
    return image - blur_matrix(height, sigma) @ image @ blur_matrix(width, sigma).T


def _best_alignment(a: np.ndarray, b: np.ndarray, size: int, margin: int, scales_y, scales_x) -> tuple[float, float, float]:
    """Highest NCC of ``a``'s centre inside ``b`` rescaled by (sy, sx), both high-passed
    (low frequencies removed), and that scale."""
    inner = size - 2 * margin
    template = _unit_rows(_high_pass(a, 3.0)[margin: size - margin, margin: size - margin].reshape(1, -1))
    best = (-1.0, 1.0, 1.0)
    for sy in scales_y:
        tall = resize_matrix(size, max(inner, round(size * sy))) @ b
        for sx in scales_x:
            scaled = tall @ resize_matrix(size, max(inner, round(size * sx))).T
            score = float(_ncc(_windows(_high_pass(scaled, 3.0), inner), template).max())
            if score > best[0]:
                best = (score, float(sy), float(sx))
    return best


def _small(thumbs: np.ndarray) -> np.ndarray:
    """Thumbnails (..., 48, 48) at half size: the means of 2x2 blocks (what a box filter
    gives), for any number of thumbnails in one array operation."""
    half = THUMB_PX // 2
    return thumbs.astype(np.float32).reshape(*thumbs.shape[:-2], half, 2, half, 2).mean(axis=(-3, -1))


@functools.lru_cache(maxsize=32)
def resize_matrix(source: int, target: int) -> np.ndarray:
    """PIL's bilinear resize of one axis from ``source`` to ``target`` pixels as a
    (target x source) matrix. The resize is linear and done one axis at a time, so the
    resized unit impulses are the columns, and ``R_y @ image @ R_x.T`` equals PIL's result
    (to float rounding) at the cost of two small products."""
    impulses = np.eye(source, dtype=np.float32)
    return np.stack([_resize(impulses[j][None, :], target, 1, Image.Resampling.BILINEAR)[0] for j in range(source)],
                    axis=1)


@functools.lru_cache(maxsize=32)
def blur_matrix(size: int, sigma: float) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter1d`` (its default reflect border) over ``size``
    samples as a (size x size) matrix, built the same way from unit impulses."""
    return np.stack([gaussian_filter1d(column, sigma) for column in np.eye(size, dtype=np.float64)],
                    axis=1).astype(np.float32)


def _gate(query: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The quick search for every candidate at once: each candidate's centre (24x24 copy)
    against the query rescaled over the scale grid, on the plain images and on their
    high-pass versions (panoramics look alike in the plain ones). The windows of every
    scale are stacked so that each version is one matrix product for all scales and
    candidates. Returns, per candidate, the lower of the two best NCCs and the (sy, sx) of
    the plain one."""
    half, margin = THUMB_PX // 2, MARGIN_PX // 2
    inner = half - 2 * margin
    high = candidates - gaussian_filter(candidates, (0, 1.5, 1.5))
    centre = (slice(None), slice(margin, half - margin), slice(margin, half - margin))
    plain_t = _unit_rows(candidates[centre].reshape(len(candidates), -1))
    high_t = _unit_rows(high[centre].reshape(len(candidates), -1))
    plain_windows: list[np.ndarray] = []
    high_windows: list[np.ndarray] = []
    grid: list[tuple[float, float]] = []
    # The query at every scale, and its high-pass version, as products with precomputed
    # resize and blur matrices (25 PIL resizes and Gaussian filters took about 4 ms per image).
    for sy in _SCALES:
        height = max(inner, round(half * sy))
        rows, blur_rows = resize_matrix(half, height), blur_matrix(height, 1.5)
        tall = rows @ query
        for sx in _SCALES:
            width = max(inner, round(half * sx))
            scaled = tall @ resize_matrix(half, width).T
            plain_windows.append(_windows(scaled, inner))
            high_windows.append(_windows(scaled - blur_rows @ scaled @ blur_matrix(width, 1.5).T, inner))
            grid.append((sy, sx))
    starts = np.cumsum([0] + [len(w) for w in plain_windows[:-1]])  # first row of each scale's windows
    # Best NCC per scale (rows) and candidate (columns); the first scale reaching the best wins.
    plain = np.maximum.reduceat(_ncc(np.concatenate(plain_windows), plain_t), starts, axis=0)
    best_high = _ncc(np.concatenate(high_windows), high_t).max(axis=0)
    chosen = plain.argmax(axis=0)
    best_plain = plain[chosen, np.arange(len(candidates))]
    return np.minimum(best_plain, best_high), np.asarray(grid, np.float64)[chosen]


def similarities(query: Fingerprint, candidates: list[Fingerprint]) -> np.ndarray:
    """How surely each candidate is the same radiograph as ``query`` (about 1.0 identical;
    at least ``MATCH_THRESHOLD`` the same image altered; lower: different images). The
    quick search runs for all candidates together; only those that pass its gate (in
    practice, the same image) get the full-resolution, high-pass comparison."""
    if not candidates:
        return np.zeros(0)
    gate, where = _gate(_small(query.thumb), _small(np.stack([c.thumb for c in candidates])))
    # Only the best few past the gate are compared in full (an image recycled is the best
    # by far); the others keep a score below the gate, i.e. "no match".
    scores = np.minimum(gate, GATE_THRESHOLD - 1e-3)
    big_query = query.thumb.astype(np.float32)
    passed = np.flatnonzero(gate >= GATE_THRESHOLD)
    for i in passed[np.argsort(-gate[passed])][:FULL_COMPARISONS]:
        sy, sx = where[i]
        scores[i], _, _ = _best_alignment(candidates[i].thumb.astype(np.float32), big_query, THUMB_PX, MARGIN_PX,
                                          sy + _REFINE, sx + _REFINE)
    return scores


def similarity(a: Fingerprint, b: Fingerprint) -> float:
    return float(similarities(a, [b])[0])
