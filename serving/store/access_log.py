"""The access log: every request to the service, who made it and what it touched.

Decisions, dispositions, appeals and promotions are in the hash-chained audit trail, in
their own transactions. The access log adds every other request (reading a decision, a
review case, a radiograph; refused ones, with the key id as presented) so that a payer can
answer "who looked at this claim". A row holds the key id and its tenant, the method, the
route's template and its parameters (the service's record numbers and radiograph ids:
nothing of the body, no member identifier), the status and the time taken.

Rows are written in batches by a thread of their own (``AccessLogWriter``), never in the
request's path: one more committed transaction per request would cost each claim about a
millisecond (SQLite's commit and fsync). What is queued is written at least every
``interval_s`` and when the writer closes; a process killed outright loses at most that
interval's rows.

Each row carries the request id the service answered with (``X-Request-ID``: a support
case quotes it) and is hash-chained to the row before it like the audit trail (chain
``access``: every batch locks the chain head, so writers in several replicas keep one
sequence), so an edited, inserted or deleted record shows in ``verify_access``.

The log is kept until it is pruned (``dxv audit prune-access``): how long access records
must be kept is the payer's policy (HIPAA asks six years of its documentation), so
nothing is deleted on its own. Pruning deletes the oldest records, a prefix of the chain,
and keeps the last one deleted as the anchor the oldest kept record follows."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

from sqlalchemy import Table, delete, func, select
from sqlalchemy.orm import Session

from serving.store import audit
from serving.store.bulk import insert_many
from serving.store.database import Store
from serving.store.schema import AccessRow, AuditHeadRow

CHAIN = "access"
PRUNED = "access-pruned"  # the last record retention deleted: the oldest kept one follows it

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccessRecord:
    at: dt.datetime
    tenant: str | None
    key_id: str | None
    authenticated: bool
    method: str
    route: str
    subject: str
    status: int
    duration_ms: float
    request_id: str | None = None


def record_hash(prev_hash: str, row_id: int, record: AccessRecord) -> str:
    """SHA-256 over the previous row's hash, the row's number and every field of the record
    (an absent value written apart from an empty one)."""
    fields = [prev_hash, str(row_id), record.at.isoformat(), _text(record.tenant), _text(record.key_id),
              "1" if record.authenticated else "0", record.method, record.route, record.subject, str(record.status),
              repr(float(record.duration_ms)), _text(record.request_id)]
    return hashlib.sha256("\x1f".join(fields).encode("utf-8")).hexdigest()


def _text(value: str | None) -> str:
    return "\x00" if value is None else value


def append(session: Session, records: list[AccessRecord]) -> None:
    """Append ``records`` to the chain in this transaction (the head locked until it ends)."""
    seq, last = audit.lock_head(session, CHAIN)
    rows = []
    for record in records:
        seq += 1
        row_hash = record_hash(last, seq, record)
        rows.append({**asdict(record), "id": seq, "prev_hash": last, "hash": row_hash})
        last = row_hash
    insert_many(session.connection(), cast(Table, AccessRow.__table__), rows)
    audit.move_head(session, CHAIN, seq, last)


class AccessLogWriter:
    """Queues records and writes them in batches from a daemon thread (``flush`` writes
    what is queued now; ``close`` flushes and stops the thread)."""

    def __init__(self, store: Store, *, interval_s: float = 0.5, max_batch: int = 500) -> None:
        self.store, self.interval_s, self.max_batch = store, interval_s, max_batch
        self._queue: queue.SimpleQueue[AccessRecord] = queue.SimpleQueue()
        self._lock = threading.Lock()  # one batch written at a time (the thread, flush, close)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dxv-access-log", daemon=True)
        self._thread.start()

    def add(self, record: AccessRecord) -> None:
        self._queue.put(record)

    def flush(self) -> int:
        """Write every record queued so far; returns how many."""
        written = 0
        with self._lock:
            while True:
                batch = self._take()
                if not batch:
                    return written
                try:
                    with self.store.transaction() as session:
                        append(session, batch)
                except Exception:
                    for record in batch:  # kept for the next try, not lost
                        self._queue.put(record)
                    raise
                written += len(batch)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)
        self.flush()

    def _take(self) -> list[AccessRecord]:
        batch: list[AccessRecord] = []
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        warned_at = 0.0
        while not self._stopping.wait(self.interval_s):
            if self.store.closed:  # the app is done with its store: nothing more can be written
                if not self._queue.empty():
                    log.warning("access log: the store was closed with records still queued")
                return
            if self._queue.empty():
                continue
            try:
                self.flush()
            except Exception:  # the store is away for a moment: the records stay queued, tried again
                if time.monotonic() - warned_at > 60:
                    warned_at = time.monotonic()
                    log.warning("access log: writing a batch failed; the records stay queued", exc_info=True)


def access_records(session: Session, *, tenant: str | None = None, since: dt.datetime | None = None,
                   subject: str | None = None, request_id: str | None = None,
                   limit: int | None = 100) -> list[AccessRecord]:
    """The latest records first (at most ``limit``; None: all), optionally of one tenant,
    since a time, naming one record (``subject`` as stored, e.g. ``audit_id=7``), or the
    one request an answer's ``X-Request-ID`` names."""
    query = select(AccessRow).order_by(AccessRow.id.desc()).limit(limit)
    if request_id is not None:
        query = query.where(AccessRow.request_id == request_id)
    if tenant is not None:
        query = query.where(AccessRow.tenant == tenant)
    if since is not None:
        query = query.where(AccessRow.at >= since)
    if subject is not None:
        query = query.where(AccessRow.subject == subject)
    return [_record(row) for row in session.execute(query).scalars()]


def prune_access_log(store: Store, before: dt.datetime, *, batch: int = 5_000) -> int:
    """Delete the records made before ``before``, oldest first, ``batch`` rows per
    transaction (a year of traffic is not deleted under one long write lock, which would
    hold up every claim's decision on SQLite); returns how many were deleted. Only a prefix
    of the chain goes: the records before the first one made at or after ``before``
    (replicas write their batches a moment apart, so a record a little older than
    ``before`` may stay after a newer one). The last record deleted becomes the anchor."""
    with store.reading() as session:
        keep_from = session.execute(select(func.min(AccessRow.id)).where(AccessRow.at >= before)).scalar()
    deleted = 0
    while True:
        with store.transaction() as session:
            oldest = select(AccessRow.id, AccessRow.hash).order_by(AccessRow.id).limit(batch)
            if keep_from is not None:
                oldest = oldest.where(AccessRow.id < keep_from)
            rows = session.execute(oldest).all()
            if rows:
                session.execute(delete(AccessRow).where(AccessRow.id <= rows[-1].id))
                if rows[-1].hash is not None:  # the chained part reached: move the anchor
                    _set_anchor(session, rows[-1].id, rows[-1].hash)
        deleted += len(rows)
        if len(rows) < batch:
            return deleted


def _set_anchor(session: Session, row_id: int, row_hash: str) -> None:
    if session.get(AuditHeadRow, PRUNED) is None:
        session.add(AuditHeadRow(chain=PRUNED, last_seq=row_id, last_hash=row_hash))
        session.flush()
    else:
        audit.move_head(session, PRUNED, row_id, row_hash)


def verify_access(session: Session) -> audit.VerifyReport:
    """Walk the chain from its start (or from the anchor retention left): every hash must
    recompute, every record follow its predecessor with no number missing, and the head
    match the last record. Records from before the chain existed are counted apart."""
    report = audit.VerifyReport()
    anchor = session.get(AuditHeadRow, PRUNED)
    prev_hash, expected = (anchor.last_hash, anchor.last_seq + 1) if anchor is not None else (audit.GENESIS, None)
    walk = select(AccessRow).order_by(AccessRow.id).execution_options(yield_per=2_000)  # years of records: streamed
    for row in session.execute(walk).scalars():
        if row.hash is None and expected is None:
            report.unchained += 1  # written before migration 0016
            continue
        report.records += 1
        if expected is not None and row.id != expected:
            report.problems.append(f"access records {expected}..{row.id - 1} are missing (deleted)")
        if row.prev_hash != prev_hash:
            report.problems.append(f"access record {row.id} does not follow its predecessor (a record before it "
                                   "was changed or deleted)")
        if row.hash is None or record_hash(row.prev_hash or "", row.id, _record(row)) != row.hash:
            report.problems.append(f"access record {row.id} was edited: its content no longer matches its hash")
        prev_hash, expected = row.hash or "", row.id + 1
    head = session.get(AuditHeadRow, CHAIN)
    ends = expected - 1 if expected is not None else None
    if head is not None and (head.last_hash != prev_hash or (ends is not None and head.last_seq != ends)):
        report.problems.append(f"the access chain head says record {head.last_seq}, the log ends at "
                               f"{ends if ends is not None else 'its start'} (records at the end were deleted)")
    return report


def _record(row: AccessRow) -> AccessRecord:
    fields: dict[str, Any] = {name: getattr(row, name) for name in AccessRecord.__dataclass_fields__}
    return AccessRecord(**fields)
