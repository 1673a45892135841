"""Plans and their versions (``configs/plans/*.yaml``): sub-limits and annual maximum per
policy year, waiting periods for conditions present at enrolment, frequency overrides and
bundle options. A claim is decided under the version in force on its date of service."""

from __future__ import annotations

import datetime as dt
import itertools
from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from models.config_loading import ConfigError, FrozenConfig, load_config
from models.paths import PROJECT_ROOT

PLANS_DIR = PROJECT_ROOT / "configs" / "plans"


class Condition(StrEnum):
    """Conditions an enrolment baseline records (per tooth, or for the mouth)."""

    MISSING = "missing"
    CARIES = "caries"
    PERIAPICAL_LESION = "periapical_lesion"
    IMPACTED = "impacted"
    ROOT_CANAL_FILLING = "root_canal_filling"
    CROWN = "crown"
    PERIODONTAL_DISEASE = "periodontal_disease"


class PolicyYear(StrEnum):
    CALENDAR = "calendar"  # 1 January to 31 December
    ENROLMENT = "enrolment"  # from the enrolment anniversary


class WaitingPeriod(FrozenConfig):
    clause: str = Field(min_length=1)
    conditions: tuple[Condition, ...] = Field(min_length=1)
    categories: tuple[str, ...] = Field(min_length=1)
    months: int = Field(ge=0)


class FrequencyOverride(FrozenConfig):
    count: int = Field(ge=0)


class PlanVersion(FrozenConfig):
    version: str
    effective_from: dt.date
    effective_to: dt.date | None = None
    policy_year: PolicyYear = PolicyYear.CALENDAR
    annual_maximum: float | None = Field(None, ge=0)
    sub_limits: dict[str, float] = Field(default_factory=dict)
    waiting_periods: tuple[WaitingPeriod, ...] = ()
    frequency_overrides: dict[str, FrequencyOverride] = Field(default_factory=dict)
    bundle_options: dict[str, bool] = Field(default_factory=dict)
    # How long a pre-authorisation answers for, counted from its request (a year unless the plan says otherwise).
    preauthorization_valid_days: int = Field(365, ge=1)

    @model_validator(mode="after")
    def _dates(self) -> Self:
        if self.effective_to is not None and self.effective_to < self.effective_from:
            raise ValueError(f"version {self.version}: effective_to is before effective_from")
        return self

    def in_force(self, day: dt.date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)

    def policy_year_start(self, day: dt.date, enrolment_start: dt.date) -> dt.date:
        if self.policy_year is PolicyYear.CALENDAR:
            return dt.date(day.year, 1, 1)
        anniversary = _same_day(enrolment_start, day.year)
        return anniversary if anniversary <= day else _same_day(enrolment_start, day.year - 1)


def _same_day(start: dt.date, year: int) -> dt.date:
    """``start``'s month and day in ``year`` (29 February becomes 28 February)."""
    try:
        return start.replace(year=year)
    except ValueError:
        return start.replace(year=year, day=28)


class Plan(FrozenConfig):
    plan_id: str = Field(min_length=1)
    name: str
    versions: tuple[PlanVersion, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_overlap(self) -> Self:
        ordered = sorted(self.versions, key=lambda v: v.effective_from)
        for a, b in itertools.pairwise(ordered):
            if a.effective_to is None or a.effective_to >= b.effective_from:
                raise ValueError(f"plan {self.plan_id}: versions {a.version} and {b.version} overlap")
        if len({v.version for v in self.versions}) != len(self.versions):
            raise ValueError(f"plan {self.plan_id}: a version label is used twice")
        return self

    def version_on(self, day: dt.date) -> PlanVersion:
        for version in self.versions:
            if version.in_force(day):
                return version
        raise PlanNotInForceError(f"plan {self.plan_id} has no version in force on {day.isoformat()}")


class PlanNotInForceError(ConfigError):
    code = "plan.not_in_force"


def load_plan(path: str | Path) -> Plan:
    return load_config(Plan, path)


def load_plans(directory: str | Path = PLANS_DIR) -> dict[str, Plan]:
    plans = [load_plan(p) for p in sorted(Path(directory).glob("*.yaml"))]
    if not plans:
        raise ConfigError(f"no plan files (*.yaml) in {directory}")
    return {p.plan_id: p for p in plans}
