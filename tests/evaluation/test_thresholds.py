from dataclasses import dataclass

import pytest

from datasets.annotations import FindingAnnotation, ImageAnnotations, ToothAnnotation
from evaluation.thresholds import choose_threshold, class_f1_curves, class_thresholds, teeth_f1
from models.detections import FindingDetection, ImageReading, ToothDetection
from models.findings import CariesDepth, FindingClass
from models.model_card import DecodeConfig
from models.radiographs import RadiographKind


@dataclass
class _Image:
    annotations: ImageAnnotations


def test_choose_threshold_prefers_the_higher_of_equal_scores():
    assert choose_threshold({0.2: 0.5, 0.3: 0.8, 0.4: 0.8, 0.5: 0.6}) == 0.4


def test_teeth_f1_counts_only_correctly_numbered_teeth():
    truth = ImageAnnotations("a", "a.png", 100, 100, teeth=(ToothAnnotation(36, (0, 0, 10, 30)),
                                                            ToothAnnotation(37, (12, 0, 22, 30))))
    reading = ImageReading("a", RadiographKind.PERIAPICAL, 100, 100, teeth=(
        ToothDetection(36, (0, 0, 10, 30), 0.9), ToothDetection(46, (12, 0, 22, 30), 0.3)))
    # At 0.5: one right of one predicted, one of two true -> F1 = 2*(1*.5)/(1.5).
    assert abs(teeth_f1([_Image(truth)], [reading], 0.5) - 2 / 3) < 1e-9
    # At 0.2 the misnumbered tooth is predicted too: precision 1/2, recall 1/2.
    assert abs(teeth_f1([_Image(truth)], [reading], 0.2) - 0.5) < 1e-9


def test_each_finding_class_gets_the_threshold_of_its_own_best_f1():
    caries, lesion = FindingClass.CARIES, FindingClass.PERIAPICAL_LESION
    truth = ImageAnnotations("a", "a.png", 100, 100, findings=(
        FindingAnnotation(caries, (10, 10, 20, 20), caries_depth=CariesDepth.DENTIN),
        FindingAnnotation(lesion, (50, 50, 70, 70))))
    reading = ImageReading("a", RadiographKind.PERIAPICAL, 100, 100, findings=(
        FindingDetection(caries, (10, 10, 20, 20), 0.32, CariesDepth.DENTIN),  # true, weak
        FindingDetection(caries, (80, 10, 90, 20), 0.22, CariesDepth.ENAMEL),  # false, weaker
        FindingDetection(lesion, (50, 50, 70, 70), 0.93),  # true
        FindingDetection(lesion, (10, 60, 30, 80), 0.88)))  # false, almost as strong
    # F1 is 1 for caries at 0.25 and 0.30 (the higher is taken), for lesions only at 0.90.
    assert class_thresholds(class_f1_curves([_Image(truth)], [reading])) == {"caries": 0.3, "periapical_lesion": 0.9}


def test_a_class_threshold_overrides_the_general_one_and_names_a_finding_class():
    decode = DecodeConfig(operating_threshold=0.8, class_thresholds={"caries": 0.3})
    assert decode.threshold_for("caries") == 0.3 and decode.threshold_for("crown") == 0.8
    with pytest.raises(ValueError, match="names no finding class"):
        DecodeConfig(class_thresholds={"tooth-36": 0.5})
