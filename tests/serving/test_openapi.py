"""The published OpenAPI document says what the service does: a valid OpenAPI 3.1 document
(openapi-spec-validator), every refusal in the service's error shape (never FastAPI's
``{"detail": ...}``), the claim bodies the handlers read themselves, the key schemes; and
the service's real refusals match the documented shape."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from serving.api.openapi import ErrorResponse
from serving.store.api_keys import Role

from .test_api import claim_json, service  # noqa: F401  (the fixture)


@pytest.fixture
def spec(service):  # noqa: F811
    client, _ = service
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    return answer.json()


def _operations(spec):
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def test_the_document_is_valid_openapi(spec) -> None:
    validate(spec)


def test_every_refusal_is_documented_in_the_service_error_shape(spec) -> None:
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, method, operation in _operations(spec):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")) and path != "/readyz":
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, method, status)
        if path.startswith(("/v1/", "/fhir/")):
            assert operation["security"] == [{"ApiKey": []}, {"Bearer": []}], path
            assert {"401", "403", "500"} <= set(operation["responses"]), (path, method)
    validate_claims = spec["paths"]["/v1/claims:validate"]["post"]
    assert {"400", "409", "413", "422", "429", "503"} <= set(validate_claims["responses"])
    assert "Retry-After" in validate_claims["responses"]["429"]["headers"]
    assert "Server-Timing" in validate_claims["responses"]["200"]["headers"]


def test_the_claim_bodies_the_handlers_read_are_published(spec) -> None:
    content = spec["paths"]["/v1/claims:validate"]["post"]["requestBody"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Claim"}
    assert content["multipart/form-data"]["schema"]["required"] == ["claim"]
    claim = spec["components"]["schemas"]["Claim"]
    assert {"claim_id", "member", "provider", "date_of_service", "lines"} <= set(claim["required"])
    referenced = {ref.rsplit("/", 1)[1] for ref in _refs(claim)}
    assert referenced and referenced <= set(spec["components"]["schemas"])  # every part of a Claim is there
    assert "application/fhir+json" in spec["paths"]["/fhir/Claim"]["post"]["requestBody"]["content"]


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


@pytest.mark.parametrize("request_kind", ["bad-json", "bad-param", "no-key", "wrong-role", "not-found"])
def test_real_refusals_have_the_documented_shape(service, request_kind) -> None:  # noqa: F811
    client, keys = service
    adjudicator = {"X-API-Key": keys[Role.ADJUDICATOR]}
    answer = {
        "bad-json": lambda: client.post("/v1/claims:validate", content=b"{", headers=adjudicator),
        "bad-param": lambda: client.get("/v1/reviews?limit=0", headers={"X-API-Key": keys[Role.REVIEWER]}),
        "no-key": lambda: client.post("/v1/claims:validate", json=claim_json([])),
        "wrong-role": lambda: client.get("/v1/reviews", headers=adjudicator),
        "not-found": lambda: client.get("/v1/decisions/999", headers=adjudicator),
    }[request_kind]()
    assert answer.status_code in (400, 401, 403, 404, 422)
    ErrorResponse.model_validate(answer.json())
