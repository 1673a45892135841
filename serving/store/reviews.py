"""The review queue in the store: what adjudication keeps for people (claim records, the
radiographs, queued lines) and what reviewers do with it (dispositions, written to the
audit trail with the reviewer's identity, the line's status and the ledger updated)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models.detections import ImageReading
from serving import outbox
from serving.claims import Claim
from serving.decisions import Action, LineDecision
from serving.drift import score_summary
from serving.review.dispositions import DispositionError, DispositionIn, final_action
from serving.review.queue import ReviewPriority, priority_now, queue_entries, rank_key
from serving.rules.history import CurrentLine
from serving.rules.ledger import apportion
from serving.service_config import Webhook
from serving.store import audit, repository
from serving.store.database import StoreError
from serving.store.schema import (
    AppealDocumentRow,
    AppealRow,
    ClaimImageRow,
    ClaimLineRow,
    ClaimRecordRow,
    LedgerEntryRow,
    LedgerRow,
    ReviewItemRow,
    ReviewRow,
)


class ReviewNotFoundError(StoreError):
    code = "not_found"


class ReviewClosedError(StoreError):
    code = "review.already_closed"


# ---- written with each decision -------------------------------------------------------------


def claim_json(claim: Claim) -> str:
    """The claim as decided, without the attachments' contents (the files are kept apart)."""
    return claim.model_dump_json(exclude={"attachments": {"__all__": {"content"}}}, exclude_none=True)


@dataclass(frozen=True)
class StoredReadings:
    """The readings of a claim as its record keeps them: each as plain JSON (``data``, what
    the drift summary is taken from) and all as canonical JSON (``text``: sorted keys, no
    spaces; also what the input digest hashes). Made once per claim."""

    data: tuple[dict[str, Any], ...]
    text: str

    @classmethod
    def of(cls, readings: tuple[ImageReading, ...]) -> StoredReadings:
        data = tuple(r.to_json() for r in readings)
        return cls(data, audit.canonical_json(list(data)))


def readings_json(readings: tuple[ImageReading, ...]) -> str:
    """The readings as a claim record keeps them (``StoredReadings.text``)."""
    return StoredReadings.of(readings).text


def record_row(claim: Claim, claim_text: str, readings: tuple[ImageReading, ...], audit_seq: int,
               now: dt.datetime, stored: StoredReadings | None = None) -> dict[str, Any]:
    """The claim record: the claim as decided (``claim_text``: its ``claim_json``, which the
    caller also hashes into the input digest), its readings (``stored``: their
    ``StoredReadings`` where the caller has them already) and their drift summary."""
    stored = stored if stored is not None else StoredReadings.of(readings)
    return {"audit_seq": audit_seq, "tenant": claim.tenant, "claim_id": claim.claim_id, "mode": claim.mode,
            "claim": claim_text, "readings": stored.text,
            "summary": json.dumps(score_summary(stored.data, len(claim.lines))), "created_at": now}


def decision_rows(claim: Claim, decided: tuple[LineDecision, ...], readings: tuple[ImageReading, ...],
                  files: Mapping[str, bytes], audit_seq: int, now: dt.datetime,
                  weights: ReviewPriority, claim_text: str, stored: StoredReadings | None = None
                  ) -> tuple[list[dict], list[dict], list[dict]]:
    """(claim record, radiographs, queue items) rows for one decided claim. A record is kept
    when the claim had radiographs (the readings feed monitoring) or a line was not
    passed; the files when a line was not passed (a person may need to look)."""
    not_passed = any(d.action is not Action.PASS for d in decided)
    if not readings and not not_passed:
        return [], [], []
    record = [record_row(claim, claim_text, readings, audit_seq, now, stored)]
    kinds = {r.image_id: r.kind.value for r in readings}
    images = [{"audit_seq": audit_seq, "tenant": claim.tenant, "radiograph_id": rid, "kind": kinds.get(rid, "unknown"),
               "media": data, "created_at": now} for rid, data in files.items()] if not_passed else []
    return record, images, queue_rows(claim, decided, audit_seq, now, weights)


def queue_rows(claim: Claim, decided: tuple[LineDecision, ...], audit_seq: int, now: dt.datetime,
               weights: ReviewPriority) -> list[dict]:
    """Queue items for the decided lines that need a person."""
    billed = {line.line_id: (line.code, line.fee) for line in claim.lines}
    return [{"tenant": claim.tenant, "audit_seq": audit_seq, "claim_id": claim.claim_id, "line_id": e.line_id,
             "code": e.code, "fee": Decimal(str(e.fee)), "action": e.action.value, "severity": e.severity,
             "rules": json.dumps(e.rules), "rank_key": rank_key(e.priority, now, weights), "status": "open",
             "created_at": now} for e in queue_entries(billed, decided, weights)]


# ---- the queue -------------------------------------------------------------------------------


def _item_json(row: ReviewItemRow, now: dt.datetime, weights: ReviewPriority) -> dict[str, Any]:
    return {"item_id": row.id, "audit_id": row.audit_seq, "claim_id": row.claim_id, "line_id": row.line_id,
            "code": row.code, "fee": float(row.fee), "action": row.action, "severity": row.severity,
            "rules": json.loads(row.rules), "status": row.status,
            "priority": round(priority_now(row.rank_key, now, weights), 3),
            "waiting_days": round((now - row.created_at).total_seconds() / 86400.0, 2),
            "created_at": row.created_at.isoformat(), "closed_at": row.closed_at.isoformat() if row.closed_at else None}


def list_queue(session: Session, tenant: str, now: dt.datetime, weights: ReviewPriority, *, status: str = "open",
               limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """The tenant's queue, highest priority first (closed items: latest first)."""
    query = select(ReviewItemRow).where(ReviewItemRow.tenant == tenant, ReviewItemRow.status == status)
    order = (ReviewItemRow.rank_key.desc(), ReviewItemRow.id) if status == "open" else (ReviewItemRow.closed_at.desc(),)
    rows = session.execute(query.order_by(*order).limit(limit).offset(offset)).scalars().all()
    total = session.execute(select(func.count()).select_from(ReviewItemRow)
                            .where(ReviewItemRow.tenant == tenant, ReviewItemRow.status == status)).scalar_one()
    return {"status": status, "total": total, "offset": offset, "items": [_item_json(r, now, weights) for r in rows]}


def case_item(session: Session, tenant: str, item_id: int, *, lock: bool = False) -> ReviewItemRow:
    query = select(ReviewItemRow).where(ReviewItemRow.id == item_id, ReviewItemRow.tenant == tenant)
    row = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if row is None:  # another tenant's item is "not found" too
        raise ReviewNotFoundError(f"no review item {item_id} for this tenant")
    return row


def _decision(session: Session, tenant: str, audit_seq: int) -> dict[str, Any]:
    found = repository.claim_decision_by_audit_id(session, tenant, audit_seq)
    if found is None:
        raise ReviewNotFoundError(f"no decision {audit_seq} for this tenant")
    return json.loads(found)


def case_detail(session: Session, tenant: str, item_id: int, now: dt.datetime, weights: ReviewPriority) -> dict[str, Any]:
    """Everything the case view shows: the queued line, the whole claim and its decision,
    the readings of each radiograph, the claim's other queued lines and past dispositions."""
    item = case_item(session, tenant, item_id)
    record = session.get(ClaimRecordRow, item.audit_seq)
    decision = _decision(session, tenant, item.audit_seq)
    images = session.execute(select(ClaimImageRow.radiograph_id, ClaimImageRow.kind)
                             .where(ClaimImageRow.audit_seq == item.audit_seq).order_by(ClaimImageRow.id)).all()
    siblings = session.execute(select(ReviewItemRow).where(ReviewItemRow.audit_seq == item.audit_seq)
                               .order_by(ReviewItemRow.id)).scalars().all()
    reviews = session.execute(select(ReviewRow).where(ReviewRow.review_item_id.in_([s.id for s in siblings]))
                              .order_by(ReviewRow.id)).scalars().all()
    appeal = session.execute(select(AppealRow).where(AppealRow.audit_seq == item.audit_seq)).scalar_one_or_none()
    return {"item": _item_json(item, now, weights),
            "appeal": _appeal_json(session, appeal) if appeal else None,
            "claim": json.loads(record.claim) if record else None,
            "decision": decision,
            "readings": json.loads(record.readings) if record else [],
            "images": [{"radiograph_id": rid, "kind": kind} for rid, kind in images],
            "queue": [_item_json(s, now, weights) for s in siblings],
            "dispositions": [disposition_json(r) for r in reviews]}


def _appeal_json(session: Session, appeal: AppealRow) -> dict[str, Any]:
    """What a reviewer of a referred appeal reads: its narrative and documents."""
    documents = session.execute(select(AppealDocumentRow.id, AppealDocumentRow.name, AppealDocumentRow.media_type,
                                       AppealDocumentRow.sha256, func.length(AppealDocumentRow.content))
                                .where(AppealDocumentRow.appeal_id == appeal.id).order_by(AppealDocumentRow.id)).all()
    return {"appeal_id": appeal.id, "original_audit_id": appeal.original_audit_seq, "narrative": appeal.narrative,
            "submitted_at": appeal.created_at.isoformat(),
            "documents": [{"document_id": i, "name": n, "media_type": m, "sha256": s, "size_bytes": size}
                          for i, n, m, s, size in documents]}


def appeal_document(session: Session, tenant: str, item_id: int, document_id: int) -> tuple[str, str, bytes]:
    """(name, media type, content) of a document of the appeal a queued item belongs to."""
    item = case_item(session, tenant, item_id)
    row = session.execute(select(AppealDocumentRow).join(AppealRow, AppealRow.id == AppealDocumentRow.appeal_id)
                          .where(AppealRow.audit_seq == item.audit_seq, AppealDocumentRow.id == document_id,
                                 AppealDocumentRow.tenant == tenant)).scalar_one_or_none()
    if row is None:
        raise ReviewNotFoundError(f"no document {document_id} with review item {item_id}")
    return row.name, row.media_type, row.content


def disposition_json(row: ReviewRow) -> dict[str, Any]:
    return {"review_id": row.id, "item_id": row.review_item_id, "claim_id": row.claim_id, "line_id": row.line_id,
            "reviewer": row.reviewer, "outcome": row.disposition, "action": row.action, "code": row.code,
            "reason": row.reason, "corrections": json.loads(row.corrections), "audit_id": row.audit_seq,
            "created_at": row.created_at.isoformat()}


def claim_image(session: Session, tenant: str, audit_seq: int, radiograph_id: str) -> tuple[str, bytes]:
    row = session.execute(select(ClaimImageRow.kind, ClaimImageRow.media)
                          .where(ClaimImageRow.audit_seq == audit_seq, ClaimImageRow.tenant == tenant,
                                 ClaimImageRow.radiograph_id == radiograph_id)).one_or_none()
    if row is None:
        raise ReviewNotFoundError(f"no radiograph {radiograph_id!r} kept for decision {audit_seq} of this tenant")
    return row.kind, row.media


# ---- dispositions -----------------------------------------------------------------------------


def _release_ledger(session: Session, tenant: str, claim_id: str, line_id: str, now: dt.datetime) -> dict[str, float]:
    """Give back what a line holds in its ledgers (a line ending as reject pays nothing):
    the line is set to hold nothing, an entry of the opposite amount per bucket, reason
    ``review``. Returns what was given back, per bucket; the review's audit record says so too."""
    ledger = {row.bucket: repository.LedgerState(row.id, row.bucket, row.limit_amount, row.used)
              for row in session.execute(
                  select(LedgerRow).join(LedgerEntryRow, LedgerEntryRow.ledger_id == LedgerRow.id)
                  .where(LedgerEntryRow.tenant == tenant, LedgerEntryRow.claim_id == claim_id,
                         LedgerEntryRow.line_id == line_id).with_for_update()).scalars()}
    moved = repository.set_line_consumption(session, ledger, tenant=tenant, claim_id=claim_id, line_id=line_id,
                                            consumed={}, reason="review", now=now)
    return {bucket: -amount for bucket, amount in moved.items()}


def _reserve_ledger(session: Session, tenant: str, claim_id: str, line_id: str, mode: str,
                    plan_versions: dict[str, str], now: dt.datetime) -> dict[str, Any]:
    """A line a reviewer pays that holds nothing in its ledgers (it was refused when
    decided) is apportioned now, against the plan version of its decision: the reviewer's
    word pays the line, the sub-limits still bound what is paid."""
    line = session.execute(select(ClaimLineRow).where(ClaimLineRow.tenant == tenant, ClaimLineRow.claim_id == claim_id,
                                                      ClaimLineRow.line_id == line_id, ClaimLineRow.mode == mode)
                           ).scalar_one_or_none()
    if line is None or mode != "claim" or not line.fee or repository.line_consumption(session, tenant, claim_id,
                                                                                       [line_id]):
        return {}
    cited = next((v for k, v in plan_versions.items() if k.startswith("plan:")), None)
    place = repository.lock_member_ledger(session, line.member_id, line.date_of_service, cited)
    if place is None:
        return {}
    current = CurrentLine(line_id=line.line_id, code=line.code, concept_id=line.concept_id, category=line.category,
                          fdi=line.fdi, quadrant=line.quadrant, fee=float(line.fee), order=0)
    share = apportion(current, float(line.fee), repository.balances_of(place.ledger), place.plan, place.year_start)
    repository.set_line_consumption(session, place.ledger, tenant=tenant, claim_id=claim_id, line_id=line_id,
                                    consumed=share.consumed, reason="review", now=now)
    line.approved_amount = Decimal(str(0.0 if share.hit.action is Action.REJECT else share.approved))
    return {"approved": float(line.approved_amount), "reason": share.hit.reason, "consumed": share.consumed}


def record_disposition(session: Session, tenant: str, item_id: int, reviewer: str, disposition: DispositionIn,
                       now: dt.datetime, webhooks: tuple[Webhook, ...] = ()) -> dict[str, Any]:
    """Close a queued line with the reviewer's disposition: the audit record (actor: the
    reviewer's key), the disposition row, the line's final status in the history, the
    ledger released when it ends as reject, and a webhook event."""
    item = case_item(session, tenant, item_id, lock=True)
    if item.status != "open":
        raise ReviewClosedError(f"review item {item_id} was already disposed of")
    decision = _decision(session, tenant, item.audit_seq)
    line = next(x for x in decision["lines"] if x["line_id"] == item.line_id)
    action, code = final_action(disposition, line.get("suggested_code"))
    record = session.get(ClaimRecordRow, item.audit_seq)
    known = {r["image_id"] for r in json.loads(record.readings)} if record else set()
    for correction in disposition.corrections:
        if correction.image_id not in known:
            raise DispositionError(f"correction names image {correction.image_id!r}, which this claim did not carry")
    released = _release_ledger(session, tenant, item.claim_id, item.line_id, now) if action is Action.REJECT else {}
    values: dict[str, Any] = {"status": repository.LINE_STATUS[action.value], "action": action.value}
    if action is Action.REJECT:
        values["approved_amount"] = Decimal("0")
    session.execute(update(ClaimLineRow).where(ClaimLineRow.tenant == tenant, ClaimLineRow.claim_id == item.claim_id,
                                               ClaimLineRow.line_id == item.line_id,
                                               ClaimLineRow.mode == decision["mode"]).values(**values))
    reserved = {} if action is Action.REJECT else _reserve_ledger(session, tenant, item.claim_id, item.line_id,
                                                                  decision["mode"], decision.get("versions", {}), now)
    payload = {"review_item_id": item.id, "decision_audit_id": item.audit_seq, "claim_id": item.claim_id,
               "line_id": item.line_id, "line_action_before": item.action, "outcome": disposition.outcome.value,
               "action": action.value, "code": code, "reason": disposition.reason, "reviewer": reviewer,
               "corrections": [c.model_dump(mode="json") for c in disposition.corrections], "released": released,
               "reserved": reserved}
    chain = audit.ChainWriter(session)
    seq = chain.add(tenant=tenant, kind="review", subject=f"{item.claim_id}/{item.line_id}", actor=reviewer,
                    input_digest=audit.digest(payload), versions=decision.get("versions", {}), payload=payload,
                    created_at=now.isoformat())
    chain.flush()
    row = ReviewRow(tenant=tenant, claim_id=item.claim_id, line_id=item.line_id, reviewer=reviewer,
                    disposition=disposition.outcome.value, reason=disposition.reason, created_at=now,
                    review_item_id=item.id, action=action.value, code=code,
                    corrections=json.dumps(payload["corrections"]), audit_seq=seq)
    session.add(row)
    item.status, item.closed_at = "closed", now
    if webhooks:
        outbox.enqueue(session, webhooks, tenant, "review.disposition", audit.canonical_json({**payload, "audit_id": seq}),
                       now)
    session.flush()
    return disposition_json(row)
