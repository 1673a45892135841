"""``dxv train CONFIG.yaml [--set key=value ...] [--resume last.pt]``: train one network,
validate every epoch, checkpoint, export to ONNX, evaluate the export on the validation
split and log everything to MLflow (registering the model version)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset
from monai.data.utils import worker_init_fn as monai_worker_init
from monai.utils import set_determinism
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from datasets.samples import parallel_map
from datasets.transforms import Target
from evaluation.evaluate import evaluate, headline_metrics, write_report
from evaluation.verification import candidate_readings, classes_ap50, combined_scores, mean_ap50
from models.config_loading import dump_config
from models.findings import FindingClass
from models.inference import DentalReader, sigmoid
from models.model_card import ModelCard, ModelKey
from models.networks import DetectorForExport
from models.onnx_export import finalise_card
from models.tasks import task_classes
from training.checkpoints import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.data import (
    DataReport,
    ShapeBucketBatchSampler,
    attach_hard_negatives,
    crop_train_transform,
    detection_item,
    detection_train_dataset,
    load_samples,
    root_count_crops,
    split_samples,
    train_item_shapes,
)
from training.engine import (
    DetectorPredictor,
    EpochState,
    build_training_detector,
    cosine_with_warmup,
    detection_collate,
    evaluate_classifier,
    evaluate_detector,
    train_classifier_one_epoch,
    train_detector_one_epoch,
    verifier_logits,
    verifier_loss,
)
from training.export import export_model, network_for, tune_operating_threshold, tune_verifier
from training.hard_negatives import read_hard_negatives
from training.onnx_weights import load_onnx_weights
from training.tracking import tracked_run
from training.verifier_data import VerifierExamples, balanced_sampler, candidate_reader, mine_examples, verifier_dataset

log = logging.getLogger("dxv.train")
console = Console(stderr=True)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    onnx_path: Path | None
    card: ModelCard | None
    run_id: str | None
    registered_version: str | None
    history: tuple[dict[str, float], ...]
    final_metrics: dict[str, float]


def _device(config: TrainConfig) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    set_determinism(seed=seed)


def _target(config: TrainConfig) -> Target:
    return Target.TEETH if config.model is ModelKey.TOOTH_NUMBERING else Target.FINDINGS


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console, transient=False)


@contextmanager
def epoch_progress(epoch: int, total: int) -> Iterator[Callable[[EpochState], None]]:
    """A progress bar with the running loss and ETA; without a terminal (CI, nohup) a
    plain line every tenth of the epoch instead."""
    if console.is_terminal:
        with _progress() as progress:
            task = progress.add_task(f"epoch {epoch + 1}", total=total, loss="-")
            yield lambda state: progress.update(task, advance=1, loss=f"{state.loss_sum / state.steps_done:.4f}")
        return
    start = time.perf_counter()
    every = max(total // 10, 1)

    def on_step(state: EpochState) -> None:
        if state.steps_done % every == 0 or state.steps_done == total:
            elapsed = time.perf_counter() - start
            eta = elapsed / state.steps_done * (total - state.steps_done)
            console.print(f"epoch {epoch + 1} step {state.steps_done}/{total} loss "
                          f"{state.loss_sum / state.steps_done:.4f} elapsed {elapsed:.0f}s ETA {eta:.0f}s")

    yield on_step


def main(config: TrainConfig, resume: str | Path | None = None, run_dir: Path | None = None) -> TrainResult:
    _seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = _device(config)
    use_amp = config.amp and device.type == "cuda"
    checkpoint = load_checkpoint(resume) if resume else None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(resume).parent if resume else (run_dir or config.output_dir / f"{config.model.value}-{stamp}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(config), "utf-8")
    console.print(f"[bold]dxv train[/] {config.model.value} on {device.type}; run folder {run_dir}")

    report = DataReport()
    samples = load_samples(config.data, report, config.workers)
    train_samples, val_samples = split_samples(samples, config.data.val_fraction, config.data.split_seed)
    console.print(f"data: {report.as_dict()}; train {len(train_samples)} / validation {len(val_samples)} images")
    if report.unmapped_categories:
        console.print(f"[yellow]annotations that map to nothing of ours (dropped, counted): {dict(report.unmapped_categories)}")

    trainer: _DetectorTraining | _ClassifierTraining | _VerifierTraining
    if config.is_detector:
        trainer = _DetectorTraining(config, device, train_samples, val_samples, report)
    elif config.is_verifier:
        trainer = _VerifierTraining(config, device, train_samples, val_samples, report)
    else:
        trainer = _ClassifierTraining(config, device, train_samples, val_samples)
    model = trainer.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    steps_per_epoch = trainer.steps_per_epoch()
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(steps_per_epoch * config.optim.epochs, config.optim.warmup_iters))
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    if config.init_from is not None and checkpoint is None:
        _warm_start(config, model, device)
        console.print(f"network initialised from {config.init_from}")
    start_epoch, best, best_epoch, history = 0, -1.0, -1, []
    if checkpoint is not None:
        model.load_state_dict(checkpoint.model_state)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        scheduler.load_state_dict(checkpoint.scheduler_state)
        if scaler is not None and checkpoint.scaler_state:
            scaler.load_state_dict(checkpoint.scaler_state)
        start_epoch, best, best_epoch = checkpoint.epoch + 1, checkpoint.best_selection, checkpoint.best_epoch
        history = list(checkpoint.history)
        console.print(f"resuming after epoch {checkpoint.epoch + 1} (best so far {best:.4f} at epoch {best_epoch + 1})")

    tracking = config.tracking
    run_id = checkpoint.run_id if checkpoint else None
    context = tracked_run(tracking.experiment, run_dir.name, tracking.tracking_uri, run_id) if tracking.enabled else None
    tracker = context.__enter__() if context else None
    try:
        if tracker is not None and checkpoint is None:
            tracker.log_config(dump_config(config), config.model_dump(mode="json"))
            tracker.log_dict(report.as_dict(), "data_report.json")
            if config.data.hard_negatives is not None:  # the run can be repeated from its own artifacts
                tracker.log_text(config.data.hard_negatives.read_text(), "hard_negatives.json")
        run_id = tracker.run_id if tracker else None
        for epoch in range(start_epoch, config.optim.epochs):
            means = trainer.train_epoch(optimizer, scheduler, scaler, epoch)
            metrics = trainer.validate()
            row = {**{f"train_{k}": v for k, v in means.items()}, **{f"val_{k}": v for k, v in metrics.items()},
                   "lr": optimizer.param_groups[0]["lr"]}
            history.append(row)
            console.print(f"epoch {epoch + 1}/{config.optim.epochs}: " +
                          ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
            if tracker is not None:
                tracker.log_metrics(row, step=epoch + 1)
            selection = metrics.get("selection", -means["loss"])
            improved = selection > best
            if improved:
                best, best_epoch = selection, epoch
            state = Checkpoint(epoch, model.state_dict(), optimizer.state_dict(), scheduler.state_dict(),
                               scaler.state_dict() if scaler else None, best, best_epoch, run_id,
                               dump_config(config), history)
            save_checkpoint(run_dir / "last.pt", state)
            if improved:
                save_checkpoint(run_dir / "best.pt", state)
        onnx_path = card = version = None
        final: dict[str, float] = {}
        if config.export_onnx:
            best_state = load_checkpoint(run_dir / "best.pt") if (run_dir / "best.pt").exists() else None
            if best_state is not None:
                model.load_state_dict(best_state.model_state)
            onnx_path, card = export_model(config, model, run_dir / "export", run_id)
            if isinstance(trainer, _VerifierTraining):
                val = trainer.val_examples
                card = tune_verifier(card, onnx_path, val_samples, val.candidates, val.crops, config)
                # Evaluated as served: the models it was trained on, with it re-scoring their candidates.
                reader = DentalReader.from_files([*trainer.candidate_files, onnx_path])
            else:
                card = tune_operating_threshold(card, onnx_path, val_samples)
                reader = DentalReader.from_directory(run_dir / "export")
            result = evaluate(reader, val_samples, f"validation split ({len(val_samples)} images)")
            files = write_report(result, run_dir / "eval")
            final = headline_metrics(result.report)
            if config.is_verifier:
                final = verified_metrics(final, config.verification.classes)
            card = finalise_card({**card.model_dump(mode="json", exclude={"onnx_file", "sha256", "size_bytes"}),
                                  "metrics": final, "metrics_dataset": "validation split"}, onnx_path)
            if tracker is not None:
                tracker.log_metrics({f"final_{k}": v for k, v in final.items()}, step=config.optim.epochs)
                for f in files:
                    tracker.log_file(f, "evaluation")
                version = tracker.log_onnx_model(onnx_path, card, register=tracking.register_model)
                if version:
                    console.print(f"registered {card.registered_name} version {version}")
    except BaseException as exc:
        if context is not None:  # the MLflow run ends as FAILED (or KILLED on Ctrl-C)
            context.__exit__(type(exc), exc, exc.__traceback__)
        raise
    if context is not None:
        context.__exit__(None, None, None)
    return TrainResult(run_dir, onnx_path, card, run_id, version, tuple(history), final)



def _warm_start(config: TrainConfig, model: nn.Module, device: torch.device) -> None:
    """The network weights of ``config.init_from``: a checkpoint, or an exported ONNX file
    (checked to give the file's outputs; its folded batch norms need frozen statistics)."""
    assert config.init_from is not None
    if config.init_from.suffix.lower() != ".onnx":
        try:
            model.load_state_dict(load_checkpoint(config.init_from).model_state)
        except RuntimeError as exc:  # shapes or names differ: another architecture or model
            raise CheckpointError(f"init_from {config.init_from} does not fit this network: "
                                  f"{str(exc).splitlines()[0]}") from exc
        return
    if not config.optim.freeze_batchnorm:
        raise CheckpointError(f"init_from {config.init_from}: an ONNX file has its batch norms folded into the "
                              "convolutions; set optim.freeze_batchnorm=true to train from it")
    if not config.init_from.exists():
        raise CheckpointError(f"init_from {config.init_from}: no such file")
    model.cpu()
    if config.is_detector:
        load_onnx_weights(model, config.init_from, DetectorForExport(model))  # type: ignore[arg-type]
    elif config.is_verifier:
        arch = config.verifier
        load_onnx_weights(model, config.init_from, model, torch.rand(2, arch.channels, arch.crop_px, arch.crop_px))
    else:
        crop = config.classifier
        load_onnx_weights(model, config.init_from, model, torch.rand(2, 1, crop.crop_height_px, crop.crop_width_px))
    model.to(device)


def _prepared_item(job: tuple[Any, Target, int | None, TrainConfig]) -> dict[str, Any]:
    """One detector item, made where ``parallel_map`` runs it; the image travels back as a
    plain array (a tensor would cross as a shared-memory handle, one per image)."""
    sample, target, long_side, config = job
    item = detection_item(sample, target, long_side, config)
    item["image"] = item["image"].numpy()
    item["original_hw"] = (sample.annotations.height_px, sample.annotations.width_px)
    return item


def _loader_workers(config: TrainConfig, epoch: int) -> dict[str, Any]:
    """DataLoader arguments for ``config.workers`` augmenting processes. Each worker's MONAI
    transforms get their own random state from a seed drawn from this epoch's generator
    (MONAI's ``worker_init_fn``), so an epoch is the same again for the same worker count."""
    if config.workers == 0:
        return {"num_workers": 0}
    return {"num_workers": config.workers, "worker_init_fn": monai_worker_init,
            "generator": torch.Generator().manual_seed(config.seed + epoch), "persistent_workers": False}


class _DetectorTraining:
    def __init__(self, config: TrainConfig, device: torch.device, train_samples, val_samples,
                 report: DataReport) -> None:
        self.config, self.device = config, device
        self.target, self.task = _target(config), config.detector_task
        self.classes = task_classes(self.task)
        self.model = network_for(config).to(device)
        self.detector = build_training_detector(self.model, config.detector, config.sampler)
        self.train_items = self._prepare(train_samples, "preparing training images")
        if config.data.hard_negatives is not None:
            attach_hard_negatives(self.train_items, read_hard_negatives(config.data.hard_negatives), report)
            console.print(f"hard negatives from {config.data.hard_negatives}: {report.hard_negatives}")
        self.val_items = self._prepare(val_samples, "preparing validation images")
        self.ground_truth = {s.image_id: s.annotations for s in val_samples}
        self.dataset = detection_train_dataset(self.train_items, self.target, config.augment, config.seed)
        self.train_shapes = train_item_shapes(list(self.dataset.data), config.augment)

    def _prepare(self, samples, label: str) -> list[dict[str, Any]]:
        items = []
        jobs = [(s, self.target, self.config.long_side_px.get(s.kind), self.config) for s in samples]
        with _progress() as progress:
            task = progress.add_task(label, total=len(samples), loss="-")
            for item in parallel_map(_prepared_item, jobs, self.config.workers):
                item["image"] = torch.from_numpy(item["image"])
                items.append(item)
                progress.advance(task)
        return items

    def steps_per_epoch(self) -> int:
        steps = len(ShapeBucketBatchSampler(self.train_shapes, self.config.optim.batch_size, 0))
        return min(steps, self.config.optim.max_iters_per_epoch or steps)

    def train_epoch(self, optimizer, scheduler, scaler, epoch: int) -> dict[str, float]:
        self.dataset.transform.set_random_state(seed=self.config.seed + epoch)  # same augmentations after --resume
        sampler = ShapeBucketBatchSampler(self.train_shapes, self.config.optim.batch_size, self.config.seed + epoch)
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, collate_fn=detection_collate,
                                             **_loader_workers(self.config, epoch))
        with epoch_progress(epoch, self.steps_per_epoch()) as on_step:
            return train_detector_one_epoch(self.detector, optimizer, scheduler, loader, self.device, epoch, scaler,
                                            self.config.optim.grad_clip, self.config.optim.max_iters_per_epoch, on_step,
                                            self.config.optim.freeze_batchnorm)

    def validate(self) -> dict[str, float]:
        if not self.val_items:
            return {}
        predictor = DetectorPredictor(self.model, self.config.detector, self.classes, self.config.decode, self.device)
        return evaluate_detector(predictor, self.val_items, self.target, self.ground_truth)



class _ClassifierTraining:
    def __init__(self, config: TrainConfig, device: torch.device, train_samples, val_samples) -> None:
        self.config, self.device = config, device
        arch = config.classifier
        self.crop_hw = (arch.crop_height_px, arch.crop_width_px)
        self.model = network_for(config).to(device)
        crops, labels, _ = root_count_crops(train_samples, self.crop_hw)
        val_crops, val_labels, _ = root_count_crops(val_samples, self.crop_hw)
        console.print(f"root-count crops: train {len(labels)} (by class {np.bincount(labels, minlength=3).tolist()}), "
                      f"validation {len(val_labels)}")
        items = [{"image": torch.from_numpy(c), "label": int(lab)} for c, lab in zip(crops, labels, strict=True)]
        self.dataset = Dataset(items, transform=crop_train_transform(config.seed))
        self.val = [{"image": torch.from_numpy(c), "label": int(lab)} for c, lab in zip(val_crops, val_labels, strict=True)]

    def steps_per_epoch(self) -> int:
        steps = -(-len(self.dataset) // self.config.optim.batch_size)
        return min(steps, self.config.optim.max_iters_per_epoch or steps)

    def train_epoch(self, optimizer, scheduler, scaler, epoch: int) -> dict[str, float]:
        self.dataset.transform.set_random_state(seed=self.config.seed + epoch)
        generator = torch.Generator().manual_seed(self.config.seed + epoch)
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.config.optim.batch_size, shuffle=True,
                                             generator=generator, **_loader_workers(self.config, epoch))
        with epoch_progress(epoch, self.steps_per_epoch()) as on_step:
            return train_classifier_one_epoch(self.model, optimizer, scheduler, loader, self.device, epoch, scaler,
                                              self.config.optim.grad_clip, self.config.optim.max_iters_per_epoch, on_step,
                                              self.config.optim.freeze_batchnorm)

    def validate(self) -> dict[str, float]:
        if not self.val:
            return {}
        metrics, _, _ = evaluate_classifier(self.model, self.val, self.device)
        return metrics


def verified_metrics(headline: dict[str, float], classes: tuple[FindingClass, ...]) -> dict[str, float]:
    """A verifier's figures: those of the classes it verifies (the rest are its finding
    detector's, unchanged by it)."""
    names = tuple(f"_{c.value}" for c in classes)
    return {k: v for k, v in headline.items() if k.endswith(names)}


class _VerifierTraining:
    """The finding verifier: examples mined once with the models of
    ``verification.candidates_from`` (training and validation images), crops drawn with
    a fixed share of true ones; validated by the AP50 of the validation candidates
    re-scored at ``verify.weight`` (and, for reference, with the detector's own scores)."""

    def __init__(self, config: TrainConfig, device: torch.device, train_samples, val_samples,
                 report: DataReport) -> None:
        self.config, self.device = config, device
        self.classes = config.verification.classes
        self.model = network_for(config).to(device)
        reader = candidate_reader(config.verification)
        self.candidate_files = [config.verification.candidates_from / part.model.card.onnx_file
                                for part in (reader.teeth, reader.findings, reader.roots) if part is not None]
        train = self._mine(reader, train_samples, "reading training images", None)
        self.val_examples = self._mine(reader, val_samples, "reading validation images", 0)
        report.verifier_examples = {"train": train.counts(), "validation": self.val_examples.counts()}
        console.print(f"verifier examples: {report.verifier_examples}")
        self.labels = train.labels
        self.dataset = verifier_dataset(train, self.classes, config.verifier.crop_px, config.seed)
        self.val_samples = val_samples
        column = {cls: i for i, cls in enumerate(self.classes)}
        # Validation reads the detector's candidates only (with true_box_copies 0 there are no others).
        detected = [c for c in self.val_examples.candidates if c.score is not None]
        self.val_columns = np.array([column[c.finding_class] for c in detected], np.int64)
        self.val_detected = detected
        own = candidate_readings(val_samples, detected, np.array([c.score for c in detected], np.float64))
        self.detector_ap50 = classes_ap50(val_samples, own, self.classes) if val_samples else {}

    def _mine(self, reader: DentalReader, samples, label: str, copies: int | None) -> VerifierExamples:
        with _progress() as progress:
            task = progress.add_task(label, total=len(samples), loss="-")
            return mine_examples(reader, samples, self.config.verifier, self.config.verification, self.config.seed,
                                 true_box_copies=copies, on_progress=lambda n: progress.update(task, completed=n))

    def _sampler(self, epoch: int) -> torch.utils.data.WeightedRandomSampler:
        return balanced_sampler(self.labels, self.config.verification.positive_fraction, self.config.seed + epoch)

    def steps_per_epoch(self) -> int:
        steps = -(-self._sampler(0).num_samples // self.config.optim.batch_size)
        return min(steps, self.config.optim.max_iters_per_epoch or steps)

    def train_epoch(self, optimizer, scheduler, scaler, epoch: int) -> dict[str, float]:
        self.dataset.transform.set_random_state(seed=self.config.seed + epoch)
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.config.optim.batch_size,
                                             sampler=self._sampler(epoch), **_loader_workers(self.config, epoch))
        with epoch_progress(epoch, self.steps_per_epoch()) as on_step:
            return train_classifier_one_epoch(self.model, optimizer, scheduler, loader, self.device, epoch, scaler,
                                              self.config.optim.grad_clip, self.config.optim.max_iters_per_epoch, on_step,
                                              self.config.optim.freeze_batchnorm, loss_of=verifier_loss)

    def validate(self) -> dict[str, float]:
        if not self.val_detected:
            return {}
        logits = verifier_logits(self.model, self.val_examples.crops, self.val_columns,
                                 self.config.verify.mirrored, self.device)
        scores = combined_scores(self.val_detected, sigmoid(logits), self.config.verify.weight,
                                 self.config.verify.min_score)
        aps = classes_ap50(self.val_samples, candidate_readings(self.val_samples, self.val_detected, scores), self.classes)
        metrics = {f"ap50_{k}": v for k, v in aps.items()}
        metrics.update({f"ap50_{k}_detector": v for k, v in self.detector_ap50.items()})
        metrics["selection"] = mean_ap50(aps)
        return metrics
