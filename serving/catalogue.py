"""The procedure catalogue (``configs/procedures/catalogue.yaml``): canonical procedure
concepts, the code systems that name them, and how a billed line resolves to a concept.

A code maps onto one concept (CDT) or onto several (a payer schedule with one code for
every tooth type); with several, the first whose site constraints fit the billed line
is taken. Validated on load: unknown concepts, categories, tooth types, kinds or
``downcodes_to`` targets, a tier that does not go down, and codes mapped twice are refused."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from models.config_loading import ConfigError, FrozenConfig, load_config
from models.paths import PROJECT_ROOT
from models.radiographs import RadiographKind
from models.teeth import Dentition, Tooth, ToothType
from serving.claims import ClaimLine

DEFAULT_CATALOGUE = PROJECT_ROOT / "configs" / "procedures" / "catalogue.yaml"


class Site(StrEnum):
    TOOTH = "tooth"
    QUADRANT = "quadrant"
    MOUTH = "mouth"


class RadiographNeed(StrEnum):
    REQUIRED = "required"
    OPTIONAL = "optional"
    NONE = "none"


class Range(FrozenConfig):
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)

    def holds(self, value: int) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def text(self) -> str:
        if self.min is not None and self.max is not None:
            return str(self.min) if self.min == self.max else f"{self.min} to {self.max}"
        return f"at least {self.min}" if self.min is not None else f"at most {self.max}"


class ImageNeed(FrozenConfig):
    kinds: tuple[RadiographKind, ...] = Field(min_length=1)
    min_count: int = Field(1, ge=1)


class Concept(FrozenConfig):
    name: str
    category: str
    site: Site
    radiograph: RadiographNeed = RadiographNeed.NONE
    documents: tuple[RadiographKind, ...] = ()  # kinds that document it, named when missing
    evidence: str | None = None  # evidence-matrix entry; None: nothing to see on an image
    tooth_types: tuple[ToothType, ...] = ()  # empty: any tooth
    dentition: tuple[Dentition, ...] = ()
    surfaces: Range | None = None
    age_years: Range | None = None
    teeth_in_quadrant: Range | None = None
    images: ImageNeed | None = None
    family: str
    tier: int = Field(ge=1)
    downcodes_to: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.radiograph is RadiographNeed.REQUIRED and not self.documents:
            raise ValueError("a concept that requires a radiograph must name the documents (kinds) that show it")
        if self.surfaces is not None and self.site is not Site.TOOTH:
            raise ValueError("surfaces only make sense for a tooth site")
        return self

    def fits_tooth(self, tooth: Tooth) -> bool:
        return ((not self.tooth_types or tooth.tooth_type in self.tooth_types)
                and (not self.dentition or tooth.dentition in self.dentition))


class CodeSystem(FrozenConfig):
    name: str
    default: bool = False


class Catalogue(FrozenConfig):
    version: str
    code_systems: dict[str, CodeSystem]
    categories: tuple[str, ...]
    concepts: dict[str, Concept]
    codes: dict[str, dict[str, tuple[str, ...]]]  # code system -> code -> concept ids

    @model_validator(mode="after")
    def _references(self) -> Self:
        problems: list[str] = []
        for cid, concept in self.concepts.items():
            if concept.category not in self.categories:
                problems.append(f"concept {cid}: unknown category {concept.category!r}")
            if concept.downcodes_to is not None:
                lower = self.concepts.get(concept.downcodes_to)
                if lower is None:
                    problems.append(f"concept {cid}: downcodes_to unknown concept {concept.downcodes_to!r}")
                elif lower.tier >= concept.tier:
                    problems.append(f"concept {cid}: downcodes_to {concept.downcodes_to!r} is not a lower tier")
        for system, table in self.codes.items():
            if system not in self.code_systems:
                problems.append(f"codes: unknown code system {system!r}")
            for code, targets in table.items():
                if not targets:
                    problems.append(f"{system} {code}: maps to no concept")
                for target in targets:
                    if target not in self.concepts:
                        problems.append(f"{system} {code}: unknown concept {target!r}")
        defaults = [s for s, cs in self.code_systems.items() if cs.default]
        if len(defaults) != 1:
            problems.append(f"exactly one code system must be the default, found {defaults or 'none'}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @cached_property
    def default_system(self) -> str:
        return next(s for s, cs in self.code_systems.items() if cs.default)

    # Caches of derived answers: the catalogue is immutable, so an answer computed once holds.
    # (cached_property lives in the instance dict: cheaper to reach than a pydantic private attribute.)
    @cached_property
    def _choices(self) -> dict[tuple[tuple[str, ...], int | None, int], str]:
        return {}

    @cached_property
    def _code_concepts(self) -> dict[tuple[str, ...], frozenset[str]]:
        return {}

    def concepts_of(self, codes: tuple[str, ...]) -> frozenset[str]:
        """Every concept the default-system ``codes`` name (the rule tables are written in it)."""
        found = self._code_concepts.get(codes)
        if found is None:
            table = self.codes[self.default_system]
            found = self._code_concepts[codes] = frozenset(c for code in codes for c in table[code])
        return found

    def family(self, family: str) -> tuple[str, ...]:
        return tuple(cid for cid, c in self.concepts.items() if c.family == family)

    def code_for(self, concept_id: str, system: str) -> str | None:
        """The code naming ``concept_id`` in ``system``: a code mapping to it alone first,
        else a shared code (a payer code covering several tiers)."""
        table = self.codes.get(system, {})
        only = [code for code, targets in table.items() if targets == (concept_id,)]
        shared = [code for code, targets in table.items() if concept_id in targets]
        found = only or shared
        return found[0] if found else None

    def resolve(self, line: ClaimLine) -> ResolvedLine:
        """The concept a billed line names. Raises UnknownCodeError for a code (or code
        system) the catalogue does not know, with what it does know."""
        if line.code_system not in self.codes:
            raise UnknownCodeError(
                f"line {line.line_id}: unknown code system {line.code_system!r} (known: {', '.join(sorted(self.codes))})")
        targets = self.codes[line.code_system].get(line.code)
        if targets is None:
            raise UnknownCodeError(f"line {line.line_id}: {line.code_system} code {line.code!r} is not in the "
                                   f"procedure catalogue {self.version}")
        tooth = line.fdi_tooth
        chosen = self._choose(targets, tooth.fdi if tooth else None, len(line.surface_set))
        return ResolvedLine(line=line, concept_id=chosen, concept=self.concepts[chosen])

    def _choose(self, targets: tuple[str, ...], fdi: int | None, billed_surfaces: int) -> str:
        key = (targets, fdi, billed_surfaces)
        cache = self._choices  # the catalogue is immutable: a choice made once holds
        if key not in cache:
            tooth = Tooth.fdi_of(fdi) if fdi is not None else None
            fitting = [t for t in targets if tooth is None or self.concepts[t].fits_tooth(tooth)]
            by_surfaces = [t for t in fitting if self.concepts[t].surfaces is None or not billed_surfaces
                           or self.concepts[t].surfaces.holds(billed_surfaces)]  # type: ignore[union-attr]
            cache[key] = (by_surfaces or fitting or list(targets))[0]
        return cache[key]


class UnknownCodeError(ConfigError):
    code = "claim.unknown_code"


@dataclass(frozen=True)
class ResolvedLine:
    line: ClaimLine
    concept_id: str
    concept: Concept


def load_catalogue(path: str | Path = DEFAULT_CATALOGUE) -> Catalogue:
    catalogue = load_config(Catalogue, path)
    if not catalogue.concepts:
        raise ConfigError(f"{path}: the catalogue has no concepts")
    return catalogue
