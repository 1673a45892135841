"""Snapshots the claim-history rules read: the member's past lines, enrolment baseline and
plan, the provider's standing. Loaded from the state store by the adjudicator; plain
frozen data, so a rule is a pure function of them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields

from serving.plans import Condition


@dataclass(frozen=True)
class PastLine:
    claim_id: str
    line_id: str
    date_of_service: dt.date
    code: str
    concept_id: str
    fdi: int | None
    quadrant: int | None
    status: str  # approved, denied, pending (flagged, awaiting review)
    approved_amount: float = 0.0
    provider_id: str = ""
    action: str = ""  # the decision's action for the line (pass, flag, downcode, reject)
    category: str = ""  # the concept's benefit category (a ledger bucket), as stored with the line

    @property
    def counts(self) -> bool:
        """Denied lines do not count against limits; approved and pending ones do."""
        return self.status != "denied"

    @classmethod
    def of_row(cls, values: tuple) -> PastLine:
        """``PastLine(*values)``, every field given in order, for the thousands of history
        lines a batch loads: the same object without the frozen dataclass's per-field
        ``object.__setattr__``."""
        line = object.__new__(cls)
        line.__dict__.update(zip(_PAST_LINE_FIELDS, values, strict=True))
        return line


_PAST_LINE_FIELDS = tuple(f.name for f in fields(PastLine))


@dataclass(frozen=True)
class BaselineCondition:
    fdi: int | None  # None: a condition of the mouth (periodontal disease)
    condition: Condition
    recorded_on: dt.date
    evidence: str = ""


@dataclass(frozen=True)
class MemberSnapshot:
    member_id: str
    birth_date: dt.date
    plan_id: str
    enrolment_start: dt.date
    baseline: tuple[BaselineCondition, ...] = ()
    history: tuple[PastLine, ...] = ()
    preauthorizations: tuple[PastLine, ...] = ()  # lines of earlier pre-authorisation requests

    def has_condition(self, condition: Condition, fdi: int | None = None) -> BaselineCondition | None:
        return next((b for b in self.baseline if b.condition is condition and (fdi is None or b.fdi == fdi)), None)


@dataclass(frozen=True)
class ProviderStanding:
    provider_id: str
    flagged: bool = False
    evidence: tuple[str, ...] = ()  # metric, peer group, period, percentile, in words
    cycle: str = ""


@dataclass(frozen=True)
class CurrentLine:
    """A line of the claim being decided, resolved to its catalogue concept."""

    line_id: str
    code: str
    concept_id: str
    category: str
    fdi: int | None
    quadrant: int | None
    fee: float
    order: int  # position in the claim


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` moved by ``months`` calendar months; the day is clamped to the month's end."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    for d in (day.day, 30, 29, 28):
        try:
            return dt.date(year, month + 1, d)
        except ValueError:
            continue
    raise AssertionError("unreachable")
