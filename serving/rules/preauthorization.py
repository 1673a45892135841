"""A claim line that was pre-authorised cites that decision. A pre-authorisation request
(``"mode": "preauthorization"``) is decided like a claim but consumes no ledger; its lines
are kept, and a later claim line for the same procedure (same concept, same tooth) by the
same member, dated within the plan version's validity window, carries the earlier decision
as evidence.
Where the plan was answered with reject or downcode and the procedure is billed all the
same, a reviewer compares the two."""

from __future__ import annotations

import datetime as dt

from serving.decisions import Action, EvidenceRef, RuleHit, make_hit
from serving.plans import PlanVersion
from serving.rules.history import CurrentLine, MemberSnapshot, PastLine

PREAUTHORIZATION = "R0.preauthorization"


def matching_preauthorization(line: CurrentLine, day: dt.date, member: MemberSnapshot,
                              valid_days: int) -> PastLine | None:
    """The latest pre-authorised line for this procedure and tooth, requested at most
    ``valid_days`` before (or on) the date of service."""
    found = [p for p in member.preauthorizations
             if p.concept_id == line.concept_id and p.fdi == line.fdi
             and day - dt.timedelta(days=valid_days) <= p.date_of_service <= day]
    return max(found, key=lambda p: p.date_of_service) if found else None


def check_preauthorization(line: CurrentLine, day: dt.date, member: MemberSnapshot, plan: PlanVersion,
                           mode: str) -> RuleHit:
    if mode == "preauthorization":
        return make_hit(PREAUTHORIZATION, Action.PASS, "a pre-authorisation request consumes no benefit", fired=False)
    earlier = matching_preauthorization(line, day, member, plan.preauthorization_valid_days)
    if earlier is None:
        return make_hit(PREAUTHORIZATION, Action.PASS, "no pre-authorisation on file for this procedure", fired=False)
    where = (f"pre-authorisation {earlier.claim_id} line {earlier.line_id} of {earlier.date_of_service.isoformat()} "
             f"({earlier.code}{f' on tooth {earlier.fdi}' if earlier.fdi else ''})")
    evidence = (EvidenceRef(source="claim", description=f"{where}: {earlier.action or earlier.status}",
                            tooth_fdi=earlier.fdi),)
    if earlier.action in (Action.REJECT.value, Action.DOWNCODE.value):
        return make_hit(PREAUTHORIZATION, Action.FLAG, f"{where} was answered '{earlier.action}'; the procedure is billed "
                        "as planned, so a reviewer compares the claim with that decision", evidence=evidence)
    return make_hit(PREAUTHORIZATION, Action.PASS, f"pre-authorised: {where}, answered '{earlier.action or 'pending'}'",
                    evidence=evidence, fired=False)
