"""Resize and pad a radiograph for a network, and map boxes between the original image
and the network input. Shared by training, evaluation and serving, so all three see the
same pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.architecture import SIZE_DIVISIBLE, CropContext
from models.radiographs import RadiographKind


@dataclass(frozen=True)
class InputGeometry:
    """How an original image became the network input: scaled by ``scale_yx``, then padded
    at the bottom and right to ``padded_hw``. When only a region of the image was read,
    ``original_hw`` is the region's size and ``offset_xy`` its top-left corner in the image."""

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    padded_hw: tuple[int, int]
    offset_xy: tuple[int, int] = (0, 0)

    @property
    def scale_yx(self) -> tuple[float, float]:
        return (self.resized_hw[0] / self.original_hw[0], self.resized_hw[1] / self.original_hw[1])

    def to_input(self, boxes_xyxy_px: np.ndarray) -> np.ndarray:
        sy, sx = self.scale_yx
        ox, oy = self.offset_xy
        boxes = np.asarray(boxes_xyxy_px, np.float32).reshape(-1, 4) - np.array([ox, oy, ox, oy], np.float32)
        return boxes * np.array([sx, sy, sx, sy], np.float32)

    def to_original(self, boxes_xyxy_input: np.ndarray) -> np.ndarray:
        sy, sx = self.scale_yx
        boxes = np.asarray(boxes_xyxy_input, np.float32).reshape(-1, 4) / np.array([sx, sy, sx, sy], np.float32)
        h, w = self.original_hw
        ox, oy = self.offset_xy
        return np.clip(boxes, 0, np.array([w, h, w, h], np.float32)) + np.array([ox, oy, ox, oy], np.float32)


def resized_shape(height: int, width: int, long_side_px: int | None) -> tuple[int, int]:
    if long_side_px is None:
        return height, width
    scale = long_side_px / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_unit_image(image: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 [0, 1] image (box filter when shrinking a lot, so thin
    structures are averaged rather than aliased)."""
    image = np.asarray(image, np.float32)
    if tuple(image.shape) == tuple(shape_hw):
        return image
    pil = Image.fromarray(image, mode="F")
    resample = Image.Resampling.BOX if shape_hw[0] < image.shape[0] / 2 else Image.Resampling.BILINEAR
    return np.asarray(pil.resize((shape_hw[1], shape_hw[0]), resample=resample), np.float32)


def pad_to_divisible(image: np.ndarray, divisor: int = SIZE_DIVISIBLE) -> np.ndarray:
    h, w = image.shape
    ph, pw = -h % divisor, -w % divisor
    if ph == 0 and pw == 0:
        return image
    return np.pad(image, ((0, ph), (0, pw)), mode="constant")


def prepare_image(image_unit: np.ndarray, long_side_px: int | None) -> tuple[np.ndarray, InputGeometry]:
    """Original (H, W) float image in [0, 1] -> network input (1, 1, H', W') and its geometry."""
    h, w = image_unit.shape
    return prepare_region(image_unit, (0, 0, w, h), long_side_px)


def prepare_region(image_unit: np.ndarray, region_xyxy_px: tuple[int, int, int, int],
                   long_side_px: int | None) -> tuple[np.ndarray, InputGeometry]:
    """Only ``region_xyxy_px`` of the image -> network input, at the scale the whole image
    would have been read at (``long_side_px`` is the whole image's), and its geometry."""
    h, w = image_unit.shape
    x0, y0, x1, y1 = region_xyxy_px
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f"region {region_xyxy_px} is not inside the {w}x{h} image")
    rh, rw = resized_shape(h, w, long_side_px)
    shape = (max(1, round((y1 - y0) * rh / h)), max(1, round((x1 - x0) * rw / w)))
    resized = resize_unit_image(np.ascontiguousarray(image_unit[y0:y1, x0:x1]), shape)
    padded = pad_to_divisible(resized)
    geometry = InputGeometry(original_hw=(y1 - y0, x1 - x0), resized_hw=resized.shape, padded_hw=padded.shape,
                             offset_xy=(x0, y0))
    return padded[None, None].astype(np.float32), geometry


def teeth_region(teeth_xyxy_px: np.ndarray, image_hw: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """The smallest box holding every tooth box, grown on each side by ``margin`` times the
    image's width (left, right) and height (top, bottom), in whole pixels inside the image."""
    boxes = np.asarray(teeth_xyxy_px, np.float64).reshape(-1, 4)
    if not len(boxes):
        raise ValueError("no teeth to take a region from")
    h, w = image_hw
    x0, y0 = boxes[:, 0].min() - margin * w, boxes[:, 1].min() - margin * h
    x1, y1 = boxes[:, 2].max() + margin * w, boxes[:, 3].max() + margin * h
    left, top = min(w - 1, max(0, int(np.floor(x0)))), min(h - 1, max(0, int(np.floor(y0))))
    right, bottom = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def guess_kind(height: int, width: int) -> RadiographKind:
    """For images that arrive without a kind: panoramics are much wider than tall."""
    return RadiographKind.PANORAMIC if width / max(height, 1) >= 1.6 else RadiographKind.PERIAPICAL


def crop_tooth(image_unit: np.ndarray, box_xyxy_px: tuple[float, float, float, float], maxillary: bool,
               crop_hw: tuple[int, int], margin: float = 0.08) -> np.ndarray:
    """A tooth crop for the root-count classifier: the box grown by ``margin`` on each side,
    turned crown up (maxillary teeth have their roots up, so they are flipped), resized."""
    h, w = image_unit.shape
    x0, y0, x1, y1 = box_xyxy_px
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    left, top = max(0, int(np.floor(x0 - mx))), max(0, int(np.floor(y0 - my)))
    right, bottom = min(w, int(np.ceil(x1 + mx))), min(h, int(np.ceil(y1 + my)))
    if right - left < 2 or bottom - top < 2:
        return np.zeros(crop_hw, np.float32)
    crop = np.asarray(image_unit[top:bottom, left:right], np.float32)
    if maxillary:
        crop = crop[::-1]
    return resize_unit_image(np.ascontiguousarray(crop), crop_hw)


def finding_crops(image_unit: np.ndarray, boxes_xyxy_px: np.ndarray, contexts: tuple[CropContext, ...],
                  crop_px: int) -> np.ndarray:
    """A finding verifier's input for each box: (N, len(contexts), crop_px, crop_px). Per
    context, a square centred on the box, ``box_multiple`` times its long side (at least
    ``min_side_px``), cut at whole pixels (zeros beyond the image's edge), resized, then
    brought to zero mean and unit spread: contrast and exposure differ between sensors
    and kinds, a finding's shape and its contrast with its surroundings do not."""
    boxes = np.asarray(boxes_xyxy_px, np.float32).reshape(-1, 4)
    out = np.zeros((len(boxes), len(contexts), crop_px, crop_px), np.float32)
    h, w = image_unit.shape
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        cx, cy, long_side = float(x0 + x1) / 2, float(y0 + y1) / 2, float(max(x1 - x0, y1 - y0))
        for c, context in enumerate(contexts):
            side = max(round(max(context.box_multiple * long_side, context.min_side_px)), 2)
            left, top = round(cx - side / 2), round(cy - side / 2)
            window = np.zeros((side, side), np.float32)
            xs, ys, xe, ye = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
            if xe > xs and ye > ys:
                window[ys - top:ye - top, xs - left:xe - left] = image_unit[ys:ye, xs:xe]
            crop = resize_unit_image(window, (crop_px, crop_px))
            out[i, c] = (crop - crop.mean()) / (crop.std() + 1e-3)
    return out
