"""Turns at the models for an ingress replica's requests: at most ``at_once`` at a time,
at most ``max_waiting`` waiting for one; one more is refused at once (503 ``models.busy``,
with Retry-After) rather than queued behind a backlog the two-second budget cannot hold.

The wait is on the event loop, not in a worker thread: waiting requests hold no thread,
so probes, metrics and reads of decisions are answered at once however long the queue.
(Serve's own limit, ``max_ongoing_requests``, queued them behind the claims: ``/healthz``
took 650-940 ms with eight two-periapical claims in flight, README "The service under
load", session 25.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from serving.image_analysis import ModelsUnavailableError


class ModelsBusyError(ModelsUnavailableError):
    """Every turn at the models is taken and the waiting line is full (HTTP 503, retry)."""

    code = "models.busy"


class Turns:
    def __init__(self, at_once: int, max_waiting: int) -> None:
        self.at_once, self.max_waiting = at_once, max_waiting
        self._free = asyncio.Semaphore(at_once)
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """A turn at the models for the block (after a wait, if all are taken)."""
        if self._free.locked() and self._waiting >= self.max_waiting:
            raise ModelsBusyError(f"the models are reading {self.at_once} request(s) with {self._waiting} waiting; "
                                  "retry shortly")
        self._waiting += 1
        try:
            await self._free.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._free.release()
