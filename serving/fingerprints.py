"""Perceptual fingerprints of radiographs, to find one image sent again on another claim.

A recycled radiograph is rarely byte-identical: it is re-encoded (DICOM to JPEG and back),
cropped by a few per cent, brightened. A 64-bit perceptual hash flips too many bits under a
3-4 % crop, so the comparison here is a small image alignment instead:

* the fingerprint keeps a 48x48 thumbnail of the whole image (area-averaged) and a coarse
  8x8 vector of its central part (for ranking candidates);
* ``similarities`` takes the central part of each candidate's thumbnail as a template and
  searches the query over scale (x and y apart, +-8 %) and shift, first on 24x24 copies
  with plain normalised cross-correlation (invariant to brightness and contrast; every
  scale and candidate in one matrix product, the query's sizes laid out as one mosaic),
  then, for the few that pass the kind's
  gate, on the full thumbnails with their low frequencies removed, which is where two
  different radiographs of a kind stop looking alike, over every whole-pixel size within
  3 pixels of the quick search's (its 24x24 scale steps are too coarse: a panoramic cut
  unevenly was found 3 pixels off in height and missed), correlated by one FFT.

The thresholds are per kind (``THRESHOLDS``), measured on synthetic radiographs by
``python -m evaluation.bench_fingerprints`` (200 images of each kind; 13 alterations of
20 of them: re-encoded, cropped up to 5 % on every side, brightened, darkened,
gamma-shifted, halved): the same image altered scores at least 0.956 (periapical), 0.957
(bitewing), 0.894 (panoramic); the most alike different images 0.907, 0.917 and 0.860.
One threshold (0.86) for every kind matched 15 pairs of different periapicals and 40 of
bitewings among 19,900 each, and missed 4 of 260 altered panoramics.
The test suite checks each alteration. Pure numpy/scipy; no I/O."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter1d
from scipy.signal import fftconvolve

THUMB_PX = 48
MARGIN_PX = 6  # the template leaves this border out, which allows crops and shifts up to about 10 %
COARSE_GRID = 8
FULL_COMPARISONS = 3  # candidates past the gate compared in full, best first
REFINE_PX = 3  # the full comparison tries every size within this many pixels of the quick search's best
FINGERPRINT_VERSION = "1"
_SCALES = np.linspace(0.92, 1.08, 5)
_SCALE_GRID = np.asarray([(sy, sx) for sy in _SCALES for sx in _SCALES])  # the quick search's, in mosaic order


@dataclass(frozen=True)
class KindThresholds:
    """Where a radiograph kind's scores separate the same image (altered) from different
    images, measured on synthetic radiographs by ``python -m evaluation.bench_fingerprints``
    (README, "Recycled radiographs"). Different periapicals and bitewings of one generator
    look more alike than different panoramics, so one threshold for every kind either let
    them match or missed cropped panoramics."""

    gate: float  # the quick 24x24 search: below this, not the same image (no full comparison)
    match: float  # the full comparison: at or above this, the same radiograph


THRESHOLDS = {
    "periapical": KindThresholds(gate=0.85, match=0.93),
    "bitewing": KindThresholds(gate=0.84, match=0.935),
    "panoramic": KindThresholds(gate=0.80, match=0.875),
}
# A kind not measured: the lowest gate and the strictest match of the kinds above.
OTHER_KIND = KindThresholds(gate=min(t.gate for t in THRESHOLDS.values()), match=max(t.match for t in THRESHOLDS.values()))


def thresholds_for(kind: str) -> KindThresholds:
    return THRESHOLDS.get(kind, OTHER_KIND)


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
    picture = Image.fromarray(np.ascontiguousarray(image), mode="F")
    thumb = np.asarray(picture.resize((THUMB_PX, THUMB_PX), Image.Resampling.BOX), dtype=np.float32)
    low, high = float(thumb.min()), float(thumb.max())
    stretched = np.round((thumb - low) / (high - low + 1e-9) * 255.0).astype(np.uint8)
    h, w = image.shape
    # The centre (a tenth off each side) resized from the same picture through ``box``: the
    # same values as resizing a cropped copy, without the copy.
    centre = (w // 10, h // 10, w - w // 10, h - h // 10)
    coarse = _unit_rows(np.asarray(picture.resize((COARSE_GRID, COARSE_GRID), Image.Resampling.BOX, box=centre),
                                   dtype=np.float32).reshape(1, -1))[0]
    return Fingerprint(stretched, coarse.astype(np.float32))


def coarse_similarity(query: Fingerprint, others: np.ndarray) -> np.ndarray:
    """Cosine similarity of the coarse vectors: ranks candidates, decides nothing."""
    return others @ query.coarse if len(others) else np.zeros(0, dtype=np.float32)


@functools.lru_cache(maxsize=64)
def _stacked_resizes(source: int, sizes: tuple[int, ...], sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The resize matrices from ``source`` to every size, stacked (sum(sizes) x source), and
    the same each followed by its size's blur: ``R_y @ image @ R_x.T`` holds every resized
    copy of ``image`` as one block of a mosaic, ``B_y @ image @ B_x.T`` each block's blur."""
    plain = np.vstack([resize_matrix(source, size) for size in sizes])
    blurred = np.vstack([blur_matrix(size, sigma) @ resize_matrix(source, size) for size in sizes])
    return plain, blurred


def _mosaic(image: np.ndarray, heights: tuple[int, ...], widths: tuple[int, ...], sigma: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """``image`` resized to every (height, width), as the blocks of one array (heights down,
    widths across), and the same less each block's own Gaussian blur (the high-pass
    version): four small matrix products instead of a loop over the sizes."""
    resize_y, blur_y = _stacked_resizes(image.shape[0], heights, sigma)
    resize_x, blur_x = _stacked_resizes(image.shape[1], widths, sigma)
    plain = resize_y @ image @ resize_x.T
    return plain, plain - blur_y @ image @ blur_x.T


@dataclass(frozen=True, eq=False)
class _WindowGrid:
    """The ``side`` x ``side`` windows of a ``_mosaic`` that lie inside one block (windows
    across two blocks mean nothing): their top-left corners, block by block in the mosaic's
    order and row by row inside a block, with the index of each block's first window."""

    side: int
    rows: np.ndarray
    cols: np.ndarray
    starts: np.ndarray
    # 0/1 band matrices over the distinct tops (lefts): ``down @ image @ across.T`` sums
    # every window; ``row_of`` / ``col_of`` place each window in that product.
    down: np.ndarray
    across: np.ndarray
    row_of: np.ndarray
    col_of: np.ndarray

    def windows(self, image: np.ndarray) -> np.ndarray:
        """Each window's pixels, one window per row."""
        side = self.side
        return np.lib.stride_tricks.sliding_window_view(image, (side, side))[self.rows, self.cols].reshape(
            len(self.rows), side * side)

    def norms(self, image: np.ndarray) -> np.ndarray:
        """Each window's centred norm, from its sum and sum of squares in float64, both as
        products with the band matrices (a summed-area table's cumulative sums took twice
        as long on the full comparison's mosaic)."""
        x = image.astype(np.float64)
        sums = (self.down @ x @ self.across.T)[self.row_of, self.col_of]
        squares = (self.down @ (x * x) @ self.across.T)[self.row_of, self.col_of]
        return np.sqrt(np.maximum(squares - sums * sums / (self.side * self.side), 0.0))


def _band(starts: np.ndarray, side: int, length: int) -> np.ndarray:
    positions = np.arange(length)[None, :]
    return ((positions >= starts[:, None]) & (positions < starts[:, None] + side)).astype(np.float64)


@functools.lru_cache(maxsize=64)
def _window_grid(heights: tuple[int, ...], widths: tuple[int, ...], side: int) -> _WindowGrid:
    tops, lefts = np.cumsum((0, *heights[:-1])), np.cumsum((0, *widths[:-1]))
    rows, cols, counts = [], [], []
    for top, height in zip(tops, heights, strict=True):
        for left, width in zip(lefts, widths, strict=True):
            r, c = np.meshgrid(np.arange(top, top + height - side + 1), np.arange(left, left + width - side + 1),
                               indexing="ij")
            rows.append(r.ravel())
            cols.append(c.ravel())
            counts.append(r.size)
    all_rows, all_cols = np.concatenate(rows), np.concatenate(cols)
    distinct_rows, row_of = np.unique(all_rows, return_inverse=True)
    distinct_cols, col_of = np.unique(all_cols, return_inverse=True)
    return _WindowGrid(side, all_rows, all_cols, np.cumsum([0, *counts[:-1]]), _band(distinct_rows, side, sum(heights)),
                       _band(distinct_cols, side, sum(widths)), row_of, col_of)


def _normalised(products: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation from each window's product with unit, zero-mean
    templates (rows: windows) and the window's centred norm. The template's zero mean
    drops the window's mean out of the product, so no centred copy of the windows is made.
    A flat window correlates with nothing (0), as a centred copy would give."""
    flat = norms < 1e-3
    scores = products / np.where(flat, 1.0, norms).astype(np.float32).reshape(len(norms), *([1] * (products.ndim - 1)))
    scores[flat] = 0.0
    return scores


def _ncc(windows: np.ndarray, norms: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of every window (rows of raw pixels) with every unit,
    zero-mean template (rows)."""
    return _normalised(windows @ templates.T, norms)


def _high_pass(image: np.ndarray, sigma: float) -> np.ndarray:
    """``image`` less its Gaussian blur (scipy's, as matrix products)."""
    height, width = image.shape
    return image - blur_matrix(height, sigma) @ image @ blur_matrix(width, sigma).T


def _best_alignment(a: np.ndarray, b: np.ndarray, height: int, width: int, reach: int = REFINE_PX) -> float:
    """Highest NCC of ``a``'s centre inside ``b`` resized to every (height, width) within
    ``reach`` pixels of the given one, both high-passed (low frequencies removed). The
    sizes are whole pixels, so this is every distinct scale near the quick search's. One
    template against 49 sizes of large windows: the correlations come from one FFT over
    the mosaic of every size, not from copies of the windows (about 40 MB)."""
    inner = THUMB_PX - 2 * MARGIN_PX
    centre = slice(MARGIN_PX, THUMB_PX - MARGIN_PX)
    template = _unit_rows(_high_pass(a, 3.0)[centre, centre].reshape(1, -1)).reshape(inner, inner)
    heights = tuple(range(max(inner, height - reach), height + reach + 1))
    widths = tuple(w for w in range(width - reach, width + reach + 1) if w >= inner)
    _, high = _mosaic(b, heights, widths, 3.0)
    grid = _window_grid(heights, widths, inner)
    products = fftconvolve(high, template[::-1, ::-1], mode="valid")[grid.rows, grid.cols]  # correlation: flipped
    return float(_normalised(products, grid.norms(high)).max())


def _small(thumbs: np.ndarray) -> np.ndarray:
    """Thumbnails (..., 48, 48) at half size: the means of 2x2 blocks (what a box filter
    gives), for any number of thumbnails in one array operation (four strided sums: a
    ``mean`` over two axes took ten times as long)."""
    x = thumbs.astype(np.float32)
    return (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]) * np.float32(0.25)


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


@dataclass(frozen=True, eq=False)
class Candidates:
    """Earlier radiographs of one kind, prepared once for the quick search of every
    radiograph of a claim: each one's centre (of its 24x24 copy) as a unit, zero-mean
    template, plain and high-passed."""

    prints: tuple[Fingerprint, ...]
    plain: np.ndarray  # one template per row
    high: np.ndarray

    @classmethod
    def of(cls, prints: Sequence[Fingerprint]) -> Candidates:
        half, margin = THUMB_PX // 2, MARGIN_PX // 2
        if not prints:
            none = np.zeros((0, (half - 2 * margin) ** 2), np.float32)
            return cls((), none, none)
        small = _small(np.stack([p.thumb for p in prints]))
        blur = blur_matrix(half, 1.5)  # scipy's Gaussian filter as products, every thumbnail at once (6x faster)
        high = small - blur @ small @ blur.T
        centre = (slice(None), slice(margin, half - margin), slice(margin, half - margin))
        return cls(tuple(prints), _unit_rows(small[centre].reshape(len(prints), -1)),
                   _unit_rows(high[centre].reshape(len(prints), -1)))


def _gate(query: np.ndarray, candidates: Candidates) -> tuple[np.ndarray, np.ndarray]:
    """The quick search for every candidate at once: each candidate's template against
    the query (24x24 copy) rescaled over the scale grid, on the plain images and on their
    high-pass versions (panoramics look alike in the plain ones). The query at every scale
    is one mosaic and its windows one matrix, so each version is one matrix product for
    all scales and candidates. Returns, per candidate, the lower of the two best NCCs and
    the (sy, sx) of the plain one."""
    half, margin = THUMB_PX // 2, MARGIN_PX // 2
    inner = half - 2 * margin
    sizes = tuple(max(inner, round(half * scale)) for scale in _SCALES)
    plain_mosaic, high_mosaic = _mosaic(query, sizes, sizes, 1.5)
    grid = _window_grid(sizes, sizes, inner)

    def correlations(mosaic: np.ndarray, templates: np.ndarray) -> np.ndarray:
        return _ncc(grid.windows(mosaic), grid.norms(mosaic), templates)

    # Best NCC per scale (rows) and candidate (columns); the first scale reaching the best wins.
    plain = np.maximum.reduceat(correlations(plain_mosaic, candidates.plain), grid.starts, axis=0)
    best_high = correlations(high_mosaic, candidates.high).max(axis=0)
    chosen = plain.argmax(axis=0)
    best_plain = plain[chosen, np.arange(len(candidates.prints))]
    return np.minimum(best_plain, best_high), _SCALE_GRID[chosen]


def similarities(query: Fingerprint, candidates: Candidates | Sequence[Fingerprint], kind: str) -> np.ndarray:
    """How surely each candidate (radiographs of ``kind``, as the query) is the same
    radiograph as ``query``: about 1.0 identical; at least ``thresholds_for(kind).match``
    the same image altered; lower, different images. The quick search runs for all
    candidates together; only those that pass the kind's gate (in practice, the same image
    or one very like it) get the full-resolution, high-pass comparison. Candidates
    prepared with ``Candidates.of`` serve every query of a claim."""
    if not isinstance(candidates, Candidates):
        candidates = Candidates.of(candidates)
    if not candidates.prints:
        return np.zeros(0)
    gate_at = thresholds_for(kind).gate
    gate, where = _gate(_small(query.thumb), candidates)
    # Only the best few past the gate are compared in full (an image recycled is the best
    # by far); the others keep a score below the gate, i.e. "no match".
    scores = np.minimum(gate, gate_at - 1e-3)
    big_query = query.thumb.astype(np.float32)
    passed = np.flatnonzero(gate >= gate_at)
    for i in passed[np.argsort(-gate[passed])][:FULL_COMPARISONS]:
        sy, sx = where[i]  # the quick search's scale, at half size: whole pixels at full size
        scores[i] = _best_alignment(candidates.prints[i].thumb.astype(np.float32), big_query,
                                    round(THUMB_PX * sy), round(THUMB_PX * sx))
    return scores


def similarity(a: Fingerprint, b: Fingerprint, kind: str) -> float:
    return float(similarities(a, [b], kind)[0])
