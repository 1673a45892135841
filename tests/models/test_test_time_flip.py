"""Test-time views: the mirrored view, putting its boxes back, and weighted boxes fusion of
the two views; then the finding detector read both ways through ONNX Runtime."""

import json
import shutil

import numpy as np
import pytest

from datasets.samples import synthetic_samples
from models.inference import DentalReader
from models.model_card import SHIPPED_DIR, DecodeConfig, ModelCardError
from models.postprocess import (
    RawDetections,
    box_iou,
    fuse_views,
    mirror_detections,
    mirror_input,
    shift_input,
    unshift_detections,
)
from models.radiographs import RadiographKind


def _raw(boxes, scores, labels, n_classes=3):
    labels = np.asarray(labels, np.int64)
    probs = np.zeros((len(labels), n_classes), np.float32)
    probs[np.arange(len(labels)), labels] = scores
    return RawDetections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32), labels, probs)


GROUPS = np.array([0, 0, 1])  # classes 0 and 1 compete for a box (e.g. two caries depths); class 2 alone


def test_mirror_input_keeps_the_padding_on_the_right():
    tensor = np.arange(2 * 6, dtype=np.float32).reshape(1, 1, 2, 6)
    tensor[..., 4:] = 0  # content 4 wide, padded to 6
    mirrored = mirror_input(tensor, 4)
    assert mirrored[0, 0, 0].tolist() == [3, 2, 1, 0, 0, 0]
    assert mirrored[0, 0, 1].tolist() == [9, 8, 7, 6, 0, 0]
    assert tensor[0, 0, 0].tolist() == [0, 1, 2, 3, 0, 0], "the input is not changed"


def test_mirrored_boxes_come_back_where_they_were():
    raw = _raw([[10, 5, 30, 25]], [0.9], [0])
    back = mirror_detections(raw, 100)
    assert back.boxes_xyxy.tolist() == [[70, 5, 90, 25]]
    assert mirror_detections(back, 100).boxes_xyxy.tolist() == [[10, 5, 30, 25]]


def test_fusion_averages_agreeing_views_by_score_and_halves_what_one_view_saw():
    given = _raw([[10, 10, 20, 20], [50, 50, 60, 60]], [0.9, 0.6], [0, 2])
    mirrored = _raw([[12, 10, 22, 20]], [0.3], [1])  # same place, the other depth of the group
    fused = fuse_views([given, mirrored], GROUPS, iou_threshold=0.55, max_detections=10)
    assert len(fused.scores) == 2
    assert fused.scores[0] == pytest.approx((0.9 + 0.3) / 2)
    assert fused.boxes_xyxy[0] == pytest.approx([(0.9 * 10 + 0.3 * 12) / 1.2, 10, (0.9 * 20 + 0.3 * 22) / 1.2, 20])
    assert fused.labels[0] == 0, "the leading (highest-scoring) detection's class"
    assert fused.scores[1] == pytest.approx(0.3) and fused.labels[1] == 2
    assert fused.boxes_xyxy[1] == pytest.approx([50, 50, 60, 60])


def test_fusion_never_joins_other_groups_one_view_twice_or_weak_overlaps():
    given = _raw([[10, 10, 20, 20], [11, 10, 21, 20]], [0.8, 0.7], [0, 0])  # one view: stays two
    other_group = _raw([[10, 10, 20, 20]], [0.8], [2])
    fused = fuse_views([given, other_group], GROUPS, 0.55, 10)
    assert len(fused.scores) == 3
    assert sorted(fused.scores.tolist()) == pytest.approx([0.35, 0.4, 0.4])
    shifted = _raw([[16, 10, 26, 20]], [0.8], [0])  # IoU 1/3 with the first box
    assert len(fuse_views([_raw([[10, 10, 20, 20]], [0.8], [0]), shifted], GROUPS, 0.55, 10).scores) == 2


def test_fusion_of_one_view_or_nothing():
    one = _raw([[1, 1, 5, 5]], [0.5], [0])
    assert fuse_views([one], GROUPS, 0.55, 10) is one
    empty = _raw(np.zeros((0, 4)), [], [])
    fused = fuse_views([empty, empty], GROUPS, 0.55, 10)
    assert fused.boxes_xyxy.shape == (0, 4) and fused.scores.shape == (0,)


def test_fusion_keeps_at_most_max_detections_best_first():
    boxes = [[i * 20, 0, i * 20 + 10, 10] for i in range(5)]
    fused = fuse_views([_raw(boxes, [0.1, 0.5, 0.3, 0.9, 0.2], [0] * 5), _raw(np.zeros((0, 4)), [], [])],
                       GROUPS, 0.55, 3)
    assert fused.scores.tolist() == pytest.approx([0.45, 0.25, 0.15])


def _models_with(folder, **decode):
    """The shipped models with the finding detector's decoding changed; without the
    verifier, so that the scores are the detector's own."""
    folder.mkdir(exist_ok=True)
    for path in SHIPPED_DIR.iterdir():
        if not path.name.startswith("finding-verifier."):
            shutil.copy2(path, folder / path.name)
    card = json.loads((folder / "findings.card.json").read_text())
    card["decode"].update(decode)
    (folder / "findings.card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="module")
def plain_models(tmp_path_factory):
    return _models_with(tmp_path_factory.mktemp("plain"), test_time_flip=[], test_time_scales={}, test_time_shifts={})


@pytest.fixture(scope="module")
def flipping_models(tmp_path_factory):
    return _models_with(tmp_path_factory.mktemp("flip"), test_time_flip=["periapical", "panoramic"],
                        test_time_scales={}, test_time_shifts={})


@pytest.fixture(scope="module")
def flipping_and_scaling_models(tmp_path_factory):
    return _models_with(tmp_path_factory.mktemp("scales"), test_time_flip=["periapical", "panoramic"],
                        test_time_scales={"periapical": [1.125]}, test_time_shifts={})


@pytest.fixture(scope="module")
def flipping_and_shifting_models(tmp_path_factory):
    return _models_with(tmp_path_factory.mktemp("shifts"), test_time_flip=["periapical", "panoramic"],
                        test_time_scales={}, test_time_shifts={"periapical": [4]})


def test_views_of_each_kind():
    decode = DecodeConfig(test_time_flip=(RadiographKind.PERIAPICAL, RadiographKind.BITEWING),
                          test_time_scales={RadiographKind.PERIAPICAL: (1.125,), RadiographKind.PANORAMIC: (0.9,)},
                          test_time_shifts={RadiographKind.PERIAPICAL: (4,), RadiographKind.PANORAMIC: (4, 2)})
    assert decode.views(RadiographKind.PERIAPICAL) == ((1.0, False, 0), (1.0, True, 0), (1.125, False, 0),
                                                      (1.125, True, 0), (1.0, False, 4), (1.0, True, 4))
    assert decode.views(RadiographKind.BITEWING) == ((1.0, False, 0), (1.0, True, 0))
    assert decode.views(RadiographKind.PANORAMIC) == ((1.0, False, 0), (0.9, False, 0), (1.0, False, 4),
                                                     (1.0, False, 2))
    assert decode.reads_in_views and not DecodeConfig().reads_in_views
    with pytest.raises(ValueError, match="besides the card's own"):
        DecodeConfig(test_time_scales={RadiographKind.PERIAPICAL: (1.0, 1.2)})
    with pytest.raises(ValueError, match="each once"):
        DecodeConfig(test_time_scales={RadiographKind.PERIAPICAL: (1.2, 1.2)})
    with pytest.raises(ValueError, match="each shift once"):
        DecodeConfig(test_time_shifts={RadiographKind.PERIAPICAL: (4, 4)})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        DecodeConfig(test_time_shifts={RadiographKind.PERIAPICAL: (0,)})


def test_a_shifted_input_moves_up_left_and_its_boxes_come_back():
    tensor = np.arange(1 * 1 * 4 * 5, dtype=np.float32).reshape(1, 1, 4, 5)
    shifted = shift_input(tensor, 1)
    np.testing.assert_array_equal(shifted[0, 0, :3, :4], tensor[0, 0, 1:, 1:])
    assert (shifted[0, 0, 3, :] == 0).all() and (shifted[0, 0, :, 4] == 0).all()
    raw = _raw([[0, 1, 2, 3]], [0.9], [2])
    np.testing.assert_array_equal(unshift_detections(raw, 4).boxes_xyxy, [[4, 5, 6, 7]])


@pytest.mark.parametrize(("models", "kind"), [("flipping_models", RadiographKind.PERIAPICAL),
                                              ("flipping_models", RadiographKind.PANORAMIC),
                                              ("flipping_and_scaling_models", RadiographKind.PERIAPICAL)])
def test_a_mirrored_radiograph_reads_as_the_mirror_of_the_reading(request, models, kind):
    """With every view fused, mirroring the radiograph only swaps each mirrored view with
    its unmirrored twin, so its findings are the original's mirrored (the tooth detector
    does not flip, so the same teeth region is given to both readings). In float: a
    resized mirror differs from the mirrored resize by rounding, which int8 activations can
    turn into a step."""
    reader = DentalReader.from_directory(request.getfixturevalue(models), threads=2, precision="fp32")
    (sample,) = synthetic_samples({kind: 1}, seed=11)
    image = sample.load()
    teeth = reader.read("a", image, kind, operating_point=False).teeth
    region = reader.findings_region(image, kind, list(teeth))
    raw, geometry = reader.findings.raw(image, kind, region)
    mirrored_region = None if region is None else (image.shape[1] - region[2], region[1], image.shape[1] - region[0],
                                                   region[3])
    raw_m, geometry_m = reader.findings.raw(image[:, ::-1].copy(), kind, mirrored_region)
    assert len(raw.scores) > 3
    assert geometry_m.resized_hw == geometry.resized_hw
    back = mirror_detections(raw_m, geometry.resized_hw[1])
    order, order_m = np.lexsort(raw.boxes_xyxy.T[::-1]), np.lexsort(back.boxes_xyxy.T[::-1])
    np.testing.assert_allclose(back.boxes_xyxy[order_m], raw.boxes_xyxy[order], atol=0.05)
    np.testing.assert_allclose(raw_m.scores[order_m], raw.scores[order], atol=1e-4)


def test_flipping_changes_the_reading_and_only_for_the_kinds_named(flipping_models, plain_models):
    flipping = DentalReader.from_directory(flipping_models, threads=2)
    plain = DentalReader.from_directory(plain_models, threads=2)
    samples = list(synthetic_samples({RadiographKind.PERIAPICAL: 1, RadiographKind.BITEWING: 1}, seed=12))
    for sample in samples:
        a = flipping.read("x", sample.load(), sample.kind, operating_point=False).findings
        b = plain.read("x", sample.load(), sample.kind, operating_point=False).findings
        if sample.kind is RadiographKind.BITEWING:
            assert a == b
        else:
            assert [f.score for f in a] != [f.score for f in b]


def test_another_scale_changes_the_reading_and_keeps_boxes_in_the_first_views_pixels(
        flipping_models, flipping_and_scaling_models):
    """A found box is the fusion of views read at two scales: mapped back into the first
    view's pixels, its boxes fall where the first view's do."""
    (sample,) = synthetic_samples({RadiographKind.PERIAPICAL: 1}, seed=13)
    image = sample.load()
    flip_only = DentalReader.from_directory(flipping_models, threads=2).findings
    scaled = DentalReader.from_directory(flipping_and_scaling_models, threads=2).findings
    raw, geometry = flip_only.raw(image, RadiographKind.PERIAPICAL)
    raw_s, geometry_s = scaled.raw(image, RadiographKind.PERIAPICAL)
    assert geometry_s == geometry
    assert raw_s.scores.tolist() != raw.scores.tolist()
    confident = raw.scores > 0.5
    assert confident.any()
    best = box_iou(raw.boxes_xyxy[confident], raw_s.boxes_xyxy).max(axis=1)
    assert (best > 0.7).all(), "each confident box is found again, in the same pixels"


def test_a_shifted_view_changes_the_reading_and_keeps_boxes_in_place(flipping_models, flipping_and_shifting_models):
    """Read 4 px up and left as well, the confident boxes come back where the unshifted
    views put them (the shift is undone before fusion), and the scores change."""
    (sample,) = synthetic_samples({RadiographKind.PERIAPICAL: 1}, seed=13)
    image = sample.load()
    raw, geometry = DentalReader.from_directory(flipping_models, threads=2).findings.raw(image, RadiographKind.PERIAPICAL)
    shifted = DentalReader.from_directory(flipping_and_shifting_models, threads=2).findings
    raw_s, geometry_s = shifted.raw(image, RadiographKind.PERIAPICAL)
    assert geometry_s == geometry
    assert raw_s.scores.tolist() != raw.scores.tolist()
    confident = raw.scores > 0.5
    assert confident.any()
    assert (box_iou(raw.boxes_xyxy[confident], raw_s.boxes_xyxy).max(axis=1) > 0.7).all()


@pytest.mark.parametrize("decode", [{"test_time_flip": ["periapical"]}, {"test_time_scales": {"periapical": [1.1]}},
                                    {"test_time_shifts": {"periapical": [4]}}, {"finding_score": "summed"}])
def test_a_tooth_detector_may_not_flip_scale_or_sum(tmp_path, decode):
    for path in SHIPPED_DIR.glob("tooth-numbering.*"):
        shutil.copy2(path, tmp_path / path.name)
    card = json.loads((tmp_path / "tooth-numbering.card.json").read_text())
    card["decode"].update(decode)
    (tmp_path / "tooth-numbering.card.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="are for finding detectors"):
        DentalReader.from_directory(tmp_path)


def test_the_operating_point_applies_each_class_threshold(tmp_path):
    lenient = DentalReader.from_directory(_models_with(tmp_path / "a", operating_threshold=0.3, class_thresholds={}))
    strict_caries = DentalReader.from_directory(
        _models_with(tmp_path / "b", operating_threshold=0.3, class_thresholds={"caries": 1.0}))
    (sample,) = synthetic_samples({RadiographKind.BITEWING: 1}, seed=14)
    before = lenient.read("x", sample.load(), sample.kind).findings
    after = strict_caries.read("x", sample.load(), sample.kind).findings
    assert any(f.finding_class.value == "caries" for f in before) and min(f.score for f in before) >= 0.3
    assert after == tuple(f for f in before if f.finding_class.value != "caries")
