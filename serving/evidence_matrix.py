"""The evidence matrix (``configs/validation/evidence-matrix.yaml``) and the score bands
(``configs/validation/thresholds.yaml``): what must be seen on the billed tooth for each
procedure, and how sure the model must be. Both are validated on load: an unknown field,
finding class, narrative signal, depth or catalogue entry is refused with its place."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Discriminator, Field, Tag, model_validator

from models.config_loading import ConfigError, FrozenConfig, load_config
from models.findings import CariesDepth, FindingClass
from models.paths import PROJECT_ROOT
from serving.catalogue import Catalogue, Range
from serving.decisions import Action
from serving.narrative import Signal

VALIDATION_CONFIGS = PROJECT_ROOT / "configs" / "validation"
DEFAULT_MATRIX = VALIDATION_CONFIGS / "evidence-matrix.yaml"
DEFAULT_THRESHOLDS = VALIDATION_CONFIGS / "thresholds.yaml"

DEPTH_ORDER: tuple[CariesDepth, ...] = (CariesDepth.ENAMEL, CariesDepth.DENTIN, CariesDepth.NEAR_PULP)


class FindingAtom(FrozenConfig):
    finding: FindingClass
    min_depth: CariesDepth | None = None
    min_surfaces: int | None = Field(None, ge=1, le=5)

    @model_validator(mode="after")
    def _depth_only_for_caries(self) -> Self:
        if self.min_depth is not None and self.finding is not FindingClass.CARIES:
            raise ValueError(f"min_depth applies to caries only, not {self.finding.value}")
        return self

    def text(self) -> str:
        return self._text

    @cached_property  # the atom is immutable; its words are read for every line it is checked on
    def _text(self) -> str:
        words = self.finding.value.replace("_", " ")
        if self.min_depth is not None:
            words += f" reaching {self.min_depth.value.replace('_', ' ')}"
        if self.min_surfaces is not None:
            words += f" over {self.min_surfaces}+ surfaces"
        return words


class RootCountAtom(FrozenConfig):
    root_count: Range

    def text(self) -> str:
        return f"root count {self.root_count.text()}"


class NarrativeAtom(FrozenConfig):
    narrative: Signal

    def text(self) -> str:
        return f"narrative: {self.narrative.value.replace('_', ' ')}"


class ToothPresentAtom(FrozenConfig):
    tooth_present: Literal[True]

    def text(self) -> str:
        return "tooth present"


class AnyOf(FrozenConfig):
    any_of: tuple[Condition, ...] = Field(min_length=1)


class AllOf(FrozenConfig):
    all_of: tuple[Condition, ...] = Field(min_length=1)


_CONDITION_KEYS = ("any_of", "all_of", "finding", "root_count", "narrative", "tooth_present")


def _condition_kind(value: Any) -> str | None:
    """Which kind of condition a mapping is, from the key it carries (so that an error
    names the one kind meant, not every kind it failed to be)."""
    keys = value.keys() if isinstance(value, dict) else vars(value).keys() if hasattr(value, "__dict__") else ()
    return next((k for k in _CONDITION_KEYS if k in keys), None)


Atom = FindingAtom | RootCountAtom | NarrativeAtom | ToothPresentAtom
Condition = Annotated[
    Annotated[AnyOf, Tag("any_of")] | Annotated[AllOf, Tag("all_of")] | Annotated[FindingAtom, Tag("finding")]
    | Annotated[RootCountAtom, Tag("root_count")] | Annotated[NarrativeAtom, Tag("narrative")]
    | Annotated[ToothPresentAtom, Tag("tooth_present")],
    Discriminator(_condition_kind, custom_error_type="condition", custom_error_message=
                  "a condition needs one of the keys " + ", ".join(_CONDITION_KEYS)),
]
AnyOf.model_rebuild()
AllOf.model_rebuild()


class Contraindication(FrozenConfig):
    when: FindingAtom
    action: Literal[Action.REJECT, Action.FLAG]
    reason: str = Field(min_length=1)


class MatrixEntry(FrozenConfig):
    indication: Condition | None = None
    tier_evidence: Condition | None = None
    contraindications: tuple[Contraindication, ...] = ()
    narrative_conflicts: tuple[Signal, ...] = ()


class EvidenceMatrix(FrozenConfig):
    version: str
    entries: dict[str, MatrixEntry]

    def check_against(self, catalogue: Catalogue) -> None:
        """Every catalogue concept's ``evidence`` names an entry here; tier evidence only
        where the concept has a lower tier to fall back to."""
        problems = []
        for cid, concept in catalogue.concepts.items():
            if concept.evidence is None:
                continue
            entry = self.entries.get(concept.evidence)
            if entry is None:
                problems.append(f"catalogue concept {cid} names evidence {concept.evidence!r}, which the matrix lacks")
        used = {c.evidence for c in catalogue.concepts.values()}
        problems += [f"matrix entry {name!r} is used by no catalogue concept" for name in self.entries if name not in used]
        if problems:
            raise ConfigError(f"evidence matrix {self.version} vs catalogue {catalogue.version}: " + "; ".join(problems))


class Band(FrozenConfig):
    support: float = Field(ge=0.0, le=1.0)
    absent: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.absent > self.support:
            raise ValueError(f"absent ({self.absent}) must not exceed support ({self.support})")
        return self


class RootCountBand(FrozenConfig):
    support: float = Field(ge=0.0, le=1.0)


class Thresholds(FrozenConfig):
    version: str
    findings: dict[FindingClass, Band]
    tooth_presence: Band
    root_count: RootCountBand

    @model_validator(mode="after")
    def _every_class(self) -> Self:
        missing = [c.value for c in FindingClass if c not in self.findings]
        if missing:
            raise ValueError(f"no score band for {', '.join(missing)}")
        return self


def load_matrix(path: str | Path = DEFAULT_MATRIX, catalogue: Catalogue | None = None) -> EvidenceMatrix:
    matrix = load_config(EvidenceMatrix, path)
    if catalogue is not None:
        matrix.check_against(catalogue)
    return matrix


def load_thresholds(path: str | Path = DEFAULT_THRESHOLDS) -> Thresholds:
    return load_config(Thresholds, path)
