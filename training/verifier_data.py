"""Training examples of the finding verifier: the finding detector's own candidates on the
training images, true or false by their overlap with the true boxes, plus jittered
copies of the true boxes; each as the crops the verifier reads when serving."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import Compose, RandAxisFlipd, RandScaleIntensityd, RandShiftIntensityd, RandSpatialCropd, SpatialPadd

from datasets.samples import Sample
from models.architecture import VerifierArchitecture
from models.detections import BoxXYXY
from models.findings import FindingClass
from models.inference import DentalReader
from models.model_card import ModelKey
from models.postprocess import box_iou
from models.preprocess import finding_crops
from models.radiographs import RadiographKind
from training.config import VerificationConfig

SHIFT_PX = 2  # training crops are moved by up to this many pixels: a served box is never exactly placed


class VerifierDataError(ValueError):
    pass


@dataclass(frozen=True)
class Candidate:
    """One candidate of the finding detector (or, with ``score`` None, a jittered true box)."""

    image_id: str
    kind: RadiographKind
    finding_class: FindingClass
    box_xyxy_px: BoxXYXY
    score: float | None  # the detector's; None for a jittered copy of a true box
    true: bool  # overlaps a true box of its class at the recipe's IoU


@dataclass(frozen=True)
class VerifierExamples:
    candidates: tuple[Candidate, ...]
    crops: np.ndarray  # (N, channels, crop, crop) float16: what the verifier reads, per candidate

    @property
    def labels(self) -> np.ndarray:
        return np.array([c.true for c in self.candidates], np.float32)

    def counts(self) -> dict[str, int]:
        detected = [c for c in self.candidates if c.score is not None]
        return {"candidates": len(detected), "true_candidates": sum(c.true for c in detected),
                "true_box_copies": len(self.candidates) - len(detected)}


def candidate_reader(config: VerificationConfig) -> DentalReader:
    """The models of ``candidates_from`` as served, but no verifier there: the candidates
    and their scores are the finding detector's own."""
    reader = DentalReader.from_directory(config.candidates_from, without=(ModelKey.FINDING_VERIFIER,))
    if reader.findings is None:
        raise VerifierDataError(f"verification.candidates_from {config.candidates_from} holds no finding detector")
    return reader


def _jittered(box: BoxXYXY, rng: np.random.Generator, jitter: float) -> BoxXYXY:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    dx, dy = rng.normal(0.0, jitter, 2) * (w, h)
    sw, sh = np.exp(rng.normal(0.0, jitter, 2))
    cx, cy = (x0 + x1) / 2 + dx, (y0 + y1) / 2 + dy
    return (float(cx - w * sw / 2), float(cy - h * sh / 2), float(cx + w * sw / 2), float(cy + h * sh / 2))


def mine_examples(reader: DentalReader, samples: Sequence[Sample], arch: VerifierArchitecture,
                  config: VerificationConfig, seed: int, true_box_copies: int | None = None,
                  on_progress: Callable[[int], None] | None = None) -> VerifierExamples:
    """Every sample read by ``reader`` (all candidates, no operating threshold); the
    candidates of the verified classes at or above ``candidate_min_score`` with their
    crops, and ``true_box_copies`` (default: the recipe's) jittered copies of each true
    box. Depends only on the samples, the models and ``seed``."""
    rng = np.random.default_rng(seed)
    copies = config.true_box_copies if true_box_copies is None else true_box_copies
    classes = set(config.classes)
    candidates: list[Candidate] = []
    crops: list[np.ndarray] = []
    for done, sample in enumerate(samples, start=1):
        image = sample.load()
        reading = reader.read(sample.image_id, image, sample.kind, operating_point=False)
        found = [f for f in reading.findings if f.finding_class in classes and f.score >= config.candidate_min_score]
        boxes: list[BoxXYXY] = []
        for cls in config.classes:
            truth = np.array([f.box_xyxy_px for f in sample.annotations.findings if f.finding_class is cls],
                             np.float32).reshape(-1, 4)
            mine = [f for f in found if f.finding_class is cls]
            overlap = box_iou(np.array([f.box_xyxy_px for f in mine], np.float32).reshape(-1, 4), truth)
            for f, row in zip(mine, overlap, strict=True):
                true = bool(row.size and row.max() >= config.match_iou)
                candidates.append(Candidate(sample.image_id, sample.kind, cls, f.box_xyxy_px, f.score, true))
                boxes.append(f.box_xyxy_px)
            for box in truth:
                for _ in range(copies):
                    moved = _jittered(tuple(float(v) for v in box), rng, config.jitter)  # type: ignore[arg-type]
                    if box_iou(np.array([moved], np.float32), box[None])[0, 0] >= config.match_iou:
                        candidates.append(Candidate(sample.image_id, sample.kind, cls, moved, None, True))
                        boxes.append(moved)
        if boxes:
            crops.append(finding_crops(image, np.array(boxes, np.float32), arch.contexts, arch.crop_px).astype(np.float16))
        if on_progress:
            on_progress(done)
    stacked = np.concatenate(crops) if crops else np.zeros((0, arch.channels, arch.crop_px, arch.crop_px), np.float16)
    return VerifierExamples(tuple(candidates), stacked)


def verifier_train_transform(crop_px: int, seed: int) -> Compose:
    """Flips both ways (a caries looks alike mirrored, and upper teeth are lower ones upside
    down), a shift of up to ``SHIFT_PX`` (padded, then cropped back), and the contrast and
    level changes of other exposures (the crops are normalised, so these act on that)."""
    transform = Compose([
        RandAxisFlipd(keys="image", prob=0.5),
        RandAxisFlipd(keys="image", prob=0.5),
        SpatialPadd(keys="image", spatial_size=(crop_px + 2 * SHIFT_PX,) * 2, mode="constant"),
        RandSpatialCropd(keys="image", roi_size=(crop_px, crop_px), random_size=False),
        RandScaleIntensityd(keys="image", factors=0.2, prob=0.8),
        RandShiftIntensityd(keys="image", offsets=0.2, prob=0.8),
    ])
    transform.set_random_state(seed=seed)
    return transform


def verifier_items(examples: VerifierExamples, classes: tuple[FindingClass, ...]) -> list[dict[str, Any]]:
    column = {cls: i for i, cls in enumerate(classes)}
    return [{"image": torch.from_numpy(crop.astype(np.float32)), "label": float(c.true), "column": column[c.finding_class]}
            for c, crop in zip(examples.candidates, examples.crops, strict=True)]


def verifier_dataset(examples: VerifierExamples, classes: tuple[FindingClass, ...], crop_px: int, seed: int) -> Dataset:
    return Dataset(verifier_items(examples, classes), transform=verifier_train_transform(crop_px, seed))


def balanced_sampler(labels: np.ndarray, positive_fraction: float, seed: int) -> torch.utils.data.WeightedRandomSampler:
    """Draws with replacement so that ``positive_fraction`` of the examples are true; an
    epoch is as long as it takes to draw as many false examples as there are."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise VerifierDataError(f"the verifier needs true and false examples; got {positives} true and {negatives} "
                                "false (more images, or a lower verification.candidate_min_score)")
    weights = np.where(labels > 0, positive_fraction / positives, (1 - positive_fraction) / negatives)
    length = round(negatives / (1 - positive_fraction))
    return torch.utils.data.WeightedRandomSampler(weights.tolist(), length, replacement=True,
                                                  generator=torch.Generator().manual_seed(seed))
