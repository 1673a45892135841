"""Rule 7: the sub-limit ledger. A line is approved up to what remains of its category's
sub-limit and of the annual maximum for the policy year, under the plan version in force
on the date of service; a partial approval names the residual for member communication;
an exhausted limit puts the line out of limit. The arithmetic is here (pure); the
adjudicator reads and writes the balances inside one locked transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from serving.decisions import Action, RuleHit, make_hit
from serving.plans import PlanVersion
from serving.rules.history import CurrentLine

SUBLIMIT = "R7.sublimit"
ANNUAL_MAXIMUM = "annual_maximum"


@dataclass(frozen=True)
class Balance:
    bucket: str  # a category, or ANNUAL_MAXIMUM
    limit: float
    used: float

    @property
    def remaining(self) -> float:
        return max(self.limit - self.used, 0.0)


def plan_buckets(plan: PlanVersion) -> dict[str, float]:
    """Every limit the plan version sets: sub-limits per category and the annual maximum."""
    buckets = dict(plan.sub_limits)
    if plan.annual_maximum is not None:
        buckets[ANNUAL_MAXIMUM] = plan.annual_maximum
    return buckets


def buckets_drawn_on(categories: Iterable[str], plan: PlanVersion) -> dict[str, float]:
    """The limits that lines of these benefit categories draw on: each category's
    sub-limit where the plan sets one, and the annual maximum. A claim opens (and locks)
    only these ledger rows; another category's row opens with the first claim that needs it."""
    every = plan_buckets(plan)
    return {bucket: every[bucket] for bucket in (*categories, ANNUAL_MAXIMUM) if bucket in every}


@dataclass(frozen=True)
class Apportioned:
    hit: RuleHit
    approved: float
    consumed: dict[str, float]  # bucket -> amount taken
    member_notice: str | None = None


def _money(x: float) -> str:
    return f"{x:,.2f}"


def apportion(line: CurrentLine, amount: float, balances: dict[str, Balance], plan: PlanVersion,
              year_start: dt.date) -> Apportioned:
    buckets = [balances[b] for b in (line.category, ANNUAL_MAXIMUM) if b in balances]
    if not buckets:
        return Apportioned(make_hit(SUBLIMIT, Action.PASS, f"no limit applies to {line.category}", fired=False),
                           amount, {})
    tightest = min(buckets, key=lambda b: b.remaining)
    approved = round(min(amount, tightest.remaining), 2)
    where = f"{tightest.bucket.replace('_', ' ')} of {_money(tightest.limit)} for the policy year from " \
            f"{year_start.isoformat()} (plan {plan.version})"
    if approved <= 0:
        return Apportioned(make_hit(SUBLIMIT, Action.REJECT, f"out of limit: the {where} is exhausted "
                                    f"({_money(tightest.used)} used)"), 0.0, {})
    consumed = {b.bucket: approved for b in buckets}
    if approved < amount:
        residual = round(amount - approved, 2)
        notice = f"{_money(residual)} of {_money(amount)} is beyond the {where} and is the member's to pay"
        return Apportioned(make_hit(SUBLIMIT, Action.PASS, f"approved {_money(approved)}, the remaining balance of the "
                                    f"{where}; residual {_money(residual)} for member communication"),
                           approved, consumed, notice)
    left = ", ".join(f"{b.bucket.replace('_', ' ')} {_money(b.remaining - approved)}" for b in buckets)
    return Apportioned(make_hit(SUBLIMIT, Action.PASS, f"within limits; remaining after this line: {left}", fired=False),
                       approved, consumed)
