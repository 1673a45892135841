"""The shipped models through the serving code path (ONNX Runtime + numpy post-processing)."""

from dataclasses import replace

import numpy as np
import pytest

from datasets.synth.generator import generate_case
from models.inference import DentalReader, Detector
from models.model_card import SHIPPED_DIR, ModelCardError
from models.preprocess import teeth_region
from models.radiographs import RadiographKind


@pytest.fixture(scope="module")
def reader():
    return DentalReader.from_directory("models/shipped", threads=2)


@pytest.mark.parametrize("kind", list(RadiographKind))
def test_reading_is_in_original_pixels_with_versions(reader, kind):
    case = generate_case(kind, 777, 1)
    reading = reader.read(case.image_id, case.pixels_unit, kind)
    assert (reading.width_px, reading.height_px) == (case.annotations.width_px, case.annotations.height_px)
    assert dict(reading.model_versions).keys() == {"tooth-numbering", "findings", "root-count", "finding-verifier"}
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
    assert len(everything.findings) > len(at_op.findings) > 0
    kept = tuple(f for f in everything.findings if f.score >= reader.finding_threshold(f.finding_class))
    assert at_op.findings == kept, "exactly the candidates at or above their class's threshold in effect"


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


def _with_teeth_region(reader: DentalReader, margin: float | None) -> DentalReader:
    """The reader with its finding detector's card asking for the teeth's region on
    panoramics (``margin`` around them), or for whole images (None)."""
    model = reader.findings.model
    margins = {} if margin is None else {RadiographKind.PANORAMIC: margin}
    contract = model.card.input.model_copy(update={"teeth_region_margin": margins})
    card = model.card.model_copy(update={"input": contract})
    return replace(reader, findings=Detector(replace(model, card=card)))


def test_findings_on_panoramics_read_only_the_teeth_region_when_the_card_asks(reader):
    case = generate_case(RadiographKind.PANORAMIC, 781, 0)
    image = case.pixels_unit
    regional = _with_teeth_region(reader, 0.06)
    reading = regional.read("x", image, RadiographKind.PANORAMIC, operating_point=False)
    threshold = reader.teeth.model.card.decode.operating_threshold
    region = teeth_region(np.array([t.box_xyxy_px for t in reading.teeth if t.score >= threshold]), image.shape, 0.06)
    assert region != (0, 0, image.shape[1], image.shape[0])
    assert reading.findings, "the synthetic panoramic has findings"
    for f in reading.findings:
        x0, y0, x1, y1 = f.box_xyxy_px
        assert region[0] <= x0 < x1 <= region[2] and region[1] <= y0 < y1 <= region[3]
    _, geometry = regional.findings.raw(image, RadiographKind.PANORAMIC, region)
    _, whole = regional.findings.raw(image, RadiographKind.PANORAMIC)
    assert geometry.scale_yx == pytest.approx(whole.scale_yx, rel=0.01)
    assert np.prod(geometry.padded_hw) < 0.7 * np.prod(whole.padded_hw)
    # Periapicals are read whole: the card names panoramics only.
    pa = generate_case(RadiographKind.PERIAPICAL, 781, 1)
    assert regional.read("p", pa.pixels_unit, RadiographKind.PERIAPICAL) == reader.read("p", pa.pixels_unit,
                                                                                      RadiographKind.PERIAPICAL)


def test_a_region_as_large_as_the_image_reads_as_the_whole_image(reader):
    case = generate_case(RadiographKind.PANORAMIC, 782, 0)
    whole = _with_teeth_region(reader, None).read("x", case.pixels_unit, RadiographKind.PANORAMIC)
    assert _with_teeth_region(reader, 0.5).read("x", case.pixels_unit, RadiographKind.PANORAMIC) == whole
