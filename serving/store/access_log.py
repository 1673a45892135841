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

The log is kept until it is pruned (``dxv audit prune-access``): how long access records
must be kept is the payer's policy (HIPAA asks six years of its documentation), so
nothing is deleted on its own."""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Table, delete, select
from sqlalchemy.orm import Session

from serving.store.bulk import insert_many
from serving.store.database import Store
from serving.store.schema import AccessRow

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
                        insert_many(session.connection(), cast(Table, AccessRow.__table__), [asdict(r) for r in batch])
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
                   subject: str | None = None, limit: int | None = 100) -> list[AccessRecord]:
    """The latest records first (at most ``limit``; None: all), optionally of one tenant,
    since a time, naming one record (``subject`` as stored, e.g. ``audit_id=7``)."""
    query = select(AccessRow).order_by(AccessRow.id.desc()).limit(limit)
    if tenant is not None:
        query = query.where(AccessRow.tenant == tenant)
    if since is not None:
        query = query.where(AccessRow.at >= since)
    if subject is not None:
        query = query.where(AccessRow.subject == subject)
    return [_record(row) for row in session.execute(query).scalars()]


def prune_access_log(store: Store, before: dt.datetime, *, batch: int = 5_000) -> int:
    """Delete the records made before ``before``, ``batch`` rows per transaction (a year of
    traffic is not deleted under one long write lock, which would hold up every claim's
    decision on SQLite); returns how many were deleted."""
    deleted = 0
    while True:
        with store.transaction() as session:
            oldest = select(AccessRow.id).where(AccessRow.at < before).order_by(AccessRow.id).limit(batch)
            done = session.execute(delete(AccessRow).where(AccessRow.id.in_(oldest.scalar_subquery())))
            count = cast(CursorResult, done).rowcount
        deleted += count
        if count < batch:
            return deleted


def _record(row: AccessRow) -> AccessRecord:
    fields: dict[str, Any] = {name: getattr(row, name) for name in AccessRecord.__dataclass_fields__}
    return AccessRecord(**fields)
