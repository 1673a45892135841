"""Webhook delivery: written with the decision, signed, retried with back-off until the
receiver takes it (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import datetime as dt
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

from sqlalchemy import select

from serving.adjudication import adjudicate
from serving.claims import Claim
from serving.outbox import deliver_due, sign
from serving.service_config import Webhook
from serving.store.schema import OutboxRow
from tests.serving.conftest import NOW


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict, bytes]]] = []
    failures_left: ClassVar[int] = 2

    def do_POST(self) -> None:  # http.server's method name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if Receiver.failures_left > 0:
            Receiver.failures_left -= 1
            self.send_response(503)
        else:
            Receiver.received.append((dict(self.headers), body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_final_decisions_are_delivered_signed_and_retried(seeded_store, rule_tables, monkeypatch) -> None:
    Receiver.received, Receiver.failures_left = [], 2
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DXV_TEST_HOOK_SECRET", "s3cret")
    hooks = (Webhook(url=f"http://127.0.0.1:{server.server_port}/hook", secret_env="DXV_TEST_HOOK_SECRET"),)
    try:
        clean = Claim.model_validate({"claim_id": "W-1", "tenant": "demo", "member": {"member_id": "MBR-0001",
                                      "birth_date": "1980-05-17"}, "provider": {"provider_id": "PRV-001"},
                                      "date_of_service": "2026-04-20", "lines": [{"line_id": "1", "code": "D1110", "fee": 95}]})
        flagged = clean.model_copy(update={"claim_id": "W-2", "lines": (clean.lines[0].model_copy(
            update={"code": "D3330", "tooth": "30"}),)})
        adjudicate(clean, (), seeded_store, rule_tables, now=NOW, webhooks=hooks)
        adjudicate(flagged, (), seeded_store, rule_tables, now=NOW, webhooks=hooks)  # needs review: not final
        with seeded_store.transaction() as session:
            assert len(session.execute(select(OutboxRow)).scalars().all()) == 1
        assert deliver_due(seeded_store, NOW) == {"delivered": 0, "failed": 1}
        assert deliver_due(seeded_store, NOW) == {"delivered": 0, "failed": 0}  # back-off: not due yet
        assert deliver_due(seeded_store, NOW + dt.timedelta(seconds=1)) == {"delivered": 0, "failed": 1}
        assert deliver_due(seeded_store, NOW + dt.timedelta(seconds=3)) == {"delivered": 1, "failed": 0}
        assert deliver_due(seeded_store, NOW + dt.timedelta(hours=1)) == {"delivered": 0, "failed": 0}
        headers, body = Receiver.received[-1]
        assert json.loads(body)["claim_id"] == "W-1"
        assert hmac.compare_digest(headers["X-DXV-Signature"], sign("s3cret", body))
        with seeded_store.transaction() as session:
            row = session.execute(select(OutboxRow)).scalar_one()
            assert row.attempts == 3 and row.delivered_at is not None
    finally:
        server.shutdown()
