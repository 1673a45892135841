"""The review queue: ordering, the reviewer endpoints and their roles, dispositions in the
audit trail with the line's status and the ledger, and every bad disposition refused."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from serving.decisions import Action, LineDecision, make_hit
from serving.review.dispositions import DispositionError, DispositionIn, Outcome, final_action
from serving.review.queue import ReviewPriority, priority_now, queue_entries, rank_key
from serving.store import audit
from serving.store.schema import AuditRow, ClaimLineRow, LedgerEntryRow, LedgerRow
from tests.serving.review_fixtures import NOW, flagged_claim, make_review_service, periapical_image


@pytest.fixture
def service(tmp_path, models):
    made = make_review_service(tmp_path, models)
    yield made
    made.store.close()


def _headers(service, role: str) -> dict[str, str]:
    return {"X-API-Key": service.keys[role]}


def _submit(service, claim: dict) -> dict:
    answer = TestClient(service.app).post("/v1/claims:validate", json=claim, headers=_headers(service, "adjudicator"))
    assert answer.status_code == 200, answer.text
    return answer.json()


# ---- the priority, pure ---------------------------------------------------------------------


def _line(line_id: str, *hits) -> LineDecision:
    from serving.decisions import combine_hits

    return combine_hits(line_id, tuple(hits))


def test_only_lines_with_a_flag_are_queued_and_severity_follows_the_rule_weights() -> None:
    weights = ReviewPriority(rule_severity={"R1.recycled_image": 4.0})
    decisions = (_line("1", make_hit("R1.documentation", Action.FLAG, "no image")),
                 _line("2", make_hit("R3.frequency", Action.REJECT, "too often")),  # rejected, not flagged: not queued
                 _line("3", make_hit("R1.recycled_image", Action.FLAG, "seen before")),
                 _line("4", make_hit("R2.substitution.tier", Action.DOWNCODE, "tier", suggested="D3320"),
                       make_hit("R1.necessity", Action.FLAG, "unclear")))
    entries = {e.line_id: e for e in queue_entries({"1": ("D0220", 30.0), "2": ("D1110", 95.0), "3": ("D0220", 30.0),
                                                    "4": ("D3330", 1100.0)}, decisions, weights)}
    assert set(entries) == {"1", "3", "4"}
    assert entries["1"].severity == 1.0 and entries["3"].severity == 4.0 and entries["4"].severity == 2.0
    assert entries["4"].rules == ("R2.substitution.tier", "R1.necessity")
    # same severity: the larger amount first; the heavier rule outranks a tenfold fee
    assert entries["3"].priority > entries["1"].priority


def test_the_rank_key_orders_by_priority_plus_waiting_time() -> None:
    weights = ReviewPriority(age_weight_per_day=0.5)
    old_small = rank_key(2.0, NOW - dt.timedelta(days=4), weights)  # 2.0 + 0.5 * 4 days = 4.0 now
    new_large = rank_key(3.5, NOW, weights)
    assert old_small > new_large
    assert priority_now(old_small, NOW, weights) == pytest.approx(4.0)
    assert priority_now(new_large, NOW + dt.timedelta(days=2), weights) == pytest.approx(4.5)


@pytest.mark.parametrize(("outcome", "action", "code", "suggested", "expected"), [
    ("confirm", None, None, "D3320", (Action.DOWNCODE, "D3320")),
    ("confirm", None, None, None, (Action.REJECT, None)),
    ("confirm", "reject", None, "D3320", (Action.REJECT, None)),
    ("override_pass", None, None, "D3320", (Action.PASS, None)),
    ("change", "downcode", "D2391", None, (Action.DOWNCODE, "D2391")),
    ("change", "pass", None, None, (Action.PASS, None)),
])
def test_final_action_of_each_outcome(outcome, action, code, suggested, expected) -> None:
    disposition = DispositionIn(outcome=Outcome(outcome), action=action, code=code, reason="checked the image")
    assert final_action(disposition, suggested) == expected


@pytest.mark.parametrize(("outcome", "action", "code", "suggested"), [
    ("confirm", "pass", None, None),  # confirming a flag cannot pay the line
    ("change", None, None, None),  # change needs the action
    ("change", "flag", None, None),  # a flag is not an ending
    ("change", "downcode", None, None),  # a downcode needs a code and none was suggested
    ("override_pass", "reject", None, None),
    ("change", "reject", "D2391", None),  # a code only with a downcode
])
def test_inconsistent_dispositions_are_refused(outcome, action, code, suggested) -> None:
    with pytest.raises(DispositionError):
        final_action(DispositionIn(outcome=Outcome(outcome), action=action, code=code, reason="checked"), suggested)


# ---- the endpoints ---------------------------------------------------------------------------


def test_flagged_lines_land_in_the_queue_in_priority_order_and_age_lifts_older_items(service) -> None:
    client = TestClient(service.app)
    _submit(service, flagged_claim("Q-1", periapical_image(9), fees=(1100, 150, 400, 1000)))
    service.clock[0] = NOW + dt.timedelta(days=10)  # a second claim ten days later, with larger fees
    _submit(service, flagged_claim("Q-2", periapical_image(10), fees=(1500, 900, 400, 2000)))
    queue = client.get("/v1/reviews", headers=_headers(service, "reviewer")).json()
    assert queue["total"] == 8
    priorities = [i["priority"] for i in queue["items"]]
    assert priorities == sorted(priorities, reverse=True)
    first = queue["items"][0]
    assert (first["claim_id"], first["waiting_days"]) == ("Q-1", 10.0)  # ten days of waiting outweigh the fee
    # same severity, same age: the larger fee ranks higher
    groups: dict[float, list[float]] = {}
    for i in queue["items"]:
        if i["claim_id"] == "Q-2":
            groups.setdefault(i["severity"], []).append(i["fee"])
    assert any(len(fees) >= 2 for fees in groups.values())
    assert all(fees == sorted(fees, reverse=True) for fees in groups.values())
    page = client.get("/v1/reviews?limit=3&offset=3", headers=_headers(service, "reviewer")).json()
    assert [i["item_id"] for i in page["items"]] == [i["item_id"] for i in queue["items"][3:6]]


def test_roles_and_tenants(service) -> None:
    client = TestClient(service.app)
    _submit(service, flagged_claim("R-1", periapical_image(9)))
    item = client.get("/v1/reviews", headers=_headers(service, "reviewer")).json()["items"][0]["item_id"]
    body = {"outcome": "override_pass", "reason": "the lesion is visible on tooth 14"}
    for path in ("/v1/reviews", f"/v1/reviews/{item}"):
        denied = client.get(path, headers=_headers(service, "adjudicator"))
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "auth.forbidden"
    denied = client.post(f"/v1/reviews/{item}/disposition", json=body, headers=_headers(service, "adjudicator"))
    assert denied.status_code == 403
    assert client.get("/v1/reviews", headers={"X-API-Key": "dxv_nokey_" + "x" * 30}).status_code == 401
    other = client.get(f"/v1/reviews/{item}", headers=_headers(service, "other-reviewer"))
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    assert client.get("/v1/reviews", headers=_headers(service, "other-reviewer")).json()["total"] == 0
    assert client.post(f"/v1/reviews/{item}/disposition", json=body,
                       headers=_headers(service, "other-reviewer")).status_code == 404
    assert client.get(f"/v1/reviews/{item}", headers=_headers(service, "admin")).status_code == 200


def test_the_case_shows_the_claim_decision_readings_and_the_radiograph(service) -> None:
    client = TestClient(service.app)
    rid, _ = periapical_image(9)
    _submit(service, flagged_claim("C-1", periapical_image(9)))
    item = client.get("/v1/reviews", headers=_headers(service, "reviewer")).json()["items"][0]
    case = client.get(f"/v1/reviews/{item['item_id']}", headers=_headers(service, "reviewer")).json()
    assert case["claim"]["claim_id"] == "C-1" and "content" not in case["claim"]["attachments"][0]
    assert [x["line_id"] for x in case["decision"]["lines"]] == ["1", "2", "3", "4"]
    assert case["images"] == [{"radiograph_id": rid, "kind": "periapical"}]
    reading = case["readings"][0]
    assert reading["image_id"] == rid and reading["teeth"] and reading["model_versions"]
    assert len(case["queue"]) == 4 and case["dispositions"] == []
    png = client.get(f"/v1/reviews/{item['item_id']}/images/{rid}", headers=_headers(service, "reviewer"))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.mode == "L" and image.size == (reading["width_px"], reading["height_px"])
    missing = client.get(f"/v1/reviews/{item['item_id']}/images/nope", headers=_headers(service, "reviewer"))
    assert missing.status_code == 404


def test_a_disposition_is_audited_with_the_reviewer_closes_the_item_and_sets_the_line(service) -> None:
    client = TestClient(service.app)
    rid, _ = periapical_image(9)
    decision = _submit(service, flagged_claim("D-1", periapical_image(9)))
    items = {i["line_id"]: i for i in client.get("/v1/reviews", headers=_headers(service, "reviewer")).json()["items"]}
    reviewer_key = service.keys["reviewer"].split("_")[1]
    corrections = [{"type": "missed_finding", "image_id": rid, "finding_class": "caries",
                    "box_xyxy_px": [100, 120, 140, 160], "tooth_fdi": 14},
                   {"type": "wrong_tooth_number", "image_id": rid, "box_xyxy_px": [10, 10, 90, 200],
                    "detected_fdi": 15, "correct_fdi": 14}]
    answer = client.post(f"/v1/reviews/{items['2']['item_id']}/disposition", headers=_headers(service, "reviewer"),
                         json={"outcome": "override_pass", "reason": "caries visible distally", "corrections": corrections})
    assert answer.status_code == 201, answer.text
    recorded = answer.json()
    assert (recorded["outcome"], recorded["action"], recorded["reviewer"]) == ("override_pass", "pass", reviewer_key)
    with service.store.transaction() as session:
        row = session.get(AuditRow, recorded["audit_id"])
        assert (row.kind, row.actor, row.subject) == ("review", reviewer_key, "D-1/2")
        payload = json.loads(row.payload)
        assert payload["decision_audit_id"] == decision["audit_id"] and payload["corrections"][0]["tooth_fdi"] == 14
        assert audit.verify(session).ok
        line = session.execute(select(ClaimLineRow).where(ClaimLineRow.claim_id == "D-1", ClaimLineRow.line_id == "2")
                               ).scalar_one()
        assert (line.status, line.action) == ("approved", "pass")
    queue = client.get("/v1/reviews", headers=_headers(service, "reviewer")).json()
    assert queue["total"] == 3 and items["2"]["item_id"] not in [i["item_id"] for i in queue["items"]]
    done = client.get("/v1/reviews?status=closed", headers=_headers(service, "reviewer")).json()
    assert [i["item_id"] for i in done["items"]] == [items["2"]["item_id"]]
    again = client.post(f"/v1/reviews/{items['2']['item_id']}/disposition", headers=_headers(service, "reviewer"),
                        json={"outcome": "confirm", "reason": "second thoughts"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "review.already_closed"
    case = client.get(f"/v1/reviews/{items['3']['item_id']}", headers=_headers(service, "reviewer")).json()
    assert [d["line_id"] for d in case["dispositions"]] == ["2"]


def test_a_line_confirmed_as_reject_gives_its_ledger_reservation_back(service) -> None:
    client = TestClient(service.app)
    _submit(service, flagged_claim("L-1", periapical_image(9)))
    items = {i["line_id"]: i for i in client.get("/v1/reviews", headers=_headers(service, "reviewer")).json()["items"]}

    def reserved() -> tuple[float, float]:
        with service.store.transaction() as session:
            entry = sum(float(e.amount) for e in session.execute(
                select(LedgerEntryRow).where(LedgerEntryRow.claim_id == "L-1", LedgerEntryRow.line_id == "4")).scalars())
            used = sum(float(x.used) for x in session.execute(select(LedgerRow)).scalars())
        return entry, used

    entry_before, used_before = reserved()
    assert entry_before > 0
    answer = client.post(f"/v1/reviews/{items['4']['item_id']}/disposition", headers=_headers(service, "reviewer"),
                         json={"outcome": "confirm", "action": "reject", "reason": "no loss of structure on tooth 14"})
    assert answer.status_code == 201, answer.text
    entry_after, used_after = reserved()
    assert entry_after == 0
    assert used_after == pytest.approx(used_before - entry_before)  # its entries: the category and the annual maximum
    with service.store.transaction() as session:
        line = session.execute(select(ClaimLineRow).where(ClaimLineRow.claim_id == "L-1", ClaimLineRow.line_id == "4")
                               ).scalar_one()
        assert (line.status, float(line.approved_amount)) == ("denied", 0.0)
        # The ledger keeps every movement: what the decision took, and the review giving it back.
        movements = sorted((e.reason, float(e.amount)) for e in session.execute(
            select(LedgerEntryRow).where(LedgerEntryRow.claim_id == "L-1", LedgerEntryRow.line_id == "4")).scalars())
    assert [r for r, _ in movements].count("decision") == [r for r, _ in movements].count("review") >= 1
    assert sum(a for r, a in movements if r == "decision") == pytest.approx(entry_before)
    assert sum(a for r, a in movements if r == "review") == pytest.approx(-entry_before)


@pytest.mark.parametrize(("body", "code"), [
    ({"outcome": "change", "reason": "needs an action"}, "review.invalid_disposition"),
    ({"outcome": "confirm", "action": "pass", "reason": "cannot confirm and pay"}, "review.invalid_disposition"),
    ({"outcome": "override_pass", "reason": "x"}, "request.invalid"),  # reason too short
    ({"outcome": "maybe", "reason": "unknown outcome"}, "request.invalid"),
    ({"outcome": "override_pass", "reason": "box upside down", "corrections": [
        {"type": "missed_finding", "image_id": "IMG", "finding_class": "caries", "box_xyxy_px": [50, 50, 10, 10]}]},
     "request.invalid"),
    ({"outcome": "override_pass", "reason": "unknown image", "corrections": [
        {"type": "finding_wrong", "image_id": "not-on-this-claim", "finding_class": "caries",
         "box_xyxy_px": [1, 1, 5, 5]}]}, "review.invalid_disposition"),
    ({"outcome": "override_pass", "reason": "unknown correction", "corrections": [{"type": "looks_odd"}]},
     "request.invalid"),
])
def test_bad_dispositions_get_a_4xx_with_a_code_and_leave_the_item_open(service, body, code) -> None:
    client = TestClient(service.app)
    _submit(service, flagged_claim("B-1", periapical_image(9)))
    item = client.get("/v1/reviews", headers=_headers(service, "reviewer")).json()["items"][0]["item_id"]
    answer = client.post(f"/v1/reviews/{item}/disposition", json=body, headers=_headers(service, "reviewer"))
    assert answer.status_code == 422 and answer.json()["error"]["code"] == code
    assert client.get(f"/v1/reviews/{item}", headers=_headers(service, "reviewer")).json()["item"]["status"] == "open"
    assert client.get("/v1/reviews/999", headers=_headers(service, "reviewer")).status_code == 404
    assert client.get("/v1/reviews?status=all", headers=_headers(service, "reviewer")).status_code == 422


def test_the_workbench_page_and_its_assets_are_served(service) -> None:
    client = TestClient(service.app)
    page = client.get("/review")
    assert page.status_code == 200 and "Claim review" in page.text and "/review/review.js" in page.text
    assert client.get("/review/review.js").status_code == 200
    assert client.get("/review/secrets.txt").status_code == 404


def test_exported_corrections_are_read_back_by_the_training_loader(service, tmp_path) -> None:
    from serving.cli import main
    from training.config import DataConfig, DiskSource
    from training.data import DataReport, load_samples

    client = TestClient(service.app)
    rid, _ = periapical_image(9)
    _submit(service, flagged_claim("X-1", periapical_image(9)))
    items = client.get("/v1/reviews", headers=_headers(service, "reviewer")).json()["items"]
    case = client.get(f"/v1/reviews/{items[0]['item_id']}", headers=_headers(service, "reviewer")).json()
    reading = case["readings"][0]
    shown = [f for f in reading["findings"] if f["score"] >= 0.3]
    wrong = shown[0]
    tooth = max(reading["teeth"], key=lambda t: t["score"])
    renumber_to = 24 if tooth["fdi"] != 24 else 25
    corrections = [
        {"type": "finding_wrong", "image_id": rid, "finding_class": wrong["class"], "box_xyxy_px": wrong["box_xyxy_px"]},
        {"type": "missed_finding", "image_id": rid, "finding_class": "periapical_lesion",
         "box_xyxy_px": [200.0, 500.0, 260.0, 560.0], "tooth_fdi": 14},
        {"type": "wrong_tooth_number", "image_id": rid, "box_xyxy_px": tooth["box_xyxy_px"], "detected_fdi": tooth["fdi"],
         "correct_fdi": renumber_to}]
    answer = client.post(f"/v1/reviews/{items[0]['item_id']}/disposition", headers=_headers(service, "reviewer"),
                         json={"outcome": "confirm", "reason": "see corrections", "corrections": corrections})
    assert answer.status_code == 201, answer.text
    # a disposition without corrections adds no image
    client.post(f"/v1/reviews/{items[1]['item_id']}/disposition", headers=_headers(service, "reviewer"),
                json={"outcome": "override_pass", "reason": "fine as billed"})

    out = tmp_path / "corrections"
    url = str(service.store.engine.url)
    assert main(["data", "export-corrections", "--out", str(out), "--url", url, "--tenant", "demo"]) == 0
    report = DataReport()
    [sample] = load_samples(DataConfig(sources=(DiskSource(format="coco", path=out / "annotations.json"),)), report)
    labels = sample.annotations
    assert (labels.width_px, labels.height_px) == (reading["width_px"], reading["height_px"])
    assert rid not in labels.image_id and "MBR" not in labels.file_name  # no client ids in the export
    boxes = {(f.finding_class.value, tuple(round(v) for v in f.box_xyxy_px)) for f in labels.findings}
    assert ("periapical_lesion", (200, 500, 260, 560)) in boxes
    assert (wrong["class"], tuple(round(v) for v in wrong["box_xyxy_px"])) not in boxes
    assert len(labels.findings) == len(shown)  # one removed, one added
    renumbered = [t for t in labels.teeth if tuple(round(v) for v in t.box_xyxy_px)
                  == tuple(round(v) for v in tooth["box_xyxy_px"])]
    assert [t.fdi for t in renumbered] == [renumber_to]
    pixels = sample.load()
    assert pixels.shape == (reading["height_px"], reading["width_px"]) and 0.0 <= pixels.min() < pixels.max() <= 1.0
    # nothing in another tenant
    other = tmp_path / "other"
    assert main(["data", "export-corrections", "--out", str(other), "--url", url, "--tenant", "other"]) == 0
    assert json.loads((other / "annotations.json").read_text())["images"] == []
