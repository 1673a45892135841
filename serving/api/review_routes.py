"""Reviewer endpoints (reviewer role, the key's tenant only) and the review workbench page.

- ``GET /v1/reviews?status=open|closed&limit=&offset=``: the queue, highest priority first.
- ``GET /v1/reviews/{item_id}``: the case: the queued line, the claim, its decision, the
  readings of each radiograph, the claim's other queued lines, past dispositions.
- ``GET /v1/reviews/{item_id}/images/{radiograph_id}``: the radiograph as an 8-bit PNG for
  display (boxes in the readings are in this image's pixels).
- ``GET /v1/reviews/{item_id}/documents/{document_id}``: a document sent with the appeal a
  referred item belongs to (always a download).
- ``POST /v1/reviews/{item_id}/disposition``: confirm, override to pass or change, with a
  reason and optional finding corrections; answered 201 with the recorded disposition.
- ``GET /review``: the workbench page (static; it calls the endpoints above with the key
  the reviewer enters)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, Query
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from datasets.preview import png_8bit
from datasets.radiograph import ReaderLimits
from datasets.readers import read_radiograph
from serving.api.openapi import errors
from serving.api.params import STORE_INT_MAX, RowId
from serving.review.dispositions import DispositionIn
from serving.service_config import ServingConfig
from serving.store import reviews
from serving.store.api_keys import Permission, PrincipalOf
from serving.store.database import Store

STATIC = Path(__file__).parent / "static"


def add_review_routes(app: FastAPI, *, store: Store, config: ServingConfig, now: Callable[[], dt.datetime],
                      principal: PrincipalOf, limits: ReaderLimits) -> None:
    weights = config.review.priority

    @app.get("/v1/reviews", responses=errors(401, 403, 422, 503))
    def queue(status: str = Query("open", pattern="^(open|closed)$"), limit: int = Query(50, ge=1, le=500),
              offset: int = Query(0, ge=0, le=STORE_INT_MAX), x_api_key: str | None = Header(None),
              authorization: str | None = Header(None)) -> dict[str, Any]:
        who = principal(x_api_key, authorization, Permission.REVIEW)
        with store.reading() as session:
            return reviews.list_queue(session, who.tenant, now(), weights, status=status, limit=limit, offset=offset)

    @app.get("/v1/reviews/{item_id}", responses=errors(401, 403, 404, 422, 503))
    def case(item_id: RowId, x_api_key: str | None = Header(None),
             authorization: str | None = Header(None)) -> dict[str, Any]:
        who = principal(x_api_key, authorization, Permission.REVIEW)
        with store.reading() as session:
            return reviews.case_detail(session, who.tenant, item_id, now(), weights)

    @app.get("/v1/reviews/{item_id}/images/{radiograph_id}", responses=errors(401, 403, 404, 422, 503))
    async def image(item_id: RowId, radiograph_id: str, x_api_key: str | None = Header(None),
                    authorization: str | None = Header(None)) -> Response:
        who = principal(x_api_key, authorization, Permission.REVIEW)

        def render() -> bytes:
            with store.reading() as session:
                item = reviews.case_item(session, who.tenant, item_id)
                _, data = reviews.claim_image(session, who.tenant, item.audit_seq, radiograph_id)
            return png_8bit(read_radiograph(data, limits=limits).pixels_unit)

        return Response(content=await run_in_threadpool(render), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/v1/reviews/{item_id}/documents/{document_id}", responses=errors(401, 403, 404, 422, 503))
    def document(item_id: RowId, document_id: RowId, x_api_key: str | None = Header(None),
                 authorization: str | None = Header(None)) -> Response:
        who = principal(x_api_key, authorization, Permission.REVIEW)
        with store.reading() as session:
            name, media_type, content = reviews.appeal_document(session, who.tenant, item_id, document_id)
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:100] or "document"
        # Always a download, never rendered in the page's origin: the file is the provider's, not ours.
        return Response(content=content, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{safe}"',
                                 "X-Content-Type-Options": "nosniff", "X-Declared-Media-Type": media_type[:100]})

    @app.post("/v1/reviews/{item_id}/disposition", status_code=201, responses=errors(401, 403, 404, 409, 413, 422, 503))
    def dispose(item_id: RowId, body: DispositionIn, x_api_key: str | None = Header(None),
                authorization: str | None = Header(None)) -> JSONResponse:
        who = principal(x_api_key, authorization, Permission.REVIEW)
        with store.transaction() as session:
            recorded = reviews.record_disposition(session, who.tenant, item_id, who.key_id, body, now(),
                                                  webhooks=config.webhooks)
        return JSONResponse(status_code=201, content=recorded)

    @app.get("/review", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "review.html", media_type="text/html")

    @app.get("/review/{asset}", include_in_schema=False)
    def asset(asset: str) -> FileResponse:
        files = {"review.js": "text/javascript", "review.css": "text/css"}
        if asset not in files:
            raise reviews.ReviewNotFoundError(f"no asset {asset!r}")
        return FileResponse(STATIC / asset, media_type=files[asset])
