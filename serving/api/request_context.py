"""What the code answering a request tells the request's middleware: the stage times (for
``Server-Timing`` and nothing else per request) and who called (for the access log).

The endpoint runs in a child task or a worker thread whose context is a copy of the
middleware's, so a value set there would never reach the middleware: the middleware sets
one mutable ``RequestContext`` and the code below fills it in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class RequestContext:
    """One request's, filled in while it is answered (mutable on purpose: see the module)."""

    request_id: str  # the service's own (never the caller's, which could carry a member identifier)
    stages_s: dict[str, float] = field(default_factory=dict)  # seconds per stage, summed
    key_id: str | None = None  # the key presented (as presented, when it was refused)
    tenant: str | None = None
    authenticated: bool = False


_CURRENT: ContextVar[RequestContext | None] = ContextVar("dxv_request", default=None)


@contextmanager
def answering(context: RequestContext) -> Iterator[RequestContext]:
    """``context`` is the current request's inside this block (and in the tasks and threads
    started from it)."""
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def current_request() -> RequestContext | None:
    """The request being answered (None outside one: a test calling the code directly)."""
    return _CURRENT.get()
