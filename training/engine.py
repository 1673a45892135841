"""One epoch of training and one pass of validation, for the detectors and the root-count
classifier. Validation decodes with the same numpy post-processing as serving."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.apps.detection.networks import retinanet_detector
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.data import Dataset
from torch import nn

from datasets.transforms import Target
from evaluation.detection_metrics import Box, ImageBoxes, coco_ap, match_teeth, operating_point
from models.detections import findings_from_raw, teeth_from_raw
from models.findings import FindingClass, Label
from models.model_card import DecodeConfig
from models.networks import DetectorArchitecture, DetectorForExport
from models.postprocess import cached_anchors, decode_detections
from models.preprocess import InputGeometry, pad_to_divisible
from models.tasks import nms_groups
from training.config import SamplerConfig


class NonFiniteLossError(RuntimeError):
    """Training stopped: the loss became NaN or infinite."""


class _AbsentTorchvisionType:
    """Stands in for torchvision's Matcher and BalancedPositiveNegativeSampler in MONAI's
    isinstance checks; nothing is an instance of it, so MONAI takes its ATSS matcher and
    hard-negative sampler branches (the ones configured here)."""


# Without torchvision these names are lazy-raise placeholders, and isinstance() on them fails.
for _name in ("Matcher", "BalancedPositiveNegativeSampler"):
    if not isinstance(getattr(retinanet_detector, _name), type):
        setattr(retinanet_detector, _name, _AbsentTorchvisionType)


def build_training_detector(network: nn.Module, arch: DetectorArchitecture, sampler: SamplerConfig) -> RetinaNetDetector:
    anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=arch.feature_map_scales,
                                             base_anchor_shapes=arch.anchor_shapes_px)
    detector = RetinaNetDetector(network=network, anchor_generator=anchors, spatial_dims=2)
    detector.set_atss_matcher(num_candidates=sampler.atss_candidates, center_in_gt=False)
    detector.set_hard_negative_sampler(batch_size_per_image=sampler.samples_per_image,
                                       positive_fraction=sampler.positive_fraction,
                                       pool_size=sampler.hard_negative_pool, min_neg=16)
    detector.set_target_keys(box_key="boxes", label_key="labels")
    return detector


def detection_collate(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


def _check_finite(loss: torch.Tensor, epoch: int, step: int) -> None:
    if not torch.isfinite(loss):
        raise NonFiniteLossError(
            f"loss became {loss.item()} at epoch {epoch}, step {step}: lower optim.lr, "
            "raise optim.warmup_iters, or check the boxes of this batch"
        )


@dataclass
class EpochState:
    epoch: int
    steps_done: int = 0
    loss_sum: float = 0.0
    parts_sum: dict[str, float] | None = None

    def add(self, loss: float, parts: dict[str, float]) -> None:
        self.steps_done += 1
        self.loss_sum += loss
        self.parts_sum = {k: (self.parts_sum or {}).get(k, 0.0) + v for k, v in parts.items()}

    def means(self) -> dict[str, float]:
        n = max(self.steps_done, 1)
        out = {"loss": self.loss_sum / n}
        out.update({k: v / n for k, v in (self.parts_sum or {}).items()})
        return out


def train_mode(model: nn.Module, freeze_batchnorm: bool) -> None:
    """Training mode; with ``freeze_batchnorm`` the batch norms keep normalising with their
    running statistics (and do not update them) while their scale and shift still train."""
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def train_detector_one_epoch(detector: RetinaNetDetector, optimizer: torch.optim.Optimizer,
                             scheduler: torch.optim.lr_scheduler.LRScheduler, loader: Iterable[list[dict[str, Any]]],
                             device: torch.device, epoch: int, scaler: torch.amp.GradScaler | None, grad_clip: float,
                             max_steps: int | None, on_step: Callable[[EpochState], None],
                             freeze_batchnorm: bool = False) -> dict[str, float]:
    train_mode(detector, freeze_batchnorm)
    state = EpochState(epoch)
    for step, batch in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        images = [item["image"].to(device) for item in batch]
        targets = [{"boxes": torch.as_tensor(item["boxes"], dtype=torch.float32, device=device),
                    "labels": torch.as_tensor(item["labels"], dtype=torch.long, device=device)} for item in batch]
        with torch.autocast(device_type=device.type, enabled=scaler is not None):
            try:
                losses = detector(images, targets)
            except ValueError as exc:  # MONAI refuses NaN/Inf head outputs while training
                if "NaN" not in str(exc):
                    raise
                raise NonFiniteLossError(f"network output became NaN or infinite at epoch {epoch}, step {step}: "
                                         "lower optim.lr or check the images of this batch") from exc
        loss = losses[detector.cls_key] + losses[detector.box_reg_key]
        _check_finite(loss, epoch, step)
        optimizer.zero_grad(set_to_none=True)
        _backward_step(loss, optimizer, detector.network.parameters(), scaler, grad_clip)
        scheduler.step()
        state.add(loss.item(), {"cls_loss": losses[detector.cls_key].item(),
                                "box_loss": losses[detector.box_reg_key].item()})
        on_step(state)
    return state.means()


def _backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter],
                   scaler: torch.amp.GradScaler | None, grad_clip: float) -> None:
    params = list(params)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()


def cross_entropy_loss(logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """The root counter's loss: one class of three per crop."""
    return nn.functional.cross_entropy(logits.float(), batch["label"].to(logits.device))


def verifier_loss(logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """The finding verifier's loss: each crop answers for its own class's logit only
    (true finding of that class or not), as a sigmoid."""
    column = batch["column"].to(logits.device).long()
    chosen = logits.float().gather(1, column[:, None])[:, 0]
    return nn.functional.binary_cross_entropy_with_logits(chosen, batch["label"].to(logits.device).float())


def train_classifier_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer,
                               scheduler: torch.optim.lr_scheduler.LRScheduler, loader: Iterable[dict[str, Any]],
                               device: torch.device, epoch: int, scaler: torch.amp.GradScaler | None, grad_clip: float,
                               max_steps: int | None, on_step: Callable[[EpochState], None],
                               freeze_batchnorm: bool = False,
                               loss_of: Callable[[torch.Tensor, dict[str, Any]], torch.Tensor] = cross_entropy_loss,
                               ) -> dict[str, float]:
    """One epoch of a crop classifier (the root counter; the finding verifier with
    ``loss_of=verifier_loss``)."""
    train_mode(model, freeze_batchnorm)
    state = EpochState(epoch)
    for step, batch in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        with torch.autocast(device_type=device.type, enabled=scaler is not None):
            logits = model(batch["image"].to(device))
            loss = loss_of(logits, batch)
        _check_finite(loss, epoch, step)
        optimizer.zero_grad(set_to_none=True)
        _backward_step(loss, optimizer, model.parameters(), scaler, grad_clip)
        scheduler.step()
        state.add(loss.item(), {})
        on_step(state)
    return state.means()


# ---- validation -----------------------------------------------------------------------

@dataclass(frozen=True)
class DetectorPredictor:
    """Torch forward + the serving post-processing, for validation during training."""

    network: RetinaNet
    arch: DetectorArchitecture
    classes: tuple[Label, ...]
    decode: DecodeConfig
    device: torch.device

    def __call__(self, item: dict[str, Any]) -> Any:
        image = item["image"][0].numpy()
        padded = pad_to_divisible(image)
        with torch.no_grad():
            cls, box = DetectorForExport(self.network).eval()(torch.from_numpy(padded[None, None]).to(self.device))
        raw = decode_detections(cls[0].float().cpu().numpy(), box[0].float().cpu().numpy(),
                                cached_anchors(self.arch, padded.shape), padded.shape, self.decode.settings(),
                                nms_groups(self.classes))
        geometry = InputGeometry(original_hw=item["original_hw"], resized_hw=image.shape, padded_hw=padded.shape)
        return raw, geometry


def _finding_label(cls: FindingClass) -> str:
    return cls.value


def evaluate_detector(predictor: DetectorPredictor, items: list[dict[str, Any]], target: Target,
                      ground_truth: dict[str, Any]) -> dict[str, float]:
    """Validation metrics in the dental vocabulary; ``ground_truth`` maps image id to its
    ImageAnnotations."""
    predictor.network.eval()
    gt_boxes, pred_boxes = [], []
    tooth_gt, tooth_pred = [], {}
    threshold = predictor.decode.operating_threshold
    for item in items:
        ann = ground_truth[item["image_id"]]
        raw, geometry = predictor(item)
        if target is Target.TEETH:
            unique_at = threshold if predictor.decode.unique_tooth_numbers else None
            teeth = teeth_from_raw(raw, geometry, predictor.classes, unique_at)
            gt = tuple(Box(t.box_xyxy_px, f"tooth-{t.fdi}") for t in ann.teeth)
            pred = tuple(Box(t.box_xyxy_px, f"tooth-{t.fdi}", t.score) for t in teeth)
            tooth_gt.append((ann.image_id, [(t.box_xyxy_px, t.fdi) for t in ann.teeth]))
            tooth_pred[ann.image_id] = [(t.box_xyxy_px, t.fdi) for t in teeth if t.score >= threshold]
        else:
            found = findings_from_raw(raw, geometry, predictor.classes)
            gt = tuple(Box(f.box_xyxy_px, _finding_label(f.finding_class)) for f in ann.findings)
            pred = tuple(Box(f.box_xyxy_px, _finding_label(f.finding_class), f.score) for f in found)
        gt_boxes.append(ImageBoxes(ann.image_id, ann.width_px, ann.height_px, gt))
        pred_boxes.append(ImageBoxes(ann.image_id, ann.width_px, ann.height_px, pred))
    if target is Target.TEETH:
        names = sorted({b.label for g in gt_boxes for b in g.boxes})
        aps = coco_ap(gt_boxes, pred_boxes, names)
        matching, _ = match_teeth(tooth_gt, tooth_pred)
        ap50 = [a.ap50 for a in aps.values() if a.ap50 is not None]
        return {"tooth_recall": matching.recall or 0.0, "numbering_accuracy": matching.numbering_accuracy or 0.0,
                "mean_ap50": float(np.mean(ap50)) if ap50 else 0.0, "selection": matching.numbering_accuracy or 0.0}
    names = [c.value for c in FindingClass]
    aps = coco_ap(gt_boxes, pred_boxes, names)
    metrics: dict[str, float] = {}
    for name, ap in aps.items():
        if ap.ap50 is not None:
            metrics[f"ap50_{name}"] = ap.ap50
            op = operating_point(gt_boxes, pred_boxes, name, threshold)
            metrics[f"sensitivity_{name}"] = op.sensitivity or 0.0
            metrics[f"ppv_{name}"] = op.ppv or 0.0
    pathology = [metrics[f"ap50_{c.value}"] for c in FindingClass if c.is_pathology and f"ap50_{c.value}" in metrics]
    metrics["mean_ap50_pathology"] = float(np.mean(pathology)) if pathology else 0.0
    metrics["selection"] = metrics["mean_ap50_pathology"]
    return metrics


def evaluate_classifier(model: nn.Module, dataset: Dataset | Any, device: torch.device,
                        batch_size: int = 64) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Accuracy on the crops; returns metrics, true and predicted class indices."""
    model.eval()
    truth, predicted = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            chunk = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            images = torch.stack([torch.as_tensor(c["image"]) for c in chunk]).to(device)
            predicted += model(images).argmax(dim=1).cpu().tolist()
            truth += [int(c["label"]) for c in chunk]
    t, p = np.asarray(truth), np.asarray(predicted)
    accuracy = float((t == p).mean()) if len(t) else 0.0
    return {"root_count_accuracy": accuracy, "selection": accuracy}, t, p


def cosine_with_warmup(total_steps: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def verifier_logits(model: nn.Module, crops: np.ndarray, columns: np.ndarray, mirrored: bool, device: torch.device,
                    batch_size: int = 512) -> np.ndarray:
    """Each crop's logit for its class column, as ``models.inference.Verifier`` reads it
    (mirrored and plain averaged when ``mirrored``), with the torch network."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(crops), batch_size):
            chunk = torch.from_numpy(np.asarray(crops[start:start + batch_size], np.float32)).to(device)
            logits = model(chunk).float()
            if mirrored:
                logits = (logits + model(torch.flip(chunk, [3])).float()) / 2
            picked = logits.gather(1, torch.as_tensor(columns[start:start + batch_size], device=device).long()[:, None])
            out.append(picked[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)
