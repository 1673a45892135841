"""Hard negatives: which reported boxes are false, the file, its checks, the items that
carry them, the recipe fields, and mining + training through the real CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from datasets.transforms import NEGATIVE_FOCUS_KEY
from datasets.transforms import from_monai_boxes as to_xyxy
from models.config_loading import ConfigError, load_config
from models.findings import FindingClass
from serving.cli import main as dxv
from training.config import TrainConfig
from training.data import DataReport, attach_hard_negatives
from training.hard_negatives import (
    HardNegativesError,
    MinedNegatives,
    false_finding_boxes,
    read_hard_negatives,
    write_hard_negatives,
)

CARIES, LESION = FindingClass.CARIES, FindingClass.PERIAPICAL_LESION


def test_false_findings_are_the_scored_boxes_of_the_class_that_overlap_no_annotation_of_it():
    annotated = [(CARIES, (10, 10, 20, 20)), (LESION, (100, 100, 130, 130))]
    reported = [
        (CARIES, (11, 11, 21, 21), 0.9),     # the annotated caries, a little off: not a negative
        (CARIES, (100, 100, 130, 130), 0.8),  # on the lesion, but no caries there: a negative
        (CARIES, (200, 10, 210, 20), 0.5),    # nothing there: a negative
        (CARIES, (300, 10, 310, 20), 0.29),   # below the score asked for
        (LESION, (400, 10, 430, 40), 0.9),    # a class not asked for
    ]
    assert false_finding_boxes(reported, annotated, [CARIES], 0.3) == [(100, 100, 130, 130), (200, 10, 210, 20)]
    assert false_finding_boxes(reported, annotated, [CARIES, LESION], 0.3)[-1] == (400, 10, 430, 40)
    # At the line: IoU 0.1 with an annotated caries is that caries; 0.099 is free.
    assert not false_finding_boxes([(CARIES, (0, 0, 10, 1.0), 0.9)], [(CARIES, (0, 0, 10, 10))], [CARIES], 0.3)
    assert false_finding_boxes([(CARIES, (0, 0, 10, 0.99), 0.9)], [(CARIES, (0, 0, 10, 10))], [CARIES], 0.3)


def test_the_file_round_trips_and_a_bad_one_is_refused_clearly(tmp_path):
    mined = MinedNegatives({"a": ((1.0, 2.0, 3.5, 4.25),), "b": ((0.0, 0.0, 9.0, 9.0), (5.0, 5.0, 7.0, 8.0))},
                           (CARIES,), 0.3, (("findings", "0.5.0"),), 5)
    path = tmp_path / "neg.json"
    write_hard_negatives(path, mined, "synthetic seed 1")
    boxes = read_hard_negatives(path)
    assert set(boxes) == {"a", "b"} and boxes["b"].shape == (2, 4)
    np.testing.assert_allclose(boxes["a"], [[1.0, 2.0, 3.5, 4.25]])
    assert json.loads(path.read_text())["model_versions"] == {"findings": "0.5.0"}
    for text, message in (("{", "not JSON"), ('{"images": {}}', "not a hard negatives file"),
                          ('{"format": "dxv-hard-negatives/1", "images": {"a": [[1, 2, 3]]}}', "boxes must be"),
                          ('{"format": "dxv-hard-negatives/1", "images": {"a": [[5, 2, 3, 4]]}}', "empty")):
        path.write_text(text)
        with pytest.raises(HardNegativesError, match=message):
            read_hard_negatives(path)
    with pytest.raises(HardNegativesError, match="not found"):
        read_hard_negatives(tmp_path / "missing.json")


def test_items_carry_their_negatives_at_their_own_scale_and_foreign_files_are_refused():
    items = [{"image_id": "a", "scale_yx": (0.5, 2.0)}, {"image_id": "b", "scale_yx": (1.0, 1.0)}]
    report = DataReport()
    attach_hard_negatives(items, {"a": np.asarray([[10, 10, 20, 30]], np.float32), "z": np.zeros((1, 4))}, report)
    np.testing.assert_allclose(to_xyxy(items[0][NEGATIVE_FOCUS_KEY]), [[20, 5, 40, 15]])
    assert len(items[1][NEGATIVE_FOCUS_KEY]) == 0
    assert report.as_dict()["hard_negatives"] == {"images": 1, "boxes": 1}
    with pytest.raises(HardNegativesError, match="none of the training images"):
        attach_hard_negatives(items, {"z": np.asarray([[1, 1, 2, 2]], np.float32)}, DataReport())


def _recipe(*extra):
    return load_config(TrainConfig, None, ["model=findings", "augment.patch_px=96", *extra])


def test_recipe_fields_go_together_and_share_the_patches():
    config = _recipe("data.hard_negatives=neg.json", "augment.patch_hard_negative_prob=0.2",
                     "augment.patch_focus_prob=0.6", "augment.patch_tooth_focus_prob=0.2")
    assert config.augment.patch_hard_negative_prob == 0.2
    for extra, message in ((["data.hard_negatives=neg.json"], "go together"),
                           (["augment.patch_hard_negative_prob=0.2"], "go together"),
                           (["data.hard_negatives=neg.json", "augment.patch_hard_negative_prob=0.3",
                             "augment.patch_focus_prob=0.6", "augment.patch_tooth_focus_prob=0.2"], "at most 1")):
        with pytest.raises(ConfigError, match=message):
            _recipe(*extra)
    with pytest.raises(ConfigError, match="needs patch_px"):
        load_config(TrainConfig, None, ["model=findings", "augment.patch_hard_negative_prob=0.2",
                                        "data.hard_negatives=neg.json"])
    with pytest.raises(ConfigError, match="finding detector only"):
        load_config(TrainConfig, None, ["model=tooth-numbering", "augment.patch_px=96",
                                        "augment.patch_hard_negative_prob=0.2", "data.hard_negatives=neg.json"])


@pytest.mark.slow
def test_mine_with_the_shipped_models_then_train_on_the_negatives(tmp_path, mlflow_store, capsys):
    data = "synthetic:seed=5,periapical=4,panoramic=2"
    out = tmp_path / "neg.json"
    assert dxv(["models", "mine-negatives", "models/shipped", data, "--out", str(out), "--min-score", "0.05"]) == 0
    assert "hard negatives on" in capsys.readouterr().out
    mined = read_hard_negatives(out)
    assert mined, "the shipped detector reports some low-scored caries where there are none"
    from evaluation.cli import synthetic_images

    truth = {s.image_id: [f.box_xyxy_px for f in s.annotations.findings if f.finding_class is CARIES]
             for s in synthetic_images(data)[0]}
    assert set(mined) <= set(truth)
    from models.postprocess import box_iou

    for image_id, boxes in mined.items():
        if truth[image_id]:
            assert box_iou(boxes, np.asarray(truth[image_id])).max() < 0.1

    config = tmp_path / "tiny.yaml"
    config.write_text(f"""
model: findings
output_dir: {tmp_path / 'runs'}
long_side_px: {{periapical: 192, panoramic: 320}}
detector: {{block_inplanes: [8, 16, 32, 64], fpn_channels: 16}}
data:
  sources: [{{format: synthetic, counts: {{periapical: 4, panoramic: 2}}, seed: 5}}]
  val_fraction: 0.34
  hard_negatives: {out}
augment: {{patch_px: 96, patch_focus_prob: 0.5, patch_hard_negative_prob: 0.5}}
optim: {{epochs: 1, batch_size: 2, max_iters_per_epoch: 2, warmup_iters: 2}}
tracking: {{experiment: hard-negatives-test}}
""")
    assert dxv(["train", str(config)]) == 0
    run = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("hard-negatives-test").experiment_id])[0]
    report = json.loads(Path(MlflowClient().download_artifacts(run.info.run_id, "data_report.json",
                                                               str(tmp_path))).read_text())
    assert report["hard_negatives"]["boxes"] > 0 and report["hard_negatives"]["images"] <= 4  # the training split's
    assert run.data.params["data.hard_negatives"] == str(out)
    logged = MlflowClient().download_artifacts(run.info.run_id, "hard_negatives.json", str(tmp_path / "logged"))
    assert read_hard_negatives(Path(logged)).keys() == mined.keys()
