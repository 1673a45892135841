"""Drift monitoring: the statistics at their boundaries, a drift alert on a seeded shift
(and none without one, or with too little data), the baseline kept once its days are
over or set by command, the figures on /metrics and in ``dxv report drift``."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from serving.drift import BINS, MonitoringSettings, WindowStats, add_summary, compare, psi, score_summary
from serving.store import drift
from serving.store.schema import ClaimRecordRow, ModelBaselineRow, ReviewItemRow
from tests.serving.builders import finding, reading
from tests.serving.conftest import NOW

START = NOW - dt.timedelta(days=30)  # the version's first day in service
SETTINGS = MonitoringSettings(min_images=40)


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift() -> None:
    same = [5, 10, 20, 10, 5, 0, 0, 0, 0, 0]
    assert psi(same, [x * 3 for x in same]) == pytest.approx(0.0, abs=1e-9)
    shifted = [0, 0, 0, 0, 5, 10, 20, 10, 5, 0]
    assert psi(same, shifted) > 1.0
    assert psi(same, [0] * BINS) == 0.0  # nothing to compare


def _stats(images: int, caries: int, scores_bin: int, lines: int, flagged: int) -> WindowStats:
    histogram = [0] * BINS
    histogram[scores_bin] = caries
    return WindowStats(images=images, lines=lines, flagged=flagged, counts={"caries": caries},
                       histograms={"caries": histogram})


def test_compare_alerts_beyond_each_bound_and_not_within() -> None:
    base = _stats(100, 20, 6, 200, 20)
    calm = compare("t", "findings", "f1", base, _stats(100, 25, 6, 200, 34), SETTINGS)
    assert not [s for s in calm if s.alert]  # x1.24 and +7 points: within the bounds
    shifted = compare("t", "findings", "f1", base, _stats(100, 40, 9, 200, 60), SETTINGS)
    assert {(s.kind, s.subject) for s in shifted if s.alert} == {("finding_rate", "caries"), ("score_psi", "caries"),
                                                                 ("flag_rate", "")}
    fewer = compare("t", "findings", "f1", base, _stats(100, 5, 6, 200, 20), SETTINGS)
    assert [s.kind for s in fewer if s.alert] == ["finding_rate"]  # a drop counts as much as a rise
    thin = compare("t", "findings", "f1", base, _stats(10, 9, 9, 20, 20), SETTINGS)
    assert [(s.kind, s.alert) for s in thin] == [("insufficient_data", False)]


def _record(session, seq: int, tenant: str, at: dt.datetime, caries_scores: list[float], flagged: bool,
            version: str = "f1") -> None:
    image = reading([44, 45, 46, 47], [finding("caries", 44 + i % 4, "occlusal", s) for i, s in enumerate(caries_scores)])
    stored = {**image.to_json(), "model_versions": {"tooth-numbering": "t1", "findings": version}}
    claim = {"claim_id": f"D-{seq}", "lines": [{"line_id": "1"}, {"line_id": "2"}]}
    session.add(ClaimRecordRow(audit_seq=seq, tenant=tenant, claim_id=f"D-{seq}", mode="claim", claim=json.dumps(claim),
                               readings=json.dumps([stored]), created_at=at,
                               summary=json.dumps(score_summary([stored], len(claim["lines"])))))
    if flagged:
        session.add(ReviewItemRow(tenant=tenant, audit_seq=seq, claim_id=f"D-{seq}", line_id="1", code="D2391",
                                  fee=Decimal("100"), action="flag", severity=1.0, rules="[]", rank_key=0.0,
                                  status="open", created_at=at))


def seed_shift(store, tenant: str = "demo", shift: bool = True, seq0: int = 1000) -> None:
    """60 radiographs in the version's first 14 days (1 caries in 5 images, scores 0.5 to
    0.65, 1 line in 10 flagged); 60 in the last 7 days, shifted (2 caries per image at
    0.85 to 0.95, half the claims flagged) or not."""
    with store.transaction() as session:
        for i in range(60):
            _record(session, seq0 + i, tenant, START + dt.timedelta(hours=5 * i), [0.5 + 0.0025 * i] if i % 5 == 0 else [],
                    i % 5 == 0)
        for i in range(60):
            at = NOW - dt.timedelta(days=6, hours=-2 * i)
            if shift:
                _record(session, seq0 + 100 + i, tenant, at, [0.85 + 0.001 * i, 0.9], i % 2 == 0)
            else:
                _record(session, seq0 + 100 + i, tenant, at, [0.5 + 0.0025 * i] if i % 5 == 0 else [], i % 5 == 0)


def test_a_seeded_shift_raises_drift_alerts_and_a_steady_tenant_none(seeded_store) -> None:
    seed_shift(seeded_store, "demo", shift=True)
    seed_shift(seeded_store, "steady", shift=False, seq0=3000)
    with seeded_store.transaction() as session:
        assessed = {a.key: a for a in drift.assess(session, NOW, SETTINGS)}
    shifted = assessed[("demo", "findings", "f1")]
    assert shifted.baseline is not None and shifted.baseline.source == "first 14 days in service"
    assert shifted.baseline.stats.images == 60 and shifted.current.images == 60
    assert {(s.kind, s.subject) for s in shifted.signals if s.alert} == {
        ("finding_rate", "caries"), ("score_psi", "caries"), ("flag_rate", "")}
    assert not [s for s in assessed[("steady", "findings", "f1")].signals if s.alert]
    # the teeth did not move; the flag rate is that of the claims the version read, whatever moved it
    assert [s.kind for s in assessed[("demo", "tooth-numbering", "t1")].signals if s.alert] == ["flag_rate"]
    with seeded_store.transaction() as session:
        kept = session.execute(select(ModelBaselineRow).where(ModelBaselineRow.tenant == "demo",
                                                              ModelBaselineRow.model == "findings")).scalar_one()
        assert kept.created_by == "first 14 days in service" and kept.window_from == START


def test_a_baseline_set_by_command_replaces_the_automatic_one(seeded_store, capsys) -> None:
    from serving.cli import main

    seed_shift(seeded_store, "demo", shift=True)
    url = str(seeded_store.engine.url)
    last_week = (NOW - dt.timedelta(days=7)).date().isoformat()
    # the shifted week itself becomes the baseline: the alerts go
    assert main(["monitor", "baseline", "--tenant", "demo", "--model", "findings", "--version", "f1",
                 "--from", last_week, "--to", NOW.date().isoformat(), "--url", url, "--actor", "ml-ops"]) == 0
    with seeded_store.transaction() as session:
        [a] = [a for a in drift.assess(session, NOW, SETTINGS) if a.key == ("demo", "findings", "f1")]
    assert a.baseline is not None and a.baseline.source == "set by ml-ops"
    assert not [s for s in a.signals if s.alert]
    assert main(["monitor", "baseline", "--tenant", "demo", "--model", "findings", "--version", "nope",
                 "--from", last_week, "--to", NOW.date().isoformat(), "--url", url]) == 2  # nothing to make one of
    assert "monitoring.empty_baseline" in capsys.readouterr().err


def test_dxv_report_drift_writes_the_alerts(seeded_store, tmp_path, capsys) -> None:
    from serving.cli import main

    seed_shift(seeded_store, "demo", shift=True)
    out = tmp_path / "drift.html"
    assert main(["report", "drift", "--at", NOW.isoformat(), "--url", str(seeded_store.engine.url), "--out", str(out),
                 "--set", "monitoring.min_images=40"]) == 0
    assert "ALERT" in capsys.readouterr().out
    page = out.read_text()
    assert "findings f1, tenant demo: 3 alert(s)" in page and page.count("<img") >= 2
    figures = json.loads(out.with_suffix(".json").read_text())
    demo = next(f for f in figures if f["model"] == "findings")
    assert sorted(s["kind"] for s in demo["signals"] if s["alert"]) == ["finding_rate", "flag_rate", "score_psi"]
    # over time: the baseline's weeks, then the shifted last one
    weeks = {w["week_from"][:10]: w for w in demo["weekly"]}
    assert len(weeks) == 4 and sum(w["images"] for w in weeks.values()) == 120  # the baseline spans three weeks
    last = weeks[(NOW - dt.timedelta(weeks=1)).date().isoformat()]
    assert (last["images"], last["counts"]["caries"], last["flagged"]) == (60, 120, 30)
    # per model version: the weekly trend and the rates; the findings' alerting score distributions too
    assert page.count("<img") == 5


def test_drift_figures_are_on_the_metrics_endpoint(tmp_path, models) -> None:
    from tests.serving.review_fixtures import make_review_service

    service = make_review_service(tmp_path, models, overrides=("monitoring.min_images=40",))
    try:
        seed_shift(service.store, "demo", shift=True)
        text = TestClient(service.app).get("/metrics").text
    finally:
        service.store.close()
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    key = (("model", "findings"), ("tenant", "demo"), ("version", "f1"))

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted((*key, *labels.items()))))]

    assert value("dxv_drift_alert", signal="score_psi", subject="caries") == 1.0
    assert value("dxv_drift_alert", signal="flag_rate", subject="") == 1.0
    assert value("dxv_drift_finding_rate", finding_class="caries", window="baseline") == 0.2
    assert value("dxv_drift_finding_rate", finding_class="caries", window="current") == 2.0
    assert value("dxv_drift_flag_rate", window="current") == 0.25


def test_the_false_positive_report_carries_the_drift_alerts(seeded_store, tmp_path) -> None:
    from serving.cli import main

    seed_shift(seeded_store, "demo", shift=True)
    out = tmp_path / "fp.html"
    day = (NOW - dt.timedelta(days=1)).date().isoformat()
    assert main(["report", "fp", "--from", "2026-03-01", "--to", day, "--tenant", "demo",
                 "--url", str(seeded_store.engine.url), "--out", str(out)]) == 0
    assert "Model drift at the end of the period" in out.read_text()
    alerts = json.loads(out.with_suffix(".json").read_text())["drift_alerts"]
    assert any(a.startswith("caries: 2.000 per radiograph") for a in alerts)


def test_a_claims_summary_keeps_every_score_by_model_version_and_counts_at_any_reporting_score() -> None:
    first = {**reading([44, 45], [finding("caries", 44, "occlusal", 0.7), finding("caries", 45, "mesial", 0.3)]).to_json(),
             "model_versions": {"tooth-numbering": "t1", "findings": "f1"}}
    second = {**reading([46], [finding("caries", 46, "occlusal", 0.5)]).to_json(),
              "model_versions": {"tooth-numbering": "t1", "findings": "f2"}}
    summary = score_summary([first, second], lines=3)
    assert summary["lines"] == 3
    entries = {(e["model"], e["version"]): e for e in summary["models"]}
    assert set(entries) == {("findings", "f1"), ("findings", "f2"), ("tooth-numbering", "t1")}
    assert entries[("findings", "f1")]["images"] == 1 and sorted(entries[("findings", "f1")]["scores"]["caries"]) == [0.3, 0.7]
    assert entries[("tooth-numbering", "t1")]["images"] == 2 and len(entries[("tooth-numbering", "t1")]["scores"]["tooth"]) == 3
    for reporting, expected in ((0.5, 1), (0.25, 2), (0.8, 0)):
        stats = WindowStats()
        add_summary(stats, json.loads(json.dumps(entries[("findings", "f1")])), reporting)  # as stored and read back
        assert stats.images == 1 and stats.counts.get("caries", 0) == expected
        assert stats.histograms["caries"][3] == 1 and stats.histograms["caries"][7] == 1


def test_verified_finding_scores_are_monitored_under_both_versions() -> None:
    stored = {**reading([44], [finding("caries", 44, "occlusal", 0.7)]).to_json(),
              "model_versions": {"tooth-numbering": "t1", "findings": "f1+int8", "finding-verifier": "v1"}}
    versions = {(e["model"], e["version"]) for e in score_summary([stored], lines=1)["models"]}
    assert versions == {("findings", "f1+int8+verifier-v1"), ("tooth-numbering", "t1")}


def test_migration_0011_summarises_the_records_already_stored(store_url: str) -> None:
    from sqlalchemy import text

    from serving.store.database import Store, upgrade

    upgrade(store_url, "0010")
    stored = {**reading([44], [finding("caries", 44, "occlusal", 0.9)]).to_json(),
              "model_versions": {"tooth-numbering": "t1", "findings": "f1"}}
    engine = Store.open(store_url, migrate=False).engine
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO claim_records (audit_seq, tenant, claim_id, mode, claim, readings, created_at) "
                                "VALUES (7, 'demo', 'C-7', 'claim', :claim, :readings, '2026-11-01 10:00:00')"),
                           {"claim": json.dumps({"claim_id": "C-7", "lines": [{}, {}]}), "readings": json.dumps([stored])})
    engine.dispose()
    upgrade(store_url)
    store = Store.open(store_url)
    try:
        with store.reading() as session:
            summary = session.execute(select(ClaimRecordRow.summary).where(ClaimRecordRow.audit_seq == 7)).scalar_one()
        assert json.loads(summary) == score_summary([stored], 2)
    finally:
        store.close()
