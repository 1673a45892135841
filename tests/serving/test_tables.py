"""The procedure catalogue, the evidence matrix, the bands and the claim contract refuse
what they do not understand, with the place and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from models.config_loading import ConfigError
from serving.catalogue import DEFAULT_CATALOGUE, UnknownCodeError, load_catalogue
from serving.claims import ClaimLine
from serving.evidence_matrix import DEFAULT_MATRIX, DEFAULT_THRESHOLDS, load_matrix, load_thresholds
from tests.serving.builders import line

CATALOGUE = load_catalogue()


def _write(tmp_path: Path, source: Path, edit) -> Path:
    data = yaml.safe_load(source.read_text("utf-8"))
    edit(data)
    out = tmp_path / source.name
    out.write_text(yaml.safe_dump(data), "utf-8")
    return out


def test_required_codes_are_in_the_catalogue() -> None:
    required = {
        "D3310", "D3320", "D3330", "D3346", "D3347", "D3348", "D3220", "D7140", "D7210", "D7220", "D7230", "D7240",
        "D7241", "D2140", "D2150", "D2160", "D2161", "D2330", "D2331", "D2332", "D2335", "D2391", "D2392", "D2393",
        "D2394", "D2740", "D2750", "D2790", "D2950", "D0210", "D0220", "D0230", "D0272", "D0274", "D0330", "D1110",
        "D1120", "D4341", "D4342", "D9215",
    }
    assert required <= set(CATALOGUE.codes["CDT"])


def test_tier_relations_go_down() -> None:
    for concept in CATALOGUE.concepts.values():
        if concept.downcodes_to:
            assert CATALOGUE.concepts[concept.downcodes_to].tier < concept.tier


def test_a_payer_code_resolves_by_the_billed_tooth_and_surfaces() -> None:
    assert CATALOGUE.resolve(line("E10", 11, system="XPAY")).concept_id == "endo.anterior"
    assert CATALOGUE.resolve(line("E10", 46, system="XPAY")).concept_id == "endo.molar"
    assert CATALOGUE.resolve(line("R02", 46, "MO", system="XPAY")).concept_id == "composite-posterior.2"
    assert CATALOGUE.code_for("endo.premolar", "XPAY") == "E10"
    assert CATALOGUE.code_for("endo.premolar", "CDT") == "D3320"


def test_unknown_code_and_system_are_named() -> None:
    with pytest.raises(UnknownCodeError, match="D9999"):
        CATALOGUE.resolve(line("D9999", 46))
    with pytest.raises(UnknownCodeError, match="known: CDT, XPAY"):
        CATALOGUE.resolve(line("D3330", 46, system="ICD"))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["codes"]["CDT"].update({"D9998": ["no.such-concept"]}), "unknown concept 'no.such-concept'"),
    (lambda d: d["concepts"]["endo.molar"].update({"downcodes_to": "endo.nowhere"}), "downcodes_to unknown concept"),
    (lambda d: d["concepts"]["endo.premolar"].update({"downcodes_to": "endo.molar"}), "is not a lower tier"),
    (lambda d: d["concepts"]["endo.molar"].update({"colour": "red"}), "colour"),
    (lambda d: d["concepts"]["endo.molar"].update({"tooth_types": ["fang"]}), "tooth_types"),
    (lambda d: d["concepts"]["endo.molar"].update({"category": "magic"}), "unknown category 'magic'"),
])
def test_catalogue_refuses_bad_tables(tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_catalogue(_write(tmp_path, DEFAULT_CATALOGUE, edit))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["entries"]["restoration"].update({"indication": {"finding": "gold_tooth"}}), "gold_tooth"),
    (lambda d: d["entries"]["restoration"].update({"indication": {"narrative": "telepathy"}}), "telepathy"),
    (lambda d: d["entries"]["restoration"].update({"indication": {"finding": "crown", "min_depth": "dentin"}}),
     "min_depth applies to caries only"),
    (lambda d: d["entries"]["crown"].update({"typo_field": 1}), "typo_field"),
])
def test_matrix_refuses_bad_entries(tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_matrix(_write(tmp_path, DEFAULT_MATRIX, edit), CATALOGUE)


def test_matrix_must_cover_the_catalogue(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names evidence 'crown', which the matrix lacks"):
        load_matrix(_write(tmp_path, DEFAULT_MATRIX, lambda d: d["entries"].pop("crown")), CATALOGUE)


def test_thresholds_need_every_class_and_ordered_bands(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no score band for implant"):
        load_thresholds(_write(tmp_path, DEFAULT_THRESHOLDS, lambda d: d["findings"].pop("implant")))
    with pytest.raises(ConfigError, match="must not exceed support"):
        load_thresholds(_write(tmp_path, DEFAULT_THRESHOLDS,
                               lambda d: d["findings"].update({"caries": {"support": 0.2, "absent": 0.5}})))


def test_claim_line_accepts_universal_and_fdi() -> None:
    universal = ClaimLine(line_id="1", code="d3330", tooth="30", tooth_system="UNIVERSAL")
    fdi = ClaimLine(line_id="1", code="D3330", tooth="46", tooth_system="FDI")
    assert universal.fdi_tooth == fdi.fdi_tooth and universal.code == "D3330"


@pytest.mark.parametrize(("fields", "message"), [
    ({"tooth": "33", "tooth_system": "UNIVERSAL"}, "not a Universal tooth number"),
    ({"tooth": "19", "tooth_system": "FDI"}, "not an FDI tooth number"),
    ({"tooth": "8", "tooth_system": "UNIVERSAL", "surfaces": "O"}, "not valid on tooth 11"),
    ({"tooth": "30", "surfaces": "MOOD"}, "given twice"),
    ({"surfaces": "MO"}, "surfaces are given but no tooth"),
])
def test_claim_line_refuses_bad_sites(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ClaimLine(line_id="1", code="D2392", **fields)
