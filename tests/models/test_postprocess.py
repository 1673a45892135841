import numpy as np
import pytest
import torch
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.apps.detection.utils.box_coder import BoxCoder

from models.detections import FindingDetection, ToothDetection, apex_region, assign_findings
from models.findings import FindingClass
from models.networks import DetectorArchitecture, build_detector
from models.postprocess import DecodeSettings, anchors_xyxy, batched_nms, box_iou, decode_boxes, decode_detections, nms
from models.preprocess import crop_tooth, prepare_image, prepare_region, teeth_region


@pytest.mark.parametrize("hw", [(256, 320), (384, 288), (96, 800)])
def test_anchors_equal_monai_generator(hw):
    arch = DetectorArchitecture(anchor_shapes_px=((64, 24), (48, 48), (20, 30)))
    net = build_detector(arch, 3).eval()
    image = torch.zeros(1, 1, *hw)
    feats = list(net.feature_extractor(image).values())
    monai = AnchorGeneratorWithAnchorShape(arch.feature_map_scales, arch.anchor_shapes_px)(image, feats)[0].numpy()
    ours = anchors_xyxy(arch, hw)
    np.testing.assert_array_equal(ours, monai[:, [1, 0, 3, 2]])


def test_decode_equals_monai_box_coder():
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 200, (50, 2))
    anchors = np.concatenate([corner, corner + rng.uniform(4, 80, (50, 2))], axis=1)  # x0, y0, x1, y1
    deltas = rng.normal(0, 0.5, (50, 4)).astype(np.float32)
    deltas[0, 2] = 30.0  # beyond the clamp
    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    monai = coder.decode_single(torch.from_numpy(deltas), torch.from_numpy(anchors[:, [1, 0, 3, 2]].astype(np.float32)))
    np.testing.assert_allclose(decode_boxes(deltas, anchors.astype(np.float32)), monai.numpy()[:, [1, 0, 3, 2]],
                               rtol=1e-5, atol=1e-3)


def test_nms_keeps_best_of_overlapping_and_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.6, 0.9, 0.5, 0.3], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.95).tolist() == [1, 0, 2]  # 0 and 3 overlap > .95, 1 and 0 do not
    # Different groups never suppress each other.
    assert sorted(batched_nms(boxes, scores, np.array([0, 1, 0, 0]), 0.5).tolist()) == [0, 1, 2]


def test_box_iou_hand_computed():
    iou = box_iou(np.array([0, 0, 10, 10]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]]))
    assert iou[0, 0] == pytest.approx(50 / 150)
    assert iou[0, 1] == 0


def test_decode_detections_one_box_per_group():
    arch = DetectorArchitecture(anchor_shapes_px=((32.0, 32.0),))
    anchors = anchors_xyxy(arch, (64, 64))
    logits = np.full((len(anchors), 3), -10.0, np.float32)
    # Two neighbouring anchors both claim the same object as classes 0 and 1 (same group).
    i, j = 0, 1
    logits[i, 0], logits[j, 1] = 3.0, 2.0
    deltas = np.zeros((len(anchors), 4), np.float32)
    raw = decode_detections(logits, deltas, anchors, (64, 64), DecodeSettings(score_threshold=0.1, nms_iou=0.3),
                            nms_groups=np.array([0, 0, 1]))
    assert raw.labels.tolist() == [0]
    raw = decode_detections(logits, deltas, anchors, (64, 64), DecodeSettings(score_threshold=0.1, nms_iou=0.3),
                            nms_groups=np.array([0, 1, 2]))
    assert sorted(raw.labels.tolist()) == [0, 1]


def test_decoding_takes_the_sigmoid_of_the_candidates_only_and_finds_what_the_full_sigmoid_finds():
    """Candidates are chosen on the best logit (the sigmoid keeps the order); scores, the
    threshold and the probabilities kept are those of the sigmoid of every logit, also for
    logits a float step either side of the threshold's."""
    arch = DetectorArchitecture(anchor_shapes_px=((16.0, 16.0), (32.0, 16.0)))
    anchors = anchors_xyxy(arch, (128, 160))
    rng = np.random.default_rng(3)
    logits = rng.normal(-4.0, 2.0, (len(anchors), 5)).astype(np.float32)
    edge = np.float32(np.log(0.05 / 0.95))
    logits[:40, 2] = np.nextafter(edge, np.float32(np.inf)) + rng.integers(-2, 3, 40) * np.float32(1e-7)
    deltas = rng.normal(0, 0.2, (len(anchors), 4)).astype(np.float32)
    settings = DecodeSettings(score_threshold=0.05, nms_iou=0.5, candidates=50, max_detections=30)
    groups = np.array([0, 0, 1, 2, 3])
    raw = decode_detections(logits, deltas, anchors, (128, 160), settings, groups)
    # The reference: every probability, then exactly the old selection.
    probs = 1.0 / (1.0 + np.exp(-logits))
    labels = probs.argmax(axis=1)
    scores = probs[np.arange(len(labels)), labels]
    candidates = np.flatnonzero(scores > 0.05)
    candidates = candidates[np.argsort(-scores[candidates], kind="stable")][:50]
    boxes = np.clip(decode_boxes(deltas[candidates], anchors[candidates]), 0, [160, 128, 160, 128])
    keep = batched_nms(boxes, scores[candidates], groups[labels[candidates]], 0.5)[:30]
    assert len(keep) > 10
    np.testing.assert_allclose(raw.scores, scores[candidates][keep], rtol=1e-6)
    np.testing.assert_array_equal(raw.labels, labels[candidates][keep])
    np.testing.assert_allclose(raw.boxes_xyxy, boxes[keep], atol=1e-4)
    np.testing.assert_allclose(raw.probs, probs[candidates][keep], rtol=1e-5)


def test_summed_scores_add_up_a_findings_classes_and_rank_by_the_sum():
    """Classes 0-2 are one finding in three grades (one NMS group), class 3 another finding.
    Summed, a box's score is its group's probabilities added up (capped at 1); which box NMS
    keeps and which class it gets still go by the best class."""
    arch = DetectorArchitecture(anchor_shapes_px=((16.0, 16.0),))
    anchors = anchors_xyxy(arch, (64, 64))
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    logits = np.full((len(anchors), 4), -12.0, np.float32)
    logits[0, :3] = [logit(0.40), logit(0.35), logit(0.10)]  # one split caries: 0.85 in all
    logits[10, 3] = logit(0.60)  # another finding, sure in its one class
    logits[20, :3] = [logit(0.70), logit(0.60), logit(0.50)]  # more than 1 in all: capped
    deltas = np.zeros((len(anchors), 4), np.float32)
    groups = np.array([0, 0, 0, 1])
    top = decode_detections(logits, deltas, anchors, (64, 64), DecodeSettings(score_threshold=0.05), groups)
    summed = decode_detections(logits, deltas, anchors, (64, 64),
                               DecodeSettings(score_threshold=0.05, summed_scores=True), groups)
    assert top.scores.tolist() == pytest.approx([0.70, 0.60, 0.40], abs=1e-5)
    assert summed.scores.tolist() == pytest.approx([1.0, 0.85, 0.60], abs=1e-5)
    assert summed.labels.tolist() == [0, 0, 3]  # the best class of each box
    np.testing.assert_allclose(summed.boxes_xyxy, top.boxes_xyxy[[0, 2, 1]])
    np.testing.assert_allclose(summed.probs[1, :3], [0.40, 0.35, 0.10], atol=1e-5)


def test_prepare_image_geometry_round_trip():
    image = np.random.default_rng(0).random((650, 500)).astype(np.float32)
    tensor, geometry = prepare_image(image, 384)
    assert tensor.shape[2] % 32 == 0 and tensor.shape[3] % 32 == 0
    assert max(geometry.resized_hw) == 384
    boxes = np.array([[10, 20, 110, 420]], np.float32)
    np.testing.assert_allclose(geometry.to_original(geometry.to_input(boxes)), boxes, atol=1e-3)


def test_crop_tooth_turns_maxillary_teeth_crown_up():
    image = np.zeros((100, 60), np.float32)
    image[:50] = 1.0  # top half bright
    up = crop_tooth(image, (0, 0, 60, 100), maxillary=False, crop_hw=(64, 32), margin=0)
    flipped = crop_tooth(image, (0, 0, 60, 100), maxillary=True, crop_hw=(64, 32), margin=0)
    assert up[:10].mean() > 0.9 and flipped[:10].mean() < 0.1


def test_findings_are_assigned_to_their_tooth_and_lesions_by_apex():
    lower = ToothDetection(36, (100, 200, 160, 400), 0.9)
    upper = ToothDetection(26, (100, 0, 160, 190), 0.9)
    caries = FindingDetection(FindingClass.CARIES, (110, 210, 130, 230), 0.8)
    lesion = FindingDetection(FindingClass.PERIAPICAL_LESION, (110, 385, 150, 420), 0.8)
    stray = FindingDetection(FindingClass.CARIES, (400, 400, 420, 420), 0.8)
    out = assign_findings([caries, lesion, stray], [lower, upper])
    assert [f.fdi for f in out] == [36, 36, None]
    # The apex of a maxillary tooth is at the top of its box.
    assert apex_region(upper)[1] < upper.box_xyxy_px[1] + 1


def test_unique_numbers_resolve_a_duplicate_by_joint_probability():
    from models.detections import unique_numbers

    probs = np.array([[0.9, 0.1, 0.0],   # surely class 0
                      [0.6, 0.5, 0.0],   # prefers 0 but 1 is close
                      [0.7, 0.1, 0.05]])  # low-score box, not eligible
    eligible = np.array([True, True, False])
    assert unique_numbers(probs, eligible).tolist() == [0, 1, 0]
    assert unique_numbers(probs, np.array([False, False, False])).tolist() == [0, 0, 0]


def test_region_geometry_maps_boxes_back_into_the_whole_image():
    yy, xx = np.mgrid[0:700, 0:1400]
    image = (0.5 + 0.25 * np.sin(xx / 37) + 0.25 * np.cos(yy / 23)).astype(np.float32)  # smooth: resizing keeps it
    tensor, geometry = prepare_region(image, (300, 150, 1100, 560), 2800)
    assert geometry.offset_xy == (300, 150) and geometry.original_hw == (410, 800)
    # The region is read at the whole image's scale (2800 / 1400 = 2), not stretched to 2800.
    assert geometry.resized_hw == (820, 1600)
    assert tensor.shape[2] % 32 == 0 and tensor.shape[3] % 32 == 0
    boxes = np.array([[320, 160, 420, 300], [900, 400, 1099, 559]], np.float32)
    np.testing.assert_allclose(geometry.to_original(geometry.to_input(boxes)), boxes, atol=1e-3)
    # A box reaching past the region is clipped to the region, not to the whole image.
    assert geometry.to_original(np.array([[0, 0, 5000, 5000]], np.float32)).tolist() == [[300, 150, 1100, 560]]
    # The pixels are the region's.
    np.testing.assert_allclose(tensor[0, 0, :820, :1600][::2, ::2], image[150:560, 300:1100], atol=0.03)


def test_region_outside_the_image_is_refused():
    with pytest.raises(ValueError, match="not inside"):
        prepare_region(np.zeros((100, 200), np.float32), (150, 0, 250, 50), 400)


def test_teeth_region_grows_by_the_image_size_and_stays_inside():
    teeth = np.array([[300, 200, 350, 300], [900, 180, 960, 320]], np.float32)
    assert teeth_region(teeth, (700, 1400), 0.05) == (230, 145, 1030, 355)
    assert teeth_region(teeth, (700, 1400), 0.5) == (0, 0, 1400, 670)
    assert teeth_region(teeth, (700, 1400), 0.3) == (0, 0, 1380, 530)
    assert teeth_region(np.array([[0, 0, 10, 10]]), (700, 1400), 0.0) == (0, 0, 10, 10)
    with pytest.raises(ValueError, match="no teeth"):
        teeth_region(np.zeros((0, 4)), (700, 1400), 0.05)
