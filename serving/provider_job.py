"""The provider-outlier batch job (``dxv providers analyse``): loads a window of claim
lines, computes each provider's metrics against peers (``serving.rules.outliers``) and
stores a statistics snapshot per provider and cycle; adjudication reads the latest."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import select

from serving.rules.history import add_months
from serving.rules.outliers import OutlierConfig, ProviderLine, ProviderProfile, ProviderResult, analyse
from serving.store.database import Store
from serving.store.schema import ClaimLineRow, ProviderRow, ProviderStatsRow


def _lines(rows: list[ClaimLineRow], start: dt.date, end: dt.date) -> list[ProviderLine]:
    preauth = {(r.tenant, r.member_id, r.provider_id, r.code, r.fdi): r.date_of_service
               for r in rows if r.mode == "preauthorization"}
    out = []
    for r in rows:
        if r.mode != "claim" or not (start <= r.date_of_service <= end):
            continue
        planned = preauth.get((r.tenant, r.member_id, r.provider_id, r.code, r.fdi))
        out.append(ProviderLine(r.provider_id, r.member_id, f"{r.tenant}/{r.claim_id}", r.date_of_service, r.code,
                                float(r.fee), preauthorised=planned is not None and planned <= r.date_of_service))
    return out


def run_provider_analysis(store: Store, as_of: dt.date, config: OutlierConfig, now: dt.datetime) -> list[ProviderResult]:
    start = add_months(as_of, -config.window_months) + dt.timedelta(days=1)
    previous_start = add_months(start, -config.window_months)
    cycle = as_of.isoformat()
    with store.transaction() as session:
        profiles = {p.provider_id: ProviderProfile(p.provider_id, p.specialty, p.region)
                    for p in session.execute(select(ProviderRow)).scalars()}
        rows = list(session.execute(select(ClaimLineRow).where(ClaimLineRow.date_of_service >= previous_start,
                                                               ClaimLineRow.date_of_service <= as_of)).scalars())
        earlier: dict[str, set[str]] = {}
        for pid in profiles:
            snapshots = session.execute(select(ProviderStatsRow).where(ProviderStatsRow.provider_id == pid,
                                                                       ProviderStatsRow.period_end < as_of)
                                        .order_by(ProviderStatsRow.period_end.desc())
                                        .limit(config.persistence - 1)).scalars().all()
            if len(snapshots) == config.persistence - 1:
                sets = [set(json.loads(s.metrics).get("deviating", [])) for s in snapshots]
                earlier[pid] = set.intersection(*sets) if sets else set()
        results = analyse(profiles, _lines(rows, start, as_of), _lines(rows, previous_start, start - dt.timedelta(days=1)),
                          earlier, config, (start, as_of))
        for r in results:
            existing = session.execute(select(ProviderStatsRow).where(ProviderStatsRow.provider_id == r.provider_id,
                                                                      ProviderStatsRow.cycle == cycle)).scalar_one_or_none()
            row = existing or ProviderStatsRow(provider_id=r.provider_id, cycle=cycle)
            row.period_start, row.period_end = start, as_of
            row.metrics = json.dumps({"config": config.version, "peer_group": r.peer_group, "claims": r.claims,
                                      "judged": r.judged, "values": r.metrics, "percentiles": r.percentiles,
                                      "deviating": r.deviating}, sort_keys=True)
            row.flagged, row.evidence, row.computed_at = r.flagged, json.dumps(r.evidence), now
            session.add(row)
    return results
