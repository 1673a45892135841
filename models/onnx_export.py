"""Export the networks (backbone + heads only) to ONNX with dynamic batch and image size,
and write the model card beside the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from monai.apps.detection.networks.retinanet_network import RetinaNet
from torch import nn

from models.model_card import ModelCard, card_path, sha256_of, write_card
from models.networks import DetectorForExport

OPSET = 17
DETECTOR_OUTPUTS = ("class_logits", "box_deltas")
CLASSIFIER_OUTPUTS = ("root_count_logits",)
VERIFIER_INPUT = "crops"
VERIFIER_OUTPUTS = ("verifier_logits",)


def export_detector(network: RetinaNet, path: str | Path, example_hw: tuple[int, int] = (256, 320)) -> Path:
    wrapper = DetectorForExport(network).eval().cpu()
    example = torch.rand(1, 1, *example_hw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about MONAI's NaN checks, which are inert in eval
        torch.onnx.export(
            wrapper, (example,), str(path), input_names=["image"], output_names=list(DETECTOR_OUTPUTS),
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                          "class_logits": {0: "batch", 1: "anchors"}, "box_deltas": {0: "batch", 1: "anchors"}},
            opset_version=OPSET, dynamo=False,
        )
    _fix_last_dims(path, {"class_logits": network.num_classes, "box_deltas": 4})
    return Path(path)


def _fix_last_dims(path: str | Path, sizes: dict[str, int]) -> None:
    """The tracer leaves the class dimension symbolic; state it so that the file itself
    says how many classes it predicts."""
    import onnx

    model = onnx.load(str(path))
    for output in model.graph.output:
        if output.name in sizes:
            dim = output.type.tensor_type.shape.dim[-1]
            dim.ClearField("dim_param")
            dim.dim_value = sizes[output.name]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_classifier(model: nn.Module, path: str | Path, crop_hw: tuple[int, int]) -> Path:
    model = model.eval().cpu()
    example = torch.rand(2, 1, *crop_hw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), input_names=["image"], output_names=list(CLASSIFIER_OUTPUTS),
            dynamic_axes={"image": {0: "batch"}, "root_count_logits": {0: "batch"}}, opset_version=OPSET, dynamo=False,
        )
    return Path(path)


def export_verifier(model: nn.Module, path: str | Path, channels: int, crop_px: int, num_classes: int) -> Path:
    model = model.eval().cpu()
    example = torch.rand(2, channels, crop_px, crop_px)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), input_names=[VERIFIER_INPUT], output_names=list(VERIFIER_OUTPUTS),
            dynamic_axes={VERIFIER_INPUT: {0: "batch"}, VERIFIER_OUTPUTS[0]: {0: "batch"}}, opset_version=OPSET,
            dynamo=False,
        )
    _fix_last_dims(path, {VERIFIER_OUTPUTS[0]: num_classes})
    return Path(path)


def finalise_card(card_fields: dict, onnx_path: str | Path) -> ModelCard:
    """Fill in the file's name, hash and size, validate and write ``<name>.card.json``."""
    path = Path(onnx_path)
    card = ModelCard.model_validate({**card_fields, "onnx_file": path.name, "sha256": sha256_of(path),
                                     "size_bytes": path.stat().st_size})
    write_card(card, card_path(path))
    return card
