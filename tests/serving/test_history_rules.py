"""Claim-history rules at their boundaries (pure functions over hand-built snapshots)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from serving.catalogue import load_catalogue
from serving.decisions import Action
from serving.plans import Condition, load_plans
from serving.rules.frequency import check_duplicate, check_frequency, window_start
from serving.rules.history import BaselineCondition, CurrentLine, MemberSnapshot, PastLine, ProviderStanding, add_months
from serving.rules.ledger import ANNUAL_MAXIMUM, Balance, apportion
from serving.rules.preauthorization import check_preauthorization
from serving.rules.preexisting import check_preexisting
from serving.rules.provider import check_provider
from serving.rules.tables import load_bundles, load_frequency
from serving.rules.unbundling import check_unbundling

CATALOGUE = load_catalogue()
FREQUENCY = load_frequency(catalogue=CATALOGUE)
BUNDLES = load_bundles(catalogue=CATALOGUE)
PLAN = load_plans()["standard-dental"]
V2025, V2026 = PLAN.version_on(dt.date(2025, 6, 1)), PLAN.version_on(dt.date(2026, 6, 1))
D = dt.date


def concept(code: str) -> str:
    return CATALOGUE.codes["CDT"][code][0]


def past(code: str, day: dt.date, fdi: int | None = None, status: str = "approved", claim: str = "H-1") -> PastLine:
    quadrant = fdi // 10 if fdi else None
    return PastLine(claim_id=claim, line_id="1", date_of_service=day, code=code, concept_id=concept(code), fdi=fdi,
                    quadrant=quadrant, status=status, approved_amount=100.0)


def current(code: str, fdi: int | None = None, line_id: str = "9", order: int = 0, fee: float = 100.0,
            quadrant: int | None = None) -> CurrentLine:
    c = CATALOGUE.concepts[concept(code)]
    return CurrentLine(line_id=line_id, code=code, concept_id=concept(code), category=c.category, fdi=fdi,
                       quadrant=quadrant or (fdi // 10 if fdi else None), fee=fee, order=order)


def member(history=(), baseline=(), enrolled: dt.date = D(2020, 1, 1)) -> MemberSnapshot:
    return MemberSnapshot(member_id="M", birth_date=D(1980, 1, 1), plan_id="standard-dental", enrolment_start=enrolled,
                          baseline=tuple(baseline), history=tuple(history))


def freq(line: CurrentLine, day: dt.date, m: MemberSnapshot, plan=V2025, age: int = 40, earlier=()):
    return check_frequency(line, tuple(earlier), day, age, m, plan, FREQUENCY, CATALOGUE)


# ---- frequency --------------------------------------------------------------------------


def test_the_limits_of_a_concept_are_those_naming_it_in_table_order() -> None:
    assert len(FREQUENCY.limits) > 3
    for concept_id in CATALOGUE.concepts:
        expected = tuple(limit for limit in FREQUENCY.limits if concept_id in CATALOGUE.concepts_of(limit.codes))
        assert FREQUENCY.limits_for(concept_id, CATALOGUE) == expected
    shared = FREQUENCY.limits_for(concept("D1110"), CATALOGUE)  # prophylaxis shares a limit with D4910
    assert shared and any(concept("D4910") in CATALOGUE.concepts_of(limit.codes) for limit in shared)


def test_rolling_window_boundaries() -> None:
    day = D(2026, 3, 15)
    limit = next(x for x in FREQUENCY.limits if x.id == "bitewings")  # 1 in any 12 months
    assert window_start(limit, day) == D(2025, 3, 16)
    inside = member([past("D0274", D(2025, 3, 16))])
    outside = member([past("D0274", D(2025, 3, 15))])
    assert freq(current("D0272"), day, inside).action is Action.REJECT
    assert freq(current("D0272"), day, outside).action is Action.PASS


def test_calendar_window_resets_on_the_first_of_january() -> None:
    twice = member([past("D1110", D(2025, 2, 1)), past("D1120", D(2025, 8, 1))])  # limit shared by D1110/D1120/D4910
    assert freq(current("D4910"), D(2025, 12, 31), twice).action is Action.REJECT
    assert freq(current("D4910"), D(2026, 1, 1), twice, plan=V2026).action is Action.PASS


def test_exactly_at_the_cap() -> None:
    once = member([past("D1110", D(2025, 2, 1))])
    assert freq(current("D1110"), D(2025, 9, 1), once).action is Action.PASS  # second of two
    hit = freq(current("D1110"), D(2025, 9, 1), once, earlier=[current("D1110", line_id="1")])
    assert hit.action is Action.REJECT and "this claim line 1" in hit.reason  # third, counting this claim's line


def test_denied_lines_do_not_count() -> None:
    denied = member([past("D1110", D(2025, 2, 1)), past("D1110", D(2025, 3, 1), status="denied")])
    assert freq(current("D1110"), D(2025, 9, 1), denied).action is Action.PASS


def test_per_tooth_and_per_quadrant() -> None:
    crowned = member([past("D2750", D(2023, 1, 10), fdi=46)])
    assert freq(current("D2740", 46), D(2027, 1, 9), crowned).action is Action.REJECT
    assert freq(current("D2740", 46), D(2028, 1, 10), crowned).action is Action.PASS  # 60 months later
    assert freq(current("D2740", 36), D(2027, 1, 9), crowned).action is Action.PASS
    srp = member([past("D4341", D(2025, 5, 1), fdi=None)])
    srp = member([PastLine("H", "1", D(2025, 5, 1), "D4341", concept("D4341"), None, 4, "approved")])
    assert freq(current("D4342", quadrant=4), D(2026, 5, 1), srp).action is Action.REJECT
    assert freq(current("D4342", quadrant=3), D(2026, 5, 1), srp).action is Action.PASS


def test_exceptions_and_plan_overrides() -> None:
    twice = [past("D1110", D(2026, 2, 1)), past("D1110", D(2026, 4, 1))]
    assert freq(current("D1110"), D(2026, 9, 1), member(twice), plan=V2025).action is Action.REJECT
    override = freq(current("D1110"), D(2026, 9, 1), member(twice), plan=V2026)  # 2026.1 allows 3
    assert override.action is Action.PASS
    perio = member([*twice, past("D1110", D(2026, 6, 1))],
                   [BaselineCondition(None, Condition.PERIODONTAL_DISEASE, D(2020, 1, 1))])
    assert freq(current("D4910"), D(2026, 9, 1), perio, plan=V2026).action is Action.PASS  # 4 with documented disease
    bitewing = member([past("D0274", D(2026, 1, 5))])
    assert freq(current("D0272"), D(2026, 7, 1), bitewing, age=17).action is Action.PASS  # under 18: two
    assert freq(current("D0272"), D(2026, 7, 1), bitewing, age=18).action is Action.REJECT


def test_payer_codes_count_against_the_same_limit() -> None:
    from serving.claims import ClaimLine

    resolved = CATALOGUE.resolve(ClaimLine(line_id="1", code="P10", code_system="XPAY"))
    line = CurrentLine("1", "P10", resolved.concept_id, "preventive", None, None, 90.0, 0)
    twice = member([past("D1110", D(2025, 2, 1)), past("D1110", D(2025, 4, 1))])
    assert freq(line, D(2025, 9, 1), twice).action is Action.REJECT


def test_exact_duplicates() -> None:
    m = member([past("D2391", D(2026, 3, 2), fdi=46, claim="H-7")])
    hit = check_duplicate(current("D2391", 46), (), D(2026, 3, 2), m, "C-1")
    assert hit.action is Action.REJECT and "H-7" in hit.reason
    assert check_duplicate(current("D2391", 47), (), D(2026, 3, 2), m, "C-1").action is Action.PASS
    assert check_duplicate(current("D2391", 46), (), D(2026, 3, 3), m, "C-1").action is Action.PASS


# ---- unbundling -------------------------------------------------------------------------


def unbundle(line: CurrentLine, lines: list[CurrentLine], m=None, day=D(2026, 3, 2), plan=V2026):
    return check_unbundling(line, tuple(lines), day, m or member(), plan, BUNDLES, CATALOGUE)


def test_anaesthesia_is_included_unless_given_in_isolation() -> None:
    anaesthesia, filling = current("D9215", line_id="1"), current("D2391", 46, line_id="2", order=1)
    hit = unbundle(anaesthesia, [anaesthesia, filling])
    assert hit.action is Action.REJECT and "included in D2391 on line 2" in hit.reason
    assert unbundle(anaesthesia, [anaesthesia]).action is Action.PASS


def test_filling_with_build_up_on_the_same_tooth() -> None:
    filling, build_up = current("D2391", 46, line_id="1"), current("D2950", 46, line_id="2", order=1)
    assert unbundle(filling, [filling, build_up]).action is Action.REJECT
    other = current("D2391", 45, line_id="1")
    assert unbundle(other, [other, build_up]).action is Action.PASS


def test_panoramic_and_bitewings_become_a_full_mouth_series_where_the_plan_says_so() -> None:
    pano, bitewings = current("D0330", line_id="1"), current("D0274", line_id="2", order=1)
    carrier = unbundle(pano, [pano, bitewings])
    assert (carrier.action, carrier.suggested_code) == (Action.DOWNCODE, "D0210")
    assert unbundle(bitewings, [pano, bitewings]).action is Action.REJECT
    assert unbundle(pano, [pano, bitewings], plan=V2025).action is Action.PASS  # option off in 2025.1
    within = member([past("D0330", D(2026, 1, 31))])
    assert unbundle(bitewings, [bitewings], within).action is Action.DOWNCODE  # 30 days before
    beyond = member([past("D0330", D(2026, 1, 30))])
    assert unbundle(bitewings, [bitewings], beyond).action is Action.PASS  # 31 days before


# ---- pre-existing -------------------------------------------------------------------------


def test_waiting_period_last_day_and_the_day_after() -> None:
    enrolled = D(2025, 3, 1)
    m = member(baseline=[BaselineCondition(46, Condition.CARIES, enrolled, "enrolment bitewing")], enrolled=enrolled)
    endo = current("D3330", 46)
    last_day = check_preexisting(endo, D(2025, 8, 31), m, V2025)  # 6 months: excluded until 2025-09-01
    assert last_day.action is Action.REJECT and "Section 4.3" in last_day.reason and "2025-09-01" in last_day.reason
    assert check_preexisting(endo, D(2025, 9, 1), m, V2025).action is Action.PASS
    assert check_preexisting(current("D3330", 47), D(2025, 8, 31), m, V2025).action is Action.PASS
    assert check_preexisting(current("D2391", 46), D(2025, 8, 31), m, V2025).action is Action.PASS  # not a listed category


def test_a_condition_found_after_enrolment_is_not_pre_existing() -> None:
    m = member(baseline=[BaselineCondition(46, Condition.CARIES, D(2025, 4, 1))], enrolled=D(2025, 3, 1))
    assert check_preexisting(current("D3330", 46), D(2025, 5, 1), m, V2025).action is Action.PASS


# ---- ledger ---------------------------------------------------------------------------------


def test_limit_exactly_exhausted_and_partial_approval() -> None:
    endo = current("D3330", 46, fee=500.0)
    year = D(2026, 1, 1)
    exhausted = {"endodontics": Balance("endodontics", 1200, 1200), ANNUAL_MAXIMUM: Balance(ANNUAL_MAXIMUM, 2000, 1200)}
    out = apportion(endo, 500.0, exhausted, V2026, year)
    assert out.hit.action is Action.REJECT and out.approved == 0 and "out of limit" in out.hit.reason
    exact = {"endodontics": Balance("endodontics", 1200, 700), ANNUAL_MAXIMUM: Balance(ANNUAL_MAXIMUM, 2000, 700)}
    full = apportion(endo, 500.0, exact, V2026, year)
    assert full.approved == 500.0 and full.member_notice is None and not full.hit.fired
    partial = {"endodontics": Balance("endodontics", 1200, 900), ANNUAL_MAXIMUM: Balance(ANNUAL_MAXIMUM, 2000, 900)}
    part = apportion(endo, 500.0, partial, V2026, year)
    assert part.approved == 300.0 and "200.00" in (part.member_notice or "")
    annual = {"endodontics": Balance("endodontics", 1200, 0), ANNUAL_MAXIMUM: Balance(ANNUAL_MAXIMUM, 2000, 1900)}
    assert apportion(endo, 500.0, annual, V2026, year).approved == 100.0  # the annual maximum is tighter


def test_policy_year_by_enrolment_anniversary() -> None:
    version = V2026.model_copy(update={"policy_year": "enrolment"})
    assert version.policy_year_start(D(2026, 2, 28), D(2024, 3, 1)) == D(2025, 3, 1)
    assert version.policy_year_start(D(2026, 3, 1), D(2024, 3, 1)) == D(2026, 3, 1)
    assert add_months(D(2024, 1, 31), 1) == D(2024, 2, 29)


def test_provider_flag_routes_to_review_and_never_rejects() -> None:
    hit = check_provider(ProviderStanding("P-9", True, ("share of high-value codes at the 99th percentile",), "2026-03"))
    assert hit.action is Action.FLAG and "99th percentile" in hit.reason
    assert check_provider(ProviderStanding("P-9")).action is Action.PASS


@pytest.mark.parametrize("day", [D(2024, 12, 31)])
def test_no_plan_version_before_the_first(day: dt.date) -> None:
    from serving.plans import PlanNotInForceError

    with pytest.raises(PlanNotInForceError):
        PLAN.version_on(day)


def test_a_late_claim_is_checked_against_services_dated_after_it() -> None:
    day = D(2026, 3, 15)
    later_inside = member([past("D0274", D(2027, 3, 14))])  # within 12 months after
    later_outside = member([past("D0274", D(2027, 3, 15))])
    assert freq(current("D0272"), day, later_inside).action is Action.REJECT
    assert freq(current("D0272"), day, later_outside).action is Action.PASS
    december = member([past("D1110", D(2025, 11, 1)), past("D1110", D(2025, 12, 1))])
    assert freq(current("D1110"), D(2025, 3, 1), december).action is Action.REJECT  # the calendar year is full


# ---- pre-authorisation -------------------------------------------------------------------


@pytest.mark.parametrize(("valid_days", "days_after", "cited"),
                         [(365, 0, True), (365, 365, True), (365, 366, False), (365, -1, False),
                          (180, 180, True), (180, 181, False)])
def test_preauthorization_is_cited_within_the_plans_validity_window(valid_days: int, days_after: int,
                                                                     cited: bool) -> None:
    assert V2026.preauthorization_valid_days == 365  # the default: a year
    plan = V2026.model_copy(update={"preauthorization_valid_days": valid_days})
    planned = dataclasses.replace(past("D2740", D(2026, 1, 10), fdi=36, claim="P-1"), action="pass")
    m = dataclasses.replace(member(), preauthorizations=(planned,))
    hit = check_preauthorization(current("D2740", 36), D(2026, 1, 10) + dt.timedelta(days=days_after), m, plan, "claim")
    assert not hit.fired and bool(hit.evidence) is cited
    other_tooth = check_preauthorization(current("D2740", 37), D(2026, 1, 10), m, plan, "claim")
    assert not other_tooth.evidence


def test_a_refused_preauthorization_billed_anyway_is_flagged_and_a_request_never_cites() -> None:
    refused = dataclasses.replace(past("D2740", D(2026, 1, 10), fdi=36, claim="P-1"), action="reject")
    m = dataclasses.replace(member(), preauthorizations=(refused,))
    hit = check_preauthorization(current("D2740", 36), D(2026, 2, 1), m, V2026, "claim")
    assert hit.fired and hit.action is Action.FLAG and "answered 'reject'" in hit.reason
    assert not check_preauthorization(current("D2740", 36), D(2026, 2, 1), m, V2026, "preauthorization").fired


def test_a_history_line_built_from_a_row_is_the_same_frozen_line() -> None:
    values = ("C-1", "2", D(2026, 1, 5), "D2391", concept("D2391"), 36, 3, "approved", 150.0, "P-1", "pass", "basic")
    fast, plain = PastLine.of_row(values), PastLine(*values)
    assert fast == plain and hash(fast) == hash(plain) and repr(fast) == repr(plain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.status = "denied"  # type: ignore[misc]
    with pytest.raises(ValueError):  # every field, in order
        PastLine.of_row(values[:-1])
