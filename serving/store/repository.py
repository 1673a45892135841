"""Reading snapshots from the store and writing what an adjudication decided. The rules
never see a session: this module turns rows into the frozen snapshots they read."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from pydantic import Field
from sqlalchemy import BigInteger, Float, Table, bindparam, func, select, type_coerce, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from models.config_loading import ConfigError, FrozenConfig
from models.teeth import Tooth
from serving.catalogue import Catalogue
from serving.claims import Claim
from serving.decisions import Action, LineDecision
from serving.fingerprints import FINGERPRINT_VERSION, Fingerprint
from serving.plans import Condition, Plan, PlanVersion
from serving.rules.history import BaselineCondition, CurrentLine, MemberSnapshot, PastLine, ProviderStanding, add_months
from serving.rules.ledger import ANNUAL_MAXIMUM, Balance, plan_buckets
from serving.rules.recycled import ImagePrint, StoredPrint
from serving.store import audit
from serving.store.bulk import insert_many
from serving.store.database import StoreError
from serving.store.likeness import LikenessPools, claim_key
from serving.store.schema import (
    AppealRow,
    AuditRow,
    BaselineRow,
    ClaimImageRow,
    ClaimLineRow,
    ClaimRecordRow,
    DecisionRow,
    EnrolmentRow,
    FingerprintRow,
    IdempotencyRow,
    LedgerEntryRow,
    LedgerRow,
    MemberRow,
    PlanVersionRow,
    ProviderRow,
    ProviderStatsRow,
    ReviewItemRow,
)


class PlanVersionChangedError(StoreError):
    code = "store.plan_version_changed"


# ---- plans --------------------------------------------------------------------------


def save_plans(session: Session, plans: dict[str, Plan], now: dt.datetime, *, actor: str = "system") -> int:
    """Store every plan version not yet stored; returns how many were added. A stored
    version is immutable (past decisions cite it): loading a different document under the
    same label is refused, with one exception, ending it. An open-ended version may be
    given an end date, from today on, when its successor arrives; every other term must be
    unchanged. The end goes into the audit trail."""
    added = 0
    for plan in plans.values():
        for version in plan.versions:
            document = version.model_dump_json()
            row = session.execute(select(PlanVersionRow).where(PlanVersionRow.plan_id == plan.plan_id,
                                                               PlanVersionRow.version == version.version)).scalar_one_or_none()
            if row is None:
                session.add(PlanVersionRow(plan_id=plan.plan_id, version=version.version,
                                           effective_from=version.effective_from, effective_to=version.effective_to,
                                           document=document, loaded_at=now))
                added += 1
                continue
            # Compared as plan terms, not text: a term added to the schema later, with its default,
            # is not a change of a stored version.
            stored = PlanVersion.model_validate_json(row.document)
            if stored == version:
                continue
            label = f"plan {plan.plan_id} version {version.version}"
            ending = stored.effective_to is None and version.effective_to is not None and \
                stored.model_copy(update={"effective_to": version.effective_to}) == version
            if not ending:
                raise PlanVersionChangedError(f"{label} is already stored with different terms; give the changed terms "
                                              "a new version label (only an open-ended version may be given an end date)")
            assert version.effective_to is not None
            if version.effective_to < now.date():
                raise PlanVersionChangedError(f"{label} cannot end on {version.effective_to.isoformat()}, in the past: "
                                              "claims of the days since may have been decided under it")
            row.effective_to, row.document = version.effective_to, document
            chain = audit.ChainWriter(session)
            chain.add(tenant="*", kind="plan_version_ended", subject=f"{plan.plan_id}@{version.version}", actor=actor,
                      input_digest=hashlib.sha256(document.encode("utf-8")).hexdigest(),
                      versions={f"plan:{plan.plan_id}": version.version},
                      payload={"plan_id": plan.plan_id, "version": version.version,
                               "effective_to": version.effective_to.isoformat()}, created_at=now.isoformat())
            chain.flush()
    session.flush()
    return added


# ---- members and providers --------------------------------------------------------------


def lock_members(session: Session, member_ids: list[str]) -> None:
    """Lock the members' rows for the transaction (PostgreSQL ``FOR UPDATE``, in a fixed
    order so that two batches cannot deadlock; SQLite already holds the write lock), so
    that claims of one member are decided one after the other and each sees the history
    the one before wrote."""
    if session.get_bind().dialect.name == "sqlite":
        return  # BEGIN IMMEDIATE took the database's write lock: nothing finer to lock
    session.execute(select(MemberRow.member_id).where(MemberRow.member_id.in_(sorted(set(member_ids))))
                    .order_by(MemberRow.member_id).with_for_update()).all()


@dataclass
class MemberData:
    """Everything stored about a member, before choosing the enrolment for a date."""

    member_id: str
    birth_date: dt.date
    enrolments: list[tuple[str, dt.date, dt.date | None]]
    baseline: tuple[BaselineCondition, ...]
    history: list[PastLine]
    preauthorizations: list[PastLine] = field(default_factory=list)

    def enrolment_on(self, day: dt.date) -> tuple[str, dt.date] | None:
        """(plan id, enrolment start) of the enrolment in force on ``day``."""
        return next(((plan, start) for plan, start, end in self.enrolments if start <= day and (end is None or day <= end)),
                    None)

    def snapshot_on(self, day: dt.date) -> MemberSnapshot | None:
        enrolment = self.enrolment_on(day)
        if enrolment is None:
            return None
        return MemberSnapshot(member_id=self.member_id, birth_date=self.birth_date, plan_id=enrolment[0],
                              enrolment_start=enrolment[1], baseline=self.baseline, history=tuple(self.history),
                              preauthorizations=tuple(self.preauthorizations))


_HISTORY_COLUMNS = (ClaimLineRow.member_id, ClaimLineRow.claim_id, ClaimLineRow.line_id, ClaimLineRow.date_of_service,
                    ClaimLineRow.code, ClaimLineRow.concept_id, ClaimLineRow.fdi, ClaimLineRow.quadrant,
                    ClaimLineRow.status,
                    # Read as a float (what PastLine keeps): no Decimal made and unmade for every history line.
                    type_coerce(ClaimLineRow.approved_amount, Float), ClaimLineRow.provider_id, ClaimLineRow.action,
                    ClaimLineRow.mode, ClaimLineRow.category)


def _member_statements() -> tuple[Any, Any, Any, Any]:
    """The four queries of ``load_members``, built once (for every claim, building them and
    adapting SQLAlchemy's cached compiled form to new objects took about half the time)."""
    ids: Any = bindparam("ids", expanding=True)
    return (select(MemberRow.member_id, MemberRow.birth_date).where(MemberRow.member_id.in_(ids)),
            select(EnrolmentRow.member_id, EnrolmentRow.plan_id, EnrolmentRow.start_date, EnrolmentRow.end_date)
            .where(EnrolmentRow.member_id.in_(ids)),
            select(BaselineRow.member_id, BaselineRow.fdi, BaselineRow.condition, BaselineRow.recorded_on,
                   BaselineRow.evidence).where(BaselineRow.member_id.in_(ids)),
            select(*_HISTORY_COLUMNS).where(ClaimLineRow.member_id.in_(ids)))


_MEMBERS, _ENROLMENTS, _BASELINES, _HISTORY = _member_statements()


def load_members(session: Session, member_ids: list[str]) -> dict[str, MemberData]:
    """Members, enrolments, baselines and claim history for many members in four queries
    (plain rows rather than ORM objects: a member can have thousands of history lines)."""
    ids = {"ids": sorted(set(member_ids))}
    db = session.connection()  # Core rows: the ORM's row processing costs more and gives nothing here
    found = {m: MemberData(m, birth, [], (), []) for m, birth in db.execute(_MEMBERS, ids).all()}
    for member_id, plan_id, start, end in db.execute(_ENROLMENTS, ids).all():
        found[member_id].enrolments.append((plan_id, start, end))
    baselines: dict[str, list[BaselineCondition]] = {}
    for member_id, fdi, condition, recorded_on, evidence in db.execute(_BASELINES, ids).all():
        baselines.setdefault(member_id, []).append(BaselineCondition(fdi, Condition(condition), recorded_on, evidence))
    for member_id, conditions in baselines.items():
        found[member_id].baseline = tuple(conditions)
    for (member_id, claim_id, line_id, day, code, concept_id, fdi, quadrant, status, amount, provider_id, action,
         mode, category) in db.execute(_HISTORY, ids).all():
        if member_id in found:
            past = PastLine.of_row((claim_id, line_id, day, code, concept_id, fdi, quadrant, status, float(amount),
                                    provider_id, action, category))
            (found[member_id].history if mode == "claim" else found[member_id].preauthorizations).append(past)
    return found


_PLAN_DOCUMENTS = select(PlanVersionRow.plan_id, PlanVersionRow.document).order_by(PlanVersionRow.id)


@functools.lru_cache(maxsize=256)
def _plan_version(document: str) -> PlanVersion:
    """A stored plan version's document parsed once per process (read for every claim;
    a version's document never changes, and ``PlanVersion`` is frozen)."""
    return PlanVersion.model_validate_json(document)


def all_plan_versions(session: Session) -> dict[str, list[PlanVersion]]:
    plans: dict[str, list[PlanVersion]] = {}
    for plan_id, document in session.connection().execute(_PLAN_DOCUMENTS):
        plans.setdefault(plan_id, []).append(_plan_version(document))
    return plans


def provider_standing(session: Session, provider_id: str) -> ProviderStanding:
    return provider_standings(session, [provider_id])[provider_id]


# ---- ledgers ----------------------------------------------------------------------------


LedgerKey = tuple[str, str, dt.date]  # member, plan, policy-year start


@dataclass
class LedgerState:
    """One ledger row as read under lock; ``used`` grows as lines consume it."""

    id: int
    bucket: str
    limit: Decimal
    used: Decimal
    changed: bool = False


_LEDGERS_FOR_UPDATE = (select(LedgerRow.id, LedgerRow.member_id, LedgerRow.plan_id, LedgerRow.year_start, LedgerRow.bucket,
                              LedgerRow.limit_amount, LedgerRow.used)
                       .where(LedgerRow.member_id.in_(bindparam("members", expanding=True))).order_by(LedgerRow.id)
                       .with_for_update())


def lock_ledgers(session: Session, wanted: dict[LedgerKey, dict[str, float]],
                 history: Mapping[str, Sequence[PastLine]]) -> dict[LedgerKey, dict[str, LedgerState]]:
    """The ledger rows of many member policy years, created at the plan's limits where
    missing, and locked (FOR UPDATE; SQLite holds the write lock of BEGIN IMMEDIATE). A
    new ledger starts from what ``history`` (each member's claim lines as loaded by
    ``load_members``, under the member lock) already paid in that policy year: lines
    loaded from another system, or decided before the ledger existed."""
    members = sorted({k[0] for k in wanted})

    def load() -> dict[LedgerKey, dict[str, LedgerState]]:
        found: dict[LedgerKey, dict[str, LedgerState]] = {key: {} for key in wanted}  # none where no limit is drawn on
        for row_id, member_id, plan_id, year_start, bucket, limit, used in session.connection().execute(
                _LEDGERS_FOR_UPDATE, {"members": members}):
            key = (member_id, plan_id, year_start)
            if key in wanted:
                found.setdefault(key, {})[bucket] = LedgerState(row_id, bucket, Decimal(limit), Decimal(used))
        return found

    rows = load()
    missing = [(key, bucket) for key, limits in wanted.items() for bucket in limits if bucket not in rows[key]]
    if not missing:
        return rows
    paid: dict[tuple[LedgerKey, str], Decimal] = {}
    for key in {key for key, _ in missing}:
        year_end = add_months(key[2], 12)
        for line in history.get(key[0], ()):
            if line.counts and key[2] <= line.date_of_service < year_end:
                amount = Decimal(str(line.approved_amount))  # a stored two-decimal amount, exact again
                for bucket in (line.category, ANNUAL_MAXIMUM):
                    paid[(key, bucket)] = paid.get((key, bucket), Decimal("0")) + amount
    opening = {(key, bucket): (Decimal(str(wanted[key][bucket])), paid.get((key, bucket), Decimal("0")))
               for key, bucket in missing}
    values = [{"member_id": key[0], "plan_id": key[1], "year_start": key[2], "bucket": bucket, "limit_amount": limit,
               "used": used} for (key, bucket), (limit, used) in opening.items()]
    # Another transaction may be creating the same rows (PostgreSQL): the first one wins. The
    # rows this one created come back from RETURNING, already ours; if any were not created
    # here, everything is read again under lock.
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    created = session.connection().execute(
        insert(cast(Table, LedgerRow.__table__)).on_conflict_do_nothing()
        .returning(LedgerRow.id, LedgerRow.member_id, LedgerRow.plan_id, LedgerRow.year_start, LedgerRow.bucket),
        values).all()
    if len(created) < len(values):
        return load()
    for row_id, member_id, plan_id, year_start, bucket in created:
        limit, used = opening[((member_id, plan_id, year_start), bucket)]
        rows[(member_id, plan_id, year_start)][bucket] = LedgerState(row_id, bucket, limit, used)
    return rows


class PlanVersionNotStoredError(StoreError):
    code = "store.plan_version_not_stored"


@dataclass(frozen=True)
class MemberLedger:
    """A member on a date of service, the plan version that applies and that policy year's
    ledger rows, all locked: what deciding one line again needs (an appeal, a reviewer
    paying a refused line)."""

    member: MemberSnapshot
    plan: PlanVersion
    year_start: dt.date
    ledger: dict[str, LedgerState]


def lock_member_ledger(session: Session, member_id: str, day: dt.date, plan_version: str | None) -> MemberLedger | None:
    """``plan_version`` is the one a decision cited (``PlanVersionNotStoredError`` if it is
    gone); None: the version in force on ``day``. None where the member has no enrolment,
    or the plan no version, on that day."""
    lock_members(session, [member_id])
    data = load_members(session, [member_id]).get(member_id)
    member = data.snapshot_on(day) if data else None
    if data is None or member is None:
        return None
    versions = all_plan_versions(session).get(member.plan_id, [])
    if plan_version is not None:
        plan = next((v for v in versions if v.version == plan_version), None)
        if plan is None:
            raise PlanVersionNotStoredError(f"plan {member.plan_id} version {plan_version} is no longer stored")
    else:
        plan = next((v for v in versions if v.in_force(day)), None)
    if plan is None:
        return None
    year_start = plan.policy_year_start(day, member.enrolment_start)
    key = (member.member_id, member.plan_id, year_start)
    return MemberLedger(member, plan, year_start,
                        lock_ledgers(session, {key: plan_buckets(plan)}, {member.member_id: data.history})[key])


def balances_of(rows: dict[str, LedgerState]) -> dict[str, Balance]:
    return {b: Balance(b, float(r.limit), float(r.used)) for b, r in rows.items()}


_LEDGER_USED = update(cast(Table, LedgerRow.__table__)).where(LedgerRow.id == bindparam("ledger_row")).values(
    used=bindparam("new_used"))


@dataclass
class PendingWrites:
    """What a batch of decisions writes, collected and inserted in bulk at the end."""

    lines: list[dict] = field(default_factory=list)
    entries: list[dict] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # claim records, their radiographs, queued lines
    images: list[dict] = field(default_factory=list)
    review_items: list[dict] = field(default_factory=list)
    ledgers: dict[int, LedgerState] = field(default_factory=dict)

    def consume(self, rows: dict[str, LedgerState], consumed: dict[str, float], *, tenant: str, claim_id: str,
                line_id: str, now: dt.datetime) -> None:
        for bucket, amount in consumed.items():
            row = rows[bucket]
            row.used += Decimal(str(amount))
            row.changed = True
            self.ledgers[row.id] = row
            self.entries.append({"ledger_id": row.id, "tenant": tenant, "claim_id": claim_id, "line_id": line_id,
                                 "amount": Decimal(str(amount)), "reason": "decision", "created_at": now})

    def flush(self, session: Session) -> None:
        for table, rows in ((ClaimLineRow, self.lines), (LedgerEntryRow, self.entries), (DecisionRow, self.decisions),
                            (ClaimRecordRow, self.records), (ClaimImageRow, self.images), (ReviewItemRow, self.review_items)):
            if rows:
                insert_many(session.connection(), cast(Table, table.__table__), rows)
        if self.ledgers:
            session.connection().execute(_LEDGER_USED, [{"ledger_row": r.id, "new_used": r.used}
                                                        for r in self.ledgers.values()])
        self.lines, self.entries, self.decisions, self.ledgers = [], [], [], {}
        self.records, self.images, self.review_items = [], [], []
        session.flush()


# ---- decisions ----------------------------------------------------------------------------


# Built once, as the other per-claim queries. Tenant first: the (tenant, claim_id, mode)
# unique index serves the lookup.
_STORED_DECISIONS = (select(DecisionRow.tenant, DecisionRow.claim_id, DecisionRow.mode, AuditRow.payload)
                     .join(AuditRow, AuditRow.seq == DecisionRow.audit_seq)
                     .where(DecisionRow.tenant.in_(bindparam("tenants", expanding=True)),
                            DecisionRow.claim_id.in_(bindparam("claim_ids", expanding=True))))


def stored_decisions(session: Session, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """Stored decision JSON (from the audit record) for (tenant, claim id, mode) keys."""
    wanted = set(keys)
    found = {}
    for tenant, claim_id, mode, payload in session.connection().execute(
            _STORED_DECISIONS, {"tenants": sorted({k[0] for k in keys}), "claim_ids": sorted({k[1] for k in keys})}):
        if (tenant, claim_id, mode) in wanted:
            found[(tenant, claim_id, mode)] = payload
    return found


def decision_by_audit_id(session: Session, tenant: str, audit_id: int) -> str | None:
    return session.execute(select(AuditRow.payload).join(DecisionRow, AuditRow.seq == DecisionRow.audit_seq)
                           .where(DecisionRow.tenant == tenant, DecisionRow.audit_seq == audit_id)).scalar_one_or_none()


def claim_decision_by_audit_id(session: Session, tenant: str, audit_id: int) -> str | None:
    """A claim decision's JSON by its audit id: a decision as made, or an appeal's
    re-adjudicated claim decision (the ``decision`` inside the appeal's record)."""
    found = decision_by_audit_id(session, tenant, audit_id)
    if found is None:
        appealed = session.execute(select(AuditRow.payload).join(AppealRow, AuditRow.seq == AppealRow.audit_seq)
                                   .where(AppealRow.tenant == tenant, AppealRow.audit_seq == audit_id)).scalar_one_or_none()
        if appealed is not None:
            return json.dumps(json.loads(appealed)["decision"])
    return found


def audit_payload(session: Session, seq: int) -> str:
    return session.execute(select(AuditRow.payload).where(AuditRow.seq == seq)).scalar_one()


def line_consumption(session: Session, tenant: str, claim_id: str, line_ids: list[str]) -> dict[str, dict[str, float]]:
    """What each line of a claim holds in its ledgers: line id -> bucket -> the sum of the
    line's entries there (a bucket the line gave everything back to is left out)."""
    held: dict[str, dict[str, float]] = {}
    for line_id, bucket, amount in session.execute(
            select(LedgerEntryRow.line_id, LedgerRow.bucket, func.sum(LedgerEntryRow.amount))
            .join(LedgerRow, LedgerRow.id == LedgerEntryRow.ledger_id)
            .where(LedgerEntryRow.tenant == tenant, LedgerEntryRow.claim_id == claim_id,
                   LedgerEntryRow.line_id.in_(line_ids))
            .group_by(LedgerEntryRow.line_id, LedgerRow.bucket)):
        if amount:
            held.setdefault(line_id, {})[bucket] = float(amount)
    return held


def set_line_consumption(session: Session, ledger: dict[str, LedgerState], *, tenant: str, claim_id: str, line_id: str,
                         consumed: dict[str, float], reason: str, now: dt.datetime) -> dict[str, float]:
    """Make a line hold ``consumed`` in the (locked) ledger rows: for each bucket where that
    differs from what it holds, an entry with the difference and ``reason`` (appeal,
    review), and the ledger's ``used`` moved by it. Returns the differences."""
    held = line_consumption(session, tenant, claim_id, [line_id]).get(line_id, {})
    moved: dict[str, float] = {}
    for bucket, row in ledger.items():
        difference = Decimal(str(consumed.get(bucket, 0.0))) - Decimal(str(held.get(bucket, 0.0)))
        if not difference:
            continue
        session.add(LedgerEntryRow(ledger_id=row.id, tenant=tenant, claim_id=claim_id, line_id=line_id,
                                   amount=difference, reason=reason, created_at=now))
        row.used += difference
        session.execute(update(LedgerRow).where(LedgerRow.id == row.id).values(used=row.used))
        moved[bucket] = float(difference)
    return moved


def set_line_status(session: Session, tenant: str, claim_id: str, line_id: str, decision: LineDecision) -> None:
    """The claim history's line after a later decision of it (an appeal)."""
    paid = 0.0 if decision.action is Action.REJECT else decision.approved_amount or 0.0
    session.execute(update(ClaimLineRow).where(ClaimLineRow.tenant == tenant, ClaimLineRow.claim_id == claim_id,
                                               ClaimLineRow.line_id == line_id, ClaimLineRow.mode == "claim")
                    .values(status=LINE_STATUS[decision.action.value], action=decision.action.value,
                            approved_amount=Decimal(str(paid))))


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



# A line's status in the claim history, by its action (a flagged line waits for a reviewer).
LINE_STATUS = {"pass": "approved", "downcode": "approved", "flag": "pending", "reject": "denied"}


def past_lines(claim: Claim, decisions: tuple[LineDecision, ...], current: dict[str, CurrentLine]) -> list[PastLine]:
    """A decided claim's lines as history, for the next claim of the member in a batch."""
    out = []
    for line, decision in zip(claim.lines, decisions, strict=True):
        this = current.get(line.line_id)
        if this is not None:
            action = decision.action.value
            out.append(PastLine.of_row((claim.claim_id, line.line_id, claim.date_of_service, line.code, this.concept_id,
                                        this.fdi, this.quadrant, LINE_STATUS[action], decision.approved_amount or 0.0,
                                        claim.provider.provider_id, action, this.category)))
    return out


def line_rows(claim: Claim, decisions: tuple[LineDecision, ...], current: dict[str, CurrentLine],
              now: dt.datetime) -> list[dict]:
    """The claim's lines as history rows, with the status the decision gives them."""
    rows = []
    for line, decision in zip(claim.lines, decisions, strict=True):
        this = current.get(line.line_id)
        if this is None:
            continue
        action = decision.action.value
        rows.append({"tenant": claim.tenant, "claim_id": claim.claim_id, "line_id": line.line_id, "mode": claim.mode,
                     "member_id": claim.member.member_id, "provider_id": claim.provider.provider_id,
                     "date_of_service": claim.date_of_service, "code": line.code, "code_system": line.code_system,
                     "concept_id": this.concept_id, "category": this.category, "fdi": this.fdi,
                     "quadrant": this.quadrant, "fee": Decimal(str(line.fee)),
                     "approved_amount": Decimal(str(decision.approved_amount or 0.0)),
                     "status": LINE_STATUS[action], "action": action, "decided_at": now})
    return rows


def decision_row(claim: Claim, audit_seq: int, now: dt.datetime) -> dict:
    return {"tenant": claim.tenant, "claim_id": claim.claim_id, "mode": claim.mode, "audit_seq": audit_seq,
            "created_at": now}


_p = ProviderStatsRow
# Built once (read for every claim); the metrics JSON, which the standing does not use, is left unread.
_PROVIDER_SNAPSHOTS = select(_p.provider_id, _p.period_end, _p.flagged, _p.evidence, _p.cycle).where(
    _p.provider_id.in_(bindparam("providers", expanding=True)))


def provider_standings(session: Session, provider_ids: list[str]) -> dict[str, ProviderStanding]:
    """The latest statistics snapshot of each provider (not flagged when there is none)."""
    latest: dict[str, Any] = {}
    for row in session.connection().execute(_PROVIDER_SNAPSHOTS, {"providers": sorted(set(provider_ids))}):
        if row.provider_id not in latest or row.period_end > latest[row.provider_id].period_end:
            latest[row.provider_id] = row
    return {pid: (ProviderStanding(pid, flagged=latest[pid].flagged, evidence=tuple(json.loads(latest[pid].evidence)),
                                   cycle=latest[pid].cycle) if pid in latest else ProviderStanding(pid))
            for pid in provider_ids}


def idempotent_audit_id(session: Session, tenant: str, key: str, request_digest: str) -> int | None:
    """The audit id a key already produced; raises IdempotencyConflictError when the key
    came with a different request."""
    row = session.get(IdempotencyRow, (tenant, key))
    if row is None:
        return None
    if row.request_digest != request_digest:
        raise IdempotencyConflictError(f"Idempotency-Key {key!r} was used with a different request")
    return row.audit_id


def remember_idempotency(session: Session, tenant: str, key: str, request_digest: str, audit_id: int,
                         now: dt.datetime) -> None:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(cast(Table, IdempotencyRow.__table__)).values(
        tenant=tenant, key=key, request_digest=request_digest, audit_id=audit_id, created_at=now).on_conflict_do_nothing())


class IdempotencyConflictError(StoreError):
    code = "idempotency.key_reused"


# ---- radiograph fingerprints ---------------------------------------------------------------

CANDIDATES_SAME_MEMBER = 32  # the member's latest radiographs of the kind
CANDIDATES_SAME_PROVIDER = 16  # the provider's latest radiographs of the kind
CANDIDATES_BY_LIKENESS = 8  # the closest by coarse likeness among the tenant's latest of the kind (the pool)


def _candidate_statement() -> Any:
    """The candidate query, built once with bound parameters: the member's latest, the
    provider's latest and the rows picked by likeness (``ids``), in one statement (one
    round trip instead of three; building the statements per claim and adapting
    SQLAlchemy's cached compiled form to each new object took about 1 ms of a claim's
    2.4 ms lookup)."""
    scope = (*_OTHER_CLAIMS_OF_KIND, _f.id <= bindparam("through", type_=BigInteger))
    latest = select(*_PRINT_COLUMNS).where(*scope).order_by(_f.id.desc())
    # Each part with its own order and limit is a subquery (SQLite refuses them in a bare compound select).
    same_member = latest.where(_f.member_id == bindparam("member_id")).limit(CANDIDATES_SAME_MEMBER).subquery()
    same_provider = latest.where(_f.provider_id == bindparam("provider_id")).limit(CANDIDATES_SAME_PROVIDER).subquery()
    return union_all(select(same_member), select(same_provider),
                     select(*_PRINT_COLUMNS).where(_f.id.in_(bindparam("ids", expanding=True)), *scope))


_f = FingerprintRow
_PRINT_COLUMNS = (_f.id, _f.claim_id, _f.mode, _f.radiograph_id, _f.kind, _f.member_id, _f.date_of_service, _f.thumb,
                  _f.coarse)
# The tenant's radiographs of a kind, but for those of the claim being decided (its earlier submission).
_OTHER_CLAIMS_OF_KIND = (_f.tenant == bindparam("tenant"), _f.kind == bindparam("kind"),
                         ~((_f.claim_id == bindparam("claim_id")) & (_f.mode == bindparam("mode"))))
_CANDIDATES = _candidate_statement()
_LAST_ID = select(func.max(_f.id)).where(_f.tenant == bindparam("tenant"), _f.kind == bindparam("kind"))
_STORED_AFTER = select(*_PRINT_COLUMNS).where(*_OTHER_CLAIMS_OF_KIND, _f.id > bindparam("after", type_=BigInteger)).order_by(
    _f.id.desc()).limit(bindparam("limit"))
# The most radiographs compared in full when a claim is decided (``fingerprints_after``): far
# more than are stored while one claim is read, even on a GPU under load.
CATCH_UP_LIMIT = 512
NO_ROW_ID_LIMIT = 2**63 - 1


def last_fingerprint_ids(session: Session, tenant: str, kinds: Sequence[str]) -> dict[str, int]:
    """The highest row id of the tenant's stored radiographs of each kind (0: none yet): how
    far a recycled-image search went (``fingerprint_candidates(through=...)``), so that the
    radiographs stored after it can be compared when the claim is decided
    (``fingerprints_after``)."""
    db = session.connection()
    return {kind: int(db.execute(_LAST_ID, {"tenant": tenant, "kind": kind}).scalar() or 0) for kind in kinds}


def fingerprint_candidates(session: Session, claim: Claim, prints: tuple[ImagePrint, ...],
                           pools: LikenessPools | None = None,
                           through: Mapping[str, int] | None = None) -> tuple[StoredPrint, ...]:
    """Earlier radiographs worth comparing in full with this claim's: the member's latest,
    the provider's latest, and the tenant's closest by coarse likeness (an image recycled
    by another provider for another member). Never the claim's own earlier submission.
    ``pools``: the process's likeness pools (``Store.likeness``); without, the pool is read
    whole. ``through``: per kind, the highest row id considered (``last_fingerprint_ids``,
    read first: rows committed meanwhile are left to ``fingerprints_after``)."""
    if not prints:
        return ()
    db = session.connection()
    own = claim_key(claim.claim_id, claim.mode)
    found: dict[int, Any] = {}
    for kind in sorted({p.kind for p in prints}):
        pool = (pools or LikenessPools()).latest(db, claim.tenant, kind)
        closest = sorted({int(i) for image in prints if image.kind == kind
                          for i in pool.closest(image.fingerprint, CANDIDATES_BY_LIKENESS, excluding=own)})
        for row in db.execute(_CANDIDATES, {"tenant": claim.tenant, "kind": kind, "claim_id": claim.claim_id,
                                            "mode": claim.mode, "member_id": claim.member.member_id,
                                            "provider_id": claim.provider.provider_id, "ids": closest,
                                            "through": (through or {}).get(kind, NO_ROW_ID_LIMIT)}):
            found[row.id] = row  # a row in more than one part once
    return _stored_prints(claim, found.values())


def fingerprints_after(session: Session, claim: Claim, after: Mapping[str, int]) -> tuple[StoredPrint, ...]:
    """The tenant's radiographs of each kind in ``after`` stored since a search saw the row
    id given (all of them, not a selection: a claim decided while this one was read, the
    newest ``CATCH_UP_LIMIT`` of a kind at most); never the claim's own earlier submission.
    Read where the claim is decided, with the audit chain's head locked (decisions write one
    at a time from there, and store their radiographs there), so that two claims carrying
    one radiograph, read at the same time, cannot both miss the other's."""
    db = session.connection()
    found = [row for kind, last in sorted(after.items())
             for row in db.execute(_STORED_AFTER, {"tenant": claim.tenant, "kind": kind, "claim_id": claim.claim_id,
                                                   "mode": claim.mode, "after": last, "limit": CATCH_UP_LIMIT})]
    return _stored_prints(claim, found)


def _stored_prints(claim: Claim, rows: Any) -> tuple[StoredPrint, ...]:
    return tuple(StoredPrint(claim_id=r.claim_id, mode=r.mode, radiograph_id=r.radiograph_id, kind=r.kind,
                             same_member=r.member_id == claim.member.member_id, date_of_service=r.date_of_service,
                             fingerprint=Fingerprint.from_bytes(r.thumb, r.coarse))
                 for r in sorted(rows, key=lambda r: r.id))


def save_fingerprints(session: Session, claim: Claim, prints: tuple[ImagePrint, ...], now: dt.datetime) -> None:
    if not prints:
        return
    rows = []
    for image in prints:
        thumb, coarse = image.fingerprint.to_bytes()
        rows.append({"tenant": claim.tenant, "kind": image.kind, "claim_id": claim.claim_id, "mode": claim.mode,
                     "radiograph_id": image.radiograph_id, "member_id": claim.member.member_id,
                     "provider_id": claim.provider.provider_id, "date_of_service": claim.date_of_service,
                     "version": FINGERPRINT_VERSION, "thumb": thumb, "coarse": coarse, "created_at": now})
    insert_many(session.connection(), cast(Table, FingerprintRow.__table__), rows)
