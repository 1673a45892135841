"""The frequency table and the bundle library (``configs/rules/``), validated on load and
resolved to catalogue concepts, so that every code system counts alike."""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from models.config_loading import ConfigError, FrozenConfig, load_config
from models.paths import PROJECT_ROOT
from serving.catalogue import Catalogue, Range
from serving.plans import Condition

RULES_DIR = PROJECT_ROOT / "configs" / "rules"


class Window(StrEnum):
    CALENDAR = "calendar"
    ROLLING = "rolling"


class Per(StrEnum):
    MEMBER = "member"
    TOOTH = "tooth"
    QUADRANT = "quadrant"


class Period(FrozenConfig):
    length: int = Field(ge=1)
    unit: Literal["day", "month", "year"]
    window: Window

    def text(self) -> str:
        if self.window is Window.CALENDAR:
            return f"per calendar {self.unit}" if self.length == 1 else f"per {self.length} calendar {self.unit}s"
        return f"in any {self.length} {self.unit}{'s' if self.length > 1 else ''}"


class LimitException(FrozenConfig):
    condition: Condition | None = None
    under_age: int | None = Field(None, ge=1)
    count: int = Field(ge=0)

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.condition is None) == (self.under_age is None):
            raise ValueError("an exception names either a condition or an under_age")
        return self


class FrequencyLimit(FrozenConfig):
    id: str = Field(min_length=1)
    name: str
    codes: tuple[str, ...] = Field(min_length=1)
    count: int = Field(ge=0)
    period: Period
    per: Per
    ages: Range | None = None
    exceptions: tuple[LimitException, ...] = ()


class FrequencyTable(FrozenConfig):
    version: str
    limits: tuple[FrequencyLimit, ...]

    @model_validator(mode="after")
    def _unique(self) -> Self:
        ids = [limit.id for limit in self.limits]
        if len(set(ids)) != len(ids):
            raise ValueError("a limit id is used twice")
        return self

    # The table is immutable: the limits of each concept, worked out once per catalogue version.
    # (cached_property lives in the instance dict, as in Catalogue.)
    @cached_property
    def _by_concept(self) -> dict[str, dict[str, tuple[FrequencyLimit, ...]]]:
        return {}

    def limits_for(self, concept_id: str, catalogue: Catalogue) -> tuple[FrequencyLimit, ...]:
        """The limits whose codes name ``concept_id``, in table order."""
        index = self._by_concept.get(catalogue.version)
        if index is None:
            found: dict[str, list[FrequencyLimit]] = {}
            for limit in self.limits:
                for concept in catalogue.concepts_of(limit.codes):
                    found.setdefault(concept, []).append(limit)
            index = self._by_concept[catalogue.version] = {c: tuple(limits) for c, limits in found.items()}
        return index.get(concept_id, ())


class IncludedBundle(FrozenConfig):
    id: str
    kind: Literal["included"]
    component: tuple[str, ...] = Field(min_length=1)
    with_: tuple[str, ...] = Field(alias="with", min_length=1)
    same_tooth: bool = False
    reason: str


class RecodeBundle(FrozenConfig):
    id: str
    kind: Literal["recode"]
    option: str | None = None  # the plan's bundle_options key that switches it on
    components: tuple[tuple[str, ...], ...] = Field(min_length=2)
    bundle: str
    window_days: int = Field(ge=0)
    reason: str


class BundleLibrary(FrozenConfig):
    version: str
    bundles: tuple[IncludedBundle | RecodeBundle, ...]


def _check_codes(codes: list[str], catalogue: Catalogue, where: str) -> list[str]:
    known = catalogue.codes[catalogue.default_system]
    return [f"{where}: unknown {catalogue.default_system} code {code!r}" for code in codes if code not in known]


def load_frequency(path: str | Path = RULES_DIR / "frequency.yaml", catalogue: Catalogue | None = None) -> FrequencyTable:
    table = load_config(FrequencyTable, path)
    if catalogue is not None:
        problems = [p for limit in table.limits for p in _check_codes(list(limit.codes), catalogue, f"limit {limit.id}")]
        if problems:
            raise ConfigError(f"{path}: " + "; ".join(problems))
    return table


def load_bundles(path: str | Path = RULES_DIR / "bundles.yaml", catalogue: Catalogue | None = None) -> BundleLibrary:
    library = load_config(BundleLibrary, path)
    if catalogue is not None:
        problems: list[str] = []
        for b in library.bundles:
            if isinstance(b, IncludedBundle):
                codes = [*b.component, *b.with_]
            else:
                codes = [c for group in b.components for c in group] + [b.bundle]
            problems += _check_codes(codes, catalogue, f"bundle {b.id}")
        if problems:
            raise ConfigError(f"{path}: " + "; ".join(problems))
    return library
