"""The state store on SQLite and PostgreSQL: migrations, plan versions, adjudication with
the ledger, idempotent replay, concurrency, and the tamper-evident audit trail."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from decimal import Decimal

import pytest
from sqlalchemy import delete, select, text, update

from serving.adjudication import adjudicate
from serving.claims import Claim
from serving.decisions import Action
from serving.plans import PlanVersion, load_plans
from serving.store import audit, repository
from serving.store.database import WAL_BACKSTOP_PAGES, Store, current_revision, upgrade
from serving.store.schema import AuditRow, ClaimLineRow, LedgerRow, MemberRow
from tests.serving.conftest import NOW


def claim(claim_id: str, lines: list[dict], *, member: str = "MBR-0001", day: str = "2026-04-20",
          mode: str = "claim", birth: str = "1980-05-17") -> Claim:
    return Claim.model_validate({"claim_id": claim_id, "tenant": "demo", "member": {"member_id": member, "birth_date": birth},
                                 "provider": {"provider_id": "PRV-001"}, "date_of_service": day, "lines": lines,
                                 "mode": mode})


def test_migrations_apply_on_empty_and_upgrade_from_previous(store_url: str) -> None:
    upgrade(store_url, "0001")
    assert current_revision(store_url) == "0001"
    store = Store(Store.open(store_url, migrate=False).engine)
    with store.transaction() as session:
        session.add(MemberRow(member_id="M-1", tenant="t", birth_date=dt.date(1990, 1, 1)))
    upgrade(store_url)
    from alembic.script import ScriptDirectory

    from serving.store.database import alembic_config

    assert current_revision(store_url) == ScriptDirectory.from_config(alembic_config(store_url)).get_current_head()
    with store.transaction() as session:
        assert session.get(MemberRow, "M-1") is not None
        session.execute(text("SELECT count(*) FROM provider_stats"))  # the new table exists
    store.close()


def test_the_migrated_schema_is_the_models_schema(store_url: str) -> None:
    """Every table, column and index the models declare is what the migrations build, and
    nothing more (an index dropped from a model but not by a migration, or the reverse)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from serving.store.schema import Base

    store = Store.open(store_url)
    try:
        with store.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        store.close()
    assert differences == []


def test_migration_0010_drops_the_unused_indexes_and_downgrades(store_url: str) -> None:
    from sqlalchemy import inspect

    def indexes(table: str) -> set[str]:
        engine = Store.open(store_url, migrate=False).engine
        try:
            return {i["name"] for i in inspect(engine).get_indexes(table)}
        finally:
            engine.dispose()

    upgrade(store_url, "0009")
    assert "ix_claim_lines_provider_id" in indexes("claim_lines")
    assert "ix_ledger_entries_ledger_id" in indexes("ledger_entries")
    upgrade(store_url, "0010")
    assert "ix_claim_lines_provider_id" not in indexes("claim_lines")
    assert "ix_ledger_entries_ledger_id" not in indexes("ledger_entries")
    assert "ix_claim_lines_member_day" in indexes("claim_lines")  # the one the history reads use stays
    from alembic import command

    from serving.store.database import alembic_config

    command.downgrade(alembic_config(store_url), "0009")
    assert "ix_claim_lines_provider_id" in indexes("claim_lines")
    assert "ix_review_items_audit_seq" in indexes("review_items")


def test_migration_0012_keeps_ledger_entries_as_decision_movements_and_allows_more_per_line(store_url: str) -> None:
    upgrade(store_url, "0011")
    store = Store(Store.open(store_url, migrate=False).engine)
    with store.transaction() as session:
        session.add(MemberRow(member_id="M-1", tenant="t", birth_date=dt.date(1990, 1, 1)))
        session.execute(text("INSERT INTO ledgers (id, member_id, plan_id, year_start, bucket, limit_amount, used) "
                             "VALUES (1, 'M-1', 'p', '2026-01-01', 'endodontics', 1000, 300)"))
        session.execute(text("INSERT INTO ledger_entries (id, ledger_id, tenant, claim_id, line_id, amount, created_at) "
                             "VALUES (5, 1, 't', 'C-1', '1', 300, '2026-02-01 10:00:00')"))
    upgrade(store_url)
    with store.transaction() as session:
        assert repository.line_consumption(session, "t", "C-1", ["1"]) == {"1": {"endodontics": 300.0}}
        ledger = {"endodontics": repository.LedgerState(1, "endodontics", Decimal("1000"), Decimal("300"))}
        moved = repository.set_line_consumption(session, ledger, tenant="t", claim_id="C-1", line_id="1",
                                                consumed={"endodontics": 120.0}, reason="appeal", now=NOW)
        assert moved == {"endodontics": -180.0}
    with store.transaction() as session:
        rows = session.execute(text("SELECT id, reason, amount FROM ledger_entries ORDER BY id")).all()
        assert [(r[0], r[1], float(r[2])) for r in rows] == [(5, "decision", 300.0), (6, "appeal", -180.0)]
        assert repository.line_consumption(session, "t", "C-1", ["1"]) == {"1": {"endodontics": 120.0}}
        assert float(session.execute(text("SELECT used FROM ledgers WHERE id = 1")).scalar_one()) == 120.0
    from alembic import command

    from serving.store.database import alembic_config

    command.downgrade(alembic_config(store_url), "0011")  # one entry per line again, the movements summed
    with store.transaction() as session:
        rows = session.execute(text("SELECT id, amount FROM ledger_entries")).all()
        assert [(r[0], float(r[1])) for r in rows] == [(5, 120.0)]
    store.close()


def test_migration_0006_keeps_decisions_readable_and_downgrades_with_their_copies(store_url: str) -> None:
    upgrade(store_url, "0005")
    store = Store(Store.open(store_url, migrate=False).engine)
    with store.transaction() as session:
        session.execute(text("INSERT INTO audit_log (seq, tenant, kind, subject, actor, input_digest, versions, payload, "
                             "created_at, prev_hash, hash) VALUES (7, 't', 'claim', 'C-1', 'system', 'd', '{}', "
                             "'{\"claim_id\":\"C-1\"}', 'now', 'p', 'h')"))
        session.execute(text("INSERT INTO decisions (tenant, claim_id, mode, decision, audit_seq, created_at) VALUES "
                             "('t', 'C-1', 'claim', '{\"claim_id\":\"C-1\"}', 7, '2026-01-01 00:00:00')"))
    upgrade(store_url, "0006")
    with store.transaction() as session:
        assert repository.decision_by_audit_id(session, "t", 7) == '{"claim_id":"C-1"}'
        assert repository.decision_by_audit_id(session, "other-tenant", 7) is None
        assert repository.stored_decisions(session, [("t", "C-1", "claim")]) == {("t", "C-1", "claim"): '{"claim_id":"C-1"}'}
    from alembic import command

    from serving.store.database import alembic_config

    command.downgrade(alembic_config(store_url), "0005")
    with store.transaction() as session:
        assert session.execute(text("SELECT decision FROM decisions WHERE audit_seq = 7")).scalar_one() == \
            '{"claim_id":"C-1"}'
    store.close()


def test_a_background_checkpointer_moves_committed_pages_into_the_database_file(tmp_path) -> None:
    """With ``checkpoint_in_background`` a commit's pages reach the database file itself
    without another write (SQLite's own checkpoint waits for 1,000 pages): a reader of the
    bare file (``immutable=1`` ignores the log) sees the row."""
    import sqlite3
    import time

    def rows_in_file(path) -> int:
        with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as bare:
            return bare.execute("SELECT count(*) FROM members").fetchone()[0]

    for background in (False, True):
        path = tmp_path / f"state-{background}.db"
        store = Store.open(f"sqlite:///{path}", checkpoint_in_background=background)
        try:
            with store.engine.connect() as connection:
                autocheckpoint = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
            with store.transaction() as session:
                session.add(MemberRow(member_id="M-1", tenant="t", birth_date=dt.date(1990, 1, 1)))
            deadline = time.monotonic() + 10
            while background and rows_in_file(path) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert rows_in_file(path) == (1 if background else 0)
            assert autocheckpoint == (WAL_BACKSTOP_PAGES if background else 1000)
        finally:
            store.close()
    assert store.checkpointer is not None and not store.checkpointer._thread.is_alive()  # closed with the store


def test_a_reading_transaction_does_not_wait_for_a_writer_and_keeps_nothing(store_url: str) -> None:
    store = Store.open(store_url)
    holding, release = threading.Event(), threading.Event()

    def adjudication_in_progress() -> None:  # holds SQLite's write lock (PostgreSQL: an open write)
        with store.transaction() as session:
            session.add(MemberRow(member_id="M-W", tenant="t", birth_date=dt.date(1990, 1, 1)))
            session.flush()
            holding.set()
            release.wait(timeout=30)

    writer = threading.Thread(target=adjudication_in_progress)
    writer.start()
    try:
        assert holding.wait(timeout=10)
        answered = threading.Event()

        def read() -> None:
            with store.reading() as session:
                assert session.execute(select(MemberRow).where(MemberRow.member_id == "M-W")).first() is None
            answered.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert answered.wait(timeout=5), "the read waited for the writer's lock"
        reader.join()
    finally:
        release.set()
        writer.join()
    with store.reading() as session:
        session.add(MemberRow(member_id="M-R", tenant="t", birth_date=dt.date(1990, 1, 1)))
        session.flush()
    with store.reading() as session:
        assert {m for (m,) in session.execute(select(MemberRow.member_id))} == {"M-W"}  # the read's row not kept
    store.close()


def test_background_checkpoints_apply_only_to_a_sqlite_file(store_url: str) -> None:
    store = Store.open(store_url, checkpoint_in_background=True)
    store.close()
    assert (store.checkpointer is not None) == store_url.startswith("sqlite")
    in_memory = Store.open("sqlite://", checkpoint_in_background=True)
    assert in_memory.checkpointer is None
    in_memory.close()


def test_a_stored_plan_version_cannot_change(seeded_store: Store) -> None:
    plans = load_plans()
    plan = plans["standard-dental"]
    changed = plan.model_copy(update={"versions": (plan.versions[0].model_copy(update={"annual_maximum": 9999.0}),
                                                   *plan.versions[1:])})
    with pytest.raises(repository.PlanVersionChangedError), seeded_store.transaction() as session:
        repository.save_plans(session, {"standard-dental": changed}, NOW)


def test_a_plan_version_stored_before_a_term_existed_reloads_unchanged(seeded_store: Store) -> None:
    """A version stored by an earlier release lacks later terms (their defaults apply):
    reloading the same plan file is not a change of it."""
    with seeded_store.transaction() as session:
        row = session.execute(select(repository.PlanVersionRow).where(
            repository.PlanVersionRow.version == "2026.1")).scalar_one()
        older = json.loads(row.document)
        del older["preauthorization_valid_days"]
        row.document = json.dumps(older)
    with seeded_store.transaction() as session:
        assert repository.save_plans(session, load_plans(), NOW) == 0


def test_an_open_ended_plan_version_can_be_ended_once_from_today_and_the_end_is_audited(seeded_store: Store) -> None:
    plan = load_plans()["standard-dental"]
    current = plan.versions[1]
    assert current.effective_to is None

    def load(*versions) -> int:
        with seeded_store.transaction() as session:
            return repository.save_plans(session, {"standard-dental": plan.model_copy(update={"versions": versions})},
                                         NOW, actor="plan-admin")

    with pytest.raises(repository.PlanVersionChangedError, match="in the past"):
        load(plan.versions[0], current.model_copy(update={"effective_to": NOW.date() - dt.timedelta(days=1)}))
    with pytest.raises(repository.PlanVersionChangedError, match="different terms"):  # ending and changing a term
        load(plan.versions[0], current.model_copy(update={"effective_to": dt.date(2026, 12, 31), "annual_maximum": 1.0}))
    assert load(plan.versions[0], current.model_copy(update={"effective_to": dt.date(2026, 12, 31)})) == 0
    with seeded_store.transaction() as session:
        stored = session.execute(select(repository.PlanVersionRow).where(
            repository.PlanVersionRow.version == "2026.1")).scalar_one()
        assert stored.effective_to == dt.date(2026, 12, 31)
        assert PlanVersion.model_validate_json(stored.document).effective_to == dt.date(2026, 12, 31)
        record = session.execute(select(AuditRow).where(AuditRow.kind == "plan_version_ended")).scalar_one()
        assert (record.subject, record.actor) == ("standard-dental@2026.1", "plan-admin")
        assert audit.verify(session).ok
    with pytest.raises(repository.PlanVersionChangedError):  # an end, once set, is a term like any other
        load(plan.versions[0], current.model_copy(update={"effective_to": dt.date(2027, 6, 30)}))


def test_adjudication_uses_history_plan_in_force_and_ledger(seeded_store: Store, rule_tables) -> None:
    decision = adjudicate(claim("C-1", [{"line_id": "1", "code": "D3320", "tooth": "29", "fee": 300},  # tooth 45 again
                                        {"line_id": "2", "code": "D9215", "fee": 40},
                                        {"line_id": "3", "code": "D1110", "fee": 95}]),
                          (), seeded_store, rule_tables, now=NOW)
    assert decision.versions["plan:standard-dental"] == "2026.1"
    assert decision.line("1").action is Action.REJECT  # root canal on 45 already done in February
    assert any(h.rule_id == "R3.frequency" and h.fired for h in decision.line("1").rule_hits)
    # Anaesthesia given for that root canal is included in it, paid or not.
    assert decision.line("2").action is Action.REJECT and "included in D3320" in decision.line("2").reasons[0]
    assert decision.line("3").approved_amount == 95.0
    rules = [h.rule_id for h in decision.line("3").rule_hits]
    assert {"R1.documentation", "R2.substitution.tier", "R3.frequency", "R4.unbundling", "R5.provider_outlier",
            "R6.preexisting", "R7.sublimit"} <= set(rules)
    last_year = adjudicate(claim("C-0", [{"line_id": "1", "code": "D1110", "fee": 95}], day="2025-06-01"),
                           (), seeded_store, rule_tables, now=NOW)
    assert last_year.versions["plan:standard-dental"] == "2025.1"


def test_ledger_partial_approval_then_out_of_limit(seeded_store: Store, rule_tables) -> None:
    # Endodontics sub-limit 1,200 in 2026.1; 800 already paid for 45 in February.
    first = adjudicate(claim("C-2", [{"line_id": "1", "code": "D3310", "tooth": "8", "fee": 700}]), (),
                       seeded_store, rule_tables, now=NOW)
    assert first.line("1").approved_amount == 400.0 and "300.00" in (first.line("1").member_notice or "")
    second = adjudicate(claim("C-3", [{"line_id": "1", "code": "D3310", "tooth": "9", "fee": 500}]), (),
                        seeded_store, rule_tables, now=NOW)
    assert second.line("1").action is Action.REJECT and "out of limit" in second.line("1").reasons[-1]


def test_a_claim_opens_only_the_ledger_rows_its_lines_draw_on(seeded_store: Store, rule_tables) -> None:
    def buckets() -> dict[str, float]:
        with seeded_store.transaction() as session:
            return {b: float(u) for b, u in session.execute(select(LedgerRow.bucket, LedgerRow.used)
                                                             .where(LedgerRow.member_id == "MBR-0001"))}

    cleaning = adjudicate(claim("C-20", [{"line_id": "1", "code": "D1110", "fee": 95}]), (), seeded_store, rule_tables,
                          now=NOW)
    assert cleaning.line("1").approved_amount == 95.0
    opened = buckets()
    assert set(opened) == {"annual_maximum"}  # preventive care has no sub-limit of its own
    # The endodontics row opens with the first endodontic claim, from what the year already paid (800 in February).
    adjudicate(claim("C-21", [{"line_id": "1", "code": "D3310", "tooth": "8", "fee": 100}]), (), seeded_store,
               rule_tables, now=NOW)
    assert buckets() == {"annual_maximum": opened["annual_maximum"] + 100.0, "endodontics": 900.0}


def test_a_claim_under_a_plan_without_any_limit_it_draws_on_is_paid_in_full(seeded_store: Store, rule_tables) -> None:
    plan = load_plans()["standard-dental"]
    unlimited = plan.model_copy(update={"plan_id": "no-maximum", "versions": tuple(
        v.model_copy(update={"annual_maximum": None}) for v in plan.versions)})
    with seeded_store.transaction() as session:
        repository.save_plans(session, {"no-maximum": unlimited}, NOW)
        repository.seed(session, repository.SeedFile.model_validate({"tenant": "demo", "members": [
            {"member_id": "MBR-NOMAX", "birth_date": "1980-05-17",
             "enrolments": [{"plan_id": "no-maximum", "start": "2024-01-01"}]}]}), rule_tables.validation.catalogue, NOW)
    decision = adjudicate(claim("C-NOMAX", [{"line_id": "1", "code": "D1110", "fee": 95}], member="MBR-NOMAX"), (),
                          seeded_store, rule_tables, now=NOW)
    assert decision.line("1").approved_amount == 95.0
    assert any(h.rule_id == "R7.sublimit" and "no limit applies" in h.reason for h in decision.line("1").rule_hits)


def test_replay_returns_the_stored_decision_and_consumes_nothing(seeded_store: Store, rule_tables) -> None:
    request = claim("C-4", [{"line_id": "1", "code": "D3310", "tooth": "8", "fee": 200}])
    first = adjudicate(request, (), seeded_store, rule_tables, now=NOW)
    again = adjudicate(request, (), seeded_store, rule_tables, now=NOW + dt.timedelta(hours=1))
    assert again.replayed and again.audit_id == first.audit_id and again.lines == first.lines
    with seeded_store.transaction() as session:
        used = session.execute(select(LedgerRow.used).where(LedgerRow.bucket == "endodontics")).scalar_one()
    assert float(used) == 1000.0  # 800 from history + 200 once


def test_preauthorization_consumes_nothing(seeded_store: Store, rule_tables) -> None:
    plan = adjudicate(claim("P-1", [{"line_id": "1", "code": "D3310", "tooth": "8", "fee": 300}], mode="preauthorization"),
                      (), seeded_store, rule_tables, now=NOW)
    assert plan.line("1").approved_amount == 300.0
    real = adjudicate(claim("C-5", [{"line_id": "1", "code": "D3310", "tooth": "8", "fee": 300}]), (),
                      seeded_store, rule_tables, now=NOW)
    assert real.line("1").approved_amount == 300.0  # the pre-authorisation did not spend the balance


def test_a_claim_cites_its_preauthorization_and_a_refused_plan_billed_anyway_is_flagged(seeded_store: Store,
                                                                                        rule_tables) -> None:
    adjudicate(claim("P-2", [{"line_id": "1", "code": "D3310", "tooth": "8", "fee": 300},
                             {"line_id": "2", "code": "D3330", "tooth": "9", "fee": 900}],  # a molar code on an incisor
                     day="2026-02-02", mode="preauthorization"), (), seeded_store, rule_tables, now=NOW)
    real = adjudicate(claim("C-7", [{"line_id": "1", "code": "D3310", "tooth": "8", "fee": 300},
                                    {"line_id": "2", "code": "D3330", "tooth": "9", "fee": 900},
                                    {"line_id": "3", "code": "D3310", "tooth": "7", "fee": 300}]),
                      (), seeded_store, rule_tables, now=NOW)
    cited = next(h for h in real.line("1").rule_hits if h.rule_id == "R0.preauthorization")
    assert not cited.fired and "P-2 line 1 of 2026-02-02" in cited.reason
    assert cited.evidence[0].description.startswith("pre-authorisation P-2 line 1")
    refused = next(h for h in real.line("2").rule_hits if h.rule_id == "R0.preauthorization")
    assert refused.fired and refused.action is Action.FLAG and "P-2 line 2" in refused.reason
    assert real.line("2").needs_review
    other_tooth = next(h for h in real.line("3").rule_hits if h.rule_id == "R0.preauthorization")
    assert not other_tooth.fired and not other_tooth.evidence
    # Outside the validity window the pre-authorisation is no longer cited.
    late = adjudicate(claim("C-8", [{"line_id": "1", "code": "D3310", "tooth": "8", "fee": 300}], day="2027-02-03"),
                      (), seeded_store, rule_tables, now=NOW)
    assert not next(h for h in late.line("1").rule_hits if h.rule_id == "R0.preauthorization").evidence


def test_member_not_enrolled_is_rejected_with_the_reason(seeded_store: Store, rule_tables) -> None:
    decision = adjudicate(claim("C-6", [{"line_id": "1", "code": "D1110", "fee": 95}], member="MBR-9999"), (),
                          seeded_store, rule_tables, now=NOW)
    assert decision.line("1").action is Action.REJECT and "no enrolment" in decision.line("1").reasons[0]


def test_concurrent_claims_never_exceed_a_limit(seeded_store: Store, rule_tables) -> None:
    """Eight claims for one member at once, each 300 against 400 left of the endodontics
    sub-limit: whatever the interleaving, the approvals add up to at most 400."""
    errors: list[BaseException] = []
    results = []

    def run(i: int) -> None:
        try:
            results.append(adjudicate(claim(f"CC-{i}", [{"line_id": "1", "code": "D3310", "tooth": str(6 + i % 6),
                                                        "fee": 300}]), (), seeded_store, rule_tables, now=NOW))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    approved = sum(r.lines[0].approved_amount or 0.0 for r in results)
    assert len(results) == 8 and approved == pytest.approx(400.0)
    with seeded_store.transaction() as session:
        used = session.execute(select(LedgerRow.used).where(LedgerRow.bucket == "endodontics")).scalar_one()
        assert float(used) == pytest.approx(1200.0)
        assert audit.verify(session).ok


def test_audit_detects_edits_and_deletions(seeded_store: Store, rule_tables) -> None:
    for i in range(3):
        adjudicate(claim(f"A-{i}", [{"line_id": "1", "code": "D1110", "fee": 95}], day=f"2026-0{i + 4}-02"), (),
                   seeded_store, rule_tables, now=NOW)
    with seeded_store.transaction() as session:
        assert audit.verify(session).ok and audit.verify(session).records == 3
        session.execute(update(AuditRow).where(AuditRow.seq == 2).values(payload=AuditRow.payload + " "))
    with seeded_store.transaction() as session:
        report = audit.verify(session)
        assert not report.ok and any("record 2" in p and "edited" in p for p in report.problems)
    with seeded_store.transaction() as session:
        original = session.execute(select(AuditRow).where(AuditRow.seq == 2)).scalar_one()
        original.payload = original.payload[:-1]  # put it back
    with seeded_store.transaction() as session:
        assert audit.verify(session).ok
        session.execute(delete(AuditRow).where(AuditRow.seq == 3))
    with seeded_store.transaction() as session:
        assert any("deleted" in p for p in audit.verify(session).problems)


def test_history_lines_are_written_with_their_status(seeded_store: Store, rule_tables) -> None:
    adjudicate(claim("C-7", [{"line_id": "1", "code": "D1110", "fee": 95}, {"line_id": "2", "code": "D1110", "fee": 95}]),
               (), seeded_store, rule_tables, now=NOW)
    with seeded_store.transaction() as session:
        rows = session.execute(select(ClaimLineRow).where(ClaimLineRow.claim_id == "C-7")
                               .order_by(ClaimLineRow.line_id)).scalars().all()
        assert [r.status for r in rows] == ["approved", "denied"]


def test_identifiers_at_the_contract_limits_are_stored_and_longer_ones_refused(seeded_store: Store,
                                                                              rule_tables) -> None:
    from pydantic import ValidationError

    from serving.claims import ID_MAX, LINE_ID_MAX

    longest = claim("C" * ID_MAX, [{"line_id": "L" * LINE_ID_MAX, "code": "D1110", "fee": 95}])
    decision = adjudicate(longest, (), seeded_store, rule_tables, now=NOW)  # PostgreSQL checks the column widths
    assert decision.claim_id == "C" * ID_MAX and decision.lines[0].line_id == "L" * LINE_ID_MAX
    with pytest.raises(ValidationError, match="claim_id"):
        claim("C" * (ID_MAX + 1), [{"line_id": "1", "code": "D1110", "fee": 95}])
    with pytest.raises(ValidationError, match="line_id"):
        claim("C-8", [{"line_id": "L" * (LINE_ID_MAX + 1), "code": "D1110", "fee": 95}])


def test_concurrent_claims_respect_frequency_caps(seeded_store: Store, rule_tables) -> None:
    """Six prophylaxis claims for one child at once on six days: the 2026 plan allows 3 a
    calendar year, and each claim must see the ones decided before it."""
    results = []

    def run(i: int) -> None:
        results.append(adjudicate(claim(f"F-{i}", [{"line_id": "1", "code": "D1120", "fee": 60}], member="MBR-0002",
                                        birth="2015-09-02", day=f"2026-04-0{i + 1}"), (), seeded_store, rule_tables,
                                  now=NOW))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    actions = sorted(r.lines[0].action.value for r in results)
    assert actions == ["pass"] * 3 + ["reject"] * 3


def test_cli_init_seed_adjudicate_and_verify(tmp_path, capsys) -> None:
    import json

    from serving.cli import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["state", "init", "--url", url]) == 0
    assert main(["state", "seed", "configs/seed/demo.yaml", "--url", url]) == 0
    request = tmp_path / "claim.json"
    request.write_text(claim("CLI-1", [{"line_id": "1", "code": "D1110", "fee": 95}]).model_dump_json())
    capsys.readouterr()
    assert main(["adjudicate", str(request), "--url", url, "--json"]) == 0
    decided = json.loads(capsys.readouterr().out)
    assert decided["lines"][0]["action"] == "pass" and decided["audit_id"] == 1
    assert main(["audit", "verify", "--url", url]) == 0
    store = Store.open(url)
    with store.transaction() as session:
        session.execute(update(AuditRow).values(actor="someone-else"))
    store.close()
    assert main(["audit", "verify", "--url", url]) == 2
    assert "audit.chain_broken" in capsys.readouterr().err


def test_a_batch_decides_in_order_and_later_claims_see_earlier_ones(seeded_store: Store, rule_tables) -> None:
    from serving.adjudication import adjudicate_batch

    first = claim("B-1", [{"line_id": "1", "code": "D3310", "tooth": "8", "fee": 300}])
    second = claim("B-2", [{"line_id": "1", "code": "D3310", "tooth": "9", "fee": 300}])
    same_tooth = claim("B-3", [{"line_id": "1", "code": "D3310", "tooth": "8", "fee": 100}], day="2026-04-21")
    results = adjudicate_batch([(first, ()), (second, ()), (same_tooth, ())], seeded_store, rule_tables, now=NOW)
    assert [r.lines[0].approved_amount for r in results[:2]] == [300.0, 100.0]  # 400 left of the sub-limit
    assert results[2].lines[0].action is Action.REJECT  # the root canal on tooth 8 was decided one claim earlier
    assert [r.audit_id for r in results] == [1, 2, 3]


def test_a_new_plan_version_never_changes_past_decisions(seeded_store: Store, rule_tables) -> None:
    request = claim("V-1", [{"line_id": "1", "code": "D3310", "tooth": "8", "fee": 700}])
    before = adjudicate(request, (), seeded_store, rule_tables, now=NOW)
    plans = load_plans()
    plan = plans["standard-dental"]
    current = plan.versions[1]
    ended = current.model_copy(update={"effective_to": dt.date(2026, 12, 31)})
    richer = PlanVersion.model_validate({**current.model_dump(), "version": "2027.1", "effective_from": "2027-01-01",
                                         "effective_to": None, "sub_limits": {"endodontics": 5000}})
    with seeded_store.transaction() as session:
        # 2026.1 is stored without an end: it ends where the new terms, version 2027.1, begin.
        repository.save_plans(session, {"standard-dental": plan.model_copy(update={"versions": (plan.versions[0], ended,
                                                                                                richer)})}, NOW)
    again = adjudicate(request, (), seeded_store, rule_tables, now=NOW + dt.timedelta(days=30))
    assert again.replayed and again.lines == before.lines and again.versions["plan:standard-dental"] == "2026.1"
    later = adjudicate(claim("V-2", [{"line_id": "1", "code": "D3310", "tooth": "9", "fee": 700}], day="2027-02-01"),
                       (), seeded_store, rule_tables, now=NOW)
    assert later.versions["plan:standard-dental"] == "2027.1" and later.lines[0].approved_amount == 700.0


def test_the_input_digest_is_recomputed_from_the_claim_record_and_its_stored_files(seeded_store: Store,
                                                                                   rule_tables) -> None:
    from models.detections import ImageReading
    from serving.adjudication import input_digest
    from serving.store.reviews import readings_json
    from serving.store.schema import ClaimImageRow, ClaimRecordRow
    from tests.serving.builders import reading

    image = reading([36, 37], image_id="pa-1")
    request = Claim.model_validate({**json.loads(claim("C-DIGEST", [{"line_id": "1", "code": "D2391", "tooth": "19",
                                                                    "surfaces": "O", "fee": 150}]).model_dump_json()),
                                    "attachments": [{"radiograph_id": image.image_id, "kind": "periapical"}]})
    files = {image.image_id: b"the file as received"}
    decided = adjudicate(request, (image,), seeded_store, rule_tables, now=NOW, files=files)
    assert decided.line("1").action is not Action.PASS  # kept for a person: record and file stored
    with seeded_store.transaction() as session:
        stored = session.get(AuditRow, decided.audit_id)
        record = session.get(ClaimRecordRow, decided.audit_id)
        kept = dict(session.execute(select(ClaimImageRow.radiograph_id, ClaimImageRow.media)
                                    .where(ClaimImageRow.audit_seq == decided.audit_id)).all())
    assert stored is not None and record is not None and kept == files
    # The record keeps the readings as they were hashed: their text as stored, and the same
    # from the readings read back.
    assert record.readings == readings_json(tuple(ImageReading.from_json(r) for r in json.loads(record.readings)))
    assert input_digest(record.claim, record.readings, kept) == stored.input_digest
    # Any change to the file, the claim or the readings changes it.
    assert input_digest(record.claim, record.readings, {image.image_id: b"another file"}) != stored.input_digest
    assert input_digest(record.claim.replace("C-DIGEST", "C-OTHER"), record.readings, kept) != stored.input_digest
    assert input_digest(record.claim, readings_json(()), kept) != stored.input_digest


def _recycled_hit(decision) -> dict:
    return next(h for h in decision.model_dump(mode="json")["lines"][0]["rule_hits"]
                if h["rule_id"] == "R1.recycled_image")


def _one_radiograph(seed: int):
    from datasets.synth.generator import generate_case
    from models.radiographs import RadiographKind
    from serving.fingerprints import fingerprint
    from serving.rules.recycled import ImagePrint

    case = generate_case(RadiographKind.PERIAPICAL, seed, 0)
    return lambda rid: (ImagePrint(rid, "periapical", fingerprint(case.pixels_unit)),)


def test_a_radiograph_stored_after_a_claims_search_is_compared_where_the_claim_is_decided(seeded_store: Store,
                                                                                        rule_tables) -> None:
    """The recycled-image search runs before the write lock (in the service, while the
    models read): another member's claim with the same radiograph decided in between is
    still found, by the comparison made under the lock with what was stored since."""
    from serving.adjudication import search_recycled

    printed = _one_radiograph(71)
    late = claim("LATE-1", [{"line_id": "1", "code": "D0220"}])
    prints = printed("pa-late")
    searched = search_recycled(seeded_store, [late], [prints])[0]
    assert searched is not None and searched.matches == ()  # nothing stored yet when it searched
    between = claim("BETWEEN-1", [{"line_id": "1", "code": "D0220"}], member="MBR-0003")
    assert not _recycled_hit(adjudicate(between, (), seeded_store, rule_tables, now=NOW,
                                        prints=printed("pa-between")))["fired"]
    decided = adjudicate(late, (), seeded_store, rule_tables, now=NOW, prints=prints, searched=searched)
    hit = _recycled_hit(decided)
    assert hit["fired"] and hit["action"] == "flag" and "BETWEEN-1" in hit["reason"]
    assert hit["evidence"][0]["image_id"] == "pa-late" and "pa-between" in hit["evidence"][0]["description"]
    # A search made for other radiographs is not used: the claim is searched again.
    other = claim("LATE-2", [{"line_id": "1", "code": "D0220"}], member="MBR-0004")
    assert _recycled_hit(adjudicate(other, (), seeded_store, rule_tables, now=NOW, prints=printed("pa-2"),
                                    searched=searched))["fired"]


def test_a_batch_compares_each_claims_radiographs_with_the_earlier_claims_of_the_batch(seeded_store: Store,
                                                                                       rule_tables) -> None:
    from serving.adjudication import adjudicate_batch

    printed = _one_radiograph(72)
    first = claim("RB-1", [{"line_id": "1", "code": "D0220"}])
    second = claim("RB-2", [{"line_id": "1", "code": "D0220"}], member="MBR-0003")
    results = adjudicate_batch([(first, ()), (second, ())], seeded_store, rule_tables, now=NOW,
                               prints=[printed("pa-1"), printed("pa-2")])
    assert not _recycled_hit(results[0])["fired"]
    assert _recycled_hit(results[1])["fired"] and "RB-1" in _recycled_hit(results[1])["reason"]


def test_claims_carrying_one_radiograph_at_once_are_all_flagged_but_the_first_decided(seeded_store: Store,
                                                                                       rule_tables) -> None:
    """Five claims of five members with one radiograph, decided at the same moment: each was
    searched before any was stored, yet only the first to write passes. Decisions write one
    at a time from the audit chain's head lock on (PostgreSQL's member locks alone would let
    two members' claims write together), and compare what was stored since there."""
    from concurrent.futures import ThreadPoolExecutor

    from serving.adjudication import search_recycled

    printed = _one_radiograph(73)
    claims = [claim(f"AT-ONCE-{i}", [{"line_id": "1", "code": "D0220"}], member=f"MBR-000{i}") for i in range(1, 6)]
    searched = [search_recycled(seeded_store, [c], [printed(f"pa-{i}")])[0] for i, c in enumerate(claims)]
    with ThreadPoolExecutor(5) as pool:
        decided = list(pool.map(lambda i: adjudicate(claims[i], (), seeded_store, rule_tables, now=NOW,
                                                     prints=printed(f"pa-{i}"), searched=searched[i]), range(5)))
    fired = [_recycled_hit(d)["fired"] for d in decided]
    assert sorted(fired) == [False, True, True, True, True]
    first = min(decided, key=lambda d: d.audit_id)
    assert not _recycled_hit(first)["fired"]


def test_a_search_started_ahead_is_the_claims_search_for_those_radiographs(seeded_store: Store, rule_tables) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from serving.adjudication import SearchAhead

    printed = _one_radiograph(74)
    earlier = claim("AHEAD-0", [{"line_id": "1", "code": "D0220"}], member="MBR-0003")
    adjudicate(earlier, (), seeded_store, rule_tables, now=NOW, prints=printed("pa-0"))
    ahead = SearchAhead(seeded_store, claim("AHEAD-1", [{"line_id": "1", "code": "D0220"}]), ThreadPoolExecutor(1))
    assert ahead.result() is None  # never started (the models in another process)
    prints = printed("pa-1")
    ahead.start(prints)
    found = ahead.result()
    assert found is not None and found.prints == prints and found.seen_through["periapical"] >= 1
    assert [m.earlier.claim_id for m in found.matches] == ["AHEAD-0"]
