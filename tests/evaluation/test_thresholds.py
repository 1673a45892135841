from dataclasses import dataclass

from datasets.annotations import ImageAnnotations, ToothAnnotation
from evaluation.thresholds import choose_threshold, teeth_f1
from models.detections import ImageReading, ToothDetection
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
