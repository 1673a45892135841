"""The service demo's claims decided by the real application in-process (the same app the
Ray Serve ingress wraps): each case shows what its label says, and the HTML summary has
the radiographs with their boxes."""

from __future__ import annotations

import datetime as dt
import html

import pytest
from fastapi.testclient import TestClient

from evaluation.appeal_packet import write_packet
from evaluation.service_demo import (
    CASES,
    appeal_example,
    build_claims,
    decision_rows,
    prepare_store,
    reviewer_key,
    submit,
    write_html,
)
from models.inference import DentalReader
from models.model_card import SHIPPED_DIR
from serving.adjudication import RuleTables
from serving.api.app import ModelReader, create_app
from serving.service_config import load_serving_config
from serving.store.database import Store

NOW = dt.datetime(2026, 5, 12, 9, 0)


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{folder / 'state.db'}"
    key = prepare_store(url, NOW)
    store = Store.open(url)
    app = create_app(reader=ModelReader(DentalReader.from_directory(SHIPPED_DIR, threads=2)), store=store,
                     tables=RuleTables.load(), config=load_serving_config(), clock=lambda: NOW)
    claims = build_claims()
    results = submit(TestClient(app), key, claims)
    yield folder, claims, results, (app, key, url, store)
    store.close()


def _lines(results, label: str) -> list[dict]:
    index = next(i for i, case in enumerate(CASES) if case.label.startswith(label))
    return results[index][0]["lines"]


def test_each_demo_case_is_decided_as_its_label_says(decided) -> None:
    results = decided[2]
    assert all(line["action"] == "pass" for line in _lines(results, "clean"))
    assert any("member notice" in row[8] for row in decision_rows(decided[1], results) if row[0].startswith("over"))
    upcoded = _lines(results, "upcoded")
    assert any(line["action"] == "downcode" and line["suggested_code"] == "D7140" for line in upcoded)
    assert any(line["action"] in ("flag", "reject") for line in _lines(results, "unsupported"))
    over = _lines(results, "over the endodontics")
    assert any(line["approved_amount"] > 0 and line["member_notice"] for line in over)
    frequent = _lines(results, "too frequent")
    assert frequent[0]["action"] == "reject" and any(h["rule_id"] == "R3.frequency" and h["fired"]
                                                     for h in frequent[0]["rule_hits"])
    recycled = _lines(results, "recycled")
    assert all(any(h["rule_id"] == "R1.recycled_image" and h["fired"] for h in line["rule_hits"]) for line in recycled)


def test_the_summary_shows_every_claim_with_its_radiograph_and_no_member_id(decided) -> None:
    folder, claims, results, _ = decided
    write_html(folder / "summary.html", claims, results)
    page = (folder / "summary.html").read_text("utf-8")
    assert page.count("data:image/png;base64,") == len(claims)
    assert all(html.escape(case.label) in page for case in CASES)
    assert "MBR-" not in page
    assert len(decision_rows(claims, results)) == sum(len(r[0]["lines"]) for r in results)


def test_the_demo_appeal_is_decided_and_its_packet_written(decided) -> None:
    folder, claims, results, (app, key, url, store) = decided
    appealed = appeal_example(TestClient(app), key, reviewer_key(url, NOW), claims, results)
    # the downcode was processed without a reviewer; the appeal's narrative names the surgical tier, which the
    # evidence matrix accepts for D7240, so the re-run passes the line
    assert not next(x for x in _lines(results, "upcoded") if x["action"] == "downcode")["needs_review"]
    assert appealed["lines"][0]["readjudicated"]["action"] == "pass"
    assert appealed["outcome"] == "overturned"
    assert [x["line_id"] for x in appealed["lines"]] == [next(
        x["line_id"] for x in _lines(results, "upcoded") if x["action"] == "downcode")]
    assert appealed["documents"][0]["name"] == "operative-note.txt"
    packet = write_packet(store, appealed["original_audit_id"], folder / "appeal-packet.html")
    assert packet.appeals == 1 and "operative-note.txt" in (folder / "appeal-packet.html").read_text("utf-8")
