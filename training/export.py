"""Export a training checkpoint to ONNX with its model card (``dxv export``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import yaml

from evaluation.evaluate import read_all
from evaluation.thresholds import (
    CANDIDATE_THRESHOLDS,
    choose_threshold,
    class_f1_curves,
    class_thresholds,
    pathology_f1_curve,
    teeth_f1,
)
from models.config_loading import config_from_data
from models.errors import DxvError
from models.inference import DentalReader
from models.model_card import InputContract, ModelCard, ModelKey, QuantizedFile, get_model_card, sha256_of
from models.networks import FindingVerifier, RootCountClassifier, build_detector
from models.onnx_export import (
    CLASSIFIER_OUTPUTS,
    DETECTOR_OUTPUTS,
    VERIFIER_INPUT,
    VERIFIER_OUTPUTS,
    export_classifier,
    export_detector,
    export_verifier,
    finalise_card,
)
from models.quantize import WeightBits, quantize_int8, scheme
from models.tasks import class_names, task_classes
from training.checkpoints import load_checkpoint
from training.config import TrainConfig
from training.data import DataReport, load_samples, split_samples

ROOT_COUNT_CLASS_NAMES = ("roots-1", "roots-2", "roots-3+")


def card_fields(config: TrainConfig, run_id: str | None) -> dict:
    base = {"key": config.model, "registered_name": config.name, "version": config.version_label,
            "kinds_served": config.kinds_served, "training_run_id": run_id}
    if config.is_detector:
        return {**base, "task": "detection", "classes": class_names(config.detector_task),
                "input": InputContract(long_side_px=config.long_side_px, teeth_region_margin=config.teeth_region_margin),
                "outputs": DETECTOR_OUTPUTS,
                "detector": config.detector, "decode": config.decode}
    if config.is_verifier:
        arch = config.verifier
        return {**base, "task": "verification", "classes": tuple(c.value for c in config.verification.classes),
                "input": InputContract(name=VERIFIER_INPUT, channels=arch.channels, crop_hw_px=(arch.crop_px, arch.crop_px)),
                "outputs": VERIFIER_OUTPUTS, "verifier": arch, "verify": config.verify}
    crop = (config.classifier.crop_height_px, config.classifier.crop_width_px)
    return {**base, "kinds_served": tuple(k for k in config.kinds_served if k.value != "bitewing"),
            "task": "classification", "classes": ROOT_COUNT_CLASS_NAMES, "input": InputContract(crop_hw_px=crop),
            "outputs": CLASSIFIER_OUTPUTS, "classifier": config.classifier}


def export_model(config: TrainConfig, model, out_dir: Path, run_id: str | None) -> tuple[Path, ModelCard]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{config.model.value}.onnx"
    if config.is_detector:
        export_detector(model, path)
    elif config.is_verifier:
        export_verifier(model, path, config.verifier.channels, config.verifier.crop_px, len(config.verification.classes))
    else:
        export_classifier(model, path, (config.classifier.crop_height_px, config.classifier.crop_width_px))
    return path, finalise_card(card_fields(config, run_id), path)


def network_for(config: TrainConfig):
    if config.is_detector:
        return build_detector(config.detector, len(task_classes(config.detector_task)))
    if config.is_verifier:
        return FindingVerifier(config.verifier, len(config.verification.classes))
    return RootCountClassifier(config.classifier)


class ExportError(DxvError):
    code = "export.invalid"


def export_checkpoint(checkpoint_path: Path, out_dir: Path, tune_threshold: bool = True,
                      decode_overrides: tuple[str, ...] = ()) -> ModelCard:
    """ONNX + card from a checkpoint; with ``tune_threshold`` the operating threshold is
    chosen on the run's validation split (rebuilt from the config it was trained with),
    exactly as at the end of ``dxv train``. ``decode_overrides`` ('decode.KEY=VALUE') change
    how the outputs are decoded, e.g. ``decode.test_time_flip=[panoramic]``; the network
    is the checkpoint's, so nothing else may change."""
    _check_decode_overrides(decode_overrides)
    checkpoint = load_checkpoint(checkpoint_path)
    config = config_from_data(TrainConfig, yaml.safe_load(checkpoint.config_yaml), decode_overrides)
    model = network_for(config)
    model.load_state_dict(checkpoint.model_state)
    path, card = export_model(config, model, out_dir, checkpoint.run_id)
    if not tune_threshold or not (config.is_verifier or config.is_detector):
        return card  # the root counter has no operating threshold
    _, val_samples = split_samples(load_samples(config.data, DataReport()), config.data.val_fraction,
                                   config.data.split_seed)
    if config.is_detector:
        return tune_operating_threshold(card, path, val_samples)
    from training.verifier_data import candidate_reader, mine_examples

    examples = mine_examples(candidate_reader(config.verification), val_samples, config.verifier,
                             config.verification, config.seed, true_box_copies=0)
    return tune_verifier(card, path, val_samples, examples.candidates, examples.crops, config)


def _check_decode_overrides(overrides: tuple[str, ...]) -> None:
    for text in overrides:
        if not text.strip().startswith("decode."):
            raise ExportError(f"only how outputs are decoded may change (decode.KEY=VALUE), not {text!r}")


def redecode(model_dir: Path, key: ModelKey, overrides: tuple[str, ...], version: str,
             tune_samples: list | None) -> ModelCard:
    """Change how an exported detector's outputs are decoded (``decode.*``, e.g. the
    test-time views) without touching its network: the card in ``model_dir`` gets the new
    decoding and ``version``, its held-out metrics are cleared (they were measured with the
    old decoding: run ``dxv eval --write-card-metrics`` again), and with ``tune_samples``
    the operating threshold is chosen again on them, read with every model in
    ``model_dir`` as serving reads (the finding detector on the teeth's region)."""
    _check_decode_overrides(overrides)
    card = get_model_card(key, model_dir)
    if card.decode is None:
        raise ExportError(f"{key.value} is not a detector: it has no decoding to change")
    fields = card.model_dump(mode="json")
    changed = config_from_data(ModelCard, {**fields, "version": version, "metrics": {}, "metrics_dataset": None},
                               overrides, where=f" for {key.value}")
    onnx_path = model_dir / card.onnx_file
    fields = changed.model_dump(mode="json", exclude={"onnx_file", "sha256", "size_bytes"})
    changed = finalise_card(fields, onnx_path)
    if tune_samples:
        changed = tune_operating_threshold(changed, onnx_path, tune_samples)
    return changed


def quantize_model(model_dir: Path, key: ModelKey, version: str, samples: list, dataset_name: str,
                   weight_bits: WeightBits = 7) -> ModelCard:
    """Give a model folder's ``key`` model an int8 copy (``<key>.int8.onnx``) for CPUs,
    its activation ranges taken on ``samples`` prepared as serving prepares them (read with
    every model in the folder, in float: the finding detector on the teeth's region, the
    root counter on the teeth found). The card gets the copy and ``version``; its held-out
    metrics are cleared (on a CPU, serving now runs the copy: run ``dxv eval
    --write-card-metrics`` again). ``weight_bits``: see ``models.quantize``."""
    card = get_model_card(key, model_dir)
    if key is ModelKey.FINDING_VERIFIER:
        raise ExportError("the finding verifier has no int8 copy: it reads a few dozen small crops per radiograph "
                          "and runs in float")
    if not samples:
        raise ExportError("quantizing needs calibration radiographs (--calibrate-on DATASET)")
    reader = DentalReader.from_directory(model_dir, precision="fp32", threads=None)
    inputs = list(calibration_inputs(reader, key, samples))
    if not inputs:
        raise ExportError(f"no calibration input for {key.value} in {len(samples)} radiographs"
                          + (" (the root counter reads the teeth found: put the tooth detector in the folder)"
                             if key is ModelKey.ROOT_COUNT else ""))
    out_path = model_dir / f"{key.value}.int8.onnx"
    quantize_int8(model_dir / card.onnx_file, out_path, inputs, card.input.name, weight_bits)
    copy = QuantizedFile(onnx_file=out_path.name, sha256=sha256_of(out_path), size_bytes=out_path.stat().st_size,
                         scheme=scheme(weight_bits), calibration=dataset_name, weight_bits=weight_bits)
    fields = card.model_dump(mode="json", exclude={"onnx_file", "sha256", "size_bytes"})
    return finalise_card({**fields, "version": version, "metrics": {}, "metrics_dataset": None,
                          "int8": copy.model_dump(mode="json")}, model_dir / card.onnx_file)


def calibration_inputs(reader: DentalReader, key: ModelKey, samples: list) -> Iterator[np.ndarray]:
    """The network input ``key``'s model gets for each sample, as serving prepares it (the
    root counter's: that radiograph's tooth crops, one batch)."""
    for sample in samples:
        image = sample.load()
        if key is ModelKey.TOOTH_NUMBERING:
            assert reader.teeth is not None
            yield reader.teeth.network_input(image, sample.kind)[0]
            continue
        reading = reader.read("calibration", image, sample.kind)
        if key is ModelKey.FINDINGS:
            assert reader.findings is not None
            region = reader.findings_region(image, sample.kind, list(reading.teeth))
            yield reader.findings.network_input(image, sample.kind, region)[0]
        elif reading.teeth and reader.roots is not None and sample.kind in reader.roots.model.card.kinds_served:
            yield reader.roots.network_input(image, list(reading.teeth))


def tune_operating_threshold(card: ModelCard, onnx_path: Path, val_samples: list) -> ModelCard:
    """Set a detector's operating threshold to the best validation F1, and a finding
    detector's per-class thresholds to each class's best F1 (the ONNX file and its hash are
    unchanged; the thresholds live in the card). The card's thresholds are for its own
    scores: a finding verifier in the folder is not read."""
    if card.decode is None or not val_samples:
        return card
    reader = DentalReader.from_directory(onnx_path.parent, without=(ModelKey.FINDING_VERIFIER,))
    readings = read_all(reader, val_samples)
    own: dict[str, float] = {}
    if card.key is ModelKey.TOOTH_NUMBERING:
        curve = {t: teeth_f1(val_samples, readings, t) for t in CANDIDATE_THRESHOLDS}
    else:  # one pass over the candidates gives both the per-class and the general threshold
        curves = class_f1_curves(val_samples, readings)
        curve = pathology_f1_curve(curves)
        own = class_thresholds(curves)
    threshold = choose_threshold(curve)
    print(f"operating threshold {threshold} (validation F1 {curve[threshold]:.3f})")
    if own:
        print("per class: " + ", ".join(f"{k} {v}" for k, v in own.items()))
    decode = card.decode.model_copy(update={"operating_threshold": threshold, "class_thresholds": own})
    fields = card.model_dump(mode="json", exclude={"onnx_file", "sha256", "size_bytes"})
    return finalise_card({**fields, "decode": decode.model_dump(mode="json")}, onnx_path)



def tune_verifier(card: ModelCard, onnx_path: Path, val_samples: list, candidates: Sequence, crops: np.ndarray,
                  config: TrainConfig) -> ModelCard:
    """A finding verifier's fusion weight (the best validation AP50 of the verified
    classes among ``verification.weights``) and its classes' operating thresholds (each
    one's best F1 on the combined scores), from the validation split's candidates read by
    the exported file (the ONNX file and its hash are unchanged; both live in the card)."""
    from evaluation.verification import candidate_readings, choose_weight, combined_scores, verified_thresholds
    from models.inference import LoadedModel, Verifier

    detected = [i for i, c in enumerate(candidates) if c.score is not None]
    chosen = [candidates[i] for i in detected]
    if not chosen or not val_samples:
        return card
    verifier = Verifier(LoadedModel.load(onnx_path))
    probabilities = verifier.crop_probabilities(crops[detected], [c.finding_class for c in chosen])
    classes = config.verification.classes
    weight, at = choose_weight(val_samples, chosen, probabilities, classes, config.verification.weights,
                               card.verify.min_score if card.verify else config.verify.min_score)
    print("fusion weight " + ", ".join(f"{w}: AP50 {v:.3f}" for w, v in at.items()) + f" -> {weight}")
    assert card.verify is not None
    readings = candidate_readings(val_samples, chosen, combined_scores(chosen, probabilities, weight, card.verify.min_score))
    thresholds = verified_thresholds(val_samples, readings, classes)
    print("operating thresholds: " + ", ".join(f"{k} {v}" for k, v in thresholds.items()))
    verify = card.verify.model_copy(update={"weight": weight, "class_thresholds": thresholds})
    fields = card.model_dump(mode="json", exclude={"onnx_file", "sha256", "size_bytes"})
    return finalise_card({**fields, "verify": verify.model_dump(mode="json")}, onnx_path)
