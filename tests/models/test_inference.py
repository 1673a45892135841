"""The shipped models through the serving code path (ONNX Runtime + numpy post-processing)."""

import numpy as np
import pytest

from datasets.synth.generator import generate_case
from models.inference import DentalReader
from models.model_card import SHIPPED_DIR, ModelCardError
from models.radiographs import RadiographKind


@pytest.fixture(scope="module")
def reader():
    return DentalReader.from_directory("models/shipped", threads=2)


@pytest.mark.parametrize("kind", list(RadiographKind))
def test_reading_is_in_original_pixels_with_versions(reader, kind):
    case = generate_case(kind, 777, 1)
    reading = reader.read(case.image_id, case.pixels_unit, kind)
    assert (reading.width_px, reading.height_px) == (case.annotations.width_px, case.annotations.height_px)
    assert dict(reading.model_versions).keys() == {"tooth-numbering", "findings", "root-count"}
    assert reading.teeth, "a synthetic radiograph always shows teeth"
    for item in (*reading.teeth, *reading.findings):
        x0, y0, x1, y1 = item.box_xyxy_px
        assert 0 <= x0 < x1 <= reading.width_px and 0 <= y0 < y1 <= reading.height_px
    if kind is RadiographKind.BITEWING:
        assert all(t.root_count is None for t in reading.teeth)  # apices are not on a bitewing
    else:
        assert all(t.root_count in (1, 2, 3) for t in reading.teeth)
    known = {t.fdi for t in reading.teeth}
    assert all(f.fdi is None or f.fdi in known for f in reading.findings)


def test_detected_teeth_overlap_the_true_teeth(reader):
    case = generate_case(RadiographKind.PERIAPICAL, 778, 0)
    reading = reader.read(case.image_id, case.pixels_unit, RadiographKind.PERIAPICAL)
    centres = [((t.box_xyxy_px[0] + t.box_xyxy_px[2]) / 2, (t.box_xyxy_px[1] + t.box_xyxy_px[3]) / 2)
               for t in reading.teeth]
    for truth in case.annotations.teeth:
        if truth.truncated:
            continue
        x0, y0, x1, y1 = truth.box_xyxy_px
        assert any(x0 <= cx <= x1 and y0 <= cy <= y1 for cx, cy in centres), f"tooth {truth.fdi} not found"


def test_operating_point_keeps_fewer_detections_than_candidates(reader):
    case = generate_case(RadiographKind.PANORAMIC, 779, 0)
    at_op = reader.read("x", case.pixels_unit, RadiographKind.PANORAMIC)
    everything = reader.read("x", case.pixels_unit, RadiographKind.PANORAMIC, operating_point=False)
    assert len(everything.findings) >= len(at_op.findings)
    threshold = reader.findings.model.card.decode.operating_threshold
    assert all(f.score >= threshold for f in at_op.findings)


def test_a_folder_without_cards_is_refused(tmp_path):
    with pytest.raises(ModelCardError, match="no model cards"):
        DentalReader.from_directory(tmp_path)


def test_blank_image_gives_a_reading_not_an_error(reader):
    reading = reader.read("blank", np.zeros((400, 300), np.float32), RadiographKind.PERIAPICAL)
    assert reading.width_px == 300


def test_sessions_do_not_busy_wait_unless_asked():
    from models.inference import make_session

    onnx = SHIPPED_DIR / "root-count.onnx"
    quiet = make_session(onnx, threads=2).get_session_options()
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = make_session(onnx, threads=2, spin=True).get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):  # ONNX Runtime's default: spin
        spinning.get_session_config_entry("session.intra_op.allow_spinning")
