"""Versioned rule tables in the store.

Every table version the service decides with is kept as validated (canonical JSON), so a
decision can be re-run later with the versions it cites (appeals), and the version string
stays honest: the same name and version with other content is refused. Thresholds also
have proposed versions (``dxv calibrate``) that take effect only when an admin promotes
them; the effective thresholds are the version promoted last (a version first seen in the
config file counts as promoted when first registered, so a release takes effect on its
own and a rollback is promoting an older version again)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any, cast

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving.catalogue import Catalogue
from serving.evidence_matrix import EvidenceMatrix, Thresholds
from serving.rules.tables import BundleLibrary, FrequencyTable
from serving.store import audit
from serving.store.database import StoreError
from serving.store.schema import TableVersionRow

# The versioned tables by the name a decision's ``versions`` uses for them.
TABLE_MODELS: dict[str, type[BaseModel]] = {
    "catalogue": Catalogue, "evidence_matrix": EvidenceMatrix, "thresholds": Thresholds,
    "frequency_table": FrequencyTable, "bundle_library": BundleLibrary,
}
THRESHOLDS = "thresholds"


class TableVersionConflictError(StoreError):
    code = "tables.version_conflict"


class TableVersionNotFoundError(StoreError):
    code = "tables.version_not_found"


def version_of(table: BaseModel) -> str:
    return str(getattr(table, "version", ""))


def table_body(table: BaseModel) -> str:
    return audit.canonical_json(table.model_dump(mode="json", by_alias=True))


def _sha(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def register_tables(session: Session, tables: Mapping[str, BaseModel], now: dt.datetime) -> list[str]:
    """Keep each table version not seen before (promoted at once: it came with a release).
    Returns the ``name@version`` of those added; refuses a known version whose content
    changed (the file was edited without a new version)."""
    known = {(r.name, r.version): r.sha256 for r in session.execute(
        select(TableVersionRow).where(TableVersionRow.name.in_(list(tables)))).scalars()}
    added = []
    for name, table in tables.items():
        version = version_of(table)
        body = table_body(table)
        sha = _sha(body)
        if (name, version) in known:
            if known[(name, version)] != sha:
                raise TableVersionConflictError(
                    f"{name} version {version} is stored with other content: give the edited table a new version")
            continue
        session.add(TableVersionRow(name=name, version=version, body=body, sha256=sha, source="file", note="",
                                    created_at=now, created_by="release", promoted_at=now, promoted_by="release"))
        added.append(f"{name}@{version}")
    session.flush()
    return added


def load_table(session: Session, name: str, version: str) -> BaseModel:
    row = session.execute(select(TableVersionRow).where(TableVersionRow.name == name,
                                                        TableVersionRow.version == version)).scalar_one_or_none()
    if row is None:
        raise TableVersionNotFoundError(f"{name} version {version} is not stored")
    if _sha(row.body) != row.sha256:
        raise TableVersionConflictError(f"{name} version {version}: the stored table does not match its hash")
    return TABLE_MODELS[name].model_validate(json.loads(row.body))


def load_thresholds_version(session: Session, version: str) -> Thresholds:
    return cast(Thresholds, load_table(session, THRESHOLDS, version))


def effective_thresholds_version(session: Session) -> str | None:
    return session.execute(select(TableVersionRow.version).where(TableVersionRow.name == THRESHOLDS,
                                                                 TableVersionRow.promoted_at.is_not(None))
                            .order_by(TableVersionRow.promoted_at.desc(), TableVersionRow.id.desc()).limit(1)
                            ).scalar_one_or_none()


def propose_thresholds(session: Session, thresholds: Thresholds, note: Mapping[str, Any], actor: str,
                       now: dt.datetime) -> dict[str, Any]:
    """Store a proposed thresholds version (not in effect until promoted)."""
    exists = session.execute(select(TableVersionRow.id).where(TableVersionRow.name == THRESHOLDS,
                                                              TableVersionRow.version == thresholds.version)).first()
    if exists:
        raise TableVersionConflictError(f"thresholds version {thresholds.version} already exists")
    body = table_body(thresholds)
    row = TableVersionRow(name=THRESHOLDS, version=thresholds.version, body=body, sha256=_sha(body), source="calibration",
                          note=audit.canonical_json(dict(note)), created_at=now, created_by=actor)
    session.add(row)
    session.flush()
    return version_json(row)


def promote(session: Session, name: str, version: str, actor: str, now: dt.datetime) -> dict[str, Any]:
    """Make a stored version the effective one, with an audit record (kind ``config``)."""
    if name != THRESHOLDS:
        raise TableVersionNotFoundError(f"only thresholds are promoted here; {name} comes with a release")
    row = session.execute(select(TableVersionRow).where(TableVersionRow.name == name, TableVersionRow.version == version)
                          .with_for_update()).scalar_one_or_none()
    if row is None:
        raise TableVersionNotFoundError(f"{name} version {version} is not stored")
    before = effective_thresholds_version(session)
    latest = session.execute(select(func.max(TableVersionRow.promoted_at)).where(TableVersionRow.name == name)).scalar()
    # The last promotion must sort first even when clocks tie or step back.
    row.promoted_at = max(now, latest + dt.timedelta(microseconds=1)) if latest else now
    row.promoted_by = actor
    payload = {"table": name, "version": version, "previous": before, "sha256": row.sha256}
    chain = audit.ChainWriter(session)
    chain.add(tenant="*", kind="config", subject=f"{name}@{version}", actor=actor, input_digest=row.sha256,
              versions={name: version}, payload=payload, created_at=now.isoformat())
    chain.flush()
    session.flush()
    return {**version_json(row), "previous": before}


def version_json(row: TableVersionRow) -> dict[str, Any]:
    return {"name": row.name, "version": row.version, "sha256": row.sha256, "source": row.source,
            "created_at": row.created_at.isoformat(), "created_by": row.created_by,
            "promoted_at": row.promoted_at.isoformat() if row.promoted_at else None, "promoted_by": row.promoted_by,
            "note": json.loads(row.note) if row.note else {}}


def list_versions(session: Session, name: str = THRESHOLDS) -> list[dict[str, Any]]:
    effective = effective_thresholds_version(session) if name == THRESHOLDS else None
    rows = session.execute(select(TableVersionRow).where(TableVersionRow.name == name)
                           .order_by(TableVersionRow.created_at, TableVersionRow.id)).scalars()
    return [{**version_json(r), "effective": r.version == effective} for r in rows]
