"""Short real training runs: MLflow logging and registration, checkpoints and resume,
reproducibility, the stop on a non-finite loss, and external COCO data with a category map."""

import json
from pathlib import Path

import mlflow.onnx
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from datasets.annotations import FindingAnnotation, ImageAnnotations, ToothAnnotation
from datasets.coco import to_coco
from evaluation.thresholds import CANDIDATE_THRESHOLDS
from models.config_loading import ConfigError, load_config
from models.findings import FindingClass
from models.model_card import ModelKey, card_path, read_card, verify_card
from models.radiographs import RadiographKind
from training.config import TrainConfig
from training.data import DataReport, load_samples
from training.engine import NonFiniteLossError, build_training_detector, train_detector_one_epoch
from training.export import card_fields, export_checkpoint
from training.train import main

pytestmark = pytest.mark.slow

TINY = [
    "detector.block_inplanes=[8, 16, 32, 64]", "detector.fpn_channels=16",
    "long_side_px={periapical: 192, bitewing: 192, panoramic: 320}",
    "optim.batch_size=2", "optim.max_iters_per_epoch=2", "optim.warmup_iters=2", "data.val_fraction=0.34",
]


def _args(tmp_path, model):
    return [f"model={model}", f"output_dir={tmp_path / 'runs'}", "tracking.experiment=test",
            "data.sources=[{format: synthetic, counts: {periapical: 4, panoramic: 2}, seed: 5}]", *TINY]


def _config(tmp_path, model, *extra):
    return load_config(TrainConfig, None, [*_args(tmp_path, model), *extra])


def test_tooth_detector_run_is_tracked_registered_and_resumable(tmp_path, mlflow_store):
    config = _config(tmp_path, "tooth-numbering", "optim.epochs=1")
    first = main(config, run_dir=tmp_path / "runs" / "teeth")
    client = MlflowClient()
    run = client.get_run(first.run_id)
    assert run.data.params["model"] == "tooth-numbering"
    assert "val_numbering_accuracy" in run.data.metrics and "train_loss" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"config.yaml", "data_report.json", "model_card", "evaluation"} <= artifacts
    assert {a.path for a in client.list_artifacts(first.run_id, "evaluation")} >= {"evaluation/report.json",
                                                                                  "evaluation/summary.md"}
    versions = client.search_model_versions("name='dxv-tooth-numbering'")
    assert [str(v.version) for v in versions] == ["1"]
    assert versions[0].tags["sha256"] == first.card.sha256
    registered = mlflow.onnx.load_model("models:/dxv-tooth-numbering/1")
    assert [i.name for i in registered.graph.input] == ["image"]
    verify_card(read_card(card_path(first.onnx_path)), first.onnx_path)
    assert "tooth_recall" in first.card.metrics
    assert first.card.decode.operating_threshold in CANDIDATE_THRESHOLDS  # chosen on the validation split

    # Exporting the checkpoint again gives the same network and the same chosen threshold.
    again = export_checkpoint(first.run_dir / "best.pt", tmp_path / "again")
    assert again.sha256 != "" and again.decode.operating_threshold == first.card.decode.operating_threshold

    # Resume: continue the same run for a second epoch.
    longer = config.model_copy(update={"optim": config.optim.model_copy(update={"epochs": 2})})
    resumed = main(longer, resume=first.run_dir / "last.pt")
    assert resumed.run_id == first.run_id
    assert len(resumed.history) == 2 and resumed.history[0] == first.history[0]
    steps = [m.step for m in client.get_metric_history(first.run_id, "train_loss")]
    assert steps == [1, 2]


def test_export_may_change_only_the_decoding(tmp_path, mlflow_store):
    from training.export import ExportError

    config = _config(tmp_path, "findings", "optim.epochs=1", "tracking.enabled=false", "export_onnx=false")
    run = main(config, run_dir=tmp_path / "runs" / "findings")
    card = export_checkpoint(run.run_dir / "best.pt", tmp_path / "flip",
                             decode_overrides=("decode.test_time_flip=[periapical, panoramic]", "decode.fusion_iou=0.5"))
    assert card.decode.test_time_flip == (RadiographKind.PERIAPICAL, RadiographKind.PANORAMIC)
    assert card.decode.fusion_iou == 0.5
    verify_card(read_card(card_path(tmp_path / "flip" / "findings.onnx")), tmp_path / "flip" / "findings.onnx")
    plain = export_checkpoint(run.run_dir / "best.pt", tmp_path / "plain", tune_threshold=False)
    assert plain.decode.test_time_flip == () and plain.sha256 == card.sha256  # same network either way
    with pytest.raises(ExportError, match="only how outputs are decoded may change"):
        export_checkpoint(run.run_dir / "best.pt", tmp_path / "no", decode_overrides=("detector.fpn_channels=32",))


def test_same_seed_same_losses(tmp_path, mlflow_store):
    config = _config(tmp_path, "findings", "optim.epochs=1", "tracking.enabled=false", "export_onnx=false")
    a = main(config, run_dir=tmp_path / "a")
    b = main(config, run_dir=tmp_path / "b")
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]


def test_patch_training_repeats_panoramics_and_batches_equal_patches(tmp_path, mlflow_store):
    from datasets.transforms import Target
    from training.data import detection_item, detection_train_dataset, train_item_shapes

    config = _config(tmp_path, "findings", "optim.epochs=1", "tracking.enabled=false", "export_onnx=false",
                     "augment.patch_px=96", "augment.patches_per_image={panoramic: 3}")
    samples = load_samples(config.data, DataReport())
    items = [detection_item(s, Target.FINDINGS, config.long_side_px.get(s.kind), config) for s in samples]
    dataset = detection_train_dataset(items, Target.FINDINGS, config.augment, config.seed)
    assert len(dataset) == 4 + 2 * 3  # four periapicals once, two panoramics three times
    assert set(train_item_shapes(list(dataset.data), config.augment)) == {(1, 96, 96)}
    assert all(tuple(dataset[i]["image"].shape) == (1, 96, 96) for i in range(len(dataset)))
    a = main(config, run_dir=tmp_path / "a")
    b = main(config, run_dir=tmp_path / "b")
    assert np.isfinite(a.history[0]["train_loss"]) and a.history[0]["train_loss"] == b.history[0]["train_loss"]
    with pytest.raises(ConfigError, match="needs patch_px"):
        _config(tmp_path, "findings", "augment.patches_per_image={panoramic: 3}")


def test_patch_focus_weights_name_finding_classes_and_reach_every_caries_depth(tmp_path):
    from datasets.transforms import Target
    from models.tasks import FINDING_CLASSES
    from training.data import patch_label_weights

    config = _config(tmp_path, "findings", "augment.patch_px=96", "augment.patch_focus_weights={caries: 3, periapical_lesion: 2}")
    weights = patch_label_weights(Target.FINDINGS, config.augment)
    by_name = dict(zip((label.name for label in FINDING_CLASSES), weights, strict=True))
    assert by_name["caries-enamel"] == by_name["caries-dentin"] == by_name["caries-near-pulp"] == 3.0
    assert by_name["periapical-lesion"] == 2.0 and by_name["crown"] == 1.0
    assert patch_label_weights(Target.FINDINGS, _config(tmp_path, "findings", "augment.patch_px=96").augment) is None
    with pytest.raises(ValueError, match="finding detector only"):
        patch_label_weights(Target.TEETH, config.augment)
    with pytest.raises(ConfigError, match="patch_focus_weights"):
        _config(tmp_path, "findings", "augment.patch_px=96", "augment.patch_focus_weights={cavity: 3}")
    with pytest.raises(ConfigError, match="positive"):
        _config(tmp_path, "findings", "augment.patch_px=96", "augment.patch_focus_weights={caries: 0}")
    with pytest.raises(ConfigError, match="finding detector only"):  # refused on load, before any data is prepared
        _config(tmp_path, "tooth-numbering", "augment.patch_px=96", "augment.patch_focus_weights={caries: 3}")


def test_tooth_focused_patches_get_the_teeth_of_finding_items_and_are_checked_on_load(tmp_path):
    from datasets.transforms import TOOTH_FOCUS_KEY, Target
    from datasets.transforms import from_monai_boxes as to_xyxy
    from training.data import detection_item, detection_train_dataset

    config = _config(tmp_path, "findings", "augment.patch_px=96", "augment.patch_focus_prob=0.6",
                     "augment.patch_tooth_focus_prob=0.3")
    sample = load_samples(config.data, DataReport())[0]
    item = detection_item(sample, Target.FINDINGS, config.long_side_px.get(sample.kind), config)
    sy, sx = item["scale_yx"]
    expected = np.asarray([t.box_xyxy_px for t in sample.annotations.teeth], np.float32) * np.float32([sx, sy, sx, sy])
    assert len(expected) > 0
    np.testing.assert_allclose(to_xyxy(item[TOOTH_FOCUS_KEY]), expected, rtol=1e-6)
    assert TOOTH_FOCUS_KEY not in detection_train_dataset([item], Target.FINDINGS, config.augment, 0)[0]
    plain = _config(tmp_path, "findings", "augment.patch_px=96")
    assert TOOTH_FOCUS_KEY not in detection_item(sample, Target.FINDINGS, None, plain)  # only when asked for
    for overrides, message in ((["augment.patch_tooth_focus_prob=0.3"], "needs patch_px"),
                               (["augment.patch_px=96", "augment.patch_focus_prob=0.8", "augment.patch_tooth_focus_prob=0.3"],
                                "at most 1")):
        with pytest.raises(ConfigError, match=message):
            _config(tmp_path, "findings", *overrides)
    with pytest.raises(ConfigError, match="finding detector only"):
        _config(tmp_path, "tooth-numbering", "augment.patch_px=96", "augment.patch_tooth_focus_prob=0.2")


def test_worker_processes_prepare_the_same_images_and_train_reproducibly(tmp_path, mlflow_store):
    from datasets.samples import parallel_map
    from datasets.transforms import Target
    from training.train import _prepared_item

    config = _config(tmp_path, "findings", "optim.epochs=1", "tracking.enabled=false", "export_onnx=false",
                     "augment.patch_px=96", "workers=2")
    samples = load_samples(config.data, DataReport(), workers=2)
    jobs = [(s, Target.FINDINGS, config.long_side_px.get(s.kind), config) for s in samples]
    here, there = [_prepared_item(j) for j in jobs], list(parallel_map(_prepared_item, jobs, workers=2))
    for a, b in zip(here, there, strict=True):
        assert a["image_id"] == b["image_id"] and np.array_equal(a["image"], b["image"])
        assert np.array_equal(a["boxes"], b["boxes"]) and np.array_equal(a["labels"], b["labels"])
    first = main(config, run_dir=tmp_path / "a")
    again = main(config, run_dir=tmp_path / "b")  # two augmenting processes, the same epoch
    assert np.isfinite(first.history[0]["train_loss"])
    assert first.history[0]["train_loss"] == again.history[0]["train_loss"]


def test_warm_start_must_fit_the_network(tmp_path, mlflow_store):
    from training.checkpoints import CheckpointError

    base = _config(tmp_path, "findings", "optim.epochs=1", "tracking.enabled=false", "export_onnx=false")
    first = main(base, run_dir=tmp_path / "first")
    warm = base.model_copy(update={"init_from": first.run_dir / "last.pt"})
    assert np.isfinite(main(warm, run_dir=tmp_path / "warm").history[0]["train_loss"])
    wider = load_config(TrainConfig, None, [*_args(tmp_path, "findings"), "detector.fpn_channels=32",
                                            f"init_from={first.run_dir / 'last.pt'}", "tracking.enabled=false"])
    with pytest.raises(CheckpointError, match="does not fit"):
        main(wider, run_dir=tmp_path / "wider")


def _exported(tmp_path, config, name):
    """An ONNX file exported from a network whose batch norms hold non-trivial statistics
    (so that folding them into the convolutions changes the weights)."""
    from models.onnx_export import export_detector
    from training.export import network_for

    torch.manual_seed(3)
    network = network_for(config)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return network, export_detector(network, tmp_path / f"{name}.onnx")


def test_warm_start_from_an_exported_onnx_file(tmp_path, mlflow_store):
    import onnxruntime as ort

    from models.networks import DetectorForExport
    from training.checkpoints import CheckpointError, load_checkpoint
    from training.export import network_for
    from training.onnx_weights import load_onnx_weights

    base = _config(tmp_path, "findings", "optim.epochs=1", "tracking.enabled=false", "export_onnx=false")
    source, onnx_path = _exported(tmp_path, base, "findings")
    fresh = network_for(base)
    assert load_onnx_weights(fresh, onnx_path, DetectorForExport(fresh)) is True  # batch norms were folded
    image = torch.rand(1, 1, 160, 224)  # another size than the loader's own check
    with torch.no_grad():
        ours = DetectorForExport(fresh.eval())(image)
        original = DetectorForExport(source.eval())(image)
    theirs = ort.InferenceSession(str(onnx_path)).run(None, {"image": image.numpy()})
    for a, b, c in zip(ours, original, theirs, strict=True):
        assert np.abs(a.numpy() - c).max() < 1e-3 and np.abs(a.numpy() - b.numpy()).max() < 1e-3

    with pytest.raises(CheckpointError, match="freeze_batchnorm"):
        main(base.model_copy(update={"init_from": onnx_path}), run_dir=tmp_path / "unfrozen")
    frozen = base.model_copy(update={"init_from": onnx_path,
                                     "optim": base.optim.model_copy(update={"freeze_batchnorm": True})})
    result = main(frozen, run_dir=tmp_path / "warm")
    assert np.isfinite(result.history[0]["train_loss"])
    state = load_checkpoint(result.run_dir / "last.pt").model_state
    means = [v for k, v in state.items() if k.endswith("running_mean")]
    assert means and all(torch.count_nonzero(m) == 0 for m in means)  # frozen: still the folded identity

    wider = load_config(TrainConfig, None, [*_args(tmp_path, "findings"), "detector.fpn_channels=32",
                                            f"init_from={onnx_path}", "optim.freeze_batchnorm=true",
                                            "tracking.enabled=false", "export_onnx=false"])
    with pytest.raises(CheckpointError, match=r"does not fit|shape"):
        main(wider, run_dir=tmp_path / "wider")


def test_root_count_classifier_run(tmp_path, mlflow_store):
    config = _config(tmp_path, "root-count", "optim.epochs=1", "classifier.crop_height_px=64",
                     "classifier.crop_width_px=32", "optim.batch_size=8")
    result = main(config, run_dir=tmp_path / "runs" / "roots")
    assert result.card.kinds_served == ("periapical", "panoramic")
    assert 0.0 <= result.final_metrics["root_count_accuracy"] <= 1.0
    assert MlflowClient().search_model_versions("name='dxv-root-count'")


def test_non_finite_output_stops_with_a_clear_error(tmp_path):
    config = _config(tmp_path, "tooth-numbering")
    from training.export import network_for

    net = network_for(config)
    detector = build_training_detector(net, config.detector, config.sampler)
    batch = [{"image": torch.full((1, 64, 64), float("nan")), "boxes": np.array([[4, 4, 40, 30]], np.float32),
              "labels": np.array([3])}]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    with pytest.raises(NonFiniteLossError, match="epoch 0, step 0"):
        train_detector_one_epoch(detector, optimizer, scheduler, [batch], torch.device("cpu"), 0, None, 10.0, None,
                                 lambda s: None)


def test_unknown_keys_and_overrides_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="optim"):
        load_config(TrainConfig, None, ["model=findings", "optim.epoch=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: findings\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(TrainConfig, bad)


def _write_external_coco(root):
    """A DENTEX-like export: an 8-bit JPEG panoramic, FDI numbers as names, primary teeth,
    dataset diagnosis names, a category we do not know, and an image without findings."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for i, (w, h) in enumerate([(1200, 600), (900, 450)]):
        pixels = (rng.random((h, w)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"p{i}.jpg", quality=90)
        teeth = (ToothAnnotation(36, (100, 300, 160, 500)), ToothAnnotation(55, (300, 50, 350, 200)))
        findings = (FindingAnnotation(FindingClass.CARIES, (110, 310, 130, 330), fdi=36),) if i == 0 else ()
        images.append(ImageAnnotations(f"p{i}", f"images/p{i}.jpg", w, h, teeth=teeth, findings=findings))
    data = to_coco(images)
    for cat in data["categories"]:
        cat["name"] = {"caries": "Caries"}.get(cat["name"], cat["name"].removeprefix("tooth-"))
    data["categories"].append({"id": 999, "name": "Bone loss"})
    data["annotations"].append({"id": 9999, "image_id": data["images"][0]["id"], "category_id": 999,
                                "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0})
    for ann in data["annotations"]:
        ann.pop("dxv", None)
    data.pop("dxv", None)
    (root / "annotations.json").write_text(json.dumps(data))
    return root / "annotations.json"


def test_external_coco_dataset_trains_with_a_category_map(tmp_path, mlflow_store):
    path = _write_external_coco(tmp_path / "ext")
    config = load_config(TrainConfig, None, [
        "model=findings", f"output_dir={tmp_path / 'runs'}", "optim.epochs=1", "tracking.enabled=false",
        "export_onnx=false", *TINY,
        f"data.sources=[{{format: coco, path: {path}, category_map: {{Caries: caries-dentin}}}}]"])
    report = DataReport()
    samples = load_samples(config.data, report)
    assert len(samples) == 2 and all(s.kind.value == "panoramic" for s in samples)
    assert report.unmapped_categories == {"Bone loss": 1}
    assert report.primary_teeth == 2
    assert report.findings == {"caries": 1}
    assert samples[0].load().shape == (600, 1200)
    result = main(config, run_dir=tmp_path / "ext-run")
    assert np.isfinite(result.history[0]["train_loss"])


def test_batches_hold_one_input_shape_and_cover_every_image():
    from training.data import ShapeBucketBatchSampler

    shapes = [(1, 384, 295)] * 5 + [(1, 295, 384)] * 3 + [(1, 448, 896)] * 2
    sampler = ShapeBucketBatchSampler(shapes, batch_size=2, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert all(len({shapes[i] for i in b}) == 1 for b in batches)
    assert len(batches) == len(sampler) == 3 + 2 + 1
    assert batches == list(ShapeBucketBatchSampler(shapes, 2, 3))  # same seed, same order
    assert batches != list(ShapeBucketBatchSampler(shapes, 2, 4)) or len(batches) < 3


@pytest.mark.parametrize("recipe", sorted(Path("configs/train").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_loads(recipe):
    config = load_config(TrainConfig, recipe)
    assert config.model in set(ModelKey)


def test_teeth_region_margin_is_for_the_finding_detector_and_reaches_its_card():
    with pytest.raises(ConfigError, match="teeth_region_margin"):
        load_config(TrainConfig, None, ["model=tooth-numbering", "teeth_region_margin={panoramic: 0.06}"])
    with pytest.raises(ConfigError, match="teeth_region_margin"):
        load_config(TrainConfig, None, ["model=findings", "teeth_region_margin={panoramic: 0.9}"])
    config = load_config(TrainConfig, None, ["model=findings", "teeth_region_margin={panoramic: 0.06}"])
    card = card_fields(config, None)
    assert card["input"].teeth_region_margin == {RadiographKind.PANORAMIC: 0.06}
