"""The likeness pool of the recycled-radiograph lookup, kept in memory: per tenant and
radiograph kind, the coarse vectors of the latest ``POOL_SIZE`` stored radiographs.

The lookup ranks the tenant's latest radiographs of a kind by coarse likeness to each of a
claim's (an image recycled by another provider for another member is found that way).
Reading the whole pool for every claim cost 6.5 ms at 8,000 stored radiographs on the
2-core machine here (2 ms at a few hundred), so each process that decides claims keeps
it and reads only the rows added since, plus the last ``REREAD_ROWS`` it holds again:
under PostgreSQL an id can commit after a higher one (two writers), and a row committed
late is picked up as long as fewer than ``REREAD_ROWS`` newer radiographs of that tenant
and kind committed before it. SQLite's writers commit one at a time, in id order.
Fingerprints are never deleted, so nothing held goes stale."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, select

from serving.fingerprints import Fingerprint, coarse_similarity
from serving.store.schema import FingerprintRow

POOL_SIZE = 5000
REREAD_ROWS = 256
MAX_POOLS = 64  # (tenant, kind) pools held at once

_f = FingerprintRow
_POOL_COLUMNS = (_f.id, _f.claim_id, _f.mode, _f.coarse)  # all in the (tenant, kind, id, ...) index: no row visited
_SCOPE = (_f.tenant == bindparam("tenant"), _f.kind == bindparam("kind"))
# Built once (the newer rows are read for every claim): building the statement per call and
# adapting SQLAlchemy's cached compiled form to each new object cost more than the query.
_NEWER_ROWS = select(*_POOL_COLUMNS).where(*_SCOPE, _f.id > bindparam("floor")).order_by(_f.id)


def claim_key(claim_id: str, mode: str) -> int:
    """A number standing for a (claim id, mode) within this process (Python's string hash is
    per process, which is all the pools need): 8 bytes a row instead of two strings."""
    return hash((claim_id, mode))


@dataclass(frozen=True)
class Pool:
    """Row ids (ascending), the ``claim_key`` of the claim each came with, and their coarse
    vectors."""

    ids: np.ndarray
    claim_keys: np.ndarray
    vectors: np.ndarray

    @classmethod
    def of_rows(cls, rows: Sequence[Sequence[Any]]) -> Pool:
        """Rows of (id, claim id, mode, coarse bytes) in ascending id order."""
        if not rows:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
        vectors = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.float16)  # one buffer, not 5,000 arrays
        return cls(np.fromiter((r[0] for r in rows), np.int64, len(rows)),
                   np.fromiter((claim_key(r[1], r[2]) for r in rows), np.int64, len(rows)),
                   vectors.reshape(len(rows), -1).astype(np.float32))

    def joined(self, newer: Pool, size: int) -> Pool:
        """This pool's rows below ``newer``'s first id, then ``newer``'s: the latest ``size``."""
        if not len(newer.ids):
            return self
        kept = int(np.searchsorted(self.ids, newer.ids[0]))  # ids ascend
        return Pool(np.concatenate([self.ids[:kept], newer.ids])[-size:],
                    np.concatenate([self.claim_keys[:kept], newer.claim_keys])[-size:],
                    (np.concatenate([self.vectors[:kept], newer.vectors]) if kept else newer.vectors)[-size:])

    def closest(self, query: Fingerprint, count: int, excluding: int) -> np.ndarray:
        """The ids of the ``count`` rows most alike ``query`` by coarse likeness, leaving
        out the rows of the claim ``excluding`` (a ``claim_key``)."""
        if not len(self.ids):
            return self.ids
        likeness = coarse_similarity(query, self.vectors)
        likeness[self.claim_keys == excluding] = -np.inf
        count = min(count, int(np.isfinite(likeness).sum()))
        if count == 0:
            return self.ids[:0]
        return self.ids[np.argpartition(-likeness, count - 1)[:count]]


class LikenessPools:
    """The pools of one process (one per ``Store``), safe to use from several threads: each
    lookup reads what is new in its own transaction and returns the pool as of that. At
    most ``max_pools`` (tenant, kind) pools are held, the least recently used let go (read
    whole again when next needed): a pool of 5,000 is about 1.4 MB."""

    def __init__(self, size: int = POOL_SIZE, reread: int = REREAD_ROWS, max_pools: int = MAX_POOLS) -> None:
        self.size, self.reread, self.max_pools = size, reread, max_pools
        self._pools: OrderedDict[tuple[str, str], Pool] = OrderedDict()
        self._lock = threading.Lock()

    def latest(self, db: Connection, tenant: str, kind: str) -> Pool:
        """The tenant's latest radiographs of ``kind`` as committed for ``db``'s transaction."""
        key = (tenant, kind)
        scope = {"tenant": tenant, "kind": kind}
        with self._lock:
            held = self._pools.get(key)
        if held is None or not len(held.ids):
            rows = db.execute(select(*_POOL_COLUMNS).where(*_SCOPE).order_by(_f.id.desc()).limit(self.size), scope).all()
            pool = Pool.of_rows(rows[::-1])
        else:
            floor = int(held.ids[-min(self.reread, len(held.ids))]) - 1  # from the last rows held, again
            pool = held.joined(Pool.of_rows(db.execute(_NEWER_ROWS, {**scope, "floor": floor}).all()), self.size)
        # Read outside the lock (no thread waits on another's query); kept unless another
        # thread has meanwhile kept a newer one. Either is complete up to its own reading.
        with self._lock:
            current = self._pools.get(key)
            if current is None or not len(current.ids) or (len(pool.ids) and pool.ids[-1] >= current.ids[-1]):
                self._pools[key] = pool
            self._pools.move_to_end(key)
            while len(self._pools) > self.max_pools:
                self._pools.popitem(last=False)
        return pool

    def held(self) -> list[tuple[str, str]]:
        """The (tenant, kind) pools held, least recently used first."""
        with self._lock:
            return list(self._pools)
