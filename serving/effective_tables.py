"""The tables a service replica decides with: the release's tables (the config files)
with the thresholds version an admin promoted last. Each replica registers the release's
table versions when it starts and looks for a newer promotion every ``refresh_s`` seconds,
so a promotion reaches every replica within that time without a restart."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping

from sqlalchemy.exc import IntegrityError

from serving.adjudication import RuleTables
from serving.store import table_versions
from serving.store.database import Store

log = logging.getLogger("dxv.tables")


class EffectiveTables:
    def __init__(self, store: Store, release: RuleTables, *, refresh_s: float, now: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.release = release
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        try:
            with store.transaction() as session:
                added = table_versions.register_tables(session, release.parts(), now())
        except IntegrityError:  # another replica registered the same versions at the same moment: check against theirs
            with store.transaction() as session:
                added = table_versions.register_tables(session, release.parts(), now())
        if added:
            log.info("table versions registered: %s", ", ".join(added))
        self._tables = release
        self._checked = 0.0
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> RuleTables:
        """The tables in effect, re-checked when ``refresh_s`` has passed (or ``force``)."""
        if not force and time.monotonic() - self._checked < self.refresh_s:
            return self._tables
        with self._lock:
            with self.store.reading() as session:  # a look only: never waits for an adjudication's write lock
                version = table_versions.effective_thresholds_version(session)
                if version is not None and version != self._tables.validation.thresholds.version:
                    thresholds = table_versions.load_table(session, table_versions.THRESHOLDS, version)
                    self._tables = self.release.with_parts({table_versions.THRESHOLDS: thresholds})
                    log.warning("thresholds version %s in effect", version)
            self._checked = time.monotonic()
        return self._tables

    def current(self) -> RuleTables:
        return self.refresh()


def tables_at(store: Store, versions: Mapping[str, str], current: RuleTables) -> RuleTables:
    """The tables a decision cited (its ``versions``): those of ``current`` where the
    version is the same, else the stored version (``TableVersionNotFoundError`` if it was
    never kept)."""
    have = current.parts()
    wanted = {}
    with store.transaction() as session:
        for name, table in have.items():
            version = versions.get(name)
            if version is not None and version != table_versions.version_of(table):
                wanted[name] = table_versions.load_table(session, name, version)
    return current.with_parts(wanted) if wanted else current
