"""MONAI dataset items and box-aware transforms for detection training.

An item is a dict:
- ``image``: float32 tensor (1, H, W), 1 = radiopaque;
- ``boxes``: float32 (N, 4) in MONAI's order for a (C, H, W) array, i.e. (y0, x0, y1, x1)
  (``to_monai_boxes`` / ``from_monai_boxes`` convert from and to our xyxy);
- ``fdi``: int64 (N,), the tooth number of each box (0 when a finding has none);
- ``labels``: int64 (N,), the class index of the detector's target (tooth or finding);
- ``caries_depth``: int64 (N,), 0 none, 1 enamel, 2 dentin, 3 near pulp;
- ``root_count``: int64 (N,), 0 unknown, else 1, 2 or 3 (3+).

A horizontal flip mirrors the patient's sides, so ``RandFlipFdid`` remaps every FDI
number (quadrants 1<->2, 3<->4) and the tooth labels are derived from the numbers after
augmentation (``FdiToLabeld``), never before.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.apps.detection.transforms.box_ops import flip_boxes
from monai.apps.detection.transforms.dictionary import ClipBoxToImaged, RandZoomBoxd
from monai.data import Dataset
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandomizableTransform,
    RandScaleIntensityd,
)

from datasets.annotations import AnnotatedDataset, ImageAnnotations
from datasets.readers import read_radiograph
from models.findings import CariesDepth, FindingClass, Label
from models.tasks import FINDING_CLASSES
from models.teeth import ALL_FDI, flip_fdi_horizontal

TOOTH_LABELS: tuple[int, ...] = ALL_FDI  # label index -> FDI number
_DEPTH_INDEX = {None: 0, CariesDepth.ENAMEL: 1, CariesDepth.DENTIN: 2, CariesDepth.NEAR_PULP: 3}


def finding_label_index(finding_class: FindingClass, depth: CariesDepth | None,
                        caries_without_depth: CariesDepth = CariesDepth.DENTIN) -> int:
    """Index in the finding detector's classes; caries annotated without a depth (common in
    public datasets) is trained as ``caries_without_depth``, a choice the training config
    states and the run logs."""
    if finding_class is FindingClass.CARIES:
        return FINDING_CLASSES.index(Label(finding=finding_class, caries_depth=depth or caries_without_depth))
    return FINDING_CLASSES.index(Label(finding=finding_class))


class Target(StrEnum):
    TEETH = "teeth"
    FINDINGS = "findings"


def to_monai_boxes(boxes_xyxy: np.ndarray) -> np.ndarray:
    return np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)[:, [1, 0, 3, 2]]


def from_monai_boxes(boxes: np.ndarray | torch.Tensor) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[:, [1, 0, 3, 2]]


def target_arrays(image: ImageAnnotations, target: Target,
                  caries_without_depth: CariesDepth = CariesDepth.DENTIN) -> dict[str, np.ndarray]:
    """The boxes (xyxy, original pixels) of one image for the chosen target, with their
    box-aligned fields."""
    if target is Target.TEETH:
        boxes = [t.box_xyxy_px for t in image.teeth]
        fdi = [t.fdi for t in image.teeth]
        labels = [TOOTH_LABELS.index(t.fdi) for t in image.teeth]
        depth = [0] * len(boxes)
        roots = [t.root_count or 0 for t in image.teeth]
    else:
        boxes = [f.box_xyxy_px for f in image.findings]
        fdi = [f.fdi or 0 for f in image.findings]
        labels = [finding_label_index(f.finding_class, f.caries_depth, caries_without_depth) for f in image.findings]
        depth = [_DEPTH_INDEX[f.caries_depth] for f in image.findings]
        roots = [0] * len(boxes)
    return {
        "boxes_xyxy": np.asarray(boxes, np.float32).reshape(-1, 4),
        "fdi": np.asarray(fdi, np.int64),
        "labels": np.asarray(labels, np.int64),
        "caries_depth": np.asarray(depth, np.int64),
        "root_count": np.asarray(roots, np.int64),
    }


def detection_items(dataset: AnnotatedDataset, root: str | Path, target: Target,
                    caries_without_depth: CariesDepth = CariesDepth.DENTIN) -> list[dict[str, Any]]:
    """One item per image, with the boxes of the chosen target; the image is loaded later."""
    base = Path(root)
    items = []
    for image in dataset.images:
        arrays = target_arrays(image, target, caries_without_depth)
        boxes = to_monai_boxes(arrays.pop("boxes_xyxy"))
        items.append({"image_path": str(base / image.file_name), "image_id": image.image_id, "boxes": boxes, **arrays})
    return items


class LoadRadiographd(MapTransform):
    """Read ``image_path`` with the project's reader (DICOM, PNG, JPEG, TIFF)."""

    def __init__(self, path_key: str = "image_path", image_key: str = "image") -> None:
        super().__init__(keys=[path_key])
        self.path_key, self.image_key = path_key, image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        radiograph = read_radiograph(d[self.path_key])
        d[self.image_key] = torch.from_numpy(radiograph.pixels_unit[None].copy())
        return d


class RandFlipFdid(RandomizableTransform, MapTransform):
    """Left-right flip of image and boxes that also moves every FDI number to the
    patient's other side."""

    def __init__(self, prob: float = 0.5, image_key: str = "image", box_key: str = "boxes",
                 fdi_keys: Sequence[str] = ("fdi",)) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys=[image_key])
        self.image_key, self.box_key, self.fdi_keys = image_key, box_key, tuple(fdi_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        image = d[self.image_key]
        spatial = tuple(int(s) for s in image.shape[1:])
        d[self.image_key] = torch.flip(torch.as_tensor(image), dims=[-1])
        boxes = torch.as_tensor(np.asarray(d[self.box_key], np.float32)).reshape(-1, 4)
        d[self.box_key] = flip_boxes(boxes, spatial_size=spatial, flip_axes=1).numpy()
        for key in self.fdi_keys:
            d[key] = np.asarray([flip_fdi_horizontal(int(f)) if f else 0 for f in np.asarray(d[key])], np.int64)
        return d


TOOTH_FOCUS_KEY = "tooth_boxes"  # finding-detector items: the teeth's boxes, for tooth-focused patches
NEGATIVE_FOCUS_KEY = "negative_boxes"  # finding-detector items: mined hard negatives (training.hard_negatives)


class RandBoxPatchd(RandomizableTransform, MapTransform):
    """A square patch of ``size_px`` cut from the image (zero-padded where the image is
    smaller). With probability ``focus_prob`` the patch is placed so that one box, chosen
    at random, lies inside it; otherwise anywhere. Training on such patches shows small
    findings (a few pixels of caries on a panoramic) far more often per step than whole
    images do, at a fraction of the cost. Boxes are shifted into the patch's frame;
    ``ClipBoxToImaged`` afterwards clips those cut by its edge and drops those outside.
    ``label_weights`` (one weight per class index) makes the focused box a weighted draw,
    so hard classes (caries) are centred more often than easy ones (crowns). With
    probability ``tooth_focus_prob`` the patch is instead placed around one of the boxes
    under ``tooth_key`` (the teeth, for the finding detector: healthy crown margins as
    negatives), and with probability ``negative_focus_prob`` around one of the boxes under
    ``negative_key`` (hard negatives: where an earlier model reported a finding that is not
    there). A set an image has no boxes in gives its share to unfocused patches."""

    def __init__(self, size_px: int, focus_prob: float = 0.7, image_key: str = "image", box_key: str = "boxes",
                 label_key: str = "labels", label_weights: np.ndarray | None = None,
                 tooth_focus_prob: float = 0.0, tooth_key: str = TOOTH_FOCUS_KEY,
                 negative_focus_prob: float = 0.0, negative_key: str = NEGATIVE_FOCUS_KEY) -> None:
        RandomizableTransform.__init__(self, 1.0)
        MapTransform.__init__(self, keys=[image_key])
        self.size_px, self.focus_prob = int(size_px), float(focus_prob)
        # Other box sets a patch may be centred on, in the order their shares are drawn.
        self.other_focus = tuple((key, float(p)) for key, p in ((tooth_key, tooth_focus_prob),
                                                                (negative_key, negative_focus_prob)) if p > 0)
        self.frame_keys = (tooth_key, negative_key)
        self.image_key, self.box_key, self.label_key = image_key, box_key, label_key
        self.label_weights = None if label_weights is None else np.asarray(label_weights, np.float64)

    def _focus_box(self, boxes: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        if self.label_weights is None or labels is None:
            return boxes[self.R.randint(len(boxes))]
        weights = self.label_weights[np.asarray(labels, np.int64)]
        return boxes[self.R.choice(len(boxes), p=weights / weights.sum())]

    def _origin(self, extent: int, lo: float, hi: float | None) -> int:
        """Patch start along one axis: anywhere, or so that [lo, hi] lies inside."""
        room = max(extent - self.size_px, 0)
        if hi is None:
            return int(self.R.randint(0, room + 1))
        first, last = max(0.0, hi - self.size_px), min(float(room), lo)
        return round(self.R.uniform(min(first, last), max(first, last)))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = torch.as_tensor(d[self.image_key])
        h, w = int(image.shape[-2]), int(image.shape[-1])
        boxes = np.asarray(d[self.box_key], np.float32).reshape(-1, 4)  # MONAI order: y0, x0, y1, x1
        others = [(np.asarray(d.get(key, ()), np.float32).reshape(-1, 4), p) for key, p in self.other_focus]
        others = [(b, p) for b, p in others if len(b)]
        # One draw decides the placement; with no other focus it is drawn only where there
        # are boxes, as before tooth focus existed (same patches for the same seed).
        draw = self.R.random_sample() if len(boxes) or others else 1.0
        focus = None
        if len(boxes) and draw < self.focus_prob:
            focus = self._focus_box(boxes, d.get(self.label_key))
        else:
            start = self.focus_prob if len(boxes) else 0.0
            for candidates, share in others:
                if start <= draw < start + share:
                    focus = candidates[self.R.randint(len(candidates))]
                    break
                start += share
        if focus is None:
            top, left = self._origin(h, 0.0, None), self._origin(w, 0.0, None)
        else:
            y0, x0, y1, x1 = focus
            top, left = self._origin(h, float(y0), float(y1)), self._origin(w, float(x0), float(x1))
        s = self.size_px
        patch = torch.zeros((*image.shape[:-2], s, s), dtype=image.dtype)
        part = image[..., top:top + s, left:left + s]
        patch[..., :part.shape[-2], :part.shape[-1]] = part
        d[self.image_key] = patch
        d[self.box_key] = boxes - np.asarray([top, left, top, left], np.float32)
        for key in self.frame_keys:  # in the whole image's frame: of no use after the cut
            d.pop(key, None)
        return d


class FdiToLabeld(MapTransform):
    """Tooth-detector labels from the (possibly remapped) FDI numbers."""

    def __init__(self, fdi_key: str = "fdi", label_key: str = "labels") -> None:
        super().__init__(keys=[fdi_key])
        self.fdi_key, self.label_key = fdi_key, label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[self.label_key] = np.asarray([TOOTH_LABELS.index(int(f)) for f in np.asarray(d[self.fdi_key])], np.int64)
        return d


_BOX_ALIGNED = ["labels", "fdi", "caries_depth", "root_count"]


def augmentation_steps(target: Target, *, flip_prob: float = 0.5, zoom: tuple[float, float] = (0.85, 1.15),
                       intensity: bool = True, patch_px: int | None = None, patch_focus_prob: float = 0.7,
                       patch_label_weights: np.ndarray | None = None, patch_tooth_focus_prob: float = 0.0,
                       patch_negative_focus_prob: float = 0.0) -> list[Any]:
    """A patch (when ``patch_px`` is set), flip with FDI remapping, zoom, clip boxes to the
    image and vary intensity like exposure, contrast, blur and noise vary between sensors;
    tooth labels last."""
    steps: list[Any] = []
    if patch_px is not None:
        steps.append(RandBoxPatchd(patch_px, patch_focus_prob, label_weights=patch_label_weights,
                                   tooth_focus_prob=patch_tooth_focus_prob,
                                   negative_focus_prob=patch_negative_focus_prob))
    steps.append(RandFlipFdid(prob=flip_prob))
    steps.append(RandZoomBoxd(image_keys="image", box_keys="boxes", box_ref_image_keys="image", prob=0.5,
                              min_zoom=zoom[0], max_zoom=zoom[1], keep_size=True, padding_mode="constant"))
    steps.append(ClipBoxToImaged(box_keys="boxes", label_keys=_BOX_ALIGNED, box_ref_image_keys="image",
                                 remove_empty=True))
    if intensity:
        steps += [
            RandScaleIntensityd(keys="image", factors=0.15, prob=0.5),
            RandAdjustContrastd(keys="image", gamma=(0.8, 1.25), prob=0.5),
            RandGaussianSmoothd(keys="image", sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0), prob=0.3),
            RandGaussianNoised(keys="image", std=0.01, prob=0.3),
        ]
    if target is Target.TEETH:
        steps.append(FdiToLabeld())
    return steps


def detection_transforms(target: Target, train: bool, *, flip_prob: float = 0.5, zoom: tuple[float, float] = (0.85, 1.15),
                         intensity: bool = True) -> Compose:
    """Load, then (when training) augment."""
    steps: list[Any] = [LoadRadiographd()]
    if train:
        steps += augmentation_steps(target, flip_prob=flip_prob, zoom=zoom, intensity=intensity)
    elif target is Target.TEETH:
        steps.append(FdiToLabeld())
    return Compose(steps)


def detection_dataset(dataset: AnnotatedDataset, root: str | Path, target: Target, train: bool,
                      seed: int = 0) -> Dataset:
    transform = detection_transforms(target, train)
    transform.set_random_state(seed=seed)
    return Dataset(detection_items(dataset, root, target), transform=transform)
