import numpy as np
import pytest

from evaluation.detection_metrics import Box, ImageBoxes, coco_ap, confusion_matrix, froc, match_teeth, operating_point


def _img(image_id, boxes):
    return ImageBoxes(image_id, 100, 100, tuple(boxes))


GT = [_img("a", [Box((0, 0, 10, 10), "caries"), Box((50, 50, 70, 70), "caries")])]
PRED = [_img("a", [Box((0, 0, 10, 10), "caries", 0.9),      # hit
                   Box((80, 80, 95, 95), "caries", 0.8),    # false positive
                   Box((50, 50, 70, 70), "caries", 0.7)])]  # hit


def test_pycocotools_ap50_on_a_hand_computed_case():
    # Ranked: TP, FP, TP -> precision envelope 1.0 up to recall 0.5, 2/3 up to recall 1.0.
    # COCO's 101 recall points: 51 at 1.0 and 50 at 2/3.
    result = coco_ap(GT, PRED, ["caries", "periapical_lesion"])
    assert result["caries"].ap50 == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101, abs=1e-6)
    assert result["caries"].ap == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101, abs=1e-6)  # exact boxes
    assert result["caries"].ar100 == pytest.approx(1.0)
    assert result["periapical_lesion"].ap50 is None  # no ground truth: not scored


def test_ap_drops_when_the_false_positive_ranks_first():
    pred = [_img("a", [Box((0, 0, 10, 10), "caries", 0.7), Box((80, 80, 95, 95), "caries", 0.95),
                       Box((50, 50, 70, 70), "caries", 0.6)])]
    # FP, TP, TP -> precision 1/2 at recall .5, 2/3 at recall 1 -> envelope 2/3 everywhere.
    assert coco_ap(GT, pred, ["caries"])["caries"].ap50 == pytest.approx(2 / 3, abs=1e-6)


def test_operating_point_counts_at_threshold():
    op = operating_point(GT, PRED, "caries", threshold=0.75)
    assert (op.true_positives, op.false_positives, op.false_negatives) == (1, 1, 1)
    assert op.sensitivity == 0.5 and op.ppv == 0.5


def test_froc_sensitivity_per_false_positive_rate():
    curve = froc(GT, PRED, "caries", fp_per_image=(0.5, 1.0))
    assert curve[0.5] == 0.5  # below one false positive: only the first hit counts
    assert curve[1.0] == 1.0


def test_tooth_matching_separates_detection_from_numbering():
    gt = [("x", [((0, 0, 10, 30), 36), ((12, 0, 22, 30), 37), ((24, 0, 34, 30), 38)])]
    pred = {"x": [((0, 0, 10, 30), 36), ((12, 1, 22, 30), 46), ((60, 0, 70, 30), 38)]}
    matching, pairs = match_teeth(gt, pred)
    assert matching.recall == pytest.approx(2 / 3)
    assert matching.numbering_accuracy == pytest.approx(1 / 3)
    assert matching.false_positives == 1
    assert sorted(matching.pairs) == [(36, 36), (37, 46)]
    assert sorted(pairs["x"]) == [(0, 0), (1, 1)]


def test_confusion_matrix_rows_are_truth():
    m = confusion_matrix([1, 1, 2, 3], [1, 2, 2, 3], [1, 2, 3])
    np.testing.assert_array_equal(m, [[1, 1, 0], [0, 1, 0], [0, 0, 1]])


def test_false_positives_are_placed_once_each_in_order():
    from evaluation.detection_metrics import false_positive_places

    truth = ImageBoxes("a", 200, 100, (Box((50, 40, 70, 60), "lesion"), Box((120, 30, 160, 70), "crown")))
    found = ImageBoxes("a", 200, 100, (
        Box((50, 40, 70, 60), "lesion", 0.9),    # the true lesion: not a false positive
        Box((51, 41, 71, 61), "lesion", 0.85),   # the same lesion again: localisation
        Box((60, 50, 80, 70), "lesion", 0.9),    # IoU 0.14 with it: localisation
        Box((0, 10, 10, 20), "lesion", 0.9),     # touching the left edge
        Box((125, 35, 140, 50), "lesion", 0.9),  # inside the true crown
        Box((90, 40, 100, 50), "lesion", 0.9),   # nothing near
        Box((90, 60, 100, 70), "lesion", 0.3),   # below the threshold: not counted
        Box((10, 70, 20, 80), "crown", 0.9),     # another class: not counted for lesions
    ))
    assert false_positive_places([truth], [found], "lesion", 0.5) == {
        "localisation": 2, "image_border": 1, "on_other_finding": 1, "elsewhere": 1}
