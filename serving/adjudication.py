"""``adjudicate(claim, readings) -> ClaimDecision``: the validation layer (rules 1 and 2)
and the claim-history rules (3 to 7) in a declared order, combined by a stated policy,
recorded in the audit trail.

Policy: for each line the most severe action of all rules wins (pass < flag < downcode <
reject); a line not rejected is then apportioned against the ledger (rule 7), which may
approve part of it or put it out of limit. Every rule evaluated is recorded, fired or
not, with the rule-library version; the decision carries the versions of the tables, the
plan version in force on the date of service and the models.

Concurrency: the member's snapshot, the ledger rows and the audit chain head are read and
written in one transaction that holds the write lock (SQLite ``BEGIN IMMEDIATE``,
PostgreSQL ``SELECT ... FOR UPDATE``), so two claims for one member never spend the same
balance. A claim already decided (same tenant, claim id and mode) gets its stored
decision back and consumes nothing again."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from models.detections import ImageReading
from serving.catalogue import UnknownCodeError
from serving.claims import Claim
from serving.decisions import Action, LineDecision, RuleHit, combine_hits, make_hit
from serving.plans import PlanVersion
from serving.rules.frequency import check_duplicate, check_frequency
from serving.rules.history import CurrentLine, MemberSnapshot, ProviderStanding
from serving.rules.ledger import apportion, plan_buckets
from serving.rules.preexisting import check_preexisting
from serving.rules.provider import check_provider
from serving.rules.tables import RULES_DIR, BundleLibrary, FrequencyTable, load_bundles, load_frequency
from serving.rules.unbundling import check_unbundling
from serving.store import audit, repository
from serving.store.database import Store
from serving.validation.context import Tables
from serving.validation.engine import load_tables, validate_claim

ELIGIBILITY = "R0.eligibility"



@dataclass(frozen=True)
class RuleTables:
    validation: Tables
    frequency: FrequencyTable
    bundles: BundleLibrary

    @classmethod
    def load(cls, rules_dir: Path = RULES_DIR) -> RuleTables:
        validation = load_tables()
        return cls(validation, load_frequency(rules_dir / "frequency.yaml", validation.catalogue),
                   load_bundles(rules_dir / "bundles.yaml", validation.catalogue))

    def versions(self) -> dict[str, str]:
        return {**self.validation.versions(), "frequency_table": self.frequency.version,
                "bundle_library": self.bundles.version}


class ClaimDecision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    claim_id: str
    tenant: str
    mode: str
    lines: tuple[LineDecision, ...]
    decision_time: str
    versions: dict[str, str]
    audit_id: int
    replayed: bool = False  # True: the stored decision of an earlier identical request

    def line(self, line_id: str) -> LineDecision:
        return next(x for x in self.lines if x.line_id == line_id)


def _current_lines(claim: Claim, tables: RuleTables) -> dict[str, CurrentLine]:
    lines = {}
    for order, line in enumerate(claim.lines):
        try:
            resolved = tables.validation.catalogue.resolve(line)
        except UnknownCodeError:
            continue  # the validation layer flags it; history rules cannot place it
        tooth = line.fdi_tooth
        quadrant = line.quadrant or (tooth.quadrant if tooth is not None and tooth.quadrant <= 4 else None)
        lines[line.line_id] = CurrentLine(line_id=line.line_id, code=line.code, concept_id=resolved.concept_id,
                                          category=resolved.concept.category, fdi=tooth.fdi if tooth else None,
                                          quadrant=quadrant, fee=line.fee, order=order)
    return lines


def _ineligible(claim: Claim, why: str) -> tuple[LineDecision, ...]:
    hit = make_hit(ELIGIBILITY, Action.REJECT, why)
    return tuple(combine_hits(line.line_id, (hit,)) for line in claim.lines)


def history_hits(current: CurrentLine, earlier: tuple[CurrentLine, ...], everything: tuple[CurrentLine, ...],
                 claim: Claim, member: MemberSnapshot, plan: PlanVersion, tables: RuleTables,
                 standing: ProviderStanding) -> tuple[RuleHit, ...]:
    """Rules 3 to 6 for one line, in their declared order (pure)."""
    day, age = claim.date_of_service, claim.member.age_on(claim.date_of_service)
    catalogue = tables.validation.catalogue
    return (
        check_duplicate(current, earlier, day, member, claim.claim_id),
        check_frequency(current, earlier, day, age, member, plan, tables.frequency, catalogue),
        check_unbundling(current, everything, day, member, plan, tables.bundles, catalogue),
        check_provider(standing),
        check_preexisting(current, day, member, plan),
    )


def _input_digest(claim: Claim, readings: tuple[ImageReading, ...]) -> str:
    return audit.digest({"claim": claim.model_dump(mode="json"), "readings": [dataclasses.asdict(r) for r in readings]})


def adjudicate(claim: Claim, readings: Mapping[str, ImageReading] | tuple[ImageReading, ...], store: Store,
               tables: RuleTables, *, now: dt.datetime, actor: str = "system") -> ClaimDecision:
    images = tuple(readings.values()) if isinstance(readings, Mapping) else tuple(readings)
    validation = validate_claim(claim, images, tables.validation)  # pure, outside the lock
    preauth = claim.mode == "preauthorization"
    decisions: list[LineDecision] = []
    with store.transaction() as session:
        repository.lock_member(session, claim.member.member_id)
        stored = repository.stored_decision(session, claim.tenant, claim.claim_id, claim.mode)
        if stored is not None:
            return ClaimDecision.model_validate_json(stored).model_copy(update={"replayed": True})
        versions = {**tables.versions(), **{k: v for k, v in validation.versions.items() if k.startswith("model:")}}
        member = repository.load_member(session, claim.member.member_id, claim.date_of_service)
        plan = repository.plan_version_on(session, member.plan_id, claim.date_of_service) if member else None
        if member is None or plan is None:
            why = ("the member has no enrolment in force on the date of service" if member is None
                   else f"plan {member.plan_id} has no version in force on {claim.date_of_service.isoformat()}")
            decisions = list(_ineligible(claim, why))
        else:
            versions[f"plan:{member.plan_id}"] = plan.version
            current = _current_lines(claim, tables)
            standing = repository.provider_standing(session, claim.provider.provider_id)
            year_start = plan.policy_year_start(claim.date_of_service, member.enrolment_start)
            ledger = repository.lock_balances(session, member.member_id, member.plan_id, year_start, plan_buckets(plan))
            balances = repository.balances_of(ledger)
            accepted: list[CurrentLine] = []
            rows_consumed: dict[str, dict[str, float]] = {}
            everything = tuple(current.values())
            for line, validated in zip(claim.lines, validation.lines, strict=True):
                hits = validated.rule_hits
                this = current.get(line.line_id)
                if this is not None:
                    hits += history_hits(this, tuple(accepted), everything, claim, member, plan, tables, standing)
                decision = combine_hits(line.line_id, hits)
                if this is not None and decision.action is not Action.REJECT:
                    share = apportion(this, line.fee, balances, plan, year_start)
                    hits += (share.hit,)
                    decision = combine_hits(line.line_id, hits).model_copy(
                        update={"approved_amount": share.approved if share.hit.action is not Action.REJECT else 0.0,
                                "member_notice": share.member_notice})
                    if share.hit.action is not Action.REJECT:
                        accepted.append(this)
                        for bucket, amount in share.consumed.items():
                            old = balances[bucket]
                            balances[bucket] = dataclasses.replace(old, used=old.used + amount)
                        rows_consumed[line.line_id] = share.consumed
                else:
                    decision = decision.model_copy(update={"approved_amount": 0.0})
                decisions.append(decision)
            if not preauth:
                for line_id, consumed in rows_consumed.items():
                    repository.consume(session, ledger, consumed, tenant=claim.tenant, claim_id=claim.claim_id,
                                       line_id=line_id, now=now)
            repository.write_lines(session, claim, tuple(decisions), current, now)
        decided = tuple(decisions)
        record = audit.append(session, tenant=claim.tenant, kind=claim.mode, subject=claim.claim_id, actor=actor,
                              input_digest=_input_digest(claim, images), versions=versions,
                              payload=[d.model_dump(mode="json") for d in decided], created_at=now.isoformat())
        result = ClaimDecision(claim_id=claim.claim_id, tenant=claim.tenant, mode=claim.mode, lines=decided,
                               decision_time=now.isoformat(), versions=versions, audit_id=record.seq)
        repository.save_decision(session, result.model_dump_json(), claim, record.seq, now)
        return result
