"""Rule 5 at adjudication time: a provider the outlier batch job flagged has every line
routed to review with the job's evidence. It never rejects on its own."""

from __future__ import annotations

from serving.decisions import Action, EvidenceRef, RuleHit, make_hit
from serving.rules.history import ProviderStanding

PROVIDER = "R5.provider_outlier"


def check_provider(standing: ProviderStanding) -> RuleHit:
    if not standing.flagged:
        return make_hit(PROVIDER, Action.PASS, "provider not flagged as an outlier", fired=False)
    return make_hit(PROVIDER, Action.FLAG, f"provider {standing.provider_id} is flagged as an outlier against peers "
                    f"(cycle {standing.cycle}): " + "; ".join(standing.evidence),
                    evidence=tuple(EvidenceRef(source="claim", description=e) for e in standing.evidence))
