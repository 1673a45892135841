"""Detection metrics: COCO AP/AP50/AR by pycocotools (the reference implementation), and
the clinical operating-point figures computed here: sensitivity and PPV at the reported
threshold, FROC for lesions, tooth detection recall and numbering accuracy, root-count
accuracy with its confusion matrix."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.optimize import linear_sum_assignment

from models.postprocess import box_iou

FROC_FP_PER_IMAGE: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class Box:
    box_xyxy_px: tuple[float, float, float, float]
    label: str
    score: float = 1.0


@dataclass(frozen=True)
class ImageBoxes:
    """Ground truth or predictions of one image for one family of classes."""

    image_id: str
    width_px: int
    height_px: int
    boxes: tuple[Box, ...]


@dataclass(frozen=True)
class ClassAP:
    ap: float | None  # None when the class has no ground truth
    ap50: float | None
    ar100: float | None
    gt_count: int
    pr_curve_50: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())  # recall, precision at IoU 0.5


def _xywh(b: tuple[float, float, float, float]) -> list[float]:
    return [b[0], b[1], b[2] - b[0], b[3] - b[1]]


def coco_ap(ground_truth: Sequence[ImageBoxes], predictions: Sequence[ImageBoxes],
            classes: Sequence[str]) -> dict[str, ClassAP]:
    """COCO bbox AP (IoU .50:.95), AP50 and AR@100 per class with pycocotools."""
    index = {img.image_id: i + 1 for i, img in enumerate(ground_truth)}
    cat_ids = {name: i + 1 for i, name in enumerate(classes)}
    gt_dataset: dict[str, Any] = {
        "images": [{"id": index[g.image_id], "width": g.width_px, "height": g.height_px} for g in ground_truth],
        "categories": [{"id": cid, "name": name} for name, cid in cat_ids.items()],
        "annotations": [],
    }
    ann_id = 0
    for g in ground_truth:
        for b in g.boxes:
            if b.label not in cat_ids:
                continue
            ann_id += 1
            xywh = _xywh(b.box_xyxy_px)
            gt_dataset["annotations"].append({"id": ann_id, "image_id": index[g.image_id], "category_id": cat_ids[b.label],
                                              "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0})
    detections = [
        {"image_id": index[p.image_id], "category_id": cat_ids[b.label], "bbox": _xywh(b.box_xyxy_px), "score": b.score}
        for p in predictions if p.image_id in index for b in p.boxes if b.label in cat_ids
    ]
    gt_counts = {name: sum(1 for a in gt_dataset["annotations"] if a["category_id"] == cid)
                 for name, cid in cat_ids.items()}
    if not detections:
        return {name: ClassAP(0.0 if gt_counts[name] else None, 0.0 if gt_counts[name] else None,
                              0.0 if gt_counts[name] else None, gt_counts[name]) for name in classes}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = gt_dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    recall = evaluator.eval["recall"]  # [T, K, A, M]
    recall_points = evaluator.params.recThrs
    results = {}
    for k, name in enumerate(classes):
        if gt_counts[name] == 0:
            results[name] = ClassAP(None, None, None, 0)
            continue
        p_all = precision[:, :, k, 0, -1]
        p50 = precision[0, :, k, 0, -1]
        r_all = recall[:, k, 0, -1]
        valid50 = p50 > -1
        results[name] = ClassAP(
            ap=float(np.mean(p_all[p_all > -1])) if (p_all > -1).any() else 0.0,
            ap50=float(np.mean(p50[valid50])) if valid50.any() else 0.0,
            ar100=float(np.mean(r_all[r_all > -1])) if (r_all > -1).any() else 0.0,
            gt_count=gt_counts[name],
            pr_curve_50=(tuple(float(r) for r in recall_points), tuple(float(max(p, 0.0)) for p in p50)),
        )
    return results


@dataclass(frozen=True)
class OperatingPoint:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def sensitivity(self) -> float | None:
        n = self.true_positives + self.false_negatives
        return self.true_positives / n if n else None

    @property
    def ppv(self) -> float | None:
        n = self.true_positives + self.false_positives
        return self.true_positives / n if n else None


def _greedy_match(gt: list[Box], preds: list[Box], iou_threshold: float) -> list[bool]:
    """COCO-style: predictions by falling score take the unmatched ground truth they
    overlap most (IoU >= threshold); returns whether each prediction (in the given order) hit."""
    if not preds:
        return []
    if not gt:
        return [False] * len(preds)
    ious = box_iou(np.asarray([p.box_xyxy_px for p in preds]), np.asarray([g.box_xyxy_px for g in gt]))
    taken = np.zeros(len(gt), bool)
    hits = [False] * len(preds)
    for i in np.argsort([-p.score for p in preds], kind="stable"):
        candidates = np.where(~taken & (ious[i] >= iou_threshold), ious[i], -1.0)
        j = int(candidates.argmax())
        if candidates[j] >= 0:
            taken[j] = True
            hits[i] = True
    return hits


def _covered(box: tuple[float, float, float, float], others: np.ndarray) -> float:
    """The largest share of ``box``'s area that one of ``others`` (N, 4) covers."""
    x0, y0, x1, y1 = box
    inter_w = np.clip(np.minimum(x1, others[:, 2]) - np.maximum(x0, others[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(y1, others[:, 3]) - np.maximum(y0, others[:, 1]), 0, None)
    return float((inter_w * inter_h).max() / max((x1 - x0) * (y1 - y0), 1e-9))


FALSE_POSITIVE_PLACES = ("localisation", "image_border", "on_other_finding", "elsewhere")


def false_positive_places(ground_truth: Sequence[ImageBoxes], predictions: Sequence[ImageBoxes], label: str,
                          threshold: float, border_fraction: float = 0.02) -> dict[str, int]:
    """Where the false positives of ``label`` at ``threshold`` lie, each counted once, in
    this order: ``localisation`` (a box of the class overlaps, IoU 0.1-0.5, or it doubles
    one already found), ``image_border`` (within ``border_fraction`` of the image's
    shorter side from an edge: anatomy cut by the edge), ``on_other_finding`` (at least a
    third of it on a true box of another class), ``elsewhere``. Tells an ML engineer what
    kind of training data the detector lacks."""
    by_id = {p.image_id: p for p in predictions}
    counts = dict.fromkeys(FALSE_POSITIVE_PLACES, 0)
    for g in ground_truth:
        found = by_id.get(g.image_id)
        preds = [b for b in found.boxes if b.label == label and b.score >= threshold] if found else []
        if not preds:
            continue
        same = [b for b in g.boxes if b.label == label]
        others = np.asarray([b.box_xyxy_px for b in g.boxes if b.label != label], np.float64).reshape(-1, 4)
        hits = _greedy_match(same, preds, 0.5)
        margin = max(border_fraction * min(g.width_px, g.height_px), 2.0)
        for pred, hit in zip(preds, hits, strict=True):
            if hit:
                continue
            x0, y0, x1, y1 = pred.box_xyxy_px
            if same and box_iou(np.asarray([pred.box_xyxy_px]), np.asarray([b.box_xyxy_px for b in same])).max() >= 0.1:
                counts["localisation"] += 1
            elif min(x0, y0, g.width_px - x1, g.height_px - y1) <= margin:
                counts["image_border"] += 1
            elif len(others) and _covered(pred.box_xyxy_px, others) >= 1 / 3:
                counts["on_other_finding"] += 1
            else:
                counts["elsewhere"] += 1
    return counts


def operating_point(ground_truth: Sequence[ImageBoxes], predictions: Sequence[ImageBoxes], label: str,
                    threshold: float, iou_threshold: float = 0.5) -> OperatingPoint:
    by_id = {p.image_id: p for p in predictions}
    tp = fp = fn = 0
    for g in ground_truth:
        gt = [b for b in g.boxes if b.label == label]
        pred = [b for b in by_id[g.image_id].boxes if b.label == label and b.score >= threshold] if g.image_id in by_id else []
        hits = _greedy_match(gt, pred, iou_threshold)
        tp += sum(hits)
        fp += len(hits) - sum(hits)
        fn += len(gt) - sum(hits)
    return OperatingPoint(tp, fp, fn)


def froc(ground_truth: Sequence[ImageBoxes], predictions: Sequence[ImageBoxes], label: str,
         fp_per_image: Sequence[float] = FROC_FP_PER_IMAGE, iou_threshold: float = 0.5) -> dict[float, float | None]:
    """Sensitivity at each average number of false positives per image (the best threshold
    that stays at or under it); None when the class has no ground truth."""
    by_id = {p.image_id: p for p in predictions}
    scored: list[tuple[float, bool]] = []
    total_gt = 0
    for g in ground_truth:
        gt = [b for b in g.boxes if b.label == label]
        total_gt += len(gt)
        pred = [b for b in by_id[g.image_id].boxes if b.label == label] if g.image_id in by_id else []
        scored += [(p.score, hit) for p, hit in zip(pred, _greedy_match(gt, pred, iou_threshold), strict=True)]
    if total_gt == 0:
        return dict.fromkeys(fp_per_image)
    scored.sort(key=lambda s: -s[0])
    hits = np.array([h for _, h in scored], bool)
    tps = np.cumsum(hits)
    fps = np.cumsum(~hits) / max(len(ground_truth), 1)
    out: dict[float, float | None] = {}
    for rate in fp_per_image:
        ok = np.flatnonzero(fps <= rate)
        out[rate] = float(tps[ok[-1]] / total_gt) if ok.size else 0.0
    return out


@dataclass(frozen=True)
class ToothMatching:
    gt_teeth: int
    matched: int
    correctly_numbered: int
    false_positives: int
    # (ground-truth FDI, predicted FDI) for every matched tooth, for the confusion matrix.
    pairs: tuple[tuple[int, int], ...]

    @property
    def recall(self) -> float | None:
        return self.matched / self.gt_teeth if self.gt_teeth else None

    @property
    def numbering_accuracy(self) -> float | None:
        """Matched teeth with the right FDI number over all ground-truth teeth."""
        return self.correctly_numbered / self.gt_teeth if self.gt_teeth else None


def match_boxes(gt: Sequence[tuple[float, float, float, float]], pred: Sequence[tuple[float, float, float, float]],
                iou_threshold: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one matching by box overlap (Hungarian on IoU): (gt index, prediction index)
    pairs with IoU at least ``iou_threshold``."""
    if not gt or not pred:
        return []
    ious = box_iou(np.asarray(pred), np.asarray(gt))
    rows, cols = linear_sum_assignment(-ious)
    return [(int(c), int(r)) for r, c in zip(rows, cols, strict=True) if ious[r, c] >= iou_threshold]


def match_teeth(ground_truth: Sequence[tuple[str, list[tuple[tuple[float, float, float, float], int]]]],
                predictions: dict[str, list[tuple[tuple[float, float, float, float], int]]],
                iou_threshold: float = 0.5) -> tuple[ToothMatching, dict[str, list[tuple[int, int]]]]:
    """One-to-one matching of predicted to true teeth by box overlap alone (Hungarian on
    IoU), so a tooth found with the wrong number counts as detected but misnumbered.
    Returns the totals and, per image, the (gt index, prediction index) pairs."""
    gt_total = matched = correct = fp = 0
    pairs: list[tuple[int, int]] = []
    per_image: dict[str, list[tuple[int, int]]] = {}
    for image_id, gt in ground_truth:
        pred = predictions.get(image_id, [])
        gt_total += len(gt)
        if not gt or not pred:
            fp += len(pred)
            per_image[image_id] = []
            continue
        good = match_boxes([g[0] for g in gt], [p[0] for p in pred], iou_threshold)
        per_image[image_id] = good
        matched += len(good)
        fp += len(pred) - len(good)
        for gi, pi in good:
            pairs.append((gt[gi][1], pred[pi][1]))
            correct += int(gt[gi][1] == pred[pi][1])
    return ToothMatching(gt_total, matched, correct, fp, tuple(pairs)), per_image


def confusion_matrix(truth: Sequence[int], predicted: Sequence[int], classes: Sequence[int]) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), np.int64)
    for t, p in zip(truth, predicted, strict=True):
        if t in index and p in index:
            matrix[index[t], index[p]] += 1
    return matrix
