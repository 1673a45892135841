"""Turns at the models: at most so many requests reading at once, so many waiting; one more
refused at once (503 models.busy with Retry-After), while probes are answered throughout."""

from __future__ import annotations

import asyncio
import base64
import threading

import httpx
import pytest

from datasets.synth.generator import case_dicom_bytes, generate_case
from models.radiographs import RadiographKind
from serving.adjudication import RuleTables
from serving.api.app import create_app
from serving.api.turns import ModelsBusyError, Turns
from serving.plans import load_plans
from serving.service_config import load_serving_config
from serving.store import repository
from serving.store.api_keys import Role, create_key
from serving.store.database import Store
from tests.serving.conftest import NOW


def test_turns_let_so_many_read_so_many_wait_and_refuse_one_more() -> None:
    async def scenario() -> None:
        turns = Turns(at_once=1, max_waiting=1)
        release = asyncio.Event()
        order: list[str] = []

        async def request(name: str, hold: bool) -> str:
            try:
                async with turns.turn():
                    order.append(name)
                    if hold:
                        await release.wait()
                    return "read"
            except ModelsBusyError as exc:
                assert exc.code == "models.busy"
                return "refused"

        first = asyncio.create_task(request("first", hold=True))
        await asyncio.sleep(0)
        second = asyncio.create_task(request("second", hold=False))
        await asyncio.sleep(0)
        assert turns.waiting == 1
        assert await request("third", hold=False) == "refused"  # the line is full
        release.set()
        assert [await first, await second] == ["read", "read"] and order == ["first", "second"]
        assert turns.waiting == 0
        assert await request("later", hold=False) == "read"  # free again

    asyncio.run(scenario())


def test_no_waiting_line_still_lets_a_request_with_a_free_turn_through() -> None:
    async def scenario() -> None:
        turns = Turns(at_once=2, max_waiting=0)
        async with turns.turn(), turns.turn():  # the second turn was free
            with pytest.raises(ModelsBusyError):
                async with turns.turn():
                    pass

    asyncio.run(scenario())


class HeldReader:
    """The shipped models, the first read held until ``release`` is set (so the test knows
    which request holds the turn while the others arrive)."""

    def __init__(self, reader) -> None:
        self.reader, self.release, self.started, self.calls = reader, threading.Event(), threading.Event(), 0

    def analyze(self, files, limits, on_printed=None):
        self.calls += 1
        if self.calls == 1:
            self.started.set()
            assert self.release.wait(60)
        return self.reader.analyze(files, limits, on_printed)

    def ready(self) -> bool:
        return True


def test_past_the_waiting_line_a_claim_is_refused_503_and_probes_are_answered_meanwhile(tmp_path, models) -> None:
    tables = RuleTables.load()
    store = Store.open(f"sqlite:///{tmp_path / 'turns.db'}")
    with store.transaction() as session:
        repository.save_plans(session, load_plans(), NOW)
        repository.seed(session, repository.load_seed_file("configs/seed/demo.yaml"), tables.validation.catalogue, NOW)
        key = create_key(session, tenant="demo", role=Role.ADJUDICATOR, label="", now=NOW)[1]
    reader = HeldReader(models)
    app = create_app(reader=reader, store=store, tables=tables, clock=lambda: NOW, reads_at_once=1,
                     config=load_serving_config(overrides=("limits.max_waiting_requests=1",)))
    case = generate_case(RadiographKind.PERIAPICAL, 404, 9)
    content = base64.b64encode(case_dicom_bytes(case)).decode()

    def claim(claim_id: str) -> dict:
        return {"claim_id": claim_id, "tenant": "demo", "member": {"member_id": "MBR-0001", "birth_date": "1980-05-17"},
                "provider": {"provider_id": "PRV-001"}, "date_of_service": "2026-04-20",
                "lines": [{"line_id": "1", "code": "D0220", "fee": 30}],
                "attachments": [{"radiograph_id": f"{claim_id}-pa", "kind": "periapical", "content": content}]}

    async def scenario() -> None:
        headers = {"X-API-Key": key}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=120) as client:
            first = asyncio.create_task(client.post("/v1/claims:validate", json=claim("TURN-1"), headers=headers))
            await asyncio.to_thread(reader.started.wait, 60)  # the first holds the only turn
            second = asyncio.create_task(client.post("/v1/claims:validate", json=claim("TURN-2"), headers=headers))
            for _ in range(3000):  # the second waits in line (and /metrics answers meanwhile)
                if 'dxv_requests_waiting_for_models 1.0' in (await client.get("/metrics")).text:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the second claim never waited for a turn")
            third = await client.post("/v1/claims:validate", json=claim("TURN-3"), headers=headers)
            assert (third.status_code, third.json()["error"]["code"]) == (503, "models.busy")
            assert third.headers["retry-after"] == "1"
            assert (await client.get("/healthz")).status_code == 200
            reader.release.set()
            answers = [await first, await second]
            assert [a.status_code for a in answers] == [200, 200]
            assert "queue" in answers[1].headers["server-timing"]
        with store.reading() as session:
            decided = repository.stored_decisions(session, [("demo", f"TURN-{n}", "claim") for n in (1, 2, 3)])
        assert set(decided) == {("demo", "TURN-1", "claim"), ("demo", "TURN-2", "claim")}  # the refused one left nothing

    try:
        asyncio.run(scenario())
    finally:
        reader.release.set()
        store.close()
