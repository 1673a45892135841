"""RuleHit and LineDecision built on the fast path equal the validated models."""

from __future__ import annotations

from serving.decisions import RULE_LIBRARY_VERSION, Action, EvidenceRef, LineDecision, RuleHit, combine_hits, make_hit


def test_a_hit_built_by_make_hit_equals_the_validated_model_and_serialises_alike() -> None:
    evidence = (EvidenceRef(source="claim", description="line 2: D3330"),)
    built = make_hit("R4.unbundling", Action.REJECT, "included", suggested="D3330", system="CDT", evidence=evidence,
                     confidence=1.7)
    validated = RuleHit(rule_id="R4.unbundling", rule_version=RULE_LIBRARY_VERSION, action=Action.REJECT,
                        reason="included", suggested_code="D3330", suggested_code_system="CDT", evidence=evidence,
                        confidence=1.0)
    assert built == validated
    assert built.model_dump_json() == validated.model_dump_json()
    assert RuleHit.model_validate_json(built.model_dump_json(exclude_none=True)) == validated
    assert built.model_fields_set == validated.model_fields_set | {"fired"}


def test_combine_hits_most_severe_wins_and_a_flag_means_review() -> None:
    flag = make_hit("R1.necessity", Action.FLAG, "unclear", confidence=0.6)
    downcode = make_hit("R2.substitution.tier", Action.DOWNCODE, "lower tier", suggested="D3320", system="CDT")
    quiet = make_hit("R3.frequency", Action.PASS, "within limits", fired=False)
    line = combine_hits("1", (quiet, flag, downcode), approved_amount=80.0, member_notice="residual 20.00")
    assert (line.action, line.suggested_code, line.needs_review) == (Action.DOWNCODE, "D3320", True)
    assert (line.approved_amount, line.member_notice) == (80.0, "residual 20.00")
    assert LineDecision.model_validate_json(line.model_dump_json()) == line
    clean = combine_hits("2", (quiet,))
    assert (clean.action, clean.needs_review, clean.approved_amount, clean.reasons) == (Action.PASS, False, None, ())


def test_an_action_reads_and_serialises_as_its_plain_value() -> None:
    for action in Action:
        assert type(action.value) is str and action.value == str(action) and Action(action.value) is action
    decided = combine_hits("1", (make_hit("R3.frequency", Action.REJECT, "over the cap"),))
    assert '"action":"reject"' in decided.model_dump_json()
    assert LineDecision.model_validate_json(decided.model_dump_json()) == decided
