"""API keys with roles and tenant scoping.

A key reads ``dxv_<key id>_<secret>``; it is shown once, when created. The store keeps the
key id, the tenant, the role and the SHA-256 of the secret; a presented key is checked in
constant time. Roles: an adjudicator validates claims and reads decisions, a reviewer
works the review queue, an admin manages models and configuration (and may do the rest).
A key only ever sees its own tenant's data.

A key may be made to expire; ``rotate`` gives a key's holder a new key of the same tenant,
role and label and lets the old one expire after an overlap, so that a calling system
switches keys without a moment with none."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from models.errors import DxvError
from serving.store.schema import ApiKeyRow


class Role(StrEnum):
    ADJUDICATOR = "adjudicator"
    REVIEWER = "reviewer"
    ADMIN = "admin"


class Permission(StrEnum):
    VALIDATE = "validate"
    READ_DECISIONS = "read_decisions"
    REVIEW = "review"
    ADMINISTER = "administer"


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.ADJUDICATOR: frozenset({Permission.VALIDATE, Permission.READ_DECISIONS}),
    Role.REVIEWER: frozenset({Permission.REVIEW, Permission.READ_DECISIONS}),
    Role.ADMIN: frozenset(Permission),
}


class AuthError(DxvError):
    """No key, a malformed key, an unknown or revoked key (HTTP 401)."""

    code = "auth.invalid_key"


class ForbiddenError(DxvError):
    """A valid key whose role does not allow the action (HTTP 403)."""

    code = "auth.forbidden"


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str
    role: Role

    def require(self, permission: Permission) -> None:
        if permission not in GRANTS[self.role]:
            raise ForbiddenError(f"a {self.role.value} key may not {permission.value.replace('_', ' ')}")


# What the API's routes are given to check a request's key: (X-API-Key, Authorization, permission) -> who.
PrincipalOf = Callable[[str | None, str | None, Permission], Principal]


_TOKEN = re.compile(r"^dxv_([A-Za-z0-9]{8,32})_([A-Za-z0-9_-]{20,128})$")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def create_key(session: Session, *, tenant: str, role: Role, label: str, now: dt.datetime,
               expires_at: dt.datetime | None = None) -> tuple[str, str]:
    """A new key: (key id, the full key to hand over once); valid until ``expires_at``
    (None: until revoked)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    session.add(ApiKeyRow(key_id=key_id, tenant=tenant, role=role.value, label=label, secret_sha256=_digest(secret),
                          created_at=now, expires_at=expires_at))
    session.flush()
    return key_id, f"dxv_{key_id}_{secret}"


class KeyNotActiveError(DxvError):
    code = "auth.key_not_active"


def rotate(session: Session, key_id: str, now: dt.datetime, overlap: dt.timedelta) -> tuple[str, str]:
    """A new secret for the holder of ``key_id``: a new key of the same tenant, role, label
    and end (a key made to expire still does, at the same time); the old key expires after
    ``overlap`` (sooner where it was to end sooner). Returns the new key as ``create_key``."""
    row = session.get(ApiKeyRow, key_id, with_for_update=True)
    if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        raise KeyNotActiveError(f"key {key_id}: no such active key")
    new = create_key(session, tenant=row.tenant, role=Role(row.role), label=row.label, now=now, expires_at=row.expires_at)
    row.expires_at = min(now + overlap, row.expires_at or now + overlap)
    return new


# Every request checks its key: one statement built once, read as a plain row (the ORM's
# identity map and object loading took most of the check's millisecond).
_KEY_BY_ID = select(ApiKeyRow.key_id, ApiKeyRow.tenant, ApiKeyRow.role, ApiKeyRow.secret_sha256, ApiKeyRow.revoked_at,
                    ApiKeyRow.expires_at).where(ApiKeyRow.key_id == bindparam("key_id"))


def _parts(token: str | None) -> tuple[str, str] | None:
    """(key id, secret) of a token of the form dxv_<id>_<secret>, else None."""
    match = _TOKEN.match(token.strip()) if token else None
    return (match.group(1), match.group(2)) if match else None


def presented_key_id(token: str | None) -> str | None:
    """The key id part of a token as presented (for the access log of a refused request);
    None when it is not of the form dxv_<id>_<secret>. Never the secret."""
    parts = _parts(token)
    return parts[0] if parts else None


def authenticate(session: Session, token: str | None, now: dt.datetime) -> Principal:
    if not token:
        raise AuthError("an API key is required (header 'X-API-Key' or 'Authorization: Bearer <key>')")
    parts = _parts(token)
    if parts is None:
        raise AuthError("the API key is malformed (expected dxv_<id>_<secret>)")
    key_id, secret = parts
    row = session.connection().execute(_KEY_BY_ID, {"key_id": key_id}).first()
    # Compare against a dummy digest when the id is unknown, so timing does not reveal ids.
    expected = row.secret_sha256 if row is not None else _digest("x" * 43)
    if not hmac.compare_digest(expected, _digest(secret)) or row is None:
        raise AuthError("the API key is not valid")
    if row.revoked_at is not None:
        raise AuthError("the API key has been revoked")
    if row.expires_at is not None and now >= row.expires_at:
        raise AuthError(f"the API key expired at {row.expires_at.isoformat(timespec='seconds')} UTC")
    return Principal(key_id=row.key_id, tenant=row.tenant, role=Role(row.role))


def revoke(session: Session, key_id: str, now: dt.datetime) -> bool:
    row = session.get(ApiKeyRow, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = now
    return True


def list_keys(session: Session, tenant: str | None = None) -> list[ApiKeyRow]:
    query = select(ApiKeyRow).order_by(ApiKeyRow.created_at)
    if tenant is not None:
        query = query.where(ApiKeyRow.tenant == tenant)
    return list(session.execute(query).scalars())
