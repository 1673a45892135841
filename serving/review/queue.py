"""Which decided lines go to a person, and in what order (pure).

A line goes to the queue when any rule flagged it (``needs_review``). Its priority grows
with the amount at stake, the severity of what fired and the time it has waited:

    priority = amount_weight * log10(1 + fee) + severity_weight * severity + age_weight_per_day * days waiting

``severity`` is the highest severity among the fired rules: a rule's own weight where the
config names one (a recycled radiograph weighs more than a missing attachment), else its
action's (flag 1, downcode 2, reject 3). The store orders by ``rank_key`` (the priority at
enqueue less the age weight times the enqueue day), which equals ordering by the priority
now, at any moment, with an index."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from pydantic import Field

from models.config_loading import FrozenConfig
from serving.decisions import Action, LineDecision

EPOCH = dt.datetime(2020, 1, 1)


class ReviewPriority(FrozenConfig):
    amount_weight: float = Field(1.0, ge=0)  # per factor of ten in the fee
    severity_weight: float = Field(1.0, ge=0)
    age_weight_per_day: float = Field(0.5, ge=0)
    # rule id -> severity, for rules whose flag matters more (or less) than its action says
    rule_severity: dict[str, float] = Field(default_factory=lambda: {
        "R1.recycled_image": 4.0, "R5.provider_outlier": 2.5, "R1.necessity": 2.0, "R2.substitution.tier": 2.0,
        "R1.documentation": 0.5,
    })


@dataclass(frozen=True)
class QueueEntry:
    line_id: str
    code: str
    fee: float
    action: Action
    severity: float
    rules: tuple[str, ...]
    priority: float  # at enqueue, without age


def days_since_epoch(moment: dt.datetime) -> float:
    return (moment - EPOCH).total_seconds() / 86400.0


def line_severity(decision: LineDecision, weights: ReviewPriority) -> tuple[float, tuple[str, ...]]:
    fired = [h for h in decision.rule_hits if h.fired and h.action is not Action.PASS]
    severity = max((weights.rule_severity.get(h.rule_id, float(h.action.severity)) for h in fired), default=0.0)
    return severity, tuple(dict.fromkeys(h.rule_id for h in fired))


def queue_entries(codes_and_fees: dict[str, tuple[str, float]], decisions: tuple[LineDecision, ...],
                  weights: ReviewPriority) -> tuple[QueueEntry, ...]:
    """The lines of one decided claim that need a person (``codes_and_fees``: line id ->
    billed code and fee)."""
    entries = []
    for decision in decisions:
        if not decision.needs_review:
            continue
        code, fee = codes_and_fees[decision.line_id]
        severity, rules = line_severity(decision, weights)
        priority = weights.amount_weight * math.log10(1.0 + max(fee, 0.0)) + weights.severity_weight * severity
        entries.append(QueueEntry(decision.line_id, code, fee, decision.action, severity, rules, priority))
    return tuple(entries)


def rank_key(priority: float, enqueued_at: dt.datetime, weights: ReviewPriority) -> float:
    return priority - weights.age_weight_per_day * days_since_epoch(enqueued_at)


def priority_now(key: float, now: dt.datetime, weights: ReviewPriority) -> float:
    return key + weights.age_weight_per_day * days_since_epoch(now)
