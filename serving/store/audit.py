"""The audit trail: append-only, hash-chained.

Each record stores the decision (or review) as canonical JSON, a digest of the inputs,
the versions used (rule library, tables, plan, models) and the actor, and its hash
covers all of that plus the previous record's hash. Editing or deleting any row breaks
the chain from there on, which ``verify`` (``dxv audit verify``) reports. Appending
(``ChainWriter``) locks the chain head, so concurrent writers keep one unbroken sequence."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from serving.store.bulk import insert_many
from serving.store.schema import AuditHeadRow, AuditRow

CHAIN = "main"
GENESIS = "0" * 64
_h = AuditHeadRow
# Built once (every decision appends): Core statements, not an ORM object and its flush.
_HEAD_FOR_UPDATE = select(_h.last_seq, _h.last_hash).where(_h.chain == bindparam("of_chain")).with_for_update()
_HEAD_MOVED = update(cast(Table, _h.__table__)).where(_h.chain == bindparam("of_chain")).values(
    last_seq=bindparam("new_seq"), last_hash=bindparam("new_hash"))


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, ASCII: the same bytes for the same content everywhere."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()


def record_hash(prev_hash: str, seq: int, tenant: str, kind: str, subject: str, actor: str, input_digest: str,
                versions: str, payload: str, created_at: str) -> str:
    fields = [prev_hash, str(seq), tenant, kind, subject, actor, input_digest, versions, payload, created_at]
    return hashlib.sha256("\x1f".join(fields).encode("utf-8")).hexdigest()


def lock_head(session: Session, chain: str) -> tuple[int, str]:
    """The chain's last sequence number and hash, its head row locked until the transaction
    ends (``SELECT ... FOR UPDATE``; SQLite's writers are one at a time already)."""
    seq, last = session.connection().execute(_HEAD_FOR_UPDATE, {"of_chain": chain}).one()
    return int(seq), str(last)


def move_head(session: Session, chain: str, seq: int, last_hash: str) -> None:
    session.connection().execute(_HEAD_MOVED, {"of_chain": chain, "new_seq": seq, "new_hash": last_hash})


class ChainWriter:
    """Appends many records in one go: the head is locked once, the hashes are chained in
    memory and the rows go in with one bulk insert (``flush``)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.seq, self.last = lock_head(session, CHAIN)
        self.rows: list[dict[str, Any]] = []
        self._versions_text: dict[tuple[tuple[str, str], ...], str] = {}  # a batch's records share a few

    @property
    def next_seq(self) -> int:
        return self.seq + 1

    def add(self, *, tenant: str, kind: str, subject: str, actor: str, input_digest: str, versions: dict[str, str],
            payload: Any = None, payload_text: str | None = None, created_at: str) -> int:
        """Append a record; ``payload_text`` is JSON already serialised (stored and hashed as
        given), else ``payload`` is serialised canonically."""
        self.seq += 1
        key = tuple(versions.items())
        versions_text = self._versions_text.get(key)
        if versions_text is None:
            versions_text = self._versions_text[key] = canonical_json(versions)
        payload_text = payload_text if payload_text is not None else canonical_json(payload)
        row_hash = record_hash(self.last, self.seq, tenant, kind, subject, actor, input_digest, versions_text,
                               payload_text, created_at)
        self.rows.append({"seq": self.seq, "tenant": tenant, "kind": kind, "subject": subject, "actor": actor,
                          "input_digest": input_digest, "versions": versions_text, "payload": payload_text,
                          "created_at": created_at, "prev_hash": self.last, "hash": row_hash})
        self.last = row_hash
        return self.seq

    def flush(self) -> None:
        if self.rows:
            insert_many(self.session.connection(), cast(Table, AuditRow.__table__), self.rows)
            move_head(self.session, CHAIN, self.seq, self.last)
            self.rows = []
        self.session.flush()


@dataclass
class VerifyReport:
    records: int = 0
    problems: list[str] = field(default_factory=list)
    unchained: int = 0  # rows from before their table was chained (the access log's before migration 0016)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(session: Session) -> VerifyReport:
    """Walk the chain from the genesis: every hash must recompute, every record must point
    at its predecessor, no sequence number may be missing, and the head must match."""
    report = VerifyReport()
    prev_hash, expected_seq = GENESIS, 1
    for row in session.execute(select(AuditRow).order_by(AuditRow.seq)).scalars():
        report.records += 1
        if row.seq != expected_seq:
            report.problems.append(f"records {expected_seq}..{row.seq - 1} are missing (deleted)")
        if row.prev_hash != prev_hash:
            report.problems.append(f"record {row.seq} does not follow its predecessor (a record before it was "
                                   "changed or deleted)")
        recomputed = record_hash(row.prev_hash, row.seq, row.tenant, row.kind, row.subject, row.actor,
                                 row.input_digest, row.versions, row.payload, row.created_at)
        if recomputed != row.hash:
            report.problems.append(f"record {row.seq} ({row.kind} {row.subject}) was edited: its content no longer "
                                   "matches its hash")
        prev_hash, expected_seq = row.hash, row.seq + 1
    head = session.execute(select(AuditHeadRow).where(AuditHeadRow.chain == CHAIN)).scalar_one_or_none()
    if head is not None and (head.last_seq != expected_seq - 1 or head.last_hash != prev_hash):
        report.problems.append(f"the chain head says record {head.last_seq}, the log ends at {expected_seq - 1} "
                               "(records at the end were deleted)")
    return report
