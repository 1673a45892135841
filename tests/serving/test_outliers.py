"""Provider outliers: peer percentiles, minimum volume, two metrics or persistence, and
the flag routing the provider's claims to review."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from serving.adjudication import adjudicate
from serving.claims import Claim
from serving.decisions import Action
from serving.provider_job import run_provider_analysis
from serving.rules.outliers import ProviderLine, ProviderProfile, analyse, load_outlier_config
from serving.store import repository
from serving.store.schema import ProviderRow
from tests.serving.conftest import NOW

CONFIG = load_outlier_config()
START, END = dt.date(2025, 11, 1), dt.date(2026, 4, 30)
ORDINARY = ["D1110", "D0274", "D2391", "D2392", "D0220"]
HIGH = ["D2750", "D3330", "D7210"]


def population(seed: int = 3) -> tuple[dict[str, ProviderProfile], list[ProviderLine]]:
    rng = np.random.default_rng(seed)
    profiles, lines = {}, []

    def provider(pid: str, claims: int, patients: int, high_share: float, fee_scale: float = 1.0,
                 preauth: float = 0.7) -> None:
        profiles[pid] = ProviderProfile(pid, "general", "north")
        for c in range(claims):
            day = START + dt.timedelta(days=int(rng.integers(0, (END - START).days)))
            member = f"{pid}-m{int(rng.integers(0, patients))}"
            for _ in range(int(rng.integers(1, 3))):
                high = rng.random() < high_share
                code = str(rng.choice(HIGH if high else ORDINARY))
                fee = (900.0 if high else 120.0) * fee_scale * float(rng.uniform(0.9, 1.1))
                planned = high and rng.random() < preauth
                lines.append(ProviderLine(pid, member, f"{pid}-c{c}", day, code, fee, preauthorised=planned))

    for i in range(12):
        provider(f"P-{i:02d}", 40, 35, 0.1)
    provider("P-OUT", 45, 35, 0.6, fee_scale=1.3)  # upcodes: many high-value lines, dearer claims
    provider("P-ONE", 40, 35, 0.1, preauth=0.0)  # ordinary work, but never pre-authorised
    provider("P-LOW", 29, 20, 0.7, fee_scale=1.5)  # outlying, but under the minimum volume
    return profiles, lines


def by_id(results):
    return {r.provider_id: r for r in results}


def test_two_deviating_metrics_flag_one_does_not() -> None:
    profiles, lines = population()
    results = by_id(analyse(profiles, lines, [], {}, CONFIG, (START, END)))
    out = results["P-OUT"]
    assert out.flagged and len(out.deviating) >= 2 and "high_value_share" in out.deviating
    assert any("percentile of peer group general/north" in e for e in out.evidence)
    one = results["P-ONE"]
    assert one.deviating == ["high_value_without_preauth"] and not one.flagged
    assert not any(results[f"P-{i:02d}"].flagged for i in range(12))


def test_one_metric_persisting_over_two_cycles_flags() -> None:
    profiles, lines = population()
    results = by_id(analyse(profiles, lines, [], {"P-ONE": {"high_value_without_preauth"}}, CONFIG, (START, END)))
    assert results["P-ONE"].flagged and "previous cycle" in results["P-ONE"].evidence[0]


def test_a_provider_just_under_the_minimum_volume_is_not_judged() -> None:
    profiles, lines = population()
    low = by_id(analyse(profiles, lines, [], {}, CONFIG, (START, END)))["P-LOW"]
    assert low.claims == CONFIG.min_claims - 1 and not low.judged and not low.flagged


def test_too_few_peers_means_no_judgement() -> None:
    profiles, lines = population()
    few = {k: v for k, v in profiles.items() if k in ("P-00", "P-01", "P-OUT")}
    results = analyse(few, lines, [], {}, CONFIG, (START, END))
    assert not any(r.flagged for r in results) and "at least 5 needed" in results[0].evidence[0]


@pytest.mark.slow
def test_batch_job_stores_flags_that_route_claims_to_review(seeded_store, rule_tables) -> None:
    from serving.store.repository import SeedLine, history_rows

    profiles, lines = population()
    with seeded_store.transaction() as session:
        for pid in profiles:
            session.add(ProviderRow(provider_id=pid, tenant="demo", specialty="general", region="north"))
        seed = tuple(SeedLine(claim_id=x.claim_id, line_id=str(i), member_id=x.member_id, provider_id=x.provider_id,
                              date_of_service=x.date_of_service, code=x.code, fee=round(x.fee, 2))
                     for i, x in enumerate(lines))
        session.add_all(history_rows("demo", seed, rule_tables.validation.catalogue, NOW))
    results = by_id(run_provider_analysis(seeded_store, END, CONFIG, NOW))
    assert results["P-OUT"].flagged
    with seeded_store.transaction() as session:
        assert repository.provider_standing(session, "P-OUT").flagged
        assert not repository.provider_standing(session, "P-00").flagged
    request = Claim.model_validate({"claim_id": "O-1", "tenant": "demo", "member": {"member_id": "MBR-0001",
                                    "birth_date": "1980-05-17"}, "provider": {"provider_id": "P-OUT"},
                                    "date_of_service": "2026-05-02", "lines": [{"line_id": "1", "code": "D1110", "fee": 95}]})
    decision = adjudicate(request, (), seeded_store, rule_tables, now=NOW)
    hit = next(h for h in decision.lines[0].rule_hits if h.rule_id == "R5.provider_outlier")
    assert decision.lines[0].action is Action.FLAG and hit.fired and hit.evidence
