"""Reading snapshots from the store and writing what an adjudication decided. The rules
never see a session: this module turns rows into the frozen snapshots they read."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from models.config_loading import ConfigError, FrozenConfig
from models.teeth import Tooth
from serving.catalogue import Catalogue
from serving.claims import Claim
from serving.decisions import LineDecision
from serving.plans import Condition, Plan, PlanVersion
from serving.rules.history import BaselineCondition, CurrentLine, MemberSnapshot, PastLine, ProviderStanding, add_months
from serving.rules.ledger import ANNUAL_MAXIMUM, Balance
from serving.store.database import StoreError
from serving.store.schema import (
    BaselineRow,
    ClaimLineRow,
    DecisionRow,
    EnrolmentRow,
    LedgerEntryRow,
    LedgerRow,
    MemberRow,
    PlanVersionRow,
    ProviderRow,
    ProviderStatsRow,
)


class PlanVersionChangedError(StoreError):
    code = "store.plan_version_changed"


# ---- plans --------------------------------------------------------------------------


def save_plans(session: Session, plans: dict[str, Plan], now: dt.datetime) -> int:
    """Store every plan version not yet stored. A stored version is immutable: loading a
    different document under the same label is refused (past decisions cite it)."""
    added = 0
    for plan in plans.values():
        for version in plan.versions:
            document = version.model_dump_json()
            row = session.execute(select(PlanVersionRow).where(PlanVersionRow.plan_id == plan.plan_id,
                                                               PlanVersionRow.version == version.version)).scalar_one_or_none()
            if row is not None:
                if json.loads(row.document) != json.loads(document):
                    raise PlanVersionChangedError(
                        f"plan {plan.plan_id} version {version.version} is already stored with different terms; "
                        "give the changed terms a new version label")
                continue
            session.add(PlanVersionRow(plan_id=plan.plan_id, version=version.version,
                                       effective_from=version.effective_from, effective_to=version.effective_to,
                                       document=document, loaded_at=now))
            added += 1
    session.flush()
    return added


def plan_version_on(session: Session, plan_id: str, day: dt.date) -> PlanVersion | None:
    rows = session.execute(select(PlanVersionRow).where(PlanVersionRow.plan_id == plan_id,
                                                        PlanVersionRow.effective_from <= day)).scalars()
    for row in rows:
        if row.effective_to is None or day <= row.effective_to:
            return PlanVersion.model_validate_json(row.document)
    return None


# ---- members and providers --------------------------------------------------------------


def lock_member(session: Session, member_id: str) -> bool:
    """Lock the member's row for the transaction (PostgreSQL ``FOR UPDATE``; SQLite already
    holds the write lock), so that claims of one member are decided one after the other
    and each sees the history the one before wrote. False when the member is unknown."""
    row = session.execute(select(MemberRow.member_id).where(MemberRow.member_id == member_id).with_for_update())
    return row.first() is not None


def load_member(session: Session, member_id: str, day: dt.date) -> MemberSnapshot | None:
    """The member with the enrolment in force on ``day`` and the whole claim history;
    None when the member is unknown or not enrolled that day."""
    member = session.get(MemberRow, member_id)
    if member is None:
        return None
    enrolment = next((e for e in session.execute(select(EnrolmentRow).where(EnrolmentRow.member_id == member_id)).scalars()
                      if e.start_date <= day and (e.end_date is None or day <= e.end_date)), None)
    if enrolment is None:
        return None
    baseline = tuple(BaselineCondition(fdi=b.fdi, condition=Condition(b.condition), recorded_on=b.recorded_on,
                                       evidence=b.evidence)
                     for b in session.execute(select(BaselineRow).where(BaselineRow.member_id == member_id)).scalars())
    history = tuple(
        PastLine(claim_id=r.claim_id, line_id=r.line_id, date_of_service=r.date_of_service, code=r.code,
                 concept_id=r.concept_id, fdi=r.fdi, quadrant=r.quadrant, status=r.status,
                 approved_amount=float(r.approved_amount), provider_id=r.provider_id)
        for r in session.execute(select(ClaimLineRow).where(ClaimLineRow.member_id == member_id,
                                                            ClaimLineRow.mode == "claim")).scalars())
    return MemberSnapshot(member_id=member_id, birth_date=member.birth_date, plan_id=enrolment.plan_id,
                          enrolment_start=enrolment.start_date, baseline=baseline, history=history)


def provider_standing(session: Session, provider_id: str) -> ProviderStanding:
    row = session.execute(select(ProviderStatsRow).where(ProviderStatsRow.provider_id == provider_id)
                          .order_by(ProviderStatsRow.period_end.desc()).limit(1)).scalar_one_or_none()
    if row is None:
        return ProviderStanding(provider_id)
    return ProviderStanding(provider_id, flagged=row.flagged, evidence=tuple(json.loads(row.evidence)), cycle=row.cycle)


# ---- ledgers ----------------------------------------------------------------------------


def lock_balances(session: Session, member_id: str, plan_id: str, year_start: dt.date,
                  limits: dict[str, float]) -> dict[str, LedgerRow]:
    """The member's ledger rows for the policy year, created at the plan's limits when
    missing, and locked (FOR UPDATE; SQLite holds the write lock of BEGIN IMMEDIATE)."""
    def query():
        return select(LedgerRow).where(LedgerRow.member_id == member_id, LedgerRow.plan_id == plan_id,
                                       LedgerRow.year_start == year_start).with_for_update()

    rows = {r.bucket: r for r in session.execute(query()).scalars()}
    missing = [b for b in limits if b not in rows]
    if missing:
        # A new ledger starts from what the history already paid in that policy year
        # (lines loaded from another system, or decided before the ledger existed).
        year_end = add_months(year_start, 12)
        paid = session.execute(select(ClaimLineRow.category, func.sum(ClaimLineRow.approved_amount))
                               .where(ClaimLineRow.member_id == member_id, ClaimLineRow.mode == "claim",
                                      ClaimLineRow.status != "denied", ClaimLineRow.date_of_service >= year_start,
                                      ClaimLineRow.date_of_service < year_end)
                               .group_by(ClaimLineRow.category)).all()
        by_category = {category: Decimal(total or 0) for category, total in paid}
        values = [{"member_id": member_id, "plan_id": plan_id, "year_start": year_start, "bucket": bucket,
                   "limit_amount": Decimal(str(limits[bucket])),
                   "used": sum(by_category.values(), Decimal("0")) if bucket == ANNUAL_MAXIMUM
                   else by_category.get(bucket, Decimal("0"))} for bucket in missing]
        # Another transaction may be creating the same rows: the first one wins, we lock it below.
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(insert(LedgerRow).values(values).on_conflict_do_nothing())
        rows = {r.bucket: r for r in session.execute(query()).scalars()}
    return rows


def balances_of(rows: dict[str, LedgerRow]) -> dict[str, Balance]:
    return {b: Balance(b, float(r.limit_amount), float(r.used)) for b, r in rows.items()}


def consume(session: Session, rows: dict[str, LedgerRow], consumed: dict[str, float], *, tenant: str, claim_id: str,
            line_id: str, now: dt.datetime) -> None:
    for bucket, amount in consumed.items():
        row = rows[bucket]
        row.used = Decimal(row.used) + Decimal(str(amount))
        session.add(LedgerEntryRow(ledger_id=row.id, tenant=tenant, claim_id=claim_id, line_id=line_id,
                                   amount=Decimal(str(amount)), created_at=now))


# ---- decisions ----------------------------------------------------------------------------


def stored_decision(session: Session, tenant: str, claim_id: str, mode: str) -> str | None:
    row = session.execute(select(DecisionRow).where(DecisionRow.tenant == tenant, DecisionRow.claim_id == claim_id,
                                                    DecisionRow.mode == mode)).scalar_one_or_none()
    return row.decision if row else None


def decision_by_audit_id(session: Session, tenant: str, audit_id: int) -> str | None:
    row = session.execute(select(DecisionRow).where(DecisionRow.tenant == tenant, DecisionRow.audit_seq == audit_id)
                          ).scalar_one_or_none()
    return row.decision if row else None


# ---- seeding from files ---------------------------------------------------------------------


class SeedBaseline(FrozenConfig):
    fdi: int | None = None
    condition: Condition
    recorded_on: dt.date
    evidence: str = ""


class SeedEnrolment(FrozenConfig):
    plan_id: str
    start: dt.date
    end: dt.date | None = None


class SeedMember(FrozenConfig):
    member_id: str
    birth_date: dt.date
    enrolments: tuple[SeedEnrolment, ...] = Field(min_length=1)
    baseline: tuple[SeedBaseline, ...] = ()


class SeedProvider(FrozenConfig):
    provider_id: str
    specialty: str = "general"
    region: str = ""


class SeedLine(FrozenConfig):
    claim_id: str
    line_id: str
    member_id: str
    provider_id: str
    date_of_service: dt.date
    code: str
    code_system: str = "CDT"
    tooth: int | None = None  # FDI
    quadrant: int | None = None
    fee: float = 0.0
    approved_amount: float | None = None
    status: str = "approved"


class SeedFile(FrozenConfig):
    tenant: str = "default"
    providers: tuple[SeedProvider, ...] = ()
    members: tuple[SeedMember, ...] = ()
    history: tuple[SeedLine, ...] = ()


def seed(session: Session, data: SeedFile, catalogue: Catalogue, now: dt.datetime) -> dict[str, int]:
    for p in data.providers:
        session.merge(ProviderRow(provider_id=p.provider_id, tenant=data.tenant, specialty=p.specialty, region=p.region))
    for m in data.members:
        session.merge(MemberRow(member_id=m.member_id, tenant=data.tenant, birth_date=m.birth_date))
        session.flush()
        for e in m.enrolments:
            session.add(EnrolmentRow(member_id=m.member_id, plan_id=e.plan_id, start_date=e.start, end_date=e.end))
        for b in m.baseline:
            session.add(BaselineRow(member_id=m.member_id, fdi=b.fdi, condition=b.condition.value,
                                    recorded_on=b.recorded_on, evidence=b.evidence))
    session.add_all(history_rows(data.tenant, data.history, catalogue, now))
    session.flush()
    return {"providers": len(data.providers), "members": len(data.members), "history_lines": len(data.history)}


def history_rows(tenant: str, lines: tuple[SeedLine, ...], catalogue: Catalogue, now: dt.datetime) -> list[ClaimLineRow]:
    rows = []
    for x in lines:
        targets = catalogue.codes.get(x.code_system, {}).get(x.code)
        if not targets:
            raise ConfigError(f"history line {x.claim_id}/{x.line_id}: {x.code_system} code {x.code!r} is not in the catalogue")
        concept = catalogue.concepts[targets[0]]
        quadrant = x.quadrant or (Tooth.fdi_of(x.tooth).quadrant if x.tooth else None)
        rows.append(ClaimLineRow(
            tenant=tenant, claim_id=x.claim_id, line_id=x.line_id, mode="claim", member_id=x.member_id,
            provider_id=x.provider_id, date_of_service=x.date_of_service, code=x.code, code_system=x.code_system,
            concept_id=targets[0], category=concept.category, fdi=x.tooth, quadrant=quadrant,
            fee=Decimal(str(x.fee)), approved_amount=Decimal(str(x.fee if x.approved_amount is None else x.approved_amount)),
            status=x.status, action="pass" if x.status == "approved" else "reject", decided_at=now))
    return rows


def load_seed_file(path: str | Path) -> SeedFile:
    from models.config_loading import load_config

    source = Path(path)
    if source.suffix == ".json":
        try:
            return SeedFile.model_validate_json(source.read_text("utf-8"))
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    return load_config(SeedFile, source)



def write_lines(session: Session, claim: Claim, decisions: tuple[LineDecision, ...], current: dict[str, CurrentLine],
                now: dt.datetime) -> None:
    """The claim's lines into the history, with the status the decision gives them."""
    status = {"pass": "approved", "downcode": "approved", "flag": "pending", "reject": "denied"}
    for line, decision in zip(claim.lines, decisions, strict=True):
        this = current.get(line.line_id)
        if this is None:
            continue
        session.add(ClaimLineRow(
            tenant=claim.tenant, claim_id=claim.claim_id, line_id=line.line_id, mode=claim.mode,
            member_id=claim.member.member_id, provider_id=claim.provider.provider_id,
            date_of_service=claim.date_of_service, code=line.code, code_system=line.code_system,
            concept_id=this.concept_id, category=this.category, fdi=this.fdi, quadrant=this.quadrant,
            fee=Decimal(str(line.fee)), approved_amount=Decimal(str(decision.approved_amount or 0.0)),
            status=status[decision.action.value], action=decision.action.value, decided_at=now))


def save_decision(session: Session, decision_json: str, claim: Claim, audit_seq: int, now: dt.datetime) -> None:
    session.add(DecisionRow(tenant=claim.tenant, claim_id=claim.claim_id, mode=claim.mode, decision=decision_json,
                            audit_seq=audit_seq, created_at=now))
