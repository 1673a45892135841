"""Rule 5's batch side: provider metrics over a rolling window, compared with the peer
group (specialty and region) by percentile. Pure: the job loads the lines, this computes.

Metrics (higher is more unusual for each):
- ``high_value_share``: share of lines that are high-value codes;
- ``procedures_per_patient``: lines per distinct patient;
- ``average_claim_value``: billed amount per claim;
- ``claim_value_trend``: average claim value against the previous window (ratio);
- ``high_value_without_preauth``: share of high-value claims with no pre-authorisation;
- ``repeat_high_value_patients``: share of high-value lines on patients with several of them;
- ``high_value_burst``: the most high-value lines in any ``cluster_days`` window, as a share."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field

from models.config_loading import FrozenConfig, load_config
from serving.rules.tables import RULES_DIR

METRICS = ("high_value_share", "procedures_per_patient", "average_claim_value", "claim_value_trend",
           "high_value_without_preauth", "repeat_high_value_patients", "high_value_burst")
_WORDS = {"high_value_share": "share of high-value codes", "procedures_per_patient": "procedures per patient",
          "average_claim_value": "average claim value", "claim_value_trend": "trend of the average claim value",
          "high_value_without_preauth": "high-value claims without pre-authorisation",
          "repeat_high_value_patients": "high-value work repeated on the same patients",
          "high_value_burst": "high-value claims bunched in a few days"}


class OutlierConfig(FrozenConfig):
    version: str
    window_months: int = Field(6, ge=1)
    min_claims: int = Field(30, ge=1)
    min_peers: int = Field(5, ge=2)
    percentile: float = Field(95, gt=50, lt=100)
    min_metrics: int = Field(2, ge=1)
    persistence: int = Field(2, ge=2)
    cluster_days: int = Field(7, ge=1)
    repeat_patient_min: int = Field(3, ge=2)
    min_high_value_lines: int = Field(10, ge=1)  # fewer, and the clustering metrics are noise
    high_value_codes: tuple[str, ...]


def load_outlier_config(path: str | Path = RULES_DIR / "outliers.yaml") -> OutlierConfig:
    return load_config(OutlierConfig, path)


@dataclass(frozen=True)
class ProviderLine:
    provider_id: str
    member_id: str
    claim_id: str
    date_of_service: dt.date
    code: str
    fee: float
    preauthorised: bool = False


@dataclass(frozen=True)
class ProviderProfile:
    provider_id: str
    specialty: str
    region: str


@dataclass
class ProviderResult:
    provider_id: str
    peer_group: str
    claims: int
    judged: bool  # enough volume and peers to be compared
    metrics: dict[str, float] = field(default_factory=dict)
    percentiles: dict[str, float] = field(default_factory=dict)
    deviating: list[str] = field(default_factory=list)
    flagged: bool = False
    evidence: list[str] = field(default_factory=list)


def provider_metrics(lines: list[ProviderLine], previous: list[ProviderLine], config: OutlierConfig) -> dict[str, float]:
    high = set(config.high_value_codes)
    claims: dict[str, float] = defaultdict(float)
    for x in lines:
        claims[x.claim_id] += x.fee
    patients = {x.member_id for x in lines}
    hv = [x for x in lines if x.code in high]
    hv_claims = {x.claim_id for x in hv}
    preauthorised = {x.claim_id for x in hv if x.preauthorised}
    per_patient: dict[str, int] = defaultdict(int)
    for x in hv:
        per_patient[x.member_id] += 1
    repeat = sum(n for n in per_patient.values() if n >= config.repeat_patient_min)
    days = sorted(x.date_of_service for x in hv)
    burst = 0
    for i, start in enumerate(days):
        burst = max(burst, sum(1 for d in days[i:] if (d - start).days < config.cluster_days))
    average = sum(claims.values()) / len(claims) if claims else 0.0
    before: dict[str, float] = defaultdict(float)
    for x in previous:
        before[x.claim_id] += x.fee
    average_before = sum(before.values()) / len(before) if before else 0.0
    return {
        "high_value_share": len(hv) / len(lines) if lines else 0.0,
        "procedures_per_patient": len(lines) / len(patients) if patients else 0.0,
        "average_claim_value": average,
        "claim_value_trend": average / average_before if average_before else 1.0,
        "high_value_without_preauth": 1.0 - len(preauthorised) / len(hv_claims) if hv_claims else 0.0,
        "repeat_high_value_patients": repeat / len(hv) if len(hv) >= config.min_high_value_lines else 0.0,
        "high_value_burst": burst / len(hv) if len(hv) >= config.min_high_value_lines else 0.0,
    }


def analyse(profiles: dict[str, ProviderProfile], lines: list[ProviderLine], previous: list[ProviderLine],
            earlier_deviations: dict[str, set[str]], config: OutlierConfig, period: tuple[dt.date, dt.date]
            ) -> list[ProviderResult]:
    """Metrics, percentiles within the peer group, and the flag, per provider.
    ``earlier_deviations``: the metrics each provider deviated on in the previous cycles
    (for persistence)."""
    by_provider: dict[str, list[ProviderLine]] = defaultdict(list)
    before: dict[str, list[ProviderLine]] = defaultdict(list)
    for x in lines:
        by_provider[x.provider_id].append(x)
    for x in previous:
        before[x.provider_id].append(x)
    results: dict[str, ProviderResult] = {}
    groups: dict[str, list[str]] = defaultdict(list)
    for pid, profile in profiles.items():
        own = by_provider.get(pid, [])
        group = f"{profile.specialty}/{profile.region or 'any region'}"
        claims = len({x.claim_id for x in own})
        result = ProviderResult(pid, group, claims, judged=claims >= config.min_claims)
        if result.judged:
            result.metrics = provider_metrics(own, before.get(pid, []), config)
            groups[group].append(pid)
        results[pid] = result
    for group, members in groups.items():
        if len(members) < config.min_peers:
            for pid in members:
                results[pid].judged = False
                results[pid].evidence.append(f"peer group {group} has {len(members)} providers with enough volume "
                                             f"(at least {config.min_peers} needed)")
            continue
        for metric in METRICS:
            values = np.array([results[p].metrics[metric] for p in members])
            for pid in members:
                mine = results[pid].metrics[metric]
                pct = 100.0 * float(np.mean(values < mine) + 0.5 * np.mean(values == mine))
                results[pid].percentiles[metric] = round(pct, 1)
                boundary = float(np.percentile(values, config.percentile))
                if mine > boundary and pct >= config.percentile:
                    results[pid].deviating.append(metric)
    start, end = period
    for result in results.values():
        if not result.judged:
            continue
        persistent = [m for m in result.deviating if m in earlier_deviations.get(result.provider_id, set())]
        result.flagged = len(result.deviating) >= config.min_metrics or bool(persistent)
        for metric in result.deviating:
            again = " (also in the previous cycle)" if metric in persistent else ""
            result.evidence.append(
                f"{_WORDS[metric]} {result.metrics[metric]:.2f} at the {result.percentiles[metric]:.0f}th percentile of "
                f"peer group {result.peer_group} ({len(groups[result.peer_group])} providers), "
                f"{start.isoformat()} to {end.isoformat()}{again}")
    return sorted(results.values(), key=lambda r: r.provider_id)
