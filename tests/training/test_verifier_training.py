"""Training the finding verifier: its examples (the detector's candidates and jittered
true boxes), the balanced draws, its loss, the choice of fusion weight, and a short real
run through ``dxv train`` to a registered model that a reader uses."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from datasets.samples import synthetic_samples
from evaluation.verification import candidate_readings, choose_weight, classes_ap50, combined_scores
from models.config_loading import ConfigError, load_config
from models.findings import FindingClass
from models.inference import DentalReader
from models.model_card import SHIPPED_DIR, ModelKey, verify_card
from models.postprocess import box_iou
from models.radiographs import RadiographKind
from training.config import TrainConfig, VerificationConfig
from training.engine import verifier_loss
from training.train import main
from training.verifier_data import (
    Candidate,
    VerifierDataError,
    balanced_sampler,
    candidate_reader,
    mine_examples,
    verifier_dataset,
)

TINY = ["verifier.block_inplanes=[4, 8, 8, 16]", "verifier.crop_px=24",
        "verifier.contexts=[{box_multiple: 3, min_side_px: 12}, {box_multiple: 6, min_side_px: 24}]"]


def _samples():
    return synthetic_samples({RadiographKind.PERIAPICAL: 2, RadiographKind.BITEWING: 2}, seed=5)


def test_examples_are_the_detectors_candidates_labelled_by_overlap_plus_jittered_true_boxes():
    config = VerificationConfig(true_box_copies=3, candidate_min_score=0.1)
    arch = load_config(TrainConfig, None, ["model=finding-verifier", *TINY]).verifier
    reader = candidate_reader(config)
    assert reader.verifier is None  # the candidates are the detector's own
    samples = _samples()
    examples = mine_examples(reader, samples, arch, config, seed=3)
    assert examples.crops.shape == (len(examples.candidates), 2, 24, 24)
    truth = {s.image_id: np.array([f.box_xyxy_px for f in s.annotations.findings if f.finding_class is FindingClass.CARIES],
                                  np.float32).reshape(-1, 4) for s in samples}
    detected = [c for c in examples.candidates if c.score is not None]
    copies = [c for c in examples.candidates if c.score is None]
    assert detected and copies and all(c.score >= 0.1 and c.finding_class is FindingClass.CARIES for c in detected)
    for c in examples.candidates:
        best = box_iou(np.array([c.box_xyxy_px], np.float32), truth[c.image_id]).max(initial=0.0)
        assert c.true == (best >= 0.5)
    assert all(c.true for c in copies)
    assert len(copies) <= 3 * sum(len(t) for t in truth.values())
    assert examples.counts() == {"candidates": len(detected), "true_candidates": sum(c.true for c in detected),
                                 "true_box_copies": len(copies)}
    again = mine_examples(reader, samples, arch, config, seed=3)
    assert again.candidates == examples.candidates and np.array_equal(again.crops, examples.crops)
    items = verifier_dataset(examples, config.classes, arch.crop_px, seed=0)
    assert tuple(items[0]["image"].shape) == (2, 24, 24)


def test_draws_hold_the_positive_fraction_and_need_both_kinds():
    labels = np.array([1] * 10 + [0] * 290, np.float32)
    sampler = balanced_sampler(labels, 0.25, seed=0)
    drawn = labels[list(sampler)]
    assert len(drawn) == round(290 / 0.75)
    assert 0.2 < drawn.mean() < 0.3
    with pytest.raises(VerifierDataError, match="true and false"):
        balanced_sampler(np.zeros(5, np.float32), 0.25, seed=0)


def test_loss_answers_for_each_crops_own_class_only():
    logits = torch.tensor([[5.0, -9.0], [-9.0, 5.0]], requires_grad=True)
    batch = {"column": torch.tensor([0, 1]), "label": torch.tensor([1.0, 1.0])}
    low = verifier_loss(logits, batch)
    assert low.item() < 0.01  # the other column's -9 does not count
    swapped = verifier_loss(logits, {"column": torch.tensor([1, 0]), "label": torch.tensor([1.0, 1.0])})
    assert swapped.item() > 5


def test_fusion_weight_is_chosen_by_ap50_with_ties_to_the_smaller():
    samples = _samples()
    truth = [(s, f) for s in samples for f in s.annotations.findings if f.finding_class is FindingClass.CARIES]
    assert truth
    # Each true caries found with a low detector score, and a false candidate scored higher beside it.
    candidates, probabilities = [], []
    for s, f in truth:
        x0, y0, x1, y1 = f.box_xyxy_px
        candidates.append(Candidate(s.image_id, s.kind, FindingClass.CARIES, f.box_xyxy_px, 0.1, True))
        probabilities.append(0.99)
        candidates.append(Candidate(s.image_id, s.kind, FindingClass.CARIES, (x0 + 200, y0, x1 + 200, y1), 0.95, False))
        probabilities.append(0.01)
    probs = np.array(probabilities)
    own = classes_ap50(samples, candidate_readings(samples, candidates, np.array([c.score for c in candidates])),
                       [FindingClass.CARIES])
    weight, at = choose_weight(samples, candidates, probs, [FindingClass.CARIES], (0.2, 0.5, 0.9), min_score=0.2)
    # 0.2 still ranks the false one first; 0.5 and 0.9 both put every true one first: the smaller wins.
    assert own["caries"] < 0.6 and at[0.2] < 0.6
    assert at[0.5] == pytest.approx(1.0) and at[0.9] == pytest.approx(1.0) and weight == 0.5
    # Under min_score nothing changes.
    kept = combined_scores(candidates, probs, 0.9, min_score=0.96)
    assert np.array_equal(kept, [c.score for c in candidates])


def test_verification_settings_are_checked():
    with pytest.raises(ConfigError, match="each once"):
        load_config(TrainConfig, None, ["model=finding-verifier", "verification.classes=[caries, caries]"])
    with pytest.raises(ConfigError, match="weights"):
        load_config(TrainConfig, None, ["model=finding-verifier", "verification.weights=[]"])


@pytest.mark.slow
def test_verifier_run_is_tracked_registered_and_serves_with_the_detector(tmp_path, mlflow_store):
    config = load_config(TrainConfig, None, [
        "model=finding-verifier", f"output_dir={tmp_path / 'runs'}", "tracking.experiment=test", *TINY,
        "data.sources=[{format: synthetic, counts: {periapical: 6, bitewing: 4, panoramic: 1}, seed: 5}]",
        "data.val_fraction=0.4", "optim.epochs=2", "optim.batch_size=16", "optim.max_iters_per_epoch=3",
        "optim.warmup_iters=2", "verification.true_box_copies=2"])
    result = main(config, run_dir=tmp_path / "runs" / "verifier")
    card = result.card
    assert card is not None and card.key is ModelKey.FINDING_VERIFIER and card.task == "verification"
    verify_card(card, result.onnx_path)
    assert card.verify.weight in config.verification.weights
    assert set(card.verify.class_thresholds) <= {"caries"}
    assert card.metrics and all(k.endswith("_caries") for k in card.metrics)
    assert {"val_ap50_caries", "val_ap50_caries_detector", "train_loss"} <= set(result.history[-1])
    client = MlflowClient()
    assert [str(v.version) for v in client.search_model_versions("name='dxv-finding-verifier'")] == ["1"]
    report = json.loads(Path(client.download_artifacts(result.run_id, "data_report.json", str(tmp_path))).read_text())
    assert report["verifier_examples"]["train"]["candidates"] > 0
    detector_files = [SHIPPED_DIR / f"{k.value}.onnx" for k in (ModelKey.TOOTH_NUMBERING, ModelKey.FINDINGS)]
    reader = DentalReader.from_files([*detector_files, result.onnx_path])
    assert reader.verifier is not None and ("finding-verifier", "0.1.0") in reader.model_versions()
