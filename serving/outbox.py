"""Webhook delivery of final decisions: signed, retried, at least once.

A decision's outbox rows are written in the decision's own transaction (so a decision is
never lost nor announced without being stored). ``deliver_due`` posts each due row with
an HMAC-SHA256 signature of the body (``X-DXV-Signature: sha256=<hex>``, the secret read
from the environment variable the config names) and a delivery id (receivers deduplicate
on it); a failure is retried with exponential back-off (1 s, 2 s, 4 s, ... up to an hour)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.service_config import Webhook
from serving.store.database import Store
from serving.store.schema import OutboxRow

MAX_BACKOFF_S = 3600.0


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def enqueue(session: Session, webhooks: tuple[Webhook, ...], tenant: str, event: str, payload: str, now: dt.datetime) -> int:
    targets = [w for w in webhooks if w.tenant in (None, tenant)]
    for hook in targets:
        session.add(OutboxRow(tenant=tenant, url=str(hook.url), secret_env=hook.secret_env, event=event, payload=payload,
                              attempts=0, next_attempt_at=now, last_error=""))
    return len(targets)


def backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(2.0 ** max(attempts - 1, 0), MAX_BACKOFF_S))


def deliver_due(store: Store, now: dt.datetime, client: httpx.Client | None = None, limit: int = 50) -> dict[str, int]:
    """Try every due row once; returns counts of delivered and failed attempts."""
    own = client is None
    http = client or httpx.Client(timeout=10.0)
    counts = {"delivered": 0, "failed": 0}
    try:
        with store.transaction() as session:
            query = (select(OutboxRow).where(OutboxRow.delivered_at.is_(None), OutboxRow.next_attempt_at <= now)
                     .order_by(OutboxRow.id).limit(limit).with_for_update(skip_locked=True))
            for row in session.execute(query).scalars():
                body = row.payload.encode("utf-8")
                secret = os.environ.get(row.secret_env, "")
                headers: dict[str, Any] = {"Content-Type": "application/json", "X-DXV-Event": row.event,
                                           "X-DXV-Delivery": str(row.id)}
                if secret:
                    headers["X-DXV-Signature"] = sign(secret, body)
                row.attempts += 1
                try:
                    answer = http.post(row.url, content=body, headers=headers)
                    ok = 200 <= answer.status_code < 300
                    error = "" if ok else f"HTTP {answer.status_code}"
                except httpx.HTTPError as exc:
                    ok, error = False, f"{type(exc).__name__}: {exc}"
                if ok:
                    row.delivered_at, row.last_error = now, ""
                    counts["delivered"] += 1
                else:
                    row.next_attempt_at, row.last_error = now + backoff(row.attempts), error[:500]
                    counts["failed"] += 1
    finally:
        if own:
            http.close()
    return counts
