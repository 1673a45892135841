"""Drift figures from the store: the readings kept with each decided claim (claim
records) and the lines queued for review, per tenant and model version, against the
version's release baseline: one set by ``dxv monitor baseline``, else the version's first
``baseline_days`` in service (kept once those days are over, so it never moves)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving.drift import MonitoringSettings, Signal, WindowStats, add_summary, compare
from serving.store.database import StoreError
from serving.store.schema import AppealRow, ClaimRecordRow, ModelBaselineRow, ReviewItemRow

Key = tuple[str, str, str]  # tenant, model, version


def _summaries(session: Session, start: dt.datetime, end: dt.datetime,
               tenant: str | None) -> Iterator[tuple[int, str, str]]:
    """(audit seq, tenant, drift summary JSON) of decided claims in [start, end); an
    appeal's record is left out (its readings repeat the original's)."""
    query = select(ClaimRecordRow.audit_seq, ClaimRecordRow.tenant, ClaimRecordRow.summary) \
        .where(ClaimRecordRow.created_at >= start, ClaimRecordRow.created_at < end,
               ~select(AppealRow.id).where(AppealRow.audit_seq == ClaimRecordRow.audit_seq).exists())
    if tenant is not None:
        query = query.where(ClaimRecordRow.tenant == tenant)
    # Streamed: a window can hold many claims; each summary is parsed and dropped.
    for row in session.execute(query.order_by(ClaimRecordRow.audit_seq).execution_options(yield_per=1000)):
        yield row[0], row[1], row[2]


def window_stats(session: Session, start: dt.datetime, end: dt.datetime, settings: MonitoringSettings,
                 tenant: str | None = None) -> dict[Key, WindowStats]:
    """Per (tenant, model, version): the window's radiographs and detections, billed lines
    and lines sent to review, from the claims' drift summaries (written with each record)."""
    found: dict[Key, WindowStats] = {}
    per_record: dict[int, tuple[int, set[Key]]] = {}
    for seq, record_tenant, text in _summaries(session, start, end, tenant):
        summary = json.loads(text)
        keys: set[Key] = set()
        for entry in summary["models"]:
            key = (record_tenant, entry["model"], entry["version"])
            add_summary(found.setdefault(key, WindowStats()), entry, settings.finding_score)
            keys.add(key)
        if keys:
            per_record[seq] = (summary["lines"], keys)
    flagged: dict[int, int] = {}
    seqs = list(per_record)
    for first in range(0, len(seqs), 10_000):  # bounded IN lists (SQLite and PostgreSQL limits)
        for seq, n in session.execute(select(ReviewItemRow.audit_seq, func.count()).where(
                ReviewItemRow.audit_seq.in_(seqs[first:first + 10_000])).group_by(ReviewItemRow.audit_seq)):
            flagged[seq] = n
    for seq, (lines, keys) in per_record.items():
        for key in keys:
            found[key].lines += lines
            found[key].flagged += flagged.get(seq, 0)
    return found


def _first_seen(session: Session, key: Key) -> dt.datetime | None:
    tenant, model, version = key
    # A text prefilter on the summaries (the version's string), confirmed on the parsed JSON.
    query = select(ClaimRecordRow.created_at, ClaimRecordRow.summary).where(
        ClaimRecordRow.tenant == tenant, ClaimRecordRow.summary.like(f'%"{version}"%')).order_by(ClaimRecordRow.created_at)
    for created_at, summary in session.execute(query):
        if any(e["model"] == model and e["version"] == version for e in json.loads(summary)["models"]):
            return created_at
    return None


class EmptyBaselineError(StoreError):
    code = "monitoring.empty_baseline"


@dataclass(frozen=True)
class Baseline:
    stats: WindowStats
    start: dt.datetime
    end: dt.datetime
    source: str  # "set by <actor>", or "first N days in service"


def set_baseline(session: Session, key: Key, start: dt.datetime, end: dt.datetime, settings: MonitoringSettings,
                 actor: str, now: dt.datetime) -> Baseline:
    """Make [start, end) the release baseline of ``key`` (replacing any)."""
    stats = window_stats(session, start, end, settings, key[0]).get(key, WindowStats())
    if not stats.images:
        raise EmptyBaselineError(f"no radiograph read by {key[1]} {key[2]} for tenant {key[0]} from {start:%Y-%m-%d} "
                                 f"to {end:%Y-%m-%d}: nothing to make a baseline of")
    row = session.execute(select(ModelBaselineRow).where(ModelBaselineRow.tenant == key[0], ModelBaselineRow.model == key[1],
                                                         ModelBaselineRow.version == key[2])).scalar_one_or_none()
    if row is None:
        row = ModelBaselineRow(tenant=key[0], model=key[1], version=key[2])
        session.add(row)
    row.window_from, row.window_to, row.stats = start, end, json.dumps(stats.to_json())
    row.created_at, row.created_by = now, actor
    session.flush()
    return Baseline(stats, start, end, f"set by {actor}")


def baseline_of(session: Session, key: Key, settings: MonitoringSettings, now: dt.datetime) -> Baseline | None:
    row = session.execute(select(ModelBaselineRow).where(ModelBaselineRow.tenant == key[0], ModelBaselineRow.model == key[1],
                                                         ModelBaselineRow.version == key[2])).scalar_one_or_none()
    if row is not None:
        source = row.created_by if row.created_by.startswith("first") else f"set by {row.created_by}"
        return Baseline(WindowStats.from_json(json.loads(row.stats)), row.window_from, row.window_to, source)
    first = _first_seen(session, key)
    if first is None:
        return None
    end = first + dt.timedelta(days=settings.baseline_days)
    source = f"first {settings.baseline_days} days in service"
    if now >= end:  # the window is over: keep it, so the baseline never moves again
        kept = set_baseline(session, key, first, end, settings, source, now)
        return Baseline(kept.stats, first, end, source)
    stats = window_stats(session, first, end, settings, key[0]).get(key, WindowStats())
    return Baseline(stats, first, end, source + " (still filling)")


@dataclass(frozen=True)
class Assessment:
    key: Key
    baseline: Baseline | None
    current: WindowStats
    signals: tuple[Signal, ...]


def assess(session: Session, now: dt.datetime, settings: MonitoringSettings, tenant: str | None = None) -> list[Assessment]:
    """Every (tenant, model, version) seen in the current window, against its baseline."""
    start = now - dt.timedelta(days=settings.window_days)
    out = []
    for key, current in sorted(window_stats(session, start, now, settings, tenant).items()):
        baseline = baseline_of(session, key, settings, now)
        signals = compare(*key, baseline.stats, current, settings) if baseline else []
        out.append(Assessment(key, baseline, current, tuple(signals)))
    return out
