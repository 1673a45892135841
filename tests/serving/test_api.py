"""The HTTP API in-process (FastAPI's TestClient; the Ray Serve wiring is tested apart):
authentication and roles, tenant isolation, every class of bad input answered 4xx with
a code, and a real claim decided with the shipped models."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import pytest
from fastapi.testclient import TestClient

from datasets.synth.generator import case_dicom_bytes, generate_case, png_bytes
from evaluation.bench_service import server_timing_ms
from models.radiographs import RadiographKind
from serving.adjudication import ClaimDecision, RuleTables
from serving.api.app import create_app
from serving.plans import load_plans
from serving.service_config import load_serving_config
from serving.store import repository
from serving.store.api_keys import Role, create_key
from serving.store.database import Store

NOW = dt.datetime(2026, 5, 1, 9, 0)


def _service(tmp_path, models, *overrides: str):
    tables = RuleTables.load()
    store = Store.open(f"sqlite:///{tmp_path / 'api.db'}")
    with store.transaction() as session:
        repository.save_plans(session, load_plans(), NOW)
        repository.seed(session, repository.load_seed_file("configs/seed/demo.yaml"), tables.validation.catalogue, NOW)
        keys = {role: create_key(session, tenant="demo", role=role, label="", now=NOW)[1] for role in Role}
        keys["other-tenant"] = create_key(session, tenant="other", role=Role.ADJUDICATOR, label="", now=NOW)[1]
    config = load_serving_config(overrides=("limits.max_images=2", "limits.max_request_bytes=3000000", *overrides))
    app = create_app(reader=models, store=store, tables=tables, config=config, clock=lambda: NOW)
    return TestClient(app), keys, store


@pytest.fixture
def service(tmp_path, models):
    client, keys, store = _service(tmp_path, models)
    yield client, keys
    store.close()


def claim_json(images: list[tuple[str, RadiographKind, bytes]], tenant: str = "demo") -> dict:
    return {"claim_id": "API-1", "tenant": tenant, "member": {"member_id": "MBR-0001", "birth_date": "1980-05-17"},
            "provider": {"provider_id": "PRV-001"}, "date_of_service": "2026-04-20",
            "lines": [{"line_id": "1", "code": "D3330", "tooth": "5", "tooth_system": "UNIVERSAL", "fee": 1100},
                      {"line_id": "2", "code": "D0220", "fee": 30}],
            "attachments": [{"radiograph_id": rid, "kind": kind.value, "content": base64.b64encode(data).decode()}
                            for rid, kind, data in images]}


@pytest.fixture(scope="module")
def periapical() -> tuple[str, RadiographKind, bytes]:
    case = generate_case(RadiographKind.PERIAPICAL, 404, 9)
    return case.image_id, RadiographKind.PERIAPICAL, case_dicom_bytes(case)


def test_a_claim_is_decided_with_the_models_and_can_be_read_back(service, periapical) -> None:
    client, keys = service
    answer = client.post("/v1/claims:validate", json=claim_json([periapical]), headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    assert answer.status_code == 200, answer.text
    decision = answer.json()
    line = next(x for x in decision["lines"] if x["line_id"] == "1")
    assert line["action"] == "downcode" and line["suggested_code"] == "D3320"  # tooth 14 is a premolar
    assert decision["versions"]["model:findings"] and decision["audit_id"] == 1
    again = client.get(f"/v1/decisions/{decision['audit_id']}", headers={"Authorization": f"Bearer {keys[Role.REVIEWER]}"})
    # Written once by pydantic, the answer is what the read-back (FastAPI's response_model) gives.
    assert answer.headers["content-type"] == "application/json"
    assert again.status_code == 200 and again.json() == decision and set(decision) == set(ClaimDecision.model_fields)


def test_multipart_upload_gives_the_same_decision(service, periapical) -> None:
    client, keys = service
    body = claim_json([periapical])
    for a in body["attachments"]:
        a.pop("content")
    files = {"claim": (None, json.dumps(body), "application/json"),
             periapical[0]: (f"{periapical[0]}.dcm", periapical[2], "application/dicom")}
    answer = client.post("/v1/claims:validate", files=files, headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    assert answer.status_code == 200, answer.text
    assert next(x for x in answer.json()["lines"] if x["line_id"] == "1")["suggested_code"] == "D3320"


def test_analyze_returns_teeth_and_findings(service) -> None:
    client, keys = service
    case = generate_case(RadiographKind.BITEWING, 5, 0)
    answer = client.post("/v1/images:analyze", headers={"X-API-Key": keys[Role.ADMIN]},
                         json={"images": [{"image_id": "bw", "content_base64": base64.b64encode(png_bytes(case)).decode(),
                                           "kind": "bitewing"}]})
    assert answer.status_code == 200, answer.text
    image = answer.json()["images"][0]
    assert image["kind"] == "bitewing" and len(image["teeth"]) >= 4


@pytest.mark.parametrize(("headers", "status", "code"), [
    ({}, 401, "auth.invalid_key"),
    ({"X-API-Key": "dxv_nope"}, 401, "auth.invalid_key"),
    ("reviewer", 403, "auth.forbidden"),
    ("other-tenant", 403, "auth.tenant_mismatch"),
])
def test_keys_roles_and_tenants(service, periapical, headers, status, code) -> None:
    client, keys = service
    if isinstance(headers, str):
        headers = {"X-API-Key": keys[Role.REVIEWER if headers == "reviewer" else headers]}
    answer = client.post("/v1/claims:validate", json=claim_json([periapical]), headers=headers)
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)


def test_another_tenants_decision_is_not_found(service, periapical) -> None:
    client, keys = service
    made = client.post("/v1/claims:validate", json=claim_json([periapical]), headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    other = client.get(f"/v1/decisions/{made.json()['audit_id']}", headers={"X-API-Key": keys["other-tenant"]})
    assert (other.status_code, other.json()["error"]["code"]) == (404, "not_found")


def _bad(kind: str, periapical):
    body = claim_json([periapical])
    if kind == "json":
        return {"content": b'{"claim_id": "x", "lines": ['}
    if kind == "schema":
        body["lines"][0]["tooth"] = "99"
        return {"json": body}
    if kind == "base64":
        body["attachments"][0]["content"] = "@@@not base64@@@"
        return {"json": body}
    if kind == "base64-padding":  # data after the padding: refused, not decoded in part
        body["attachments"][0]["content"] = base64.b64encode(periapical[2]).decode() + "=QUJD"
        return {"json": body}
    if kind == "base64-non-ascii":
        body["attachments"][0]["content"] = "QUJDé"
        return {"json": body}
    if kind == "not-an-image":
        body["attachments"][0]["content"] = base64.b64encode(b"hello, this is text").decode()
        return {"json": body}
    if kind == "truncated-dicom":
        body["attachments"][0]["content"] = base64.b64encode(periapical[2][: len(periapical[2]) // 2]).decode()
        return {"json": body}
    if kind == "id-too-long":  # longer than the store keeps: refused, never a failed write (a 500 on PostgreSQL)
        body["lines"][0]["line_id"] = "L" * 33
        return {"json": body}
    if kind == "date-out-of-range":  # a policy year past 9999-12-31 once failed the ledger (a 500)
        body["date_of_service"] = "9999-12-31"
        return {"json": body}
    if kind == "too-many":
        return {"json": claim_json([(f"img{i}", RadiographKind.PERIAPICAL, periapical[2]) for i in range(3)])}
    if kind == "too-large":
        return {"content": b"{" + b" " * 3_100_000 + b"}"}
    raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "status", "code"), [
    ("json", 400, "request.invalid"), ("schema", 400, "request.invalid"), ("base64", 400, "request.invalid"),
    ("base64-padding", 400, "request.invalid"), ("base64-non-ascii", 400, "request.invalid"),
    ("id-too-long", 400, "request.invalid"), ("date-out-of-range", 400, "request.invalid"),
    ("not-an-image", 400, "image.not_an_image"), ("truncated-dicom", 400, "image.truncated"),
    ("too-many", 413, "request.too_large"), ("too-large", 413, "request.too_large"),
])
def test_bad_input_is_a_4xx_with_a_code_and_the_service_stays_up(service, periapical, kind, status, code) -> None:
    client, keys = service
    answer = client.post("/v1/claims:validate", headers={"X-API-Key": keys[Role.ADJUDICATOR],
                                                         "Content-Type": "application/json"}, **_bad(kind, periapical))
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code and answer.json()["error"]["message"]
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("path", [
    "/v1/decisions/{n}", "/v1/decisions/{n}/appeals", "/v1/appeals/{n}", "/v1/reviews/{n}", "/v1/reviews/1/documents/{n}",
    "/v1/reviews?offset={n}",
])
def test_ids_and_offsets_beyond_what_the_store_holds_are_refused_not_a_500(service, path) -> None:
    """An id past 2**63 - 1 once reached SQLite's driver, which raised OverflowError (a 500)."""
    client, keys = service
    headers = {"X-API-Key": keys[Role.ADMIN]}
    for number in (2**63, 10**30, -1):
        answer = client.get(path.format(n=number), headers=headers)
        assert answer.status_code == 422, (path, number, answer.text)
        assert answer.json()["error"]["code"] == "request.invalid"
    # The largest id the store can hold is a fair question: not found, not refused.
    largest = client.get(path.format(n=2**63 - 1), headers=headers)
    assert largest.status_code in (200, 404), largest.text


def test_routing_refusals_have_the_error_shape_too(service) -> None:
    """No such route, or a method the route does not take: {"error": {"code", "message"}}
    like every other refusal (FastAPI's default was {"detail": ...})."""
    client, keys = service
    missing = client.get("/v1/no-such-thing", headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    wrong = client.delete("/v1/decisions/1", headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "request.method_not_allowed")
    assert "GET" in wrong.headers["allow"]


def test_ready_when_the_models_are_loaded(service) -> None:
    client, _ = service
    assert client.get("/readyz").json() == {"ready": True, "models": True, "store": True}


def test_a_store_that_cannot_answer_in_time_is_a_503_to_retry(models, periapical, caplog) -> None:
    """PostgreSQL with a lock held past the service's lock_timeout (a migration, a vacuum
    full): the requests are answered 503 with Retry-After, not 500, and nothing is logged
    of the request."""
    from sqlalchemy import create_engine, text

    from tests.serving.conftest import POSTGRES

    schema = f"dxv_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES}?options=-csearch_path%3D{schema}%20-clock_timeout%3D300"
    store = Store.open(url)
    try:
        tables = RuleTables.load()
        with store.transaction() as session:
            repository.save_plans(session, load_plans(), NOW)
            repository.seed(session, repository.load_seed_file("configs/seed/demo.yaml"), tables.validation.catalogue, NOW)
            key = create_key(session, tenant="demo", role=Role.ADJUDICATOR, label="", now=NOW)[1]
        client = TestClient(create_app(reader=models, store=store, tables=tables, config=load_serving_config(),
                                       clock=lambda: NOW))  # a 500 would raise here (the client re-raises them)
        with admin.connect() as holder, holder.begin():
            holder.execute(text(f'LOCK TABLE "{schema}".api_keys IN ACCESS EXCLUSIVE MODE'))
            for answer in (client.post("/v1/claims:validate", json=claim_json([periapical]), headers={"X-API-Key": key}),
                           client.get("/v1/decisions/1", headers={"X-API-Key": key})):
                assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
                assert answer.json()["error"]["code"] == "store.unavailable"
        assert "LockNotAvailable" in caplog.text and "MBR-0001" not in caplog.text and key not in caplog.text
        decided = client.post("/v1/claims:validate", json=claim_json([periapical]), headers={"X-API-Key": key})
        assert decided.status_code == 200  # the retry, once the lock is gone
    finally:
        store.close()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.mark.parametrize("url", ["postgresql+psycopg://postgres@127.0.0.1:1/test",  # nothing listens there
                                 "sqlite:////no-such-folder/state.db"])
def test_a_store_out_of_reach_is_not_reachable(url, tmp_path) -> None:
    assert not Store.open(url, migrate=False).reachable()  # the engine connects on first use, and fails then
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    assert store.reachable()
    store.close()


def test_a_database_error_message_never_carries_the_statement_values(tmp_path) -> None:
    from sqlalchemy import insert
    from sqlalchemy.exc import IntegrityError

    from serving.store.schema import MemberRow

    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    row = {"tenant": "demo", "member_id": "MBR-SECRET-77", "birth_date": dt.date(1980, 5, 17)}
    with pytest.raises(IntegrityError) as raised, store.transaction() as session:
        session.execute(insert(MemberRow), [row, row])  # the same member twice
    assert "MBR-SECRET-77" not in str(raised.value) and "hidden" in str(raised.value)
    store.close()


def test_an_unexpected_failure_is_a_500_in_the_service_shape_with_an_incident_and_no_claim_data(
        service, periapical, monkeypatch, caplog) -> None:
    import serving.api.app as app_module

    def broken(claim, *args, **kwargs):
        raise RuntimeError(f"a defect while deciding for {claim.member.member_id}")

    monkeypatch.setattr(app_module, "adjudicate", broken)  # a defect injected where the decision is made
    client, keys = service
    answer = client.post("/v1/claims:validate", json=claim_json([periapical]), headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal"
    incident = answer.json()["error"]["message"].split("incident ")[1].split(")")[0]
    # The incident is the request's id: in the answer's header, the log line and the access log.
    assert incident == answer.headers["x-request-id"] and f"incident {incident}: RuntimeError" in caplog.text
    assert "MBR-0001" not in caplog.text and "MBR-0001" not in answer.text
    assert client.get("/healthz").status_code == 200  # and the app goes on


def test_an_expired_key_is_refused_by_the_service_clock(service, periapical) -> None:
    client, _ = service
    store = client.app.state.store
    with store.transaction() as session:  # the app's clock reads NOW
        _, ended = create_key(session, tenant="demo", role=Role.ADJUDICATOR, label="", now=NOW - dt.timedelta(days=1),
                              expires_at=NOW)
        _, running = create_key(session, tenant="demo", role=Role.ADJUDICATOR, label="", now=NOW - dt.timedelta(days=1),
                                expires_at=NOW + dt.timedelta(seconds=1))
    refused = client.get("/v1/decisions/1", headers={"X-API-Key": ended})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "auth.invalid_key"
    assert "expired" in refused.json()["error"]["message"]
    assert client.get("/v1/decisions/1", headers={"X-API-Key": running}).status_code == 404  # let in; no such decision


def test_idempotency_key_replays_and_refuses_reuse(service, periapical) -> None:
    client, keys = service
    headers = {"X-API-Key": keys[Role.ADJUDICATOR], "Idempotency-Key": "retry-7"}
    body = claim_json([periapical])
    first = client.post("/v1/claims:validate", json=body, headers=headers)
    again = client.post("/v1/claims:validate", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["replayed"] and again.json()["audit_id"] == first.json()["audit_id"]
    assert again.json()["lines"] == first.json()["lines"]
    body["claim_id"] = "API-2"
    reused = client.post("/v1/claims:validate", json=body, headers=headers)
    assert (reused.status_code, reused.json()["error"]["code"]) == (409, "idempotency.key_reused")


def test_metrics_count_requests_stages_decisions_and_models(service, periapical) -> None:
    client, keys = service
    client.post("/v1/claims:validate", json=claim_json([periapical]), headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    client.post("/v1/claims:validate", content=b"{", headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    client.get("/healthz")
    text = client.get("/metrics").text
    assert 'dxv_stage_seconds_count{stage="request"} 2.0' in text  # the claims, not the probe or the scrape
    assert 'dxv_requests_total{route="/v1/claims:validate",status="200"} 1.0' in text
    assert 'dxv_requests_total{route="/v1/claims:validate",status="400"} 1.0' in text
    assert 'dxv_stage_seconds_count{stage="models"} 1.0' in text
    assert 'dxv_line_decisions_total{action="downcode"} 1.0' in text
    assert 'dxv_model_version_info{model="findings"' in text


def test_each_answer_says_where_its_time_went(service, periapical) -> None:
    client, keys = service
    answer = client.post("/v1/claims:validate", json=claim_json([periapical]), headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    spent = server_timing_ms(answer.headers["server-timing"])
    assert set(spent) == {"decode", "models", "model_transport", "adjudication", "total"}
    assert 0 < spent["models"] < spent["total"] and spent["adjudication"] > 0
    assert spent["decode"] + spent["models"] + spent["adjudication"] <= spent["total"]
    # A request's header holds its own stages only, never the ones of requests before it.
    refused = client.post("/v1/claims:validate", content=b"{", headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    assert set(server_timing_ms(refused.headers["server-timing"])) == {"total"}


def fhir_claim(periapical, *, use: str = "claim") -> dict:
    return {
        "resourceType": "Claim", "id": "FHIR-1", "status": "active", "use": use, "created": "2026-04-20",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "oral"}]},
        "contained": [{"resourceType": "Patient", "id": "p1", "identifier": [{"value": "MBR-0001"}],
                       "birthDate": "1980-05-17"}],
        "patient": {"reference": "#p1"}, "provider": {"reference": "Practitioner/PRV-001"},
        "priority": {"coding": [{"code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "standard-dental"}}],
        "billablePeriod": {"start": "2026-04-20"},
        "supportingInfo": [
            {"sequence": 1, "category": {"coding": [{"code": "attachment"}]}, "code": {"coding": [{"code": "periapical"}]},
             "valueAttachment": {"contentType": "application/dicom", "title": periapical[0],
                                 "data": base64.b64encode(periapical[2]).decode()}},
            {"sequence": 2, "category": {"coding": [{"code": "info"}]}, "valueString": "Tooth 14 deep caries."}],
        "item": [{"sequence": 1, "productOrService": {"coding": [{"system": "http://www.ada.org/cdt", "code": "D3330"}]},
                  "bodySite": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/ex-tooth", "code": "14"}]},
                  "net": {"value": 1100, "currency": "USD"}}],
    }


def test_fhir_claim_in_claim_response_out(service, periapical) -> None:
    client, keys = service
    answer = client.post("/fhir/Claim", json=fhir_claim(periapical), headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/fhir+json")
    response = answer.json()
    assert response["resourceType"] == "ClaimResponse" and response["outcome"] == "partial"
    item = response["item"][0]
    benefit = next(a for a in item["adjudication"] if a["category"]["coding"][0]["code"] == "benefit")
    assert benefit["reason"]["coding"][0]["code"] == "downcode"
    assert "D3320" in response["processNote"][0]["text"]
    # Decided like a JSON claim: its decisions and adjudication time counted and in its header.
    assert 'dxv_line_decisions_total{action="downcode"} 1.0' in client.get("/metrics").text
    assert server_timing_ms(answer.headers["server-timing"])["adjudication"] > 0


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c.update({"resourceType": "Patient"}), "expected a FHIR Claim"),
    (lambda c: c.update({"created": "yesterday"}), "created"),
    (lambda c: c.update({"contained": []}), "contained Patient"),
    (lambda c: c["item"][0]["bodySite"]["coding"][0].update({"code": "19"}), "not an FDI tooth number"),
    # fhir.resources raises TypeError / KeyError (not a ValidationError) on these: once a 500
    (lambda c: c["contained"][0].update({"resourceType": None}), "Claim.contained: [0] None"),
    (lambda c: c["contained"][0].update({"resourceType": "Nope"}), "Claim.contained: [0] 'Nope'"),
])
def test_bad_fhir_claims_are_400_with_the_reason(service, periapical, edit, message) -> None:
    client, keys = service
    resource = fhir_claim(periapical)
    edit(resource)
    answer = client.post("/fhir/Claim", json=resource, headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "fhir.invalid"
    assert message in answer.json()["error"]["message"]


def test_a_recycled_radiograph_is_flagged_on_another_members_claim(service) -> None:
    import io

    import numpy as np
    from PIL import Image

    from serving.claims import Claim
    from serving.fingerprints import fingerprint
    from serving.rules.recycled import ImagePrint

    client, keys = service
    case = generate_case(RadiographKind.PERIAPICAL, 404, 11)
    first = claim_json([("pa-first", RadiographKind.PERIAPICAL, png_bytes(case))])
    first["claim_id"] = "REC-1"
    answer = client.post("/v1/claims:validate", json=first, headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    assert answer.status_code == 200, answer.text
    assert not any(h["rule_id"] == "R1.recycled_image" and h["fired"] for h in answer.json()["lines"][0]["rule_hits"])
    # The same image cropped a little and sent as an 8-bit PNG, for another member of another provider.
    pixels = case.pixels_unit[10:-14, 12:]
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).astype(np.uint8)).save(buffer, "PNG")
    second = claim_json([("pa-second", RadiographKind.PERIAPICAL, buffer.getvalue())])
    second.update(claim_id="REC-2", member={"member_id": "MBR-0003", "birth_date": "1962-11-30"},
                  provider={"provider_id": "PRV-002"}, date_of_service="2026-04-22")
    answer = client.post("/v1/claims:validate", json=second, headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    assert answer.status_code == 200, answer.text
    for line in answer.json()["lines"]:
        hit = next(h for h in line["rule_hits"] if h["rule_id"] == "R1.recycled_image")
        assert hit["fired"] and hit["action"] == "flag" and "REC-1" in hit["reason"]
        assert hit["evidence"][0]["image_id"] == "pa-second" and "pa-first" in hit["evidence"][0]["description"]
        assert line["needs_review"]
    # Fingerprints are per tenant: another tenant's claim is never compared with this one's.
    other = Claim.model_validate({**second, "tenant": "other", "claim_id": "REC-3", "attachments": []})
    same_tenant = other.model_copy(update={"tenant": "demo"})
    printed = (ImagePrint("pa-x", "periapical", fingerprint(case.pixels_unit)),)
    with client.app.state.store.transaction() as session:
        assert repository.fingerprint_candidates(session, other, printed) == ()
        assert {c.claim_id for c in repository.fingerprint_candidates(session, same_tenant, printed)} == {"REC-1", "REC-2"}


def test_a_tenant_past_its_rate_is_refused_429_before_the_models_and_others_are_not(tmp_path, models, periapical) -> None:
    # Two radiographs at once, then one every 1,000 s: the third request waits.
    client, keys, store = _service(tmp_path, models, "limits.tenant_rate={images_per_s: 0.001, burst: 2}")
    try:
        headers = {"X-API-Key": keys[Role.ADJUDICATOR]}
        for claim_id in ("RATE-1", "RATE-2"):
            body = {**claim_json([periapical]), "claim_id": claim_id}
            assert client.post("/v1/claims:validate", json=body, headers=headers).status_code == 200
        refused = client.post("/v1/claims:validate", json={**claim_json([periapical]), "claim_id": "RATE-3"},
                              headers=headers)
        assert (refused.status_code, refused.json()["error"]["code"]) == (429, "rate.limited")
        assert 990 <= int(refused.headers["retry-after"]) <= 1000
        assert set(server_timing_ms(refused.headers["server-timing"])) == {"total"}  # no model ran
        analyze = client.post("/v1/images:analyze", headers=headers, json={"images": [
            {"image_id": "x", "content_base64": base64.b64encode(periapical[2]).decode()}]})
        assert analyze.status_code == 429
        # Another tenant's budget is its own.
        other = client.post("/v1/claims:validate", json=claim_json([periapical], tenant="other"),
                            headers={"X-API-Key": keys["other-tenant"]})
        assert other.status_code == 200, other.text
        with store.reading() as session:
            decided = repository.stored_decisions(session, [("demo", f"RATE-{n}", "claim") for n in (1, 2, 3)])
        assert set(decided) == {("demo", "RATE-1", "claim"), ("demo", "RATE-2", "claim")}  # the refused one left nothing
    finally:
        store.close()
