"""Hard negatives for the finding detector: the places where a trained model reports a
finding that the annotations do not hold (on panoramics, mostly the dark notch where a
crown's outline meets its neighbour, taken for caries). ``dxv models mine-negatives``
reads a training dataset with a model folder and writes them to a JSON file; a recipe
names the file (``data.hard_negatives``) and centres a share of its patches on them
(``augment.patch_hard_negative_prob``), so the next run sees its predecessor's mistakes
far more often than random patches would show them.

The file is keyed by image id: mine on the same data the recipe trains on (the synthetic
generator's ids depend on kind, seed and index; a dataset on disk keeps its own)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.samples import Sample
from models.errors import DxvError
from models.findings import FindingClass
from models.postprocess import box_iou

FORMAT = "dxv-hard-negatives/1"
# A reported box that overlaps an annotated finding of its class this much or more is
# (part of) that finding, badly placed: not a negative.
FREE_IOU = 0.1


class HardNegativesError(DxvError):
    code = "training.hard_negatives"


@dataclass(frozen=True)
class MinedNegatives:
    """What ``mine_hard_negatives`` found: boxes (original pixels, xyxy) per image id."""

    boxes_xyxy_px: dict[str, tuple[tuple[float, float, float, float], ...]]
    classes: tuple[FindingClass, ...]
    min_score: float
    model_versions: tuple[tuple[str, str], ...]
    images_read: int

    @property
    def count(self) -> int:
        return sum(len(b) for b in self.boxes_xyxy_px.values())


def false_finding_boxes(reported: Sequence[tuple[FindingClass, tuple[float, float, float, float], float]],
                        annotated: Sequence[tuple[FindingClass, tuple[float, float, float, float]]],
                        classes: Sequence[FindingClass], min_score: float) -> list[tuple[float, float, float, float]]:
    """The reported boxes of ``classes`` scored ``min_score`` or more that overlap no
    annotated finding of their class (IoU below ``FREE_IOU``)."""
    found = []
    for finding_class, box, score in reported:
        if finding_class not in classes or score < min_score:
            continue
        truth = [b for c, b in annotated if c is finding_class]
        if truth and float(box_iou(np.asarray(box), np.asarray(truth)).max()) >= FREE_IOU:
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        found.append((x0, y0, x1, y1))
    return found


def mine_hard_negatives(reader, samples: Sequence[Sample], classes: Sequence[FindingClass], min_score: float,
                        on_progress: Callable[[int], None] | None = None) -> MinedNegatives:
    """Read every sample with ``reader`` (a ``models.inference.DentalReader``, as served)
    and keep its false findings."""
    if reader.findings is None:
        raise HardNegativesError("the model folder has no finding detector to mine with")
    if not 0 < min_score <= 1:
        raise HardNegativesError(f"min score {min_score} is not in (0, 1]")
    mined: dict[str, tuple[tuple[float, float, float, float], ...]] = {}
    versions: tuple[tuple[str, str], ...] = ()
    for i, sample in enumerate(samples):
        reading = reader.read(sample.image_id, sample.load(), sample.kind, operating_point=False)
        versions = reading.model_versions
        boxes = false_finding_boxes([(f.finding_class, f.box_xyxy_px, f.score) for f in reading.findings],
                                    [(f.finding_class, f.box_xyxy_px) for f in sample.annotations.findings],
                                    classes, min_score)
        if boxes:
            mined[sample.image_id] = tuple(boxes)
        if on_progress:
            on_progress(i + 1)
    return MinedNegatives(mined, tuple(classes), min_score, versions, len(samples))


def write_hard_negatives(path: Path, mined: MinedNegatives, dataset: str) -> None:
    document = {
        "format": FORMAT, "dataset": dataset, "images_read": mined.images_read,
        "classes": [c.value for c in mined.classes], "min_score": mined.min_score,
        "model_versions": dict(mined.model_versions),
        "images": {image_id: [[round(v, 2) for v in box] for box in boxes]
                   for image_id, boxes in sorted(mined.boxes_xyxy_px.items())},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")


def read_hard_negatives(path: Path) -> dict[str, np.ndarray]:
    """Image id -> (N, 4) float32 boxes, original pixels, xyxy."""
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise HardNegativesError(f"hard negatives file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise HardNegativesError(f"hard negatives file {path} is not JSON ({exc.msg}, line {exc.lineno})") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT or not isinstance(document.get("images"), dict):
        raise HardNegativesError(f"{path} is not a hard negatives file ({FORMAT}; write it with dxv models mine-negatives)")
    boxes: dict[str, np.ndarray] = {}
    for image_id, rows in document["images"].items():
        try:
            array = np.asarray(rows, np.float32).reshape(-1, 4)
        except (TypeError, ValueError) as exc:
            raise HardNegativesError(f"{path}: image {image_id}: boxes must be [x0, y0, x1, y1] lists") from exc
        if not np.isfinite(array).all() or (array[:, 2:] <= array[:, :2]).any():
            raise HardNegativesError(f"{path}: image {image_id}: a box is empty or not finite")
        boxes[str(image_id)] = array
    return boxes
