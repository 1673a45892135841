"""Administration endpoints (admin key): the thresholds versions.

- ``GET /v1/admin/thresholds``: the thresholds versions, which is in effect, proposals.
- ``POST /v1/admin/thresholds/{version}/promote``: put a version in effect (every replica
  picks it up within the refresh interval; promoting an older version rolls back)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Header

from serving.api.openapi import errors
from serving.effective_tables import EffectiveTables
from serving.store import table_versions
from serving.store.api_keys import Permission, PrincipalOf
from serving.store.database import Store


def add_admin_routes(app: FastAPI, *, store: Store, tables: EffectiveTables, now: Callable[[], dt.datetime],
                     principal: PrincipalOf) -> None:

    @app.get("/v1/admin/thresholds", responses=errors(401, 403, 503))
    def thresholds(x_api_key: str | None = Header(None), authorization: str | None = Header(None)) -> dict[str, Any]:
        principal(x_api_key, authorization, Permission.ADMINISTER)
        with store.reading() as session:
            versions = table_versions.list_versions(session)
        return {"in_effect": tables.refresh(force=True).validation.thresholds.version, "versions": versions}

    @app.post("/v1/admin/thresholds/{version}/promote", responses=errors(401, 403, 404, 409, 503))
    def promote(version: str, x_api_key: str | None = Header(None),
                authorization: str | None = Header(None)) -> dict[str, Any]:
        who = principal(x_api_key, authorization, Permission.ADMINISTER)
        with store.transaction() as session:
            promoted = table_versions.promote(session, table_versions.THRESHOLDS, version, who.key_id, now())
        tables.refresh(force=True)
        return promoted
