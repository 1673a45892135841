"""Training data: samples from the synthetic generator or from COCO/DENTEX/YOLO datasets
on disk, split by image, prepared once at the network's input size and augmented with
MONAI's box-aware transforms on every step."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import Compose, RandAffined, RandFlipd, RandGaussianNoised, RandScaleIntensityd

from datasets.samples import Sample, disk_samples, synthetic_samples
from datasets.synth.config import SynthConfig
from datasets.transforms import (
    NEGATIVE_FOCUS_KEY,
    TOOTH_FOCUS_KEY,
    Target,
    augmentation_steps,
    target_arrays,
    to_monai_boxes,
)
from models.config_loading import load_config
from models.findings import FindingClass
from models.preprocess import crop_tooth, resize_unit_image, resized_shape
from models.radiographs import RadiographKind
from models.tasks import FINDING_CLASSES
from models.teeth import Tooth
from training.config import AugmentConfig, DataConfig, DiskSource, SyntheticSource, TrainConfig
from training.hard_negatives import HardNegativesError


@dataclass
class DataReport:
    """What went into training, for the log: nothing is dropped silently."""

    images: Counter[str] = field(default_factory=Counter)  # per kind
    teeth: int = 0
    findings: Counter[str] = field(default_factory=Counter)
    unmapped_categories: Counter[str] = field(default_factory=Counter)
    caries_without_depth: int = 0
    primary_teeth: int = 0
    hard_negatives: dict[str, int] = field(default_factory=dict)  # training images with some, and boxes
    verifier_examples: dict[str, dict[str, int]] = field(default_factory=dict)  # finding verifier: per split

    def add(self, sample: Sample) -> None:
        self.images[sample.kind.value] += 1
        self.teeth += len(sample.annotations.teeth)
        self.primary_teeth += sum(1 for t in sample.annotations.teeth if Tooth.fdi_of(t.fdi).dentition.value == "primary")
        for f in sample.annotations.findings:
            self.findings[f.finding_class.value] += 1
            if f.finding_class is FindingClass.CARIES and f.caries_depth is None:
                self.caries_without_depth += 1

    def as_dict(self) -> dict[str, Any]:
        return {"images": dict(self.images), "teeth": self.teeth, "primary_teeth": self.primary_teeth,
                "findings": dict(self.findings), "unmapped_categories": dict(self.unmapped_categories),
                "caries_without_depth": self.caries_without_depth,
                **({"hard_negatives": dict(self.hard_negatives)} if self.hard_negatives else {}),
                **({"verifier_examples": dict(self.verifier_examples)} if self.verifier_examples else {})}


def _source_samples(source: SyntheticSource | DiskSource, report: DataReport, workers: int) -> list[Sample]:
    if isinstance(source, SyntheticSource):
        synth = load_config(SynthConfig, source.synth_config) if source.synth_config else SynthConfig()
        return synthetic_samples(source.counts, source.seed, synth, workers=workers)
    samples, dataset = disk_samples(source.path, source.format, images_root=source.images_root, kind=source.kind,
                                    category_map=source.category_map)
    report.unmapped_categories.update(dataset.unmapped)
    return samples


def load_samples(config: DataConfig, report: DataReport, workers: int = 0) -> list[Sample]:
    samples: list[Sample] = []
    for source in config.sources:
        samples += _source_samples(source, report, workers)
    for sample in samples:
        report.add(sample)
    return samples


def split_samples(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split by image (never by box), the same way for the same seed and image ids."""
    ordered = sorted(samples, key=lambda s: s.image_id)
    order = np.random.default_rng(seed).permutation(len(ordered))
    n_val = round(len(ordered) * val_fraction)
    if val_fraction > 0 and len(ordered) > 1:
        n_val = min(max(n_val, 1), len(ordered) - 1)
    val = [ordered[i] for i in sorted(order[:n_val])]
    train = [ordered[i] for i in sorted(order[n_val:])]
    return train, val


# ---- detector items -------------------------------------------------------------------

def detection_item(sample: Sample, target: Target, long_side_px: int | None, config: TrainConfig) -> dict[str, Any]:
    """The sample at the network's input size: image (1, H, W), boxes in MONAI order."""
    image = sample.load()
    h, w = image.shape
    rh, rw = resized_shape(h, w, long_side_px)
    resized = resize_unit_image(image, (rh, rw))
    sy, sx = rh / h, rw / w
    arrays = target_arrays(sample.annotations, target, config.data.caries_without_depth)
    scale = np.array([sx, sy, sx, sy], np.float32)
    xyxy = arrays.pop("boxes_xyxy") * scale
    item = {"image": torch.from_numpy(resized[None].copy()), "image_id": sample.image_id, "kind": sample.kind.value,
            "boxes": to_monai_boxes(xyxy), **arrays, "scale_yx": (sy, sx)}
    if target is Target.FINDINGS and config.augment.patch_tooth_focus_prob:
        teeth = np.asarray([t.box_xyxy_px for t in sample.annotations.teeth], np.float32).reshape(-1, 4) * scale
        item[TOOTH_FOCUS_KEY] = to_monai_boxes(teeth)
    return item


def attach_hard_negatives(items: list[dict[str, Any]], negatives: dict[str, np.ndarray], report: DataReport) -> None:
    """Give every training item its mined hard negatives (``NEGATIVE_FOCUS_KEY``, at the
    item's scale; none for images the file does not name). A file that names none of the
    training images was mined on other data: refused."""
    boxes = images = 0
    for item in items:
        sy, sx = item["scale_yx"]
        found = negatives.get(item["image_id"], np.zeros((0, 4), np.float32))
        item[NEGATIVE_FOCUS_KEY] = to_monai_boxes(found * np.asarray([sx, sy, sx, sy], np.float32))
        boxes, images = boxes + len(found), images + bool(len(found))
    if negatives and not images:
        raise HardNegativesError("the hard negatives file names none of the training images: mine it on the recipe's "
                                 "own data (same synthetic seed and counts, or the same dataset)")
    report.hard_negatives = {"images": images, "boxes": boxes}


def detection_train_dataset(items: list[dict[str, Any]], target: Target, augment: AugmentConfig, seed: int) -> Dataset:
    """The training items, augmented on every step; with patches, each image appears
    ``patches_per_image`` times (the same tensor, a new patch each time)."""
    transform = Compose(augmentation_steps(target, flip_prob=augment.flip_prob, zoom=augment.zoom,
                                           intensity=augment.intensity, patch_px=augment.patch_px,
                                           patch_focus_prob=augment.patch_focus_prob,
                                           patch_label_weights=patch_label_weights(target, augment),
                                           patch_tooth_focus_prob=augment.patch_tooth_focus_prob,
                                           patch_negative_focus_prob=augment.patch_hard_negative_prob))
    transform.set_random_state(seed=seed)
    if augment.patch_px is not None:
        items = [item for item in items for _ in range(augment.patches_per_image.get(RadiographKind(item["kind"]), 1))]
    return Dataset(items, transform=transform)


def patch_label_weights(target: Target, augment: AugmentConfig) -> np.ndarray | None:
    """The focus weight of each finding-detector class index (caries depths share the
    weight of caries); None when the recipe sets none."""
    if not augment.patch_focus_weights:
        return None
    if target is not Target.FINDINGS:
        raise ValueError("augment.patch_focus_weights applies to the finding detector only")
    weights = augment.patch_focus_weights
    return np.asarray([weights.get(label.finding, 1.0) if label.finding else 1.0 for label in FINDING_CLASSES], np.float64)


def train_item_shapes(items: list[dict[str, Any]], augment: AugmentConfig) -> list[tuple[int, ...]]:
    """The input shape of each training item after augmentation, for shape bucketing."""
    if augment.patch_px is not None:
        return [(1, augment.patch_px, augment.patch_px)] * len(items)
    return [tuple(i["image"].shape) for i in items]


# ---- root-count crops -----------------------------------------------------------------

def root_count_crops(samples: Iterable[Sample], crop_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Crops of teeth whose roots are fully in the image and whose count is known:
    (N, 1, h, w) crops, (N,) class index (0: 1 root, 1: 2 roots, 2: 3+), image ids."""
    crops, labels, ids = [], [], []
    for sample in samples:
        teeth = [t for t in sample.annotations.teeth
                 if t.root_count is not None and t.roots_visible is not False and not t.truncated]
        if not teeth:
            continue
        image = sample.load()
        for t in teeth:
            maxillary = Tooth.fdi_of(t.fdi).arch.value == "maxillary"
            crops.append(crop_tooth(image, t.box_xyxy_px, maxillary, crop_hw))
            labels.append(int(t.root_count or 1) - 1)
            ids.append(sample.image_id)
    if not crops:
        return np.zeros((0, 1, *crop_hw), np.float32), np.zeros(0, np.int64), ids
    return np.stack(crops)[:, None], np.asarray(labels, np.int64), ids


def crop_train_transform(seed: int) -> Compose:
    """Crops come from predicted boxes at serving time, so training jitters them a little."""
    transform = Compose([
        RandAffined(keys="image", prob=0.7, rotate_range=0.08, scale_range=(0.08, 0.08), translate_range=(6, 3),
                    padding_mode="border"),
        RandFlipd(keys="image", prob=0.5, spatial_axis=1),  # a mirrored tooth has as many roots
        RandScaleIntensityd(keys="image", factors=0.15, prob=0.5),
        RandGaussianNoised(keys="image", std=0.01, prob=0.3),
    ])
    transform.set_random_state(seed=seed)
    return transform



class ShapeBucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of images with the same input shape (kind and orientation), so no image is
    padded to a panoramic's size; order shuffled per epoch with ``seed``."""

    def __init__(self, shapes: list[tuple[int, ...]], batch_size: int, seed: int) -> None:
        self.shapes, self.batch_size, self.seed = shapes, batch_size, seed

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng(self.seed)
        buckets: dict[tuple[int, ...], list[int]] = {}
        for index, shape in enumerate(self.shapes):
            buckets.setdefault(tuple(shape), []).append(index)
        batches = []
        for key in sorted(buckets):
            members = [buckets[key][i] for i in rng.permutation(len(buckets[key]))]
            batches += [members[i:i + self.batch_size] for i in range(0, len(members), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
