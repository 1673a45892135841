"""Numpy post-processing of the detector outputs: anchors, box decoding, NMS.

The anchor layout and the box coding are those of MONAI's ``AnchorGeneratorWithAnchorShape``
and ``BoxCoder`` (weights 1), checked against them in the tests; boxes here are in our
``xyxy`` order (x right, y down) while MONAI's 2-D boxes put the image's first axis (y)
first."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from models.architecture import LEVEL_STRIDES, DetectorArchitecture

_BOX_CLIP = math.log(1000.0 / 16)  # MONAI's and torchvision's clamp on the log size deltas


def anchors_xyxy(arch: DetectorArchitecture, padded_hw: tuple[int, int]) -> np.ndarray:
    """All anchors (N, 4) for an input of ``padded_hw``, in network output order:
    level, then row, column, then anchor shape."""
    per_level = []
    h, w = padded_hw
    for stride, scale in zip(LEVEL_STRIDES, arch.feature_map_scales, strict=True):
        shapes = np.asarray(arch.anchor_shapes_px, np.float32) * np.float32(scale)  # (A, 2) as (h, w)
        half = shapes / 2.0
        base = np.round(np.concatenate([-half, half], axis=1))  # (A, 4) as (y0, x0, y1, x1)
        gh, gw = h // stride, w // stride
        cy = np.arange(gh, dtype=np.int64) * stride + stride // 2
        cx = np.arange(gw, dtype=np.int64) * stride + stride // 2
        yy, xx = np.meshgrid(cy, cx, indexing="ij")
        shifts = np.stack([yy.ravel(), xx.ravel(), yy.ravel(), xx.ravel()], axis=1).astype(np.float32)
        level = (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)
        per_level.append(level[:, [1, 0, 3, 2]])
    return np.concatenate(per_level, axis=0).astype(np.float32)


@functools.lru_cache(maxsize=64)
def cached_anchors(arch: DetectorArchitecture, padded_hw: tuple[int, int]) -> np.ndarray:
    """``anchors_xyxy`` for the few input shapes that recur (one per kind and orientation)."""
    anchors = anchors_xyxy(arch, padded_hw)
    anchors.setflags(write=False)  # shared between calls
    return anchors


def decode_boxes(deltas: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Box deltas (N, 4) in MONAI's order (dy, dx, dh, dw) applied to anchors in xyxy."""
    deltas = np.asarray(deltas, np.float32)
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    cx = anchors[:, 0] + 0.5 * widths
    cy = anchors[:, 1] + 0.5 * heights
    dy, dx = deltas[:, 0], deltas[:, 1]
    dh = np.minimum(deltas[:, 2], _BOX_CLIP)
    dw = np.minimum(deltas[:, 3], _BOX_CLIP)
    pcx, pcy = dx * widths + cx, dy * heights + cy
    pw, ph = np.exp(dw) * widths, np.exp(dh) * heights
    return np.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], axis=1).astype(np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best first (ties by index)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        ious = box_iou(boxes[best], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS within each group independently; indices kept, best first."""
    keep = [np.flatnonzero(groups == g)[nms(boxes[groups == g], scores[groups == g], iou_threshold)]
            for g in np.unique(groups)]
    if not keep:
        return np.zeros(0, np.int64)
    merged = np.concatenate(keep)
    return merged[np.argsort(-scores[merged], kind="stable")]


def _logit(p: float) -> float:
    return math.log(p / (1 - p)) if 0 < p < 1 else (-math.inf if p <= 0 else math.inf)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))).astype(np.float32)


@dataclass(frozen=True)
class DecodeSettings:
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    candidates: int = 1000
    max_detections: int = 100
    min_size_px: float = 2.0
    # A detection's score: its class's probability, or (summed) the probabilities of its
    # NMS group's classes added up, capped at 1 (the caries depths: one caries, its
    # evidence split between depths by the network). Candidates and NMS go by the class's.
    summed_scores: bool = False


@dataclass(frozen=True)
class RawDetections:
    """Detections in network-input pixels; ``probs`` keeps every class probability of the
    winning anchor so callers can read runner-up classes (e.g. caries depth)."""

    boxes_xyxy: np.ndarray  # (K, 4)
    scores: np.ndarray  # (K,)
    labels: np.ndarray  # (K,) class index
    probs: np.ndarray  # (K, C)


def decode_detections(cls_logits: np.ndarray, box_deltas: np.ndarray, anchors: np.ndarray, padded_hw: tuple[int, int],
                      settings: DecodeSettings, nms_groups: np.ndarray) -> RawDetections:
    """One image's outputs (N, C) and (N, 4) -> detections. Each anchor proposes its best
    class; NMS runs within the groups of ``nms_groups`` (class index -> group id), so e.g.
    all tooth numbers share one group and a tooth gets one box."""
    logits = np.asarray(cls_logits, np.float32)
    labels = logits.argmax(axis=1)  # the sigmoid keeps the order: the best logit is the best probability
    best = logits[np.arange(len(labels)), labels]
    # Only anchors near or above the score threshold get a sigmoid (a panoramic has about
    # 150,000 anchors of 9 classes); the margin keeps float rounding at the threshold exact.
    near = np.flatnonzero(best > _logit(settings.score_threshold) - 1e-3)
    near_scores = sigmoid(best[near])
    keep = near_scores > settings.score_threshold
    candidates, candidate_scores = near[keep], near_scores[keep]
    if candidates.size > settings.candidates:
        top = np.argpartition(-candidate_scores, settings.candidates - 1)[: settings.candidates]
        candidates, candidate_scores = candidates[top], candidate_scores[top]
    boxes = decode_boxes(np.asarray(box_deltas, np.float32)[candidates], anchors[candidates])
    h, w = padded_hw
    boxes = np.clip(boxes, 0, np.array([w, h, w, h], np.float32))
    sizes = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    ok = sizes >= settings.min_size_px
    candidates, candidate_scores, boxes = candidates[ok], candidate_scores[ok], boxes[ok]
    keep = batched_nms(boxes, candidate_scores, nms_groups[labels[candidates]], settings.nms_iou)
    keep = keep[: settings.max_detections]
    chosen = candidates[keep]
    probs = sigmoid(logits[chosen])
    scores = candidate_scores[keep]
    if settings.summed_scores and len(chosen):
        # NMS chose each box by its best class; its score is then its group's probability.
        same_group = nms_groups[labels[chosen]][:, None] == nms_groups[None, :]
        scores = np.minimum(np.where(same_group, probs, 0.0).sum(axis=1), 1.0).astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        keep, chosen, probs, scores = keep[order], chosen[order], probs[order], scores[order]
    return RawDetections(boxes_xyxy=boxes[keep], scores=scores, labels=labels[chosen], probs=probs)


def mirror_input(tensor: np.ndarray, content_width_px: int) -> np.ndarray:
    """The network input mirrored left-right within its content (the first
    ``content_width_px`` columns); the zero padding stays at the right, where the network
    saw it in training."""
    mirrored = tensor.copy()
    mirrored[..., :content_width_px] = tensor[..., content_width_px - 1::-1]
    return mirrored


def mirror_detections(raw: RawDetections, content_width_px: int) -> RawDetections:
    """Detections read on ``mirror_input``'s view, put back in the unmirrored input's pixels."""
    b = raw.boxes_xyxy
    boxes = np.stack([content_width_px - b[:, 2], b[:, 1], content_width_px - b[:, 0], b[:, 3]], axis=1)
    return RawDetections(boxes_xyxy=boxes.astype(np.float32).reshape(-1, 4), scores=raw.scores, labels=raw.labels,
                         probs=raw.probs)


def shift_input(tensor: np.ndarray, shift_px: int) -> np.ndarray:
    """The network input moved ``shift_px`` up and left (the first rows and columns drop
    out, zeros come in at the bottom and right, where the padding is): the image lands on
    the anchor grid at another phase."""
    shifted = np.zeros_like(tensor)
    shifted[..., :-shift_px, :-shift_px] = tensor[..., shift_px:, shift_px:]
    return shifted


def unshift_detections(raw: RawDetections, shift_px: int) -> RawDetections:
    """Detections read on ``shift_input``'s view, put back in the unshifted input's pixels."""
    return RawDetections(boxes_xyxy=(raw.boxes_xyxy + np.float32(shift_px)).astype(np.float32), scores=raw.scores,
                         labels=raw.labels, probs=raw.probs)


def fuse_views(views: list[RawDetections], groups: np.ndarray, iou_threshold: float,
               max_detections: int) -> RawDetections:
    """Weighted boxes fusion (Solovyev et al., 2019) of one image's detections read in
    several views (e.g. as given and mirrored), all in the same pixels.

    Detections are taken by falling score; each joins the cluster of its NMS group whose
    leading (highest-scoring) box it overlaps most, above ``iou_threshold``, unless that
    cluster already holds a detection of its view; otherwise it starts a cluster. A cluster
    becomes one detection: the score-weighted mean box, the summed score over the number of
    views (a box only one view of two saw keeps half its score), the leader's class and
    class probabilities. Agreement between views tightens small boxes, and what only one
    view believed falls down the ranking. For two views the leader is the whole cluster's
    other member, so this is WBF exactly."""
    n_views = len(views)
    if n_views == 1:
        return views[0]
    boxes = np.concatenate([v.boxes_xyxy for v in views]).reshape(-1, 4)
    scores = np.concatenate([v.scores for v in views]).astype(np.float32)
    labels = np.concatenate([v.labels for v in views]).astype(np.int64)
    probs = np.concatenate([v.probs for v in views])
    view_of = np.concatenate([np.full(len(v.scores), i) for i, v in enumerate(views)])
    same_group = groups[labels][:, None] == groups[labels][None, :]
    overlap = np.where(same_group, box_iou(boxes, boxes), 0.0)
    leader_of = np.arange(len(scores))  # the cluster (its leader's index) each detection is in
    is_leader = np.zeros(len(scores), bool)
    holds_view = np.zeros((len(scores), n_views), bool)  # per leader: the views its cluster holds
    for i in np.argsort(-scores, kind="stable"):
        open_to_me = is_leader & ~holds_view[:, view_of[i]]
        candidates = np.where(open_to_me, overlap[i], -1.0)
        k = int(np.argmax(candidates))
        if candidates[k] > iou_threshold:
            leader_of[i] = k
        else:
            is_leader[i] = True
        holds_view[leader_of[i], view_of[i]] = True
    leaders = np.flatnonzero(is_leader)
    weighted = np.zeros((len(scores), 4), np.float64)
    np.add.at(weighted, leader_of, boxes * scores[:, None])
    score_sums = np.bincount(leader_of, weights=scores, minlength=len(scores))
    fused_boxes = (weighted[leaders] / np.maximum(score_sums[leaders], 1e-12)[:, None]).astype(np.float32)
    fused_scores = (score_sums[leaders] / n_views).astype(np.float32)
    ranked = np.argsort(-fused_scores, kind="stable")[:max_detections]
    chosen = leaders[ranked]
    return RawDetections(boxes_xyxy=fused_boxes[ranked], scores=fused_scores[ranked], labels=labels[chosen],
                         probs=probs[chosen])
