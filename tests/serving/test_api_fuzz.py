"""Seeded random bad input against the in-process API: a valid claim (JSON, multipart and
FHIR) with fields replaced by odd values or removed, and radiographs with bytes flipped,
cut or inserted. Whatever the mutation, the answer is a decision or a 4xx with a code and
a message: never a 500. It found a date of service of 9999-12-31 and a DICOM element with
an unknown VR answered 500 (longer runs of the same idea over every route found ids past
2**63 - 1 and FHIR contained resources without a known resourceType); each has a test of
its own now."""

from __future__ import annotations

import base64
import copy
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from serving.store.api_keys import Role
from tests.serving.test_api import claim_json, fhir_claim, periapical, service  # noqa: F401  (fixtures)

ODD_VALUES: tuple[Any, ...] = (
    None, "", " ", "x" * 5000, -1, 0, 3.5, 1e308, 10**30, -(10**30), True, [], {}, [1, 2], {"a": 1}, "2026-13-45",
    "0000-01-01", "9999-12-31", "\u0000", "é", "😀", "D9999", "d0220", "UNIVERSAL", "51", "T", "Z", "99", "-5", "NaN",
    "Infinity", "MODBLF", "panoramic", "xray", "preauthorization", "null", "<script>",
)


def _paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from _paths(child, (*path, key))


def _mutated(document: dict, rng: random.Random, keep: str) -> dict:
    """``document`` with one to three values replaced or removed (never the field named
    ``keep``: the radiograph's base64, which has cases of its own)."""
    document = copy.deepcopy(document)
    for _ in range(rng.choice((1, 1, 2, 3))):
        paths = [p for p in _paths(document) if p and p[-1] != keep]
        path = rng.choice(paths)
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if rng.random() < 0.2:
            del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice(ODD_VALUES)
    return document


def _assert_answered(answer, what: str) -> None:
    assert answer.status_code < 500, (what, answer.status_code, answer.text[:300])
    if answer.status_code >= 400:
        error = answer.json()["error"]
        assert error["code"] and error["message"], what


@pytest.mark.parametrize("seed", [1, 2])
def test_mutated_claims_are_decided_or_refused_never_a_500(service, periapical, seed) -> None:  # noqa: F811
    client, keys = service
    rng = random.Random(seed)
    valid = claim_json([periapical])
    headers = {"X-API-Key": keys[Role.ADJUDICATOR]}
    for number in range(60):
        claim = _mutated(valid, rng, keep="content")
        if isinstance(claim, dict) and "claim_id" in claim:
            claim["claim_id"] = f"FUZZ-{seed}-{number}"
        text = json.dumps(claim)
        if rng.random() < 0.75:
            answer = client.post("/v1/claims:validate", content=text.encode("utf-8", "surrogatepass"),
                                 headers={**headers, "Content-Type": "application/json"})
        else:  # multipart: the claim as a part, the file as the part its radiograph id names
            answer = client.post("/v1/claims:validate", headers=headers,
                                 files={"claim": (None, text), periapical[0]: ("x.dcm", periapical[2], "application/dicom")})
        _assert_answered(answer, text[:300])
    assert client.get("/healthz").status_code == 200


def test_mutated_fhir_claims_are_answered_or_refused_never_a_500(service, periapical) -> None:  # noqa: F811
    client, keys = service
    rng = random.Random(3)
    for number in range(60):
        resource = _mutated(fhir_claim(periapical), rng, keep="data")
        resource["id"] = f"FUZZ-FHIR-{number}"
        text = json.dumps(resource)
        answer = client.post("/fhir/Claim", content=text.encode("utf-8", "surrogatepass"),
                             headers={"X-API-Key": keys[Role.ADJUDICATOR], "Content-Type": "application/json"})
        _assert_answered(answer, text[:300])


def test_damaged_radiographs_are_refused_with_an_image_error_never_a_500(service, periapical) -> None:  # noqa: F811
    client, keys = service
    rng = random.Random(4)
    refused = set()
    for _ in range(60):
        data = bytearray(periapical[2])
        match rng.randrange(4):
            case 0:  # bytes changed in the header
                for _ in range(rng.randint(1, 20)):
                    data[rng.randrange(2000)] = rng.randrange(256)
            case 1:
                data = data[: rng.randrange(len(data))]
            case 2:
                position = rng.randrange(1500)
                data[position:position] = rng.randbytes(rng.randint(1, 64))
            case _:
                position = rng.randrange(1500)
                del data[position:position + rng.randint(1, 64)]
        body = {"images": [{"image_id": "damaged", "kind": "periapical", "content_base64": base64.b64encode(data).decode()}]}
        answer = client.post("/v1/images:analyze", json=body, headers={"X-API-Key": keys[Role.ADJUDICATOR]})
        _assert_answered(answer, f"{len(data)} bytes")
        if answer.status_code >= 400:
            refused.add(answer.json()["error"]["code"])
    assert refused and all(code.startswith("image.") for code in refused), refused


ODD_IDS: tuple[Any, ...] = (0, -1, 2**63, 10**30, "abc", "1.5", "%00", "1e3", "..%2F..%2Fetc")


def test_odd_ids_and_bodies_on_every_route_are_answered_or_refused_never_a_500(service, periapical) -> None:  # noqa: F811
    """Decisions, appeals, review cases, images, documents, dispositions and promotions with
    ids that are no record (huge, negative, not numbers, paths) and bodies with odd values,
    under every role's key and none."""
    client, keys = service
    flagged = claim_json([periapical])
    flagged["lines"] = [{"line_id": "1", "code": "D3330", "tooth": "14", "tooth_system": "FDI", "fee": 1100},
                        {"line_id": "2", "code": "D7210", "tooth": "14", "tooth_system": "FDI", "fee": 300}]
    made = client.post("/v1/claims:validate", json=flagged, headers={"X-API-Key": keys[Role.ADJUDICATOR]})
    assert made.status_code == 200, made.text
    real = [made.json()["audit_id"], *[i["item_id"] for i in client.get(
        "/v1/reviews", headers={"X-API-Key": keys[Role.REVIEWER]}).json()["items"]]]
    assert len(real) > 1  # a flagged line is queued: the item routes see a real record too
    rng = random.Random(5)
    callers = [{"X-API-Key": keys[role]} for role in Role] + [{}, {"X-API-Key": "dxv_notakey01_" + "s" * 40}]
    disposition = {"outcome": "confirm", "reason": "fuzzed reason"}
    appeal = {"line_ids": ["1"], "narrative": "flap raised, bone removed"}
    for _ in range(120):
        a, b = rng.choice((*ODD_IDS, *real)), rng.choice((*ODD_IDS, *real))
        headers = rng.choice(callers)
        match rng.randrange(6):
            case 0:
                answer = client.get(rng.choice((f"/v1/decisions/{a}", f"/v1/decisions/{a}/appeals", f"/v1/appeals/{a}",
                                                 f"/v1/reviews/{a}", f"/v1/reviews/{a}/documents/{b}")), headers=headers)
            case 1:
                answer = client.get(f"/v1/reviews/{a}/images/{rng.choice(('x', periapical[0], '..', 'a' * 300))}",
                                    headers=headers)
            case 2:
                params = {k: rng.choice(ODD_VALUES) for k in rng.sample(("status", "limit", "offset"), rng.randint(1, 3))}
                answer = client.get("/v1/reviews", params={k: json.dumps(v) for k, v in params.items()}, headers=headers)
            case 3:
                answer = client.post(f"/v1/reviews/{a}/disposition", json=_mutated(disposition, rng, keep=""),
                                     headers=headers)
            case 4:
                answer = client.post(f"/v1/decisions/{a}/appeals", json=_mutated(appeal, rng, keep=""), headers=headers)
            case _:
                answer = client.post(f"/v1/admin/thresholds/{rng.choice(('1', 'x', '..', '9' * 40))}/promote",
                                     json=rng.choice(({}, {"reason": "x"}, [1])), headers=headers)
        _assert_answered(answer, f"{answer.request.method} {answer.request.url}")
