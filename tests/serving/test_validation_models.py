"""End to end on generated radiographs with known findings: the shipped ONNX models read
the image and the validation layer decides the billed lines."""

from __future__ import annotations

import pytest

from datasets.synth.generator import generate_case
from models.findings import FindingClass
from models.inference import DentalReader
from models.model_card import SHIPPED_DIR
from models.radiographs import RadiographKind
from serving.decisions import Action
from serving.validation.engine import load_tables, validate_claim
from tests.serving.builders import claim, line

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reader() -> DentalReader:
    return DentalReader.from_directory(SHIPPED_DIR, threads=2)


def _read(reader: DentalReader, seed: int, index: int):
    case = generate_case(RadiographKind.PERIAPICAL, seed, index)
    pixels = case.stored.astype("float32") / float(2**case.bits_stored - 1)
    return case, reader.read(case.image_id, pixels, case.kind, operating_point=False)


def test_known_problems_on_a_generated_periapical(reader: DentalReader) -> None:
    case, reading = _read(reader, 404, 9)
    truth = case.annotations
    # What the image really shows (the generator's truth): 14 a premolar, 12 and 13 sound.
    assert {12, 13, 14} <= {t.fdi for t in truth.teeth}
    assert not [f for f in truth.findings if f.fdi in (12, 13)]
    assert not [f for f in truth.findings if f.fdi == 13 and f.finding_class is FindingClass.IMPACTED_TOOTH]
    lines = [line("D3330", 14, line_id="molar-rct-on-premolar"),
             line("D7210", 13, line_id="surgical-on-erupted"),
             line("D3310", 12, line_id="rct-without-indication")]
    result = validate_claim(claim(lines, [reading]), (reading,), load_tables())
    rct = result.line("molar-rct-on-premolar")
    assert (rct.action, rct.suggested_code) == (Action.DOWNCODE, "D3320")
    surgical = result.line("surgical-on-erupted")
    assert (surgical.action, surgical.suggested_code) == (Action.DOWNCODE, "D7140")
    unsupported = result.line("rct-without-indication")
    assert unsupported.action is Action.FLAG
    assert any("indication" in h.reason for h in unsupported.rule_hits if h.fired)
    assert "model:findings" in result.versions


def test_four_surfaces_billed_for_a_one_surface_lesion(reader: DentalReader) -> None:
    case, reading = _read(reader, 404, 11)
    lesions = [f for f in case.annotations.findings if f.fdi == 44 and f.finding_class is FindingClass.CARIES]
    assert lesions and all(len(f.surfaces) == 1 for f in lesions)
    result = validate_claim(claim([line("D2394", 44, "MODB")], [reading]), (reading,), load_tables())
    decision = result.lines[0]
    assert decision.action in (Action.FLAG, Action.DOWNCODE)
    if decision.action is Action.DOWNCODE:
        assert decision.suggested_code in ("D2391", "D2392")
