"""The appeal endpoints and the thresholds administration over HTTP (in-process service,
shipped models): roles, a line under review refused, an appeal of a reviewed line decided
with the original versions and queued again when it needs a person, and a proposed
thresholds version in effect only once an admin promotes it."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from serving.store import table_versions
from serving.store.schema import AuditRow
from tests.serving.review_fixtures import NOW, flagged_claim, make_review_service, periapical_image


@pytest.fixture
def service(tmp_path, models):
    made = make_review_service(tmp_path, models)
    yield made
    made.store.close()


def _as(service, role: str) -> dict[str, str]:
    return {"X-API-Key": service.keys[role]}


def test_an_appeal_of_a_reviewed_line_is_re_run_with_the_original_versions(service) -> None:
    client = TestClient(service.app)
    decision = client.post("/v1/claims:validate", json=flagged_claim("AP-H1", periapical_image()),
                           headers=_as(service, "adjudicator")).json()
    assert decision["lines"][0]["action"] == "downcode" and decision["lines"][0]["needs_review"]
    url = f"/v1/decisions/{decision['audit_id']}/appeals"
    body = {"line_ids": ["1"], "narrative": "tooth 5 was treated as a molar-type premolar with three canals"}
    # still waiting for a reviewer: not yet appealable
    waiting = client.post(url, json=body, headers=_as(service, "adjudicator"))
    assert waiting.status_code == 409 and waiting.json()["error"]["code"] == "appeal.not_appealable"
    [item] = [i for i in client.get("/v1/reviews", headers=_as(service, "reviewer")).json()["items"] if i["line_id"] == "1"]
    confirmed = client.post(f"/v1/reviews/{item['item_id']}/disposition", headers=_as(service, "reviewer"),
                            json={"outcome": "confirm", "reason": "premolar on the image"})
    assert confirmed.status_code == 201
    assert client.post(url, json=body, headers=_as(service, "reviewer")).status_code == 403

    service.clock[0] = NOW.replace(day=9)
    answer = client.post(url, json=body, headers=_as(service, "adjudicator"))
    assert answer.status_code == 201, answer.text
    result = answer.json()
    assert result["original_audit_id"] == decision["audit_id"]
    assert result["decision"]["versions"] == decision["versions"]  # no new image: exactly the original versions
    [line] = result["lines"]
    assert line["before"]["action"] == "downcode" and line["before"]["needs_review"] is False  # as the reviewer left it
    # the re-run flags the line again (the image is as unclear as before): a person decides the appeal
    assert line["outcome"] == "referred" and line["standing"] == line["before"]
    queue = client.get("/v1/reviews", headers=_as(service, "reviewer")).json()["items"]
    assert any(i["audit_id"] == result["audit_id"] and i["line_id"] == "1" for i in queue)
    assert client.get(f"/v1/appeals/{result['appeal_id']}", headers=_as(service, "adjudicator")).json() == result
    listed = client.get(url, headers=_as(service, "adjudicator")).json()["appeals"]
    assert [a["appeal_id"] for a in listed] == [result["appeal_id"]]
    again = client.get(f"/v1/decisions/{result['audit_id']}", headers=_as(service, "adjudicator"))
    assert again.status_code == 200 and again.json()["audit_id"] == result["audit_id"]
    elsewhere = client.get(f"/v1/appeals/{result['appeal_id']}", headers=_as(service, "other-reviewer"))
    assert elsewhere.status_code == 404  # another tenant's appeal


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"line_ids": ["1"]}, 422, "request.invalid"),  # no new evidence
    ({"line_ids": [], "narrative": "x"}, 422, "request.invalid"),
    ({"line_ids": ["1"], "narrative": "x", "colour": "red"}, 422, "request.invalid"),
    ({"line_ids": ["1"], "attachments": [{"radiograph_id": "n", "content": "%%%"}]}, 400, "request.invalid"),
    ({"line_ids": ["1"], "attachments": [{"radiograph_id": "n"}]}, 422, "appeal.invalid"),
    ({"line_ids": ["1"], "attachments": [{"radiograph_id": "n", "content": base64.b64encode(b"not an image").decode()}]},
     400, "image.not_an_image"),
])
def test_bad_appeals_get_a_4xx_with_a_code(service, body, status, code) -> None:
    client = TestClient(service.app)
    decision = client.post("/v1/claims:validate", json=flagged_claim("AP-B1", periapical_image()),
                           headers=_as(service, "adjudicator")).json()
    answer = client.post(f"/v1/decisions/{decision['audit_id']}/appeals", json=body, headers=_as(service, "adjudicator"))
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    missing = client.post("/v1/decisions/999999/appeals", json={"line_ids": ["1"], "narrative": "x"},
                          headers=_as(service, "adjudicator"))
    assert missing.status_code == 404


def _submit(client, service, claim_id: str):
    return client.post("/v1/claims:validate", json=flagged_claim(claim_id, periapical_image()),
                       headers=_as(service, "adjudicator"))


def test_a_proposed_thresholds_version_takes_effect_only_when_an_admin_promotes_it(service) -> None:
    client = TestClient(service.app)
    listed = client.get("/v1/admin/thresholds", headers=_as(service, "admin")).json()
    release = listed["in_effect"]
    assert [v["version"] for v in listed["versions"] if v["effective"]] == [release]
    with service.store.transaction() as session:
        current = table_versions.load_table(session, "thresholds", release)
        proposed = current.model_copy(update={"version": f"{release}-cal.1"})
        table_versions.propose_thresholds(session, proposed, {"why": "test"}, "cli", NOW)
    first = _submit(client, service, "TH-1")
    assert first.json()["versions"]["thresholds"] == release  # proposed is not in effect
    assert client.get("/v1/admin/thresholds", headers=_as(service, "reviewer")).status_code == 403
    assert client.post(f"/v1/admin/thresholds/{release}-cal.1/promote", headers=_as(service, "reviewer")).status_code == 403
    unknown = client.post("/v1/admin/thresholds/nope/promote", headers=_as(service, "admin"))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "tables.version_not_found"
    promoted = client.post(f"/v1/admin/thresholds/{release}-cal.1/promote", headers=_as(service, "admin"))
    assert promoted.status_code == 200 and promoted.json()["previous"] == release
    second = _submit(client, service, "TH-2")
    assert second.json()["versions"]["thresholds"] == f"{release}-cal.1"
    with service.store.transaction() as session:
        kinds = session.execute(select(AuditRow.kind, AuditRow.subject).where(AuditRow.kind == "config")).all()
    assert [tuple(k) for k in kinds] == [("config", f"thresholds@{release}-cal.1")]
    # a rollback is promoting the release again
    assert client.post(f"/v1/admin/thresholds/{release}/promote", headers=_as(service, "admin")).status_code == 200
    third = _submit(client, service, "TH-3")
    assert third.json()["versions"]["thresholds"] == release


def test_the_appeal_packet_has_the_lines_reasons_evidence_versions_and_the_appeal(service, tmp_path) -> None:
    from serving.cli import main

    client = TestClient(service.app)
    original = periapical_image()
    decision = client.post("/v1/claims:validate", json=flagged_claim("AP-P1", original),
                           headers=_as(service, "adjudicator")).json()
    for item in client.get("/v1/reviews", headers=_as(service, "reviewer")).json()["items"]:
        client.post(f"/v1/reviews/{item['item_id']}/disposition", headers=_as(service, "reviewer"),
                    json={"outcome": "confirm", "reason": "as decided"})
    new_id, new_file = periapical_image(11)
    letter = base64.b64encode(b"%PDF-1.4 chart note").decode()
    appealed = client.post(f"/v1/decisions/{decision['audit_id']}/appeals", headers=_as(service, "adjudicator"), json={
        "line_ids": ["1"], "narrative": "see the new radiograph",
        "attachments": [{"radiograph_id": new_id + "-b", "kind": "periapical", "content": base64.b64encode(new_file).decode()}],
        "documents": [{"name": "chart-note.pdf", "content_base64": letter}]})
    assert appealed.status_code == 201, appealed.text
    result = appealed.json()
    assert [r["source"] for r in result["readings"]] == ["original", "appeal"]

    url = str(service.store.engine.url)
    out = tmp_path / "packet.html"
    assert main(["appeal", "packet", str(decision["audit_id"]), "--out", str(out), "--url", url]) == 0
    page = out.read_text()
    assert f"Decision {decision['audit_id']} on claim AP-P1" in page
    for line in decision["lines"]:
        assert f"<td class='{line['action']}'><b>{line['action']}</b></td>" in page
    assert "R2.substitution.tier" in page and "D3330" in page  # the downcode's rule and the billed code
    assert "<td>5 (FDI 14)</td>" in page  # billed in Universal numbering; the reasons speak FDI
    assert page.count("<img") == 2  # the original radiograph, and the appeal's new one under the appeal
    assert f"Appeal {result['appeal_id']}" in page and result["outcome"] in page and "chart-note.pdf" in page
    assert decision["versions"]["thresholds"] in page and "audit record" in page.lower()
    assert "MBR-" not in page and original[0] not in page and new_id not in page  # no member or client image ids
    # an appeal's decision id gives the same packet; an unknown id is an error
    again = tmp_path / "again.html"
    assert main(["appeal", "packet", str(result["audit_id"]), "--out", str(again), "--url", url]) == 0
    assert again.read_text() == page
    assert main(["appeal", "packet", "999999", "--out", str(tmp_path / "none.html"), "--url", url]) == 2
    assert main(["appeal", "packet", str(decision["audit_id"]), "--tenant", "other", "--url", url,
                 "--out", str(tmp_path / "other.html")]) == 2


def test_a_version_promoted_from_the_cli_reaches_a_running_service_within_the_refresh(tmp_path, models, capsys) -> None:
    import time

    from serving.cli import main

    service = make_review_service(tmp_path, models, overrides=("thresholds_refresh_s=0.2",))
    try:
        client = TestClient(service.app)
        release = _submit(client, service, "R-1").json()["versions"]["thresholds"]
        url = str(service.store.engine.url)
        with service.store.transaction() as session:
            current = table_versions.load_table(session, "thresholds", release)
            table_versions.propose_thresholds(session, current.model_copy(update={"version": "cli-1"}), {}, "cli", NOW)
        assert main(["thresholds", "list", "--url", url]) == 0
        assert "cli-1" in capsys.readouterr().out
        assert main(["thresholds", "promote", "cli-1", "--actor", "ops", "--url", url]) == 0
        assert main(["thresholds", "promote", "nope", "--url", url]) == 2
        time.sleep(0.3)
        assert _submit(client, service, "R-2").json()["versions"]["thresholds"] == "cli-1"
    finally:
        service.store.close()


def test_an_appeals_radiographs_count_against_its_tenants_rate(tmp_path, models) -> None:
    """Two radiographs at once, then one every 1,000 s: a claim takes one, an appeal adding
    two is refused before any model reads them, one adding one is taken (and answered on
    its merits), and then even an appeal without radiographs (it costs one) waits."""
    service = make_review_service(tmp_path, models, ("limits.max_images=2",
                                                     "limits.tenant_rate={images_per_s: 0.001, burst: 2}"))
    with TestClient(service.app) as client:  # its shutdown writes the access log before the store closes
        decision = _submit(client, service, "RATE-AP-1").json()
        url = f"/v1/decisions/{decision['audit_id']}/appeals"
        _, data = periapical_image(10)

        def appeal_adding(*ids: str) -> dict:
            return {"line_ids": ["1"], "narrative": "another view",
                    "attachments": [{"radiograph_id": i, "kind": "periapical", "content": base64.b64encode(data).decode()}
                                    for i in ids]}

        refused = client.post(url, json=appeal_adding("new-1", "new-2"), headers=_as(service, "adjudicator"))
        assert (refused.status_code, refused.json()["error"]["code"]) == (429, "rate.limited")
        assert "retry-after" in refused.headers
        taken = client.post(url, json=appeal_adding("new-3"), headers=_as(service, "adjudicator"))
        assert (taken.status_code, taken.json()["error"]["code"]) == (409, "appeal.not_appealable")  # still in review
        spent = client.post(url, json={"line_ids": ["1"], "narrative": "x"}, headers=_as(service, "adjudicator"))
        assert spent.status_code == 429
    service.store.close()
