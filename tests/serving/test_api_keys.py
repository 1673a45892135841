"""API keys: hashed at rest, roles, tenant, revocation, bad keys refused."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from serving.store.api_keys import AuthError, ForbiddenError, Permission, Role, authenticate, create_key, revoke
from serving.store.database import Store
from serving.store.schema import ApiKeyRow

NOW = dt.datetime(2026, 5, 1, 9, 0)


@pytest.fixture
def store(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'keys.db'}")
    yield s
    s.close()


def test_a_key_authenticates_to_its_tenant_and_role_and_is_stored_hashed(store) -> None:
    with store.transaction() as session:
        key_id, token = create_key(session, tenant="acme", role=Role.ADJUDICATOR, label="claims system", now=NOW)
    with store.transaction() as session:
        principal = authenticate(session, token)
        stored = session.execute(select(ApiKeyRow)).scalar_one()
    assert (principal.key_id, principal.tenant, principal.role) == (key_id, "acme", Role.ADJUDICATOR)
    secret = token.split("_", 2)[2]
    assert secret not in stored.secret_sha256 and len(stored.secret_sha256) == 64


@pytest.mark.parametrize("token", [None, "", "Bearer x", "dxv_short_x", "dxv_0123456789abcdef_" + "A" * 43])
def test_missing_malformed_and_unknown_keys_are_refused(store, token) -> None:
    with store.transaction() as session, pytest.raises(AuthError):
        authenticate(session, token)


def test_a_wrong_secret_and_a_revoked_key_are_refused(store) -> None:
    with store.transaction() as session:
        key_id, token = create_key(session, tenant="acme", role=Role.REVIEWER, label="", now=NOW)
    with store.transaction() as session, pytest.raises(AuthError, match="not valid"):
        authenticate(session, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    with store.transaction() as session:
        assert revoke(session, key_id, NOW)
    with store.transaction() as session, pytest.raises(AuthError, match="revoked"):
        authenticate(session, token)


def test_roles_grant_what_they_should() -> None:
    from serving.store.api_keys import Principal

    adjudicator = Principal("k1", "acme", Role.ADJUDICATOR)
    adjudicator.require(Permission.VALIDATE)
    adjudicator.require(Permission.READ_DECISIONS)
    with pytest.raises(ForbiddenError, match="may not review"):
        adjudicator.require(Permission.REVIEW)
    reviewer = Principal("k2", "acme", Role.REVIEWER)
    reviewer.require(Permission.REVIEW)
    with pytest.raises(ForbiddenError):
        reviewer.require(Permission.VALIDATE)
    with pytest.raises(ForbiddenError):
        reviewer.require(Permission.ADMINISTER)
    for permission in Permission:
        Principal("k3", "acme", Role.ADMIN).require(permission)


def test_keys_cli_creates_lists_and_revokes(tmp_path, capsys) -> None:
    from serving.cli import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["keys", "create", "--tenant", "acme", "--role", "admin", "--url", url]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    key_id = token.split("_")[1]
    assert main(["keys", "list", "--url", url]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and token.split("_", 2)[2] not in listed
    assert main(["keys", "revoke", key_id, "--url", url]) == 0
    assert main(["keys", "revoke", key_id, "--url", url]) == 2
