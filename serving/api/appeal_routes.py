"""Appeal endpoints (the adjudication system's key).

- ``POST /v1/decisions/{audit_id}/appeals``: appeal refused lines of a decision with new
  evidence (JSON: ``line_ids``, ``narrative``, ``attachments`` with base64 content,
  ``documents``); answered 201 with the appeal's decision.
- ``GET /v1/decisions/{audit_id}/appeals``: the appeals of a decision.
- ``GET /v1/appeals/{appeal_id}``: one appeal."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse

from models.detections import ImageReading
from models.radiographs import RadiographKind
from serving.api.openapi import errors
from serving.api.params import RowId
from serving.appeals import AppealDecision, AppealIn, AppealInputError, appeal, appeal_by_id, appeals_of
from serving.effective_tables import EffectiveTables
from serving.rules.recycled import ImagePrint
from serving.service_config import ServingConfig
from serving.store.api_keys import Permission, PrincipalOf
from serving.store.database import Store

ReadAll = Callable[[dict[str, bytes], dict[str, RadiographKind | None]], tuple[dict[str, ImageReading],
                                                                                tuple[ImagePrint, ...]]]


def add_appeal_routes(app: FastAPI, *, store: Store, config: ServingConfig, tables: EffectiveTables,
                      now: Callable[[], dt.datetime], principal: PrincipalOf, read_all: ReadAll,
                      decode_base64: Callable[[str, str], bytes], charge: Callable[[str, int], None],
                      in_turn: Callable[[Callable[[], Any]], Awaitable[Any]]) -> None:
    """``charge(tenant, radiographs)``: the tenant's rate limit (raises ``RateLimitedError``);
    ``in_turn(work)``: blocking work run with a turn at the models (``serving.api.turns``)."""

    @app.post("/v1/decisions/{audit_id}/appeals", status_code=201, response_model=AppealDecision,
              responses=errors(400, 401, 403, 404, 409, 413, 422, 429, 503))
    async def submit(audit_id: RowId, body: AppealIn, x_api_key: str | None = Header(None),
                     authorization: str | None = Header(None)) -> JSONResponse:
        who = principal(x_api_key, authorization, Permission.VALIDATE)
        if len(body.attachments) > config.limits.max_images:
            raise AppealInputError(f"{len(body.attachments)} radiographs; at most {config.limits.max_images} per appeal")
        charge(who.tenant, len(body.attachments))  # the radiographs it adds are read like a claim's
        files = {}
        for attachment in body.attachments:
            if not attachment.content:
                raise AppealInputError(f"attachment {attachment.radiograph_id}: no content (base64) given")
            files[attachment.radiograph_id] = decode_base64(attachment.radiograph_id, attachment.content)

        def decide() -> AppealDecision:
            readings, prints = read_all(files, {a.radiograph_id: a.kind for a in body.attachments})
            return appeal(store, tables.current(), who.tenant, audit_id, body, readings, files,
                          prints, actor=who.key_id, now=now(), webhooks=config.webhooks, review=config.review.priority)

        decided = await in_turn(decide)
        return JSONResponse(status_code=201, content=decided.model_dump(mode="json", exclude_none=True))

    @app.get("/v1/decisions/{audit_id}/appeals", responses=errors(401, 403, 404, 422, 503))
    def listed(audit_id: RowId, x_api_key: str | None = Header(None),
               authorization: str | None = Header(None)) -> dict[str, Any]:
        who = principal(x_api_key, authorization, Permission.READ_DECISIONS)
        return {"audit_id": audit_id, "appeals": appeals_of(store, who.tenant, audit_id)}

    @app.get("/v1/appeals/{appeal_id}", response_model=AppealDecision, responses=errors(401, 403, 404, 422, 503))
    def one(appeal_id: RowId, x_api_key: str | None = Header(None),
            authorization: str | None = Header(None)) -> JSONResponse:
        who = principal(x_api_key, authorization, Permission.READ_DECISIONS)
        return JSONResponse(appeal_by_id(store, who.tenant, appeal_id).model_dump(mode="json", exclude_none=True))
