"""Finding classes the detectors report and the label names datasets use for them.

Pathology classes are indications for treatment; evidence classes show treatment already
done (they support codes such as crowns or retreatments)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from models.errors import UnknownLabelError
from models.teeth import Tooth


class FindingClass(StrEnum):
    CARIES = "caries"
    PERIAPICAL_LESION = "periapical_lesion"
    IMPACTED_TOOTH = "impacted_tooth"
    RESTORATION = "restoration"
    CROWN = "crown"
    ROOT_CANAL_FILLING = "root_canal_filling"
    IMPLANT = "implant"

    @property
    def is_pathology(self) -> bool:
        return self in PATHOLOGY_CLASSES

    @property
    def is_evidence(self) -> bool:
        return not self.is_pathology


PATHOLOGY_CLASSES: frozenset[FindingClass] = frozenset(
    {FindingClass.CARIES, FindingClass.PERIAPICAL_LESION, FindingClass.IMPACTED_TOOTH}
)
EVIDENCE_CLASSES: frozenset[FindingClass] = frozenset(set(FindingClass) - PATHOLOGY_CLASSES)


class CariesDepth(StrEnum):
    """How far a carious lesion reaches: within enamel, into dentin, or close to the pulp."""

    ENAMEL = "enamel"
    DENTIN = "dentin"
    NEAR_PULP = "near_pulp"


@dataclass(frozen=True)
class Label:
    """What one dataset category means in our vocabulary: a tooth, or a finding class
    (with the caries depth when the category states it)."""

    tooth: Tooth | None = None
    finding: FindingClass | None = None
    caries_depth: CariesDepth | None = None

    def __post_init__(self) -> None:
        if (self.tooth is None) == (self.finding is None):
            raise ValueError("a Label is either a tooth or a finding")
        if self.caries_depth is not None and self.finding is not FindingClass.CARIES:
            raise ValueError("only caries carries a depth")

    @property
    def name(self) -> str:
        """Canonical name: 'tooth-36', 'caries-dentin', 'periapical-lesion', ..."""
        if self.tooth is not None:
            return f"tooth-{self.tooth.fdi}"
        assert self.finding is not None
        base = self.finding.value.replace("_", "-")
        return f"{base}-{self.caries_depth.value.replace('_', '-')}" if self.caries_depth else base


def _canonical_labels() -> dict[str, Label]:
    from models.teeth import ALL_FDI

    labels = [Label(tooth=Tooth.fdi_of(fdi)) for fdi in ALL_FDI]
    labels += [Label(finding=cls) for cls in FindingClass]
    labels += [Label(finding=FindingClass.CARIES, caries_depth=d) for d in CariesDepth]
    return {label.name: label for label in labels}


CANONICAL_LABELS: dict[str, Label] = _canonical_labels()

# Names used by public datasets (DENTEX 2023, Tufts, YOLO exports) for the same things.
# DENTEX's "Deep Caries" is caries reaching close to the pulp.
DATASET_ALIASES: dict[str, str] = {
    "caries": "caries",
    "deep caries": "caries-near-pulp",
    "periapical lesion": "periapical-lesion",
    "impacted": "impacted-tooth",
    "impacted tooth": "impacted-tooth",
    "filling": "restoration",
    "restoration": "restoration",
    "crown": "crown",
    "root canal treatment": "root-canal-filling",
    "root canal filling": "root-canal-filling",
    "implant": "implant",
}


def _normalise(name: str) -> str:
    return " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


def resolve_label(name: str, extra_map: dict[str, str] | None = None) -> Label:
    """Map a dataset's category name onto our vocabulary.

    Tried in order: the caller's map (dataset name -> canonical name), canonical names
    ('tooth-36', 'caries-dentin'), bare FDI numbers ('36'), known dataset aliases.
    Raises UnknownLabelError when nothing matches, so callers can count what they drop."""
    if extra_map and name in extra_map:
        target = extra_map[name]
        if target not in CANONICAL_LABELS:
            raise UnknownLabelError(
                f"category map sends {name!r} to {target!r}, which is not a label we know "
                f"(e.g. 'tooth-36', 'caries-dentin', 'periapical-lesion')"
            )
        return CANONICAL_LABELS[target]
    if name in CANONICAL_LABELS:
        return CANONICAL_LABELS[name]
    stripped = name.strip()
    if stripped.isdigit() and f"tooth-{stripped}" in CANONICAL_LABELS:
        return CANONICAL_LABELS[f"tooth-{stripped}"]
    canonical_spaced = {_normalise(k): v for k, v in CANONICAL_LABELS.items()}
    key = _normalise(name)
    if key in canonical_spaced:
        return canonical_spaced[key]
    if key in DATASET_ALIASES:
        return CANONICAL_LABELS[DATASET_ALIASES[key]]
    raise UnknownLabelError(f"category {name!r} maps to nothing in our vocabulary")
