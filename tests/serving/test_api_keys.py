"""API keys: hashed at rest, roles, tenant, revocation, bad keys refused."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from serving.store.api_keys import (
    AuthError,
    ForbiddenError,
    KeyNotActiveError,
    Permission,
    Role,
    authenticate,
    create_key,
    revoke,
    rotate,
)
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
        principal = authenticate(session, token, NOW)
        stored = session.execute(select(ApiKeyRow)).scalar_one()
    assert (principal.key_id, principal.tenant, principal.role) == (key_id, "acme", Role.ADJUDICATOR)
    secret = token.split("_", 2)[2]
    assert secret not in stored.secret_sha256 and len(stored.secret_sha256) == 64


@pytest.mark.parametrize("token", [None, "", "Bearer x", "dxv_short_x", "dxv_0123456789abcdef_" + "A" * 43])
def test_missing_malformed_and_unknown_keys_are_refused(store, token) -> None:
    with store.transaction() as session, pytest.raises(AuthError):
        authenticate(session, token, NOW)


def test_a_wrong_secret_and_a_revoked_key_are_refused(store) -> None:
    with store.transaction() as session:
        key_id, token = create_key(session, tenant="acme", role=Role.REVIEWER, label="", now=NOW)
    with store.transaction() as session, pytest.raises(AuthError, match="not valid"):
        authenticate(session, token[:-2] + ("AA" if not token.endswith("AA") else "BB"), NOW)
    with store.transaction() as session:
        assert revoke(session, key_id, NOW)
    with store.transaction() as session, pytest.raises(AuthError, match="revoked"):
        authenticate(session, token, NOW)


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


def test_a_key_made_to_expire_works_until_then_and_is_refused_from_then_on(store) -> None:
    with store.transaction() as session:
        _, token = create_key(session, tenant="acme", role=Role.ADJUDICATOR, label="", now=NOW,
                              expires_at=NOW + dt.timedelta(days=30))
    with store.reading() as session:
        assert authenticate(session, token, NOW + dt.timedelta(days=30, seconds=-1)).tenant == "acme"
        for later in (dt.timedelta(days=30), dt.timedelta(days=31)):
            with pytest.raises(AuthError, match="expired at 2026-05-31T09:00:00"):
                authenticate(session, token, NOW + later)


def test_rotation_gives_a_new_key_and_the_old_one_works_for_the_overlap_only(store) -> None:
    with store.transaction() as session:
        old_id, old = create_key(session, tenant="acme", role=Role.REVIEWER, label="workbench", now=NOW)
    with store.transaction() as session:
        new_id, new = rotate(session, old_id, NOW, dt.timedelta(hours=24))
    assert new_id != old_id
    within, after = NOW + dt.timedelta(hours=23), NOW + dt.timedelta(hours=24)
    with store.reading() as session:
        for token in (old, new):  # both work during the overlap, with the same tenant and role
            who = authenticate(session, token, within)
            assert (who.tenant, who.role) == ("acme", Role.REVIEWER)
        with pytest.raises(AuthError, match="expired"):
            authenticate(session, old, after)
        assert authenticate(session, new, NOW + dt.timedelta(days=3650)).key_id == new_id  # no end of its own
        labels = session.execute(select(ApiKeyRow.key_id, ApiKeyRow.label)).all()
    assert sorted(labels) == sorted([(old_id, "workbench"), (new_id, "workbench")])
    with store.transaction() as session, pytest.raises(KeyNotActiveError):
        rotate(session, old_id, after, dt.timedelta(hours=1))  # expired: nothing to rotate
    with store.transaction() as session:
        assert revoke(session, new_id, after)
    with store.transaction() as session, pytest.raises(KeyNotActiveError):
        rotate(session, new_id, after, dt.timedelta(hours=1))


def test_rotating_a_key_made_to_expire_keeps_its_end_and_a_short_overlap_ends_sooner(store) -> None:
    end = NOW + dt.timedelta(days=10)
    with store.transaction() as session:
        old_id, _ = create_key(session, tenant="acme", role=Role.ADMIN, label="", now=NOW, expires_at=end)
        new_id, _ = rotate(session, old_id, NOW, dt.timedelta(days=30))  # the overlap reaches past the key's end
    with store.reading() as session:
        ends = dict(session.execute(select(ApiKeyRow.key_id, ApiKeyRow.expires_at)).all())
    assert ends == {old_id: end, new_id: end}


def test_keys_cli_creates_with_an_end_and_rotates(tmp_path, capsys) -> None:
    from serving.cli import main

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["keys", "create", "--tenant", "acme", "--role", "adjudicator", "--expires-in-days", "90", "--url", url]) == 0
    out = capsys.readouterr().out
    old = out.strip().splitlines()[-1]
    assert "valid until" in out
    assert main(["keys", "rotate", old.split("_")[1], "--overlap-hours", "2", "--url", url]) == 0
    new = capsys.readouterr().out.strip().splitlines()[-1]
    assert new.startswith("dxv_") and new != old
    store = Store.open(url)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with store.reading() as session:
        assert authenticate(session, old, now).tenant == authenticate(session, new, now).tenant == "acme"
        with pytest.raises(AuthError, match="expired"):
            authenticate(session, old, now + dt.timedelta(hours=2, minutes=1))
        assert authenticate(session, new, now + dt.timedelta(days=89)).role == Role.ADJUDICATOR
    store.close()
    assert main(["keys", "rotate", "0000000000000000", "--url", url]) == 2  # no such key: a clear refusal
    assert "auth.key_not_active" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["keys", "rotate", old.split("_")[1], "--overlap-hours", "-1", "--url", url])
