"""Every request audited: the access log records who made each request to the data routes
(key and tenant, or the key id as presented when refused), the route's template and the
record it named, and the status; never the body or a member identifier. It is written in
batches behind the requests, kept when the store is away for a moment, and shown by
``dxv audit access``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from sqlalchemy import select

from serving.store.access_log import AccessLogWriter, AccessRecord, access_records
from serving.store.api_keys import Role
from serving.store.database import Store
from tests.serving.test_api import claim_json, periapical, service  # noqa: F401  (fixtures)


def _records(client) -> list[AccessRecord]:
    app = client.app
    app.state.access_log.flush()
    with app.state.store.reading() as session:
        return list(reversed(access_records(session, limit=100)))  # oldest first


def test_every_data_request_is_logged_with_its_caller_route_and_status(service, periapical) -> None:  # noqa: F811
    client, keys = service
    adjudicator = {"X-API-Key": keys[Role.ADJUDICATOR]}
    made = client.post("/v1/claims:validate", json=claim_json([periapical]), headers=adjudicator)
    audit_id = made.json()["audit_id"]
    client.get(f"/v1/decisions/{audit_id}", headers=adjudicator)
    client.get(f"/v1/decisions/{audit_id}", headers={"X-API-Key": keys["other-tenant"]})  # not found for them
    client.get("/v1/reviews", headers=adjudicator)  # the wrong role
    client.get(f"/v1/decisions/{audit_id}", headers={"X-API-Key": "dxv_notakey01_" + "s" * 40})
    client.get(f"/v1/decisions/{audit_id}")  # no key at all
    client.get("/healthz")  # probes are not data requests
    client.post("/v1/claims:validate", content=b"{" + b" " * 3_100_000 + b"}",
                headers={**adjudicator, "Content-Type": "application/json"})  # too large: refused before reading

    records = _records(client)
    rows = [(r.method, r.route, r.subject, r.status, r.key_id, r.tenant, r.authenticated) for r in records]
    # Each answer's X-Request-ID finds its record (a support case quotes it).
    assert records[0].request_id == made.headers["x-request-id"] and len(made.headers["x-request-id"]) == 32
    assert len({r.request_id for r in records}) == len(records)
    adjudicator_id = keys[Role.ADJUDICATOR].split("_")[1]
    other_id = keys["other-tenant"].split("_")[1]
    assert rows == [
        ("POST", "/v1/claims:validate", "", 200, adjudicator_id, "demo", True),
        ("GET", "/v1/decisions/{audit_id}", f"audit_id={audit_id}", 200, adjudicator_id, "demo", True),
        ("GET", "/v1/decisions/{audit_id}", f"audit_id={audit_id}", 404, other_id, "other", True),
        ("GET", "/v1/reviews", "", 403, adjudicator_id, "demo", True),
        ("GET", "/v1/decisions/{audit_id}", f"audit_id={audit_id}", 401, "notakey01", None, False),
        ("GET", "/v1/decisions/{audit_id}", f"audit_id={audit_id}", 401, None, None, False),
        ("POST", "(no such route)", "", 413, adjudicator_id, None, False),
    ]


def test_the_log_holds_no_body_no_member_and_no_secret(service, periapical) -> None:  # noqa: F811
    client, keys = service
    client.post("/v1/claims:validate", json=claim_json([periapical]), headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    client.get("/v1/decisions/1", headers={"X-API-Key": "dxv_notakey01_" + "s" * 40})
    written = " ".join(str(dataclasses.astuple(r)) for r in _records(client))
    for secret in ("MBR-0001", "1980-05-17", "D3330", "s" * 40, keys[Role.ADJUDICATOR].split("_")[2]):
        assert secret not in written


@pytest.fixture()
def store(store_url):  # SQLite and PostgreSQL (tests/serving/conftest.py)
    opened = Store.open(store_url)
    yield opened
    opened.close()


def _record(number: int) -> AccessRecord:
    return AccessRecord(at=dt.datetime(2026, 12, 7, 9, 0, number), tenant="t", key_id=f"key{number:05d}",
                        authenticated=True, method="GET", route="/v1/decisions/{audit_id}", subject=f"audit_id={number}",
                        status=200, duration_ms=1.5)


def test_records_written_in_batches_are_kept_when_the_store_fails_and_written_on_close(store, monkeypatch) -> None:
    writer = AccessLogWriter(store, interval_s=3600, max_batch=4)  # no timed flush during the test
    for number in range(10):
        writer.add(_record(number))

    def unavailable():
        raise ConnectionError("the database is away")

    monkeypatch.setattr(store, "transaction", unavailable)
    with pytest.raises(ConnectionError):
        writer.flush()
    monkeypatch.undo()
    writer.add(_record(10))
    writer.close()  # flushes what is queued, the failed batch included
    with store.reading() as session:
        kept = access_records(session, tenant="t", limit=100)
    assert sorted(r.subject for r in kept) == sorted(f"audit_id={n}" for n in range(11))
    assert {dataclasses.replace(r) for r in kept} == {_record(n) for n in range(11)}
    with store.reading() as session:
        assert [r.subject for r in access_records(session, subject="audit_id=3")] == ["audit_id=3"]
        assert len(access_records(session, since=dt.datetime(2026, 12, 7, 9, 0, 8))) == 3


def test_the_writer_thread_writes_on_its_own(store) -> None:
    import time

    writer = AccessLogWriter(store, interval_s=0.05)
    writer.add(_record(1))
    deadline = time.monotonic() + 10
    found: list[AccessRecord] = []
    while not found and time.monotonic() < deadline:
        time.sleep(0.05)
        with store.reading() as session:
            found = access_records(session)
    writer.close()
    assert found == [_record(1)]


def test_the_writer_thread_stops_when_its_store_is_closed(store_url) -> None:
    store = Store.open(store_url)
    writer = AccessLogWriter(store, interval_s=0.02)
    store.close()
    writer._thread.join(timeout=10)
    assert not writer._thread.is_alive()


def test_dxv_audit_access_lists_the_requests(tmp_path, capsys, monkeypatch) -> None:
    from serving.cli import main

    monkeypatch.setenv("COLUMNS", "200")  # the table unwrapped
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = Store.open(url)
    writer = AccessLogWriter(store, interval_s=3600)
    for number in range(3):
        writer.add(_record(number))
    writer.close()
    store.close()
    assert main(["audit", "access", "--url", url, "--subject", "audit_id=2"]) == 0
    out = capsys.readouterr().out
    assert "audit_id=2" in out and "audit_id=1" not in out and "1 request(s)" in out


def test_pruning_deletes_only_the_records_made_before_the_cutoff_in_batches(store) -> None:
    from serving.store.access_log import prune_access_log

    writer = AccessLogWriter(store, interval_s=3600)
    for number in range(12):
        writer.add(_record(number))  # 09:00:00 .. 09:00:11
    writer.close()
    cutoff = dt.datetime(2026, 12, 7, 9, 0, 7)
    assert prune_access_log(store, cutoff, batch=3) == 7  # three full batches and one short
    with store.reading() as session:
        kept = access_records(session, limit=None)
    assert sorted(r.subject for r in kept) == [f"audit_id={n}" for n in (10, 11, 7, 8, 9)]
    assert prune_access_log(store, cutoff, batch=3) == 0


def test_dxv_audit_prune_access_and_export(tmp_path, capsys) -> None:
    import json

    from serving.cli import main

    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = Store.open(url)
    writer = AccessLogWriter(store, interval_s=3600)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    made = [dataclasses.replace(_record(n), at=now - dt.timedelta(days=days)) for n, days in enumerate((20, 10, 2))]
    for record in made:
        writer.add(record)
    writer.close()
    store.close()
    assert main(["audit", "access", "--url", url, "--jsonl", "--limit", "0"]) == 0
    exported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["subject"] for e in exported] == ["audit_id=2", "audit_id=1", "audit_id=0"]
    assert exported[1] == {"at": made[1].at.isoformat(), "tenant": "t", "key_id": "key00001", "authenticated": True,
                           "method": "GET", "route": "/v1/decisions/{audit_id}", "subject": "audit_id=1",
                           "status": 200, "duration_ms": 1.5, "request_id": None}
    before = (now - dt.timedelta(days=15)).isoformat()
    assert main(["audit", "prune-access", "--url", url, "--before", before]) == 0
    assert "1 record(s)" in capsys.readouterr().out
    assert main(["audit", "prune-access", "--url", url, "--keep-days", "5"]) == 0  # the 2-day-old one stays
    assert "1 record(s)" in capsys.readouterr().out
    assert main(["audit", "access", "--url", url, "--jsonl"]) == 0
    assert [json.loads(line)["subject"] for line in capsys.readouterr().out.splitlines()] == ["audit_id=2"]
    for refused in (["--keep-days", "0"], []):  # no cutoff of zero days; a cutoff is required
        with pytest.raises(SystemExit):
            main(["audit", "prune-access", "--url", url, *refused])


def _chained(store, count: int, start: int = 0) -> None:
    writer = AccessLogWriter(store, interval_s=3600, max_batch=7)  # several batches, each locking the head
    for number in range(start, start + count):
        writer.add(_record(number))
    writer.close()


def test_the_access_log_is_a_hash_chain_that_shows_an_edit_a_deletion_and_a_cut_end(store) -> None:
    from sqlalchemy import delete, update

    from serving.store.access_log import verify_access
    from serving.store.schema import AccessRow

    _chained(store, 20)
    with store.reading() as session:
        report = verify_access(session)
    assert report.ok and report.records == 20, report.problems
    with store.reading() as session:
        ids = sorted(session.execute(select(AccessRow.id)).scalars())
    for tamper, expected in [
        (update(AccessRow).where(AccessRow.id == ids[5]).values(status=404), f"access record {ids[5]} was edited"),
        (delete(AccessRow).where(AccessRow.id == ids[9]), f"access records {ids[9]}..{ids[9]} are missing"),
        (delete(AccessRow).where(AccessRow.id == ids[-1]), "records at the end were deleted"),
    ]:
        with store.transaction() as session:
            session.execute(tamper)
        with store.reading() as session:
            problems = " | ".join(verify_access(session).problems)
        assert expected in problems, problems


def test_pruning_keeps_the_rest_of_the_chain_verifiable(store) -> None:
    from serving.store.access_log import prune_access_log, verify_access

    _chained(store, 30)
    assert prune_access_log(store, dt.datetime(2026, 12, 7, 9, 0, 12), batch=5) == 12
    _chained(store, 3, start=50)  # and the chain goes on after the anchor
    with store.reading() as session:
        report = verify_access(session)
        assert report.ok and report.records == 21, report.problems
        assert min(r.subject for r in access_records(session, limit=None)) >= "audit_id=12"


def test_concurrent_writers_keep_one_unbroken_chain(store_url) -> None:
    """Two writers (two replicas) appending at once, each batch locking the chain head."""
    import threading

    from serving.store.access_log import verify_access

    stores = [Store.open(store_url) for _ in range(2)]
    try:
        writers = [threading.Thread(target=_chained, args=(s, 30, 30 * k)) for k, s in enumerate(stores)]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        with stores[0].reading() as session:
            report = verify_access(session)
        assert report.ok and report.records == 60, report.problems
    finally:
        for s in stores:
            s.close()


def test_migration_0016_leaves_earlier_records_unchained_and_the_chain_starts_after_them(store_url) -> None:
    from alembic import command
    from sqlalchemy import text

    from serving.store.access_log import verify_access
    from serving.store.database import alembic_config, upgrade

    upgrade(store_url, "0015")
    engine = Store.open(store_url, migrate=False).engine
    with engine.begin() as connection:
        for number in range(3):
            connection.execute(text(
                "INSERT INTO access_log (at, tenant, key_id, authenticated, method, route, subject, status, duration_ms) "
                "VALUES (:at, 't', 'k', true, 'GET', '/v1/decisions/{audit_id}', :subject, 200, 1.0)"),
                {"at": dt.datetime(2026, 12, 1, 9, 0, number), "subject": f"audit_id={number}"})
    engine.dispose()
    upgrade(store_url)
    store = Store.open(store_url)
    try:
        _chained(store, 5, start=10)
        with store.reading() as session:
            report = verify_access(session)
            assert report.ok and (report.records, report.unchained) == (5, 3), report.problems
            assert len(access_records(session, limit=None)) == 8
    finally:
        store.close()
    command.downgrade(alembic_config(store_url), "0015")
    engine = Store.open(store_url, migrate=False).engine
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM access_log")).scalar_one() == 8
        assert connection.execute(text("SELECT count(*) FROM audit_head WHERE chain = 'access'")).scalar_one() == 0
    engine.dispose()


def test_dxv_audit_verify_covers_the_access_log_and_a_request_is_found_by_its_id(tmp_path, capsys) -> None:
    from sqlalchemy import update

    from serving.cli import main
    from serving.store.schema import AccessRow

    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = Store.open(url)
    writer = AccessLogWriter(store, interval_s=3600)
    for number in range(4):
        writer.add(dataclasses.replace(_record(number), request_id=f"req{number:029d}"))
    writer.close()
    assert main(["audit", "verify", "--url", url]) == 0
    assert "access log intact: 4 records" in capsys.readouterr().out
    assert main(["audit", "access", "--url", url, "--request-id", f"req{2:029d}", "--jsonl"]) == 0
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["subject"] for r in found] == ["audit_id=2"]
    with store.transaction() as session:
        session.execute(update(AccessRow).where(AccessRow.subject == "audit_id=1").values(route="/v1/other"))
    store.close()
    assert main(["audit", "verify", "--url", url]) != 0
