"""Versioned rule tables in the store: kept as validated, read back equal, a version string
that cannot hide an edit, a tampered copy refused, and thresholds promoted in order."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from serving.store import table_versions
from serving.store.schema import TableVersionRow
from tests.serving.conftest import NOW


def test_tables_are_kept_once_and_read_back_equal(seeded_store, rule_tables) -> None:
    with seeded_store.transaction() as session:
        added = table_versions.register_tables(session, rule_tables.parts(), NOW)
        assert sorted(a.split("@")[0] for a in added) == sorted(rule_tables.parts())
        assert table_versions.register_tables(session, rule_tables.parts(), NOW) == []
        for name, table in rule_tables.parts().items():
            assert table_versions.load_table(session, name, table_versions.version_of(table)) == table
        assert table_versions.effective_thresholds_version(session) == rule_tables.validation.thresholds.version


def test_an_edit_without_a_new_version_and_a_tampered_copy_are_refused(seeded_store, rule_tables) -> None:
    thresholds = rule_tables.validation.thresholds
    with seeded_store.transaction() as session:
        table_versions.register_tables(session, rule_tables.parts(), NOW)
    edited = thresholds.model_copy(update={"root_count": thresholds.root_count.model_copy(update={"support": 0.5})})
    conflict = table_versions.TableVersionConflictError
    with pytest.raises(conflict, match="give the edited table a new version"), seeded_store.transaction() as session:
        table_versions.register_tables(session, {"thresholds": edited}, NOW)
    with seeded_store.transaction() as session:
        session.execute(update(TableVersionRow).where(TableVersionRow.name == "bundle_library")
                        .values(body=TableVersionRow.body + " "))
    with pytest.raises(conflict, match="does not match its hash"), seeded_store.transaction() as session:
        table_versions.load_table(session, "bundle_library", rule_tables.bundles.version)
    with pytest.raises(table_versions.TableVersionNotFoundError), seeded_store.transaction() as session:
        table_versions.load_table(session, "catalogue", "1999.1")


def test_the_last_promotion_wins_even_when_clocks_tie(seeded_store, rule_tables) -> None:
    release = rule_tables.validation.thresholds
    with seeded_store.transaction() as session:
        table_versions.register_tables(session, rule_tables.parts(), NOW)
        for suffix in ("a", "b"):
            table_versions.propose_thresholds(session, release.model_copy(update={"version": f"{release.version}-{suffix}"}),
                                              {}, "cli", NOW)
        assert table_versions.effective_thresholds_version(session) == release.version  # proposals are not in effect
        with pytest.raises(table_versions.TableVersionConflictError):
            table_versions.propose_thresholds(session, release, {}, "cli", NOW)
    for version in (f"{release.version}-b", f"{release.version}-a", release.version):
        with seeded_store.transaction() as session:
            table_versions.promote(session, "thresholds", version, "admin", NOW - dt.timedelta(hours=1))  # a clock behind
            assert table_versions.effective_thresholds_version(session) == version
    with pytest.raises(table_versions.TableVersionNotFoundError, match="only thresholds"), seeded_store.transaction() as session:
        table_versions.promote(session, "catalogue", rule_tables.validation.catalogue.version, "admin", NOW)
