"""Tables of the state store. Money is stored as Numeric(12, 2); audit payloads as the
exact canonical JSON text that was hashed, so that verification re-hashes the same bytes
on every database."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Money = Numeric(12, 2)


class Base(DeclarativeBase):
    pass


class PlanVersionRow(Base):
    __tablename__ = "plan_versions"
    __table_args__ = (UniqueConstraint("plan_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    plan_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(32))
    effective_from: Mapped[dt.date] = mapped_column(Date)
    effective_to: Mapped[dt.date | None] = mapped_column(Date, nullable=True)
    document: Mapped[str] = mapped_column(Text)  # the plan version as loaded (JSON)
    loaded_at: Mapped[dt.datetime] = mapped_column(DateTime)


class MemberRow(Base):
    __tablename__ = "members"
    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    birth_date: Mapped[dt.date] = mapped_column(Date)


class EnrolmentRow(Base):
    __tablename__ = "enrolments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.member_id"), index=True)
    plan_id: Mapped[str] = mapped_column(String(64))
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date, nullable=True)


class BaselineRow(Base):
    __tablename__ = "baseline_conditions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.member_id"), index=True)
    fdi: Mapped[int | None] = mapped_column(Integer, nullable=True)
    condition: Mapped[str] = mapped_column(String(32))
    recorded_on: Mapped[dt.date] = mapped_column(Date)
    evidence: Mapped[str] = mapped_column(Text, default="")


class ProviderRow(Base):
    __tablename__ = "providers"
    provider_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    specialty: Mapped[str] = mapped_column(String(64), default="general")
    region: Mapped[str] = mapped_column(String(64), default="")


class ProviderStatsRow(Base):
    __tablename__ = "provider_stats"
    __table_args__ = (UniqueConstraint("provider_id", "cycle"),)  # also serves lookups by provider
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider_id: Mapped[str] = mapped_column(String(64))
    cycle: Mapped[str] = mapped_column(String(32))  # e.g. 2026-03 (the window's last month)
    period_start: Mapped[dt.date] = mapped_column(Date)
    period_end: Mapped[dt.date] = mapped_column(Date)
    metrics: Mapped[str] = mapped_column(Text)  # JSON: metric -> value, percentile, peer group
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    evidence: Mapped[str] = mapped_column(Text, default="[]")
    computed_at: Mapped[dt.datetime] = mapped_column(DateTime)


class ClaimLineRow(Base):
    __tablename__ = "claim_lines"
    __table_args__ = (UniqueConstraint("tenant", "claim_id", "line_id", "mode"),
                      Index("ix_claim_lines_member_day", "member_id", "date_of_service"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    claim_id: Mapped[str] = mapped_column(String(64))
    line_id: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16), default="claim")  # claim or preauthorization
    member_id: Mapped[str] = mapped_column(String(64))
    # Not indexed: nothing looks lines up by provider (the outlier job reads a date window),
    # and such an index was an eighth of what deciding a batch wrote.
    provider_id: Mapped[str] = mapped_column(String(64))
    date_of_service: Mapped[dt.date] = mapped_column(Date)
    code: Mapped[str] = mapped_column(String(16))
    code_system: Mapped[str] = mapped_column(String(16))
    concept_id: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32))
    fdi: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quadrant: Mapped[int | None] = mapped_column(Integer, nullable=True)
    fee: Mapped[Decimal] = mapped_column(Money)
    approved_amount: Mapped[Decimal] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(16))  # approved, denied, pending
    action: Mapped[str] = mapped_column(String(16))
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime)


class DecisionRow(Base):
    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("tenant", "claim_id", "mode"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    claim_id: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    audit_seq: Mapped[int] = mapped_column(Integer, unique=True, index=True)  # its audit record holds the JSON
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class LedgerRow(Base):
    __tablename__ = "ledgers"
    __table_args__ = (UniqueConstraint("member_id", "plan_id", "year_start", "bucket"),)  # also by member
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64))
    plan_id: Mapped[str] = mapped_column(String(64))
    year_start: Mapped[dt.date] = mapped_column(Date)
    bucket: Mapped[str] = mapped_column(String(32))
    limit_amount: Mapped[Decimal] = mapped_column(Money)
    used: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))


class LedgerEntryRow(Base):
    """One movement of a ledger, only ever added: what a line took when decided, or a later
    change to what it holds (an appeal, a reviewer's disposition), as the difference,
    negative when given back. A line holds the sum of its entries."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_line", "tenant", "claim_id", "line_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ledger_id: Mapped[int] = mapped_column(ForeignKey("ledgers.id"))  # not indexed: ledgers are never deleted
    tenant: Mapped[str] = mapped_column(String(64))
    claim_id: Mapped[str] = mapped_column(String(64))
    line_id: Mapped[str] = mapped_column(String(32))
    amount: Mapped[Decimal] = mapped_column(Money)
    reason: Mapped[str] = mapped_column(String(16), server_default="decision")  # decision, appeal, review
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class ReviewRow(Base):
    """A reviewer's disposition of a queued line (the audit record ``audit_seq`` holds it too)."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    claim_id: Mapped[str] = mapped_column(String(64))
    line_id: Mapped[str] = mapped_column(String(32))
    reviewer: Mapped[str] = mapped_column(String(64))
    disposition: Mapped[str] = mapped_column(String(32))  # confirm, override_pass, change
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    review_item_id: Mapped[int | None] = mapped_column(ForeignKey("review_items.id"), nullable=True, index=True)
    action: Mapped[str | None] = mapped_column(String(16), nullable=True)  # the line's final action
    code: Mapped[str | None] = mapped_column(String(16), nullable=True)  # the final code where it changed
    corrections: Mapped[str] = mapped_column(Text, default="[]")  # JSON: finding corrections
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ClaimRecordRow(Base):
    """The claim as decided (attachment contents left out; the files are in claim_images)
    and the models' readings of its radiographs: what a reviewer, an appeal and the
    reports need. Kept for claims with radiographs or with any line not passed."""

    __tablename__ = "claim_records"
    __table_args__ = (Index("ix_claim_records_tenant_claim", "tenant", "claim_id"),
                      Index("ix_claim_records_tenant_created", "tenant", "created_at"),
                      Index("ix_claim_records_created", "created_at"))  # drift windows of every tenant
    audit_seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    tenant: Mapped[str] = mapped_column(String(64))
    claim_id: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    claim: Mapped[str] = mapped_column(Text)  # JSON
    readings: Mapped[str] = mapped_column(Text)  # JSON: one object per radiograph
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    summary: Mapped[str] = mapped_column(Text)  # JSON: serving.drift.score_summary, what drift windows read


class ClaimImageRow(Base):
    """A radiograph of a claim that went to a person (flag) or was refused in part
    (reject, downcode): the file as received, for the case view, appeals and retraining."""

    __tablename__ = "claim_images"
    __table_args__ = (UniqueConstraint("audit_seq", "radiograph_id"),)  # also by record
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    audit_seq: Mapped[int] = mapped_column(ForeignKey("claim_records.audit_seq"))
    tenant: Mapped[str] = mapped_column(String(64))
    radiograph_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    media: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class ReviewItemRow(Base):
    """A line waiting for (or done with) a person. ``rank_key`` orders the queue: the
    priority at enqueue minus the age weight times the enqueue day, so that ordering by it
    equals ordering by priority plus age weight times days waiting, at any moment."""

    __tablename__ = "review_items"
    __table_args__ = (UniqueConstraint("audit_seq", "line_id"),  # also by record
                      Index("ix_review_items_queue", "tenant", "status", "rank_key"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    audit_seq: Mapped[int] = mapped_column(Integer)
    claim_id: Mapped[str] = mapped_column(String(64))
    line_id: Mapped[str] = mapped_column(String(32))
    code: Mapped[str] = mapped_column(String(16))
    fee: Mapped[Decimal] = mapped_column(Money)
    action: Mapped[str] = mapped_column(String(16))  # the line's action as decided
    severity: Mapped[float] = mapped_column(Float)
    rules: Mapped[str] = mapped_column(Text)  # JSON list of the fired rule ids
    rank_key: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))  # open, closed
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class AuditRow(Base):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # decision, review, ...
    subject: Mapped[str] = mapped_column(String(128))  # e.g. the claim id
    actor: Mapped[str] = mapped_column(String(64))
    input_digest: Mapped[str] = mapped_column(String(64))
    versions: Mapped[str] = mapped_column(Text)  # canonical JSON
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON
    created_at: Mapped[str] = mapped_column(String(40))  # ISO text, hashed as stored
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHeadRow(Base):
    """One row per chain, locked while a record is appended (serialises writers on PostgreSQL)."""

    __tablename__ = "audit_head"
    chain: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))


class ApiKeyRow(Base):
    """An API key: the secret is never stored, only its SHA-256 (keys are random 256-bit
    secrets, so a fast hash is enough; the key id is public and indexes the lookup)."""

    __tablename__ = "api_keys"
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(128), default="")
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)  # None: until revoked


class AccessRow(Base):
    """One request to the service: who (the key, its tenant), what (method, route template,
    the record it named), when, and the answer's status. Nothing of the body and no member
    identifier: ids in a route are the service's own record numbers and radiograph ids.
    Append-only, written in batches behind the requests, hash-chained
    (``serving/store/access_log.py``)."""

    __tablename__ = "access_log"
    __table_args__ = (Index("ix_access_log_tenant_at", "tenant", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # as presented, when refused
    authenticated: Mapped[bool] = mapped_column(Boolean, default=False)
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(128))
    subject: Mapped[str] = mapped_column(String(256), default="")  # the route's parameters, e.g. audit_id=7
    status: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(Float)
    request_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)  # the answer's X-Request-ID
    # Chained like the audit trail (chain "access"); null on rows from before migration 0016.
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


class IdempotencyRow(Base):
    """An ``Idempotency-Key`` a tenant used, the digest of the request it came with and
    the decision it produced: a retry gets the same decision, a reuse with another
    request is refused."""

    __tablename__ = "idempotency_keys"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_digest: Mapped[str] = mapped_column(String(64))
    audit_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class OutboxRow(Base):
    """A final decision waiting to be delivered to a webhook (transactional outbox: written
    in the decision's own transaction, delivered at least once by the outbox worker)."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    secret_env: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")


class FingerprintRow(Base):
    """One radiograph of a decided claim: who sent it and its perceptual fingerprint."""

    __tablename__ = "image_fingerprints"
    __table_args__ = (Index("ix_image_fingerprints_member", "tenant", "kind", "member_id"),
                      Index("ix_image_fingerprints_provider", "tenant", "kind", "provider_id"),
                      # The tenant's latest of a kind (the likeness pool), read newest first from the index
                      # alone: no sort, no visit to the rows (with their thumbnails).
                      Index("ix_image_fingerprints_recent", "tenant", "kind", "id", "claim_id", "mode", "coarse"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    claim_id: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    radiograph_id: Mapped[str] = mapped_column(String(128))
    member_id: Mapped[str] = mapped_column(String(64))
    provider_id: Mapped[str] = mapped_column(String(64))
    date_of_service: Mapped[dt.date] = mapped_column(Date)
    version: Mapped[str] = mapped_column(String(8))
    thumb: Mapped[bytes] = mapped_column(LargeBinary)
    coarse: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class TableVersionRow(Base):
    """One version of a versioned rule table (catalogue, evidence matrix, thresholds,
    frequency table, bundle library) as validated, so that a decision can be re-run with
    the tables it cited. A version seen first in a config file is promoted on sight; a
    proposed one (``dxv calibrate``) takes effect only when an admin promotes it. The
    effective thresholds are the ones promoted last."""

    __tablename__ = "table_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)  # canonical JSON of the validated table
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))  # file, calibration
    note: Mapped[str] = mapped_column(Text, default="")  # e.g. the calibration's figures (JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    promoted_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    promoted_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AppealRow(Base):
    """An appeal of refused lines of a decision: the new evidence, the re-adjudication
    (its audit record ``audit_seq``, kind ``appeal``) and each line's outcome."""

    __tablename__ = "appeals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    claim_id: Mapped[str] = mapped_column(String(64))
    original_audit_seq: Mapped[int] = mapped_column(Integer, index=True)
    audit_seq: Mapped[int] = mapped_column(Integer, unique=True)
    outcome: Mapped[str] = mapped_column(String(16))  # overturned, modified, upheld, referred
    lines: Mapped[str] = mapped_column(Text)  # JSON: per appealed line, before and after
    narrative: Mapped[str] = mapped_column(Text, default="")
    submitted_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class AppealDocumentRow(Base):
    """A document sent with an appeal (a letter, a chart note): kept as received for the
    person who decides a referred appeal; the models do not read it."""

    __tablename__ = "appeal_documents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    appeal_id: Mapped[int] = mapped_column(ForeignKey("appeals.id"), index=True)
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    media_type: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class ModelBaselineRow(Base):
    """The release baseline of a model version for a tenant: finding rates, score
    histograms and flag rate over a reference window, what drift is measured against."""

    __tablename__ = "model_baselines"
    __table_args__ = (UniqueConstraint("tenant", "model", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    window_from: Mapped[dt.datetime] = mapped_column(DateTime)
    window_to: Mapped[dt.datetime] = mapped_column(DateTime)
    stats: Mapped[str] = mapped_column(Text)  # JSON: the window's figures
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(64))
