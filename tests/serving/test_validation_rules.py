"""Behaviour of the validation layer beyond the per-concept table: teeth and documents,
numbering systems, payer codes, narrative against image, evidence and versions."""

from __future__ import annotations

import dataclasses

from models.findings import FindingClass
from models.radiographs import RadiographKind
from serving.decisions import Action
from serving.validation.engine import load_tables, validate_claim
from tests.serving.builders import claim, finding, line, reading, tooth

TABLES = load_tables()
LOWER_RIGHT = [44, 45, 46, 47, 48]


def _decide(lines, readings, narrative: str = ""):
    return validate_claim(claim(lines, readings, narrative=narrative), readings, TABLES)


def _fired(decision):
    return [h for h in decision.rule_hits if h.fired]


def test_billed_tooth_not_in_any_image_is_flagged() -> None:
    decision = _decide([line("D2391", 26, "O")], [reading(LOWER_RIGHT)]).lines[0]
    assert decision.action is Action.FLAG and decision.needs_review
    assert any("tooth not in submitted images" in h.reason for h in _fired(decision))


def test_missing_radiograph_names_the_document_needed() -> None:
    decision = _decide([line("D3330", 46)], []).lines[0]
    assert decision.action is Action.FLAG
    assert any("missing documentation" in h.reason and "periapical" in h.reason for h in _fired(decision))


def test_tooth_absent_between_its_neighbours_on_an_intraoral_image() -> None:
    decision = _decide([line("D7140", 46)], [reading([45, 47])]).lines[0]
    assert decision.action is Action.FLAG
    assert any("appears absent" in h.reason for h in _fired(decision))


def test_universal_and_fdi_lines_get_the_same_decision() -> None:
    image = reading(LOWER_RIGHT, [finding("periapical_lesion", 45, "apex")])
    fdi = _decide([line("D3330", 45)], [image]).lines[0]
    universal = _decide([line("D3330", 45, universal=True)], [image]).lines[0]
    assert fdi.action is universal.action is Action.DOWNCODE
    assert fdi.suggested_code == universal.suggested_code == "D3320"


def test_payer_codes_downcode_within_their_own_system() -> None:
    image = reading(LOWER_RIGHT, [finding("caries", 46, "mesial"), finding("periapical_lesion", 45, "apex")])
    result = _decide([line("R04", 46, "MODB", system="XPAY", line_id="1"),
                      line("E10", 45, system="XPAY", line_id="2"),
                      line("X20", 47, system="XPAY", line_id="3")], [image])
    assert (result.line("1").action, result.line("1").suggested_code) == (Action.DOWNCODE, "R01")
    assert result.line("1").suggested_code_system == "XPAY"
    # E10 covers every tooth type: on a premolar it is simply the premolar root canal.
    assert result.line("2").action is Action.PASS
    assert (result.line("3").action, result.line("3").suggested_code) == (Action.DOWNCODE, "X10")


def test_unknown_code_is_flagged_not_passed() -> None:
    decision = _decide([line("D9999", 46)], [reading(LOWER_RIGHT)]).lines[0]
    assert decision.action is Action.FLAG and decision.rule_hits[0].rule_id == "R0.catalogue"


def test_narrative_and_image_disagreeing_is_flagged_with_both() -> None:
    decision = _decide([line("D7240", 48)], [reading(LOWER_RIGHT)], narrative="Complete bony impaction #48.").lines[0]
    assert decision.action is Action.FLAG
    hit = next(h for h in _fired(decision) if "disagree" in h.reason)
    sources = {ref.source for ref in hit.evidence}
    assert sources == {"image", "narrative"} or "narrative" in sources
    assert "bony impaction" in hit.reason.lower()


def test_a_lesion_a_bitewing_cannot_show_is_uncertain_not_absent() -> None:
    decision = _decide([line("D3330", 46)], [reading(LOWER_RIGHT, kind=RadiographKind.BITEWING)]).lines[0]
    reasons = [h.reason for h in _fired(decision)]
    assert decision.action is Action.FLAG
    assert any("missing documentation" in r for r in reasons)  # endodontics needs a periapical
    assert not any("no visible indication" in r for r in reasons)


def test_score_bands_decide_between_downcode_and_flag() -> None:
    def impaction(score: float):
        return _decide([line("D7240", 48)], [reading(LOWER_RIGHT, [finding("impacted_tooth", 48, score=score)])]).lines[0]
    assert impaction(0.9).action is Action.PASS
    assert impaction(0.3).action is Action.FLAG  # between absent (0.10) and support (0.45)
    assert impaction(0.05).action is Action.DOWNCODE  # the model sees nothing


def test_evidence_names_image_box_score_and_model_version() -> None:
    lesion = finding("periapical_lesion", 46, "apex", score=0.83)
    decision = _decide([line("D3330", 46)], [reading(LOWER_RIGHT, [lesion])]).lines[0]
    refs = [r for h in decision.rule_hits if h.rule_id == "R1.necessity" for r in h.evidence]
    assert refs and refs[0].image_id == "img-1" and refs[0].box_xyxy_px == lesion.box_xyxy_px
    assert refs[0].score == 0.83 and refs[0].model == "findings@f1" and refs[0].tooth_fdi == 46


def test_a_verified_findings_evidence_names_the_verifier_too() -> None:
    caries = dataclasses.replace(finding("caries", 46, "crown", score=0.7, depth="near_pulp"), verified=True)
    versions = (("tooth-numbering", "t1"), ("findings", "f1"), ("finding-verifier", "v1"))
    decision = _decide([line("D3330", 46)], [dataclasses.replace(reading(LOWER_RIGHT, [caries]), model_versions=versions)])
    models = {r.score: r.model for h in decision.lines[0].rule_hits for r in h.evidence if r.source == "image"}
    assert models[0.7] == "findings@f1 + finding-verifier@v1"  # its score is both models' together
    lesion = finding("periapical_lesion", 46, "apex", score=0.8)  # not verified: the detector's alone
    decision = _decide([line("D3330", 46)], [dataclasses.replace(reading(LOWER_RIGHT, [lesion]), model_versions=versions)])
    assert {r.model for h in decision.lines[0].rule_hits for r in h.evidence if r.score == 0.8} == {"findings@f1"}


def test_versions_of_tables_rules_and_models_are_recorded() -> None:
    result = _decide([line("D0220")], [reading(LOWER_RIGHT)])
    assert result.versions["rule_library"] and result.versions["catalogue"] == TABLES.catalogue.version
    assert result.versions["model:findings"] == "f1" and result.versions["evidence_matrix"] == TABLES.matrix.version


def test_surfaces_the_model_is_unsure_about_are_flagged_not_downcoded() -> None:
    band = load_tables().thresholds.findings[FindingClass.CARIES]
    between = (band.absent + band.support) / 2  # neither clear support nor clearly nothing
    image = reading(LOWER_RIGHT, [finding("caries", 46, "mesial"), finding("caries", 46, "occlusal", score=between)])
    decision = _decide([line("D2392", 46, "MO")], [image]).lines[0]
    assert decision.action is Action.FLAG
    assert any("uncertain" in h.reason for h in _fired(decision))


def test_each_line_is_decided_on_its_own_tooth() -> None:
    teeth = [44, 45, tooth(46, roots=2), tooth(47, roots=2), 48]
    image = reading(teeth, [finding("periapical_lesion", 46, "apex")])
    result = _decide([line("D3330", 46, line_id="a"), line("D3330", 47, line_id="b")], [image])
    assert result.line("a").action is Action.PASS
    assert result.line("b").action is Action.FLAG
    assert any("no visible indication" in h.reason for h in _fired(result.line("b")))


def test_a_molar_root_canal_without_a_root_count_is_flagged() -> None:
    image = reading(LOWER_RIGHT, [finding("periapical_lesion", 46, "apex")])
    decision = _decide([line("D3330", 46)], [image]).lines[0]
    assert decision.action is Action.FLAG
    assert any("root count" in h.reason for h in _fired(decision))


def test_an_implant_the_reader_left_unassigned_is_placed_in_its_gap() -> None:
    from dataclasses import replace

    implant = replace(finding("implant", 46, "whole", 0.9), fdi=None)  # as a detector reports it: no tooth box there
    decision = _decide([line("D2750", 46)], [reading([45, 47], [implant])]).lines[0]
    assert decision.action is Action.REJECT
    assert any("implant" in h.reason for h in _fired(decision))


def test_a_weakly_detected_impacted_tooth_still_carries_its_impaction() -> None:
    from dataclasses import replace

    impaction = replace(finding("impacted_tooth", 48, "whole", 0.9), fdi=None)
    teeth = [44, 45, 46, 47, tooth(48, score=0.3)]  # the tooth model barely sees the tooth lying in bone
    decision = _decide([line("D7240", 48)], [reading(teeth, [impaction])]).lines[0]
    assert decision.action is Action.PASS, [h.reason for h in _fired(decision)]


def _no_image_lines() -> list:
    return [line("D1110"), line("D2391", 36, "O", line_id="2"), line("D3330", 46, line_id="3"),
            line("D7240", 38, line_id="4"), line("D0274", line_id="5"), line("D4341", quadrant=1, line_id="6"),
            line("D1120", line_id="7"), line("XX999", line_id="8")]


def test_decisions_of_lines_without_radiographs_are_reused_and_equal_fresh_ones() -> None:
    tables = load_tables()  # its own, empty memo
    for age in (8, 40):
        for narrative in ("", "deep caries on tooth 46 with periapical radiolucency"):
            first = validate_claim(claim(_no_image_lines(), [], narrative=narrative, age=age), (), tables)
            fresh = validate_claim(claim(_no_image_lines(), [], narrative=narrative, age=age), (), load_tables())
            again = validate_claim(claim(_no_image_lines(), [], narrative=narrative, age=age), (), tables)
            assert first.lines == fresh.lines == again.lines
            assert all(a is b for a, b in zip(first.lines, again.lines, strict=True))  # the same decisions, reused
    # One entry per distinct (line, age, narrative): 8 lines x 2 ages x 2 narratives.
    assert len(tables.no_image_decisions) == 32


def test_a_reused_no_image_decision_is_that_of_its_own_line_id_age_and_narrative() -> None:
    tables = load_tables()
    child = validate_claim(claim([line("D1120")], [], age=8), (), tables).lines[0]
    adult = validate_claim(claim([line("D1120")], [], age=40), (), tables).lines[0]
    assert child.action is Action.PASS and adult.action is Action.FLAG  # child prophylaxis: an age band
    validate_claim(claim([line("D4341", quadrant=1)], [], age=40), (), tables)
    moved = validate_claim(claim([line("D4341", quadrant=1, line_id="9")], [], age=40), (), tables).lines[0]
    assert moved.line_id == "9"
    # The fee is not read by the validation layer: a line differing only in fee shares the decision.
    cheap = line("D1110").model_copy(update={"fee": 1.0})
    assert validate_claim(claim([cheap], [], age=40), (), tables).lines[0] is \
        validate_claim(claim([line("D1110")], [], age=40), (), tables).lines[0]


def test_lines_with_radiographs_are_never_taken_from_the_memo() -> None:
    tables = load_tables()
    seen = [reading([36, 37], [finding("caries", 36, "occlusal", score=0.9)])]
    without = validate_claim(claim([line("D2391", 36, "O")], []), (), tables).lines[0]
    with_image = validate_claim(claim([line("D2391", 36, "O")], seen), seen, tables).lines[0]
    assert without.action is Action.FLAG and with_image.action is Action.PASS
    assert len(tables.no_image_decisions) == 1


def test_the_memo_keeps_at_most_its_bound_and_drops_the_oldest_first() -> None:
    from serving.validation.context import DecisionMemo

    memo = DecisionMemo(max_entries=2)
    decided = validate_claim(claim([line("D1110")], []), (), load_tables()).lines[0]
    for key in ("a", "b", "c"):
        memo.put(key, decided)
    assert len(memo) == 2 and memo.get("a") is None and memo.get("c") is decided
