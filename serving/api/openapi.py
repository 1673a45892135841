"""The published OpenAPI document (``/openapi.json``, ``/docs``) as the service behaves: the
error shape every refusal has (``{"error": {"code", "message"}}``, not FastAPI's default
``{"detail": ...}``), each route's refusals by status, the claim request bodies the
handlers read themselves (JSON or multipart; FHIR), the API key schemes, and the headers
integrators rely on (``Retry-After``, ``Server-Timing``, ``Idempotency-Key``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from serving.claims import Claim


class ErrorDetail(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str = Field(description="machine-readable, e.g. request.invalid, image.truncated, auth.invalid_key, "
                                  "rate.limited, store.unavailable")
    message: str = Field(description="what was wrong, for a person; never a secret or a member identifier")


class ErrorResponse(BaseModel):
    """Every refusal and failure: 4xx for the request, 503 to retry, 500 with an incident id."""

    model_config = ConfigDict(frozen=True)

    error: ErrorDetail


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_WHY = {
    400: "bad input: malformed JSON, base64 or claim; a file that is not a readable radiograph; an unsupported "
         "modality",
    401: "no API key, an unknown one, or one that ended",
    403: "the key's role may not do this, or the claim names another tenant",
    404: "no such record for this key's tenant",
    409: "a conflict with what is stored (an Idempotency-Key reused for another request; a case already closed)",
    413: "the request is too large, or has too many images",
    422: "a parameter or body field out of its range or of the wrong type",
    429: "the tenant has sent more radiographs than its rate allows just now",
    500: "a defect: the message carries an incident id to quote",
    503: "the models or the state store cannot take the request just now",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that may refuse with these statuses (500 always)."""
    return {status: {"model": ErrorResponse, "description": _WHY[status],
                     **({"headers": _RETRY_AFTER} if status in (429, 503) else {})}
            for status in sorted({*statuses, 500})}


# The claim body the handler reads itself: JSON (the radiographs as base64) or multipart.
CLAIM_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/Claim"}},
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["claim"],
        "properties": {"claim": {"type": "string", "description": "the Claim as JSON, attachments without content"}},
        "additionalProperties": {"type": "string", "format": "binary",
                                 "description": "one file (DICOM, PNG or JPEG) per attachment, named by its "
                                                "radiograph_id"}}},
}}}
FHIR_CLAIM_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/fhir+json": {"schema": {"type": "object", "description": "a FHIR R4 Claim resource "
                                                                          "(https://hl7.org/fhir/R4/claim.html)"}},
    "application/json": {"schema": {"type": "object", "description": "the same, sent as application/json"}},
}}}

FHIR_CLAIM_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "a FHIR R4 ClaimResponse", "content": {"application/fhir+json": {"schema": {"type": "object"}}}}}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` publish the additions above (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = published(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def published(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (Claim, ErrorResponse):  # the claim body is read by its handler, not declared
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, part in {**schema.pop("$defs", {}), model.__name__: schema}.items():
            schemas.setdefault(name, part)
    # FastAPI documents a body of its own for the 422 of any route with parameters; the
    # service answers those in its error shape.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    spec["components"]["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {"type": "http", "scheme": "bearer", "description": "the same key as a bearer token"}}
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            if path.startswith(("/v1/", "/fhir/")):
                operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
            responses = operation.get("responses", {})
            if "HTTPValidationError" in str(responses.get("422", "")):
                responses["422"] = {"description": _WHY[422], "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
            for response in responses.values():
                response.setdefault("headers", {})["Server-Timing"] = _SERVER_TIMING
    return spec


_SERVER_TIMING = {"description": "this request's stages in milliseconds (queue: the wait for a turn at the models, "
                                 "decode, models, model_transport, adjudication, total)", "schema": {"type": "string"}}
