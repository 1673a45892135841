"""Rule 3: frequency caps and exact duplicates.

A limit counts the member's earlier lines of its codes (approved or pending, not denied)
inside its window, per member, tooth or quadrant, plus earlier lines of the same claim;
a line that would go past the count is rejected with the limit, the window and the dates
already used. Exceptions (a documented condition, an age) and plan overrides change the
count. An exact duplicate (same member, code, tooth and date) is rejected explicitly."""

from __future__ import annotations

import datetime as dt

from serving.catalogue import Catalogue
from serving.decisions import Action, EvidenceRef, RuleHit, make_hit
from serving.plans import PlanVersion
from serving.rules.history import CurrentLine, MemberSnapshot, PastLine, add_months
from serving.rules.tables import FrequencyLimit, FrequencyTable, Per, Window

FREQUENCY = "R3.frequency"
DUPLICATE = "R3.duplicate"


def _hit(rule_id: str, action: Action, reason: str, evidence: tuple[EvidenceRef, ...] = (), fired: bool = True) -> RuleHit:
    return make_hit(rule_id, action, reason, evidence=evidence, fired=fired)


def _span_end(limit: FrequencyLimit, start: dt.date) -> dt.date:
    """Last day of a window of the limit's length starting on ``start``."""
    p = limit.period
    if p.unit == "day":
        return start + dt.timedelta(days=p.length - 1)
    return add_months(start, p.length * (12 if p.unit == "year" else 1)) - dt.timedelta(days=1)


def window_start(limit: FrequencyLimit, day: dt.date) -> dt.date:
    """First day of the window ending on ``day`` (rolling), or of the calendar period
    holding ``day``."""
    p = limit.period
    if p.window is Window.CALENDAR:
        if p.unit == "year":
            return dt.date(day.year - p.length + 1, 1, 1)
        if p.unit == "month":
            return add_months(dt.date(day.year, day.month, 1), -(p.length - 1))
        return day - dt.timedelta(days=p.length - 1)
    if p.unit == "day":
        return day - dt.timedelta(days=p.length - 1)
    months = p.length * (12 if p.unit == "year" else 1)
    return add_months(day, -months) + dt.timedelta(days=1)


def windows_around(limit: FrequencyLimit, day: dt.date, dates: list[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """The windows a line on ``day`` must respect. Calendar: the period holding the day.
    Rolling: every window of the limit's length that contains the day, so a late-submitted
    claim is checked against services dated after it as well. The count only rises when a
    window's end reaches another service, so the windows starting at the earliest day and
    those ending on a later service's date are enough to try."""
    first = window_start(limit, day)
    if limit.period.window is Window.CALENDAR:
        if limit.period.unit == "year":
            return [(first, dt.date(day.year, 12, 31))]
        return [(first, _span_end(limit, first))]
    starts = sorted({first} | {window_start(limit, d) for d in dates if d > day and window_start(limit, d) <= day})
    return [(s, _span_end(limit, s)) for s in starts]


def _same_key(limit: FrequencyLimit, line: CurrentLine, other_fdi: int | None, other_quadrant: int | None) -> bool:
    if limit.per is Per.TOOTH:
        return line.fdi is not None and other_fdi == line.fdi
    if limit.per is Per.QUADRANT:
        return line.quadrant is not None and other_quadrant == line.quadrant
    return True


def allowed_count(limit: FrequencyLimit, member: MemberSnapshot, age: int, plan: PlanVersion) -> tuple[int, str]:
    """The count that applies to this member, and why (plan override, exception)."""
    count, why = limit.count, ""
    override = plan.frequency_overrides.get(limit.id)
    if override is not None:
        count, why = override.count, f" (plan {plan.version} override)"
    for exception in limit.exceptions:
        documented = exception.condition is not None and member.has_condition(exception.condition)
        if documented and exception.condition is not None and exception.count > count:
            count, why = exception.count, f" (documented {exception.condition.value.replace('_', ' ')})"
        if exception.under_age is not None and age < exception.under_age and exception.count > count:
            count, why = exception.count, f" (member under {exception.under_age})"
    return count, why


def check_frequency(line: CurrentLine, earlier_in_claim: tuple[CurrentLine, ...], day: dt.date, age: int,
                    member: MemberSnapshot, plan: PlanVersion, table: FrequencyTable, catalogue: Catalogue) -> RuleHit:
    for limit in table.limits_for(line.concept_id, catalogue):
        if limit.ages is not None and not limit.ages.holds(age):
            continue
        concepts = catalogue.concepts_of(limit.codes)
        candidates: list[PastLine] = [p for p in member.history if p.concept_id in concepts and p.counts
                                      and _same_key(limit, line, p.fdi, p.quadrant)]
        same_claim = [c for c in earlier_in_claim if c.concept_id in concepts and _same_key(limit, line, c.fdi, c.quadrant)]
        allowed, why = allowed_count(limit, member, age, plan)
        if len(candidates) + len(same_claim) < allowed:
            continue  # under the count even if every one fell in one window: no window to try
        used, past, start, end = -1, [], day, day
        for lo, hi in windows_around(limit, day, [p.date_of_service for p in candidates]):
            inside = [p for p in candidates if lo <= p.date_of_service <= hi]
            if len(inside) > used:
                used, past, start, end = len(inside), inside, lo, hi
        used += len(same_claim)
        if used >= allowed:
            dates = ", ".join(f"{p.date_of_service.isoformat()} ({p.code}, claim {p.claim_id})"
                              for p in sorted(past, key=lambda p: p.date_of_service))
            dates += "".join(f", this claim line {c.line_id} ({c.code})" for c in same_claim)
            scope = {Per.MEMBER: "per member", Per.TOOTH: f"per tooth ({line.fdi})",
                     Per.QUADRANT: f"per quadrant ({line.quadrant})"}[limit.per]
            evidence = tuple(EvidenceRef(source="claim", description=f"earlier {p.code} on {p.date_of_service.isoformat()} "
                                         f"(claim {p.claim_id} line {p.line_id})") for p in past)
            return _hit(FREQUENCY, Action.REJECT,
                        f"frequency limit '{limit.name}' ({limit.id}, frequency table {table.version}): {allowed}{why} "
                        f"{limit.period.text()} {scope}; in {start.isoformat()} to {end.isoformat()} already used: "
                        f"{dates or 'none'}", evidence)
    return _hit(FREQUENCY, Action.PASS, "within every frequency limit", fired=False)


def check_duplicate(line: CurrentLine, earlier_in_claim: tuple[CurrentLine, ...], day: dt.date,
                    member: MemberSnapshot, claim_id: str) -> RuleHit:
    for p in member.history:  # the date first: it rules out nearly every past line
        if p.date_of_service == day and p.concept_id == line.concept_id and p.fdi == line.fdi and p.counts \
                and p.claim_id != claim_id:
            site = "on the same tooth and date of service" if line.fdi is not None else "on the same date of service"
            return _hit(DUPLICATE, Action.REJECT, f"exact duplicate of claim {p.claim_id} line {p.line_id}: the same "
                        f"procedure ({p.code}) {site}",
                        (EvidenceRef(source="claim", description=f"claim {p.claim_id} line {p.line_id}"),))
    for c in earlier_in_claim:
        if c.concept_id == line.concept_id and c.fdi == line.fdi:
            site = " on the same tooth" if line.fdi is not None else ""
            return _hit(DUPLICATE, Action.REJECT, f"exact duplicate of line {c.line_id} of this claim: the same "
                        f"procedure ({c.code}){site}")
    return _hit(DUPLICATE, Action.PASS, "not a duplicate", fired=False)
