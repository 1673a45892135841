"""Rule 6: pre-existing exclusion. A line treating a condition the enrolment baseline
recorded on that tooth (decay, a missing tooth) is excluded while the plan's waiting
period runs; the reason cites the plan clause and the day the exclusion ends."""

from __future__ import annotations

import datetime as dt

from serving.decisions import Action, EvidenceRef, RuleHit, make_hit
from serving.plans import PlanVersion
from serving.rules.history import CurrentLine, MemberSnapshot, add_months

PREEXISTING = "R6.preexisting"


def waiting_period_end(enrolment_start: dt.date, months: int) -> dt.date:
    """First day on which the exclusion no longer applies."""
    return add_months(enrolment_start, months)


def check_preexisting(line: CurrentLine, day: dt.date, member: MemberSnapshot, plan: PlanVersion) -> RuleHit:
    if line.fdi is None:
        return make_hit(PREEXISTING, Action.PASS, "no tooth on the line", fired=False)
    for period in plan.waiting_periods:
        if line.category not in period.categories:
            continue
        ends = waiting_period_end(member.enrolment_start, period.months)
        if day >= ends:
            continue
        for condition in period.conditions:
            recorded = member.has_condition(condition, line.fdi)
            if recorded is None or recorded.recorded_on > member.enrolment_start:
                continue
            return make_hit(
                PREEXISTING, Action.REJECT,
                f"pre-existing condition: {condition.value.replace('_', ' ')} on tooth {line.fdi} was recorded at "
                f"enrolment ({recorded.recorded_on.isoformat()}); {line.category} for it is excluded until "
                f"{ends.isoformat()} under plan {plan.version}, {period.clause}",
                evidence=(EvidenceRef(source="claim", description=f"enrolment baseline: {condition.value} on tooth "
                                      f"{line.fdi}, {recorded.recorded_on.isoformat()}"
                                      + (f" ({recorded.evidence})" if recorded.evidence else ""), tooth_fdi=line.fdi),))
    return make_hit(PREEXISTING, Action.PASS, "no pre-existing exclusion applies", fired=False)
