"""Export a training checkpoint to ONNX with its model card (``dxv export``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from models.model_card import InputContract, ModelCard, ModelKey
from models.networks import RootCountClassifier, build_detector
from models.onnx_export import CLASSIFIER_OUTPUTS, DETECTOR_OUTPUTS, export_classifier, export_detector, finalise_card
from models.tasks import DetectorTask, class_names, task_classes
from training.checkpoints import load_checkpoint
from training.config import TrainConfig

ROOT_COUNT_CLASS_NAMES = ("roots-1", "roots-2", "roots-3+")


def card_fields(config: TrainConfig, run_id: str | None) -> dict:
    base = {"key": config.model, "registered_name": config.name, "version": config.version_label,
            "kinds_served": config.kinds_served, "training_run_id": run_id}
    if config.is_detector:
        task = DetectorTask.TEETH if config.model is ModelKey.TOOTH_NUMBERING else DetectorTask.FINDINGS
        return {**base, "task": "detection", "classes": class_names(task),
                "input": InputContract(long_side_px=config.long_side_px), "outputs": DETECTOR_OUTPUTS,
                "detector": config.detector, "decode": config.decode}
    crop = (config.classifier.crop_height_px, config.classifier.crop_width_px)
    return {**base, "kinds_served": tuple(k for k in config.kinds_served if k.value != "bitewing"),
            "task": "classification", "classes": ROOT_COUNT_CLASS_NAMES, "input": InputContract(crop_hw_px=crop),
            "outputs": CLASSIFIER_OUTPUTS, "classifier": config.classifier}


def export_model(config: TrainConfig, model, out_dir: Path, run_id: str | None) -> tuple[Path, ModelCard]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{config.model.value}.onnx"
    if config.is_detector:
        export_detector(model, path)
    else:
        export_classifier(model, path, (config.classifier.crop_height_px, config.classifier.crop_width_px))
    return path, finalise_card(card_fields(config, run_id), path)


def network_for(config: TrainConfig):
    if config.is_detector:
        task = DetectorTask.TEETH if config.model is ModelKey.TOOTH_NUMBERING else DetectorTask.FINDINGS
        return build_detector(config.detector, len(task_classes(task)))
    return RootCountClassifier(config.classifier)


def export_checkpoint(checkpoint_path: Path, out_dir: Path) -> ModelCard:
    checkpoint = load_checkpoint(checkpoint_path)
    config = TrainConfig.model_validate(yaml.safe_load(checkpoint.config_yaml))
    model = network_for(config)
    model.load_state_dict(checkpoint.model_state)
    _, card = export_model(config, model, out_dir, checkpoint.run_id)
    return card
