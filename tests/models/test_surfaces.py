"""Surfaces read from where a finding lies on a tooth box (crowns to the occlusal plane;
the patient's right on the image's left)."""

from models.surfaces import surfaces_touched
from models.teeth import Surface, Tooth

M, D, OCC = Surface.MESIAL, Surface.DISTAL, Surface.OCCLUSAL_INCISAL
LOWER_BOX = (100.0, 400.0, 200.0, 800.0)  # mandibular: crown at the top (y 400)
UPPER_BOX = (100.0, 0.0, 200.0, 400.0)  # maxillary: crown at the bottom (y 400)


def test_mesial_faces_the_midline_on_each_side() -> None:
    right_side, left_side = Tooth.fdi_of(46), Tooth.fdi_of(36)
    image_right = (180.0, 460.0, 200.0, 520.0)
    assert surfaces_touched(image_right, LOWER_BOX, right_side).visible == {M}
    assert surfaces_touched(image_right, LOWER_BOX, left_side).visible == {D}


def test_occlusal_is_at_the_crown_end_for_each_arch() -> None:
    top = (140.0, 402.0, 160.0, 430.0)
    bottom = (140.0, 370.0, 160.0, 398.0)
    assert surfaces_touched(top, LOWER_BOX, Tooth.fdi_of(46)).visible == {OCC}
    assert surfaces_touched(bottom, UPPER_BOX, Tooth.fdi_of(16)).visible == {OCC}
    # A box at the root end touches no crown surface.
    assert surfaces_touched((140.0, 770.0, 160.0, 798.0), LOWER_BOX, Tooth.fdi_of(46)).count == 0
    assert surfaces_touched((140.0, 2.0, 160.0, 30.0), UPPER_BOX, Tooth.fdi_of(16)).count == 0


def test_a_lesion_across_the_crown_touches_mesial_occlusal_and_distal() -> None:
    wide = (100.0, 400.0, 200.0, 480.0)
    assert surfaces_touched(wide, LOWER_BOX, Tooth.fdi_of(46)).visible == {M, OCC, D}


def test_a_central_lesion_is_buccal_or_lingual_and_cannot_say_which() -> None:
    central = (140.0, 480.0, 160.0, 530.0)
    estimate = surfaces_touched(central, LOWER_BOX, Tooth.fdi_of(46))
    assert estimate.visible == frozenset() and estimate.buccal_or_lingual and estimate.count == 1
    assert estimate.text(Tooth.fdi_of(46)) == "+B/L"


def _tooth_at(fdi: int, x0: float):
    from models.detections import ToothDetection

    return ToothDetection(fdi=fdi, box_xyxy_px=(x0, 0.0, x0 + 90.0, 400.0), score=0.95)


def test_an_implant_takes_the_gap_between_its_neighbours() -> None:
    from models.detections import implant_site

    teeth = [_tooth_at(47, 0.0), _tooth_at(45, 200.0), _tooth_at(44, 300.0)]
    assert implant_site((100.0, 50.0, 190.0, 350.0), teeth) == 46
    # Across the midline: 12 and 21 leave 11; 11 and 22 leave 21.
    assert implant_site((100.0, 50.0, 190.0, 350.0), [_tooth_at(12, 0.0), _tooth_at(21, 200.0)]) == 11
    assert implant_site((100.0, 50.0, 190.0, 350.0), [_tooth_at(11, 0.0), _tooth_at(22, 200.0)]) == 21
    # Neighbours two positions apart do not name one gap; one side only names none.
    assert implant_site((100.0, 50.0, 190.0, 350.0), [_tooth_at(47, 0.0), _tooth_at(44, 200.0)]) is None
    assert implant_site((100.0, 50.0, 190.0, 350.0), [_tooth_at(47, 0.0)]) is None
