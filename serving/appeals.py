"""Appeals: a refused line (reject or downcode) re-adjudicated with new evidence.

The re-adjudication uses what the original decision cited: the rule-library version (an
appeal is refused if the rules' code has changed since), the table versions (catalogue,
evidence matrix, thresholds, frequency table, bundle library; kept in the store), the plan
version, and the original radiographs' readings by the original model versions. New
radiographs are read by the models in service now, whose versions the appeal records.
The appeal narrative is added to the claim's; documents are kept for a person and not
read by the models. Lines not appealed keep their decision.

Outcome per line: ``overturned`` (now passed or paid more, with nothing left to review),
``modified`` (better, but still refused in part), ``referred`` (the re-adjudication
needs a person, documents came that only a person can read, or a reviewer had decided
the line and the re-run would turn that round: the line is queued for review under the
appeal) or ``upheld`` (no better; the original decision stands; an appeal
never leaves a line worse than it was). The appeal, its audit record (kind ``appeal``),
the line's status and ledger, and a webhook event are written in one transaction."""

from __future__ import annotations

import binascii
import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import pybase64
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.detections import ImageReading
from models.errors import DxvError
from serving import outbox
from serving.adjudication import ClaimDecision, RuleTables, decide_lines, recycled_hit, search_recycled
from serving.claims import Attachment, Claim
from serving.decisions import RULE_LIBRARY_VERSION, Action, LineDecision, RuleHit
from serving.effective_tables import tables_at
from serving.review.queue import ReviewPriority
from serving.rules.ledger import Balance
from serving.rules.recycled import RECYCLED, ImagePrint
from serving.service_config import Webhook
from serving.store import audit, repository, reviews
from serving.store.database import Store
from serving.store.schema import (
    AppealDocumentRow,
    AppealRow,
    ClaimImageRow,
    ClaimRecordRow,
    ReviewItemRow,
    ReviewRow,
)
from serving.store.table_versions import TableVersionNotFoundError
from serving.validation.engine import validate_claim


class AppealError(DxvError):
    """An appeal that cannot be taken (HTTP 409): the line is not refused, is under review,
    or the decision cannot be re-run as it was."""

    code = "appeal.not_appealable"


class AppealInputError(DxvError):
    """An appeal whose content is wrong (HTTP 422)."""

    code = "appeal.invalid"


class DocumentIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    media_type: str = Field("application/pdf", min_length=1, max_length=100)
    content_base64: str = Field(min_length=1)


class AppealIn(BaseModel):
    """What an appeal brings: the lines appealed and at least one piece of new evidence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    line_ids: tuple[str, ...] = Field(min_length=1, max_length=64)
    narrative: str = Field("", max_length=20_000)
    attachments: tuple[Attachment, ...] = Field((), max_length=16)  # new radiographs, base64 content
    documents: tuple[DocumentIn, ...] = Field((), max_length=16)

    @model_validator(mode="after")
    def _new_evidence(self) -> AppealIn:
        if not (self.narrative.strip() or self.attachments or self.documents):
            raise ValueError("an appeal needs new evidence: a narrative, a radiograph or a document")
        if len(set(self.line_ids)) != len(self.line_ids):
            raise ValueError("a line is named twice")
        return self

    def document_bytes(self) -> list[tuple[DocumentIn, bytes]]:
        out = []
        for doc in self.documents:
            try:
                out.append((doc, pybase64.b64decode(doc.content_base64, validate=True)))
            except (binascii.Error, ValueError) as exc:
                raise AppealInputError(f"document {doc.name!r}: content is not valid base64 ({exc})") from exc
        return out


class AppealOutcome(StrEnum):
    OVERTURNED = "overturned"
    MODIFIED = "modified"
    REFERRED = "referred"
    UPHELD = "upheld"


class AppealedLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    line_id: str
    outcome: AppealOutcome
    before: LineDecision  # the decision the line stood on when appealed
    readjudicated: LineDecision  # what the re-run gives with the new evidence
    standing: LineDecision  # what now stands (for a referred line: ``before`` until a reviewer decides)


class ReadingSource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    image_id: str
    source: str  # original, appeal
    model_versions: dict[str, str]


class DocumentRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    media_type: str
    sha256: str
    size_bytes: int


class AppealDecision(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    appeal_id: int
    audit_id: int
    original_audit_id: int
    claim_id: str
    tenant: str
    outcome: AppealOutcome
    lines: tuple[AppealedLine, ...]
    decision: ClaimDecision  # the re-adjudicated claim (lines not appealed as they stood)
    readings: tuple[ReadingSource, ...]
    documents: tuple[DocumentRef, ...]
    narrative: str
    decided_at: str


# ---- pure parts -------------------------------------------------------------------------------


def _paid(line: LineDecision) -> float:
    return 0.0 if line.action is Action.REJECT else float(line.approved_amount or 0.0)


def line_outcome(before: LineDecision, after: LineDecision, with_documents: bool,
                 reviewer_decided: bool = False) -> AppealOutcome:
    """How an appealed line ends (see the module's docstring). A line a reviewer decided is
    never turned round by the rules alone: a better re-run goes back to a person."""
    if after.needs_review:
        return AppealOutcome.REFERRED
    better = after.action.severity < before.action.severity or _paid(after) > _paid(before) + 0.005
    if better:
        if reviewer_decided:
            return AppealOutcome.REFERRED
        return AppealOutcome.OVERTURNED if after.action is Action.PASS else AppealOutcome.MODIFIED
    return AppealOutcome.REFERRED if with_documents else AppealOutcome.UPHELD


def overall_outcome(outcomes: list[AppealOutcome]) -> AppealOutcome:
    for outcome in (AppealOutcome.REFERRED, AppealOutcome.OVERTURNED, AppealOutcome.MODIFIED):
        if outcome in outcomes:
            return outcome
    return AppealOutcome.UPHELD


def appealed_claim(original: Claim, appeal: AppealIn) -> Claim:
    """The claim as re-adjudicated: the appeal's narrative after the original one, its
    radiographs after the original attachments."""
    known = {a.radiograph_id for a in original.attachments}
    clash = [a.radiograph_id for a in appeal.attachments if a.radiograph_id in known]
    if clash:
        raise AppealInputError(f"radiograph id {clash[0]!r} is already an attachment of the claim; give the new one "
                               "another id")
    narrative = "\n".join(t for t in (original.narrative, appeal.narrative.strip()) if t)
    attachments = (*original.attachments, *(a.model_copy(update={"content": None}) for a in appeal.attachments))
    return original.model_copy(update={"narrative": narrative, "attachments": attachments})


def _recycled_of(line: LineDecision) -> tuple[RuleHit, ...]:
    return tuple(h for h in line.rule_hits if h.rule_id == RECYCLED)


# ---- the appeal -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Original:
    decision: ClaimDecision
    claim: Claim
    readings: tuple[ImageReading, ...]
    standing: dict[str, LineDecision]  # line id -> the decision it stands on now
    human: frozenset[str]  # lines that stand on a reviewer's disposition
    files: list[tuple[str, str, bytes]]  # radiograph id, kind, file


def _as_disposed(line: LineDecision, review: ReviewRow) -> LineDecision:
    action = Action(str(review.action))
    changes: dict[str, Any] = {"action": action, "needs_review": False}
    if action is Action.REJECT or action is Action.PASS:
        changes.update(suggested_code=None, suggested_code_system=None)
    if action is Action.REJECT:
        changes["approved_amount"] = 0.0
    if review.code:
        changes["suggested_code"] = review.code
    return line.model_copy(update=changes)


def load_original(store: Store, tenant: str, audit_id: int, line_ids: tuple[str, ...]) -> Original:
    with store.transaction() as session:
        found = repository.decision_by_audit_id(session, tenant, audit_id)
        if found is None:
            first = session.execute(select(AppealRow.original_audit_seq).where(
                AppealRow.audit_seq == audit_id, AppealRow.tenant == tenant)).scalar_one_or_none()
            if first is not None:
                raise AppealError(f"decision {audit_id} is an appeal's; appeal the original decision {first}")
            raise reviews.ReviewNotFoundError(f"no decision {audit_id} for this tenant")
        decision = ClaimDecision.model_validate_json(found)
        if decision.mode != "claim":
            raise AppealError(f"decision {audit_id} is a {decision.mode}; only a claim's decision is appealed")
        record = session.get(ClaimRecordRow, audit_id)
        if record is None:
            raise AppealError(f"decision {audit_id} kept no claim record (it refused nothing)")
        standing = {line.line_id: line for line in decision.lines}
        human: set[str] = set()
        # Where each line stands now: its reviewers' dispositions and its appeals, in the order they happened.
        events: list[tuple[dt.datetime, int, Any]] = [
            (r.created_at, r.id, r) for r in session.execute(select(ReviewRow).where(
                ReviewRow.tenant == tenant, ReviewRow.claim_id == decision.claim_id, ReviewRow.action.is_not(None))
            ).scalars()]
        events += [(a.created_at, a.id, a) for a in session.execute(
            select(AppealRow).where(AppealRow.original_audit_seq == audit_id)).scalars()]
        for _, _, event in sorted(events, key=lambda e: (e[0], isinstance(e[2], ReviewRow), e[1])):
            if isinstance(event, ReviewRow):
                if event.line_id in standing:
                    standing[event.line_id] = _as_disposed(standing[event.line_id], event)
                    human.add(event.line_id)
                continue
            for line in json.loads(event.lines):
                if line["outcome"] != AppealOutcome.REFERRED.value:  # a referred line stands until its reviewer decides
                    standing[line["line_id"]] = LineDecision.model_validate(line["standing"])
                    human.discard(line["line_id"])
        under_review = set(session.execute(select(ReviewItemRow.line_id).where(
            ReviewItemRow.tenant == tenant, ReviewItemRow.claim_id == decision.claim_id,
            ReviewItemRow.status == "open")).scalars())
        files = [(r.radiograph_id, r.kind, r.media) for r in session.execute(
            select(ClaimImageRow).where(ClaimImageRow.audit_seq == audit_id).order_by(ClaimImageRow.id)).scalars()]
    for line_id in line_ids:
        if line_id not in standing:
            raise AppealInputError(f"the claim has no line {line_id!r}")
        if line_id in under_review:
            raise AppealError(f"line {line_id} is waiting for a reviewer; it can be appealed once decided")
        if standing[line_id].action not in (Action.REJECT, Action.DOWNCODE):
            raise AppealError(f"line {line_id} stands as {standing[line_id].action.value}; only a rejected or "
                              "downcoded line is appealed")
    claim = Claim.model_validate_json(record.claim)
    readings = tuple(ImageReading.from_json(r) for r in json.loads(record.readings))
    return Original(decision, claim, readings, standing, frozenset(human), files)


def _keep_evidence(session: Session, row: AppealRow, claim: Claim, readings: tuple[ImageReading, ...],
                   original_files: list[tuple[str, str, bytes]], new_files: Mapping[str, bytes],
                   documents: list[tuple[DocumentIn, bytes]], refs: tuple[DocumentRef, ...], now: dt.datetime) -> None:
    """What the review case view and the packet read under the appeal's audit id: the
    documents, the claim as appealed with every reading, every radiograph."""
    for (doc, content), ref in zip(documents, refs, strict=True):
        session.add(AppealDocumentRow(appeal_id=row.id, tenant=row.tenant, name=doc.name, media_type=doc.media_type,
                                      sha256=ref.sha256, content=content, created_at=now))
    record = reviews.record_row(claim, reviews.claim_json(claim), readings, row.audit_seq, now)
    session.add(ClaimRecordRow(**{**record, "mode": "claim"}))
    session.flush()
    kinds = {r.image_id: r.kind.value for r in readings}
    for rid, kind, media in (*original_files, *((rid, kinds.get(rid, "unknown"), m) for rid, m in new_files.items())):
        session.add(ClaimImageRow(audit_seq=row.audit_seq, tenant=row.tenant, radiograph_id=rid, kind=kind, media=media,
                                  created_at=now))


def appeal(store: Store, tables: RuleTables, tenant: str, audit_id: int, appeal_in: AppealIn,
           new_readings: Mapping[str, ImageReading], new_files: Mapping[str, bytes], new_prints: tuple[ImagePrint, ...],
           *, actor: str, now: dt.datetime, webhooks: tuple[Webhook, ...] = (),
           review: ReviewPriority | None = None) -> AppealDecision:
    """Re-adjudicate the appealed lines of decision ``audit_id`` (see the module docstring)."""
    documents = appeal_in.document_bytes()
    original = load_original(store, tenant, audit_id, appeal_in.line_ids)
    cited = original.decision.versions
    if cited.get("rule_library") != RULE_LIBRARY_VERSION:
        raise AppealError(f"decision {audit_id} was made by rule library {cited.get('rule_library')}; this service runs "
                          f"{RULE_LIBRARY_VERSION}, so it cannot be re-run as it was")
    try:
        then = tables_at(store, cited, tables)
    except TableVersionNotFoundError as exc:
        raise AppealError(f"decision {audit_id} cannot be re-run as it was: {exc.message}") from exc
    claim = appealed_claim(original.claim, appeal_in)
    readings = (*original.readings, *(new_readings[a.radiograph_id] for a in appeal_in.attachments))
    validation = validate_claim(claim, readings, then.validation)
    search = search_recycled(store, [claim], [new_prints])[0]  # the new radiographs' (None: none added)
    appealed = set(appeal_in.line_ids)
    fixed = {k: v for k, v in original.standing.items() if k not in appealed}
    versions = dict(cited)
    for reading in readings[len(original.readings):]:
        for model, version in reading.model_versions:
            if cited.get(f"model:{model}") != version:
                versions[f"appeal_model:{model}"] = version

    with store.transaction() as session, session.no_autoflush:
        try:
            place = repository.lock_member_ledger(session, claim.member.member_id, claim.date_of_service,
                                                  next((v for k, v in cited.items() if k.startswith("plan:")), None))
        except repository.PlanVersionNotStoredError as exc:
            raise AppealError(f"decision {audit_id} cannot be re-run as it was: {exc.message}") from exc
        # The audit chain's head, locked (after the member's rows, as a claim's decision takes
        # them) before the radiographs stored since the search are compared: every decision
        # holds it until it commits, so none is stored unseen meanwhile.
        chain = audit.ChainWriter(session)
        consumed: dict[str, dict[str, float]] = {}
        if place is None:
            after = {k: original.standing[k] for k in appealed}  # still not eligible: nothing to re-run
        else:
            # The member as when decided, without this claim's own lines (they are being re-decided).
            member = dataclasses.replace(place.member, history=tuple(p for p in place.member.history
                                                                     if p.claim_id != claim.claim_id))
            versions[f"plan:{member.plan_id}"] = place.plan.version
            held = repository.line_consumption(session, tenant, claim.claim_id, sorted(appealed))
            balances = {b: Balance(b, float(r.limit), float(r.used) - sum(float(h.get(b, 0)) for h in held.values()))
                        for b, r in place.ledger.items()}
            standing = repository.provider_standing(session, claim.provider.provider_id)
            recycled = recycled_hit(session, claim, search)
            if not any(h.fired for h in recycled):  # the original radiographs' verdict stands
                recycled = next((_recycled_of(x) for x in original.decision.lines if _recycled_of(x)), ())
            outcome = decide_lines(claim, validation.lines, member, place.plan, standing, balances, place.year_start,
                                   then, recycled, fixed=fixed)
            after = {d.line_id: d for d in outcome.lines if d.line_id in appealed}
            consumed = outcome.consumed
        with_documents = bool(documents)
        lines = []
        for line_id in appeal_in.line_ids:
            before, readjudicated = original.standing[line_id], after[line_id]
            result = line_outcome(before, readjudicated, with_documents, line_id in original.human)
            standing_line = readjudicated if result in (AppealOutcome.OVERTURNED, AppealOutcome.MODIFIED) else before
            lines.append(AppealedLine(line_id=line_id, outcome=result, before=before, readjudicated=readjudicated,
                                      standing=standing_line))
            if standing_line is readjudicated and place is not None:
                repository.set_line_consumption(session, place.ledger, tenant=tenant, claim_id=claim.claim_id, line_id=line_id,
                                                consumed=consumed.get(line_id, {}), reason="appeal", now=now)
                repository.set_line_status(session, tenant, claim.claim_id, line_id, readjudicated)
        # The new radiographs join the tenant's (a later claim carrying one of them is compared with them).
        repository.save_fingerprints(session, claim, new_prints, now)
        seq = chain.next_seq
        decision = ClaimDecision(claim_id=claim.claim_id, tenant=tenant, mode="claim",
                                 lines=tuple(after.get(x.line_id, original.standing[x.line_id])
                                             for x in original.decision.lines),
                                 decision_time=now.isoformat(), versions=versions, audit_id=seq)
        row = AppealRow(tenant=tenant, claim_id=claim.claim_id, original_audit_seq=audit_id, audit_seq=seq,
                        outcome=overall_outcome([x.outcome for x in lines]).value,
                        lines=json.dumps([x.model_dump(mode="json", exclude_none=True) for x in lines]),
                        narrative=appeal_in.narrative, submitted_by=actor, created_at=now)
        session.add(row)
        session.flush()
        refs = tuple(DocumentRef(name=d.name, media_type=d.media_type, sha256=hashlib.sha256(b).hexdigest(),
                                 size_bytes=len(b)) for d, b in documents)
        sources = tuple(ReadingSource(image_id=r.image_id, source="original" if i < len(original.readings) else "appeal",
                                      model_versions=dict(r.model_versions)) for i, r in enumerate(readings))
        result_obj = AppealDecision(appeal_id=row.id, audit_id=seq, original_audit_id=audit_id, claim_id=claim.claim_id,
                                    tenant=tenant, outcome=AppealOutcome(row.outcome), lines=tuple(lines),
                                    decision=decision, readings=sources, documents=refs, narrative=appeal_in.narrative,
                                    decided_at=now.isoformat())
        payload = result_obj.model_dump_json(exclude_none=True)
        chain.add(tenant=tenant, kind="appeal", subject=claim.claim_id, actor=actor,
                  input_digest=hashlib.sha256((claim.model_dump_json() + json.dumps(sorted(r.sha256 for r in refs)))
                                              .encode("utf-8")).hexdigest(),
                  versions=versions, payload_text=payload, created_at=now.isoformat())
        chain.flush()
        _keep_evidence(session, row, claim, readings, original.files, new_files, documents, refs, now)
        # A referred line is queued, whatever its re-run gave: a person decides it.
        referred = tuple(x.readjudicated.model_copy(update={"needs_review": True}) for x in lines
                         if x.outcome is AppealOutcome.REFERRED)
        for item in reviews.queue_rows(claim, referred, seq, now, review or ReviewPriority()):
            session.add(ReviewItemRow(**item))
        if webhooks:
            outbox.enqueue(session, webhooks, tenant, "appeal.decided", payload, now)
        session.flush()
    return result_obj


def appeal_by_id(store: Store, tenant: str, appeal_id: int) -> AppealDecision:
    with store.transaction() as session:
        row = session.get(AppealRow, appeal_id)
        if row is None or row.tenant != tenant:
            raise reviews.ReviewNotFoundError(f"no appeal {appeal_id} for this tenant")
        payload = repository.audit_payload(session, row.audit_seq)
    return AppealDecision.model_validate_json(payload)


def appeals_of(store: Store, tenant: str, audit_id: int) -> list[dict[str, Any]]:
    with store.transaction() as session:
        rows = session.execute(select(AppealRow).where(AppealRow.tenant == tenant, AppealRow.original_audit_seq == audit_id)
                               .order_by(AppealRow.id)).scalars().all()
    return [{"appeal_id": r.id, "audit_id": r.audit_seq, "outcome": r.outcome, "created_at": r.created_at.isoformat(),
             "lines": [{"line_id": x["line_id"], "outcome": x["outcome"]} for x in json.loads(r.lines)]} for r in rows]
