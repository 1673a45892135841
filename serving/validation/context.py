"""Everything the validation rules read for one billed line, gathered once by the engine
and passed in: the rules themselves do no I/O and keep no state."""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from models.detections import ImageReading
from models.radiographs import RadiographKind
from serving.catalogue import Catalogue, Concept, ResolvedLine
from serving.claims import ClaimLine
from serving.decisions import RULE_LIBRARY_VERSION
from serving.evidence_matrix import EvidenceMatrix, MatrixEntry, Thresholds
from serving.narrative import NarrativeSignals
from serving.tooth_evidence import ReadingContext, ToothEvidence

if TYPE_CHECKING:
    from serving.decisions import LineDecision


class DecisionMemo:
    """Decisions of a pure function kept by their inputs: the line decisions of lines sent
    without radiographs, which depend on nothing but the line, the member's age, the
    narrative and these tables (most of a payer's volume: exams, cleanings, fluoride).
    Bounded: the oldest entry goes first (an entry is about 4 KB: the default holds about
    45 MB at most). Shared by the threads of a replica."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[Hashable, LineDecision] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> LineDecision | None:
        return self._entries.get(key)

    def put(self, key: Hashable, decision: LineDecision) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = decision

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class Tables:
    """The versioned tables every decision cites."""

    catalogue: Catalogue
    matrix: EvidenceMatrix
    thresholds: Thresholds

    def versions(self) -> dict[str, str]:
        return dict(self._versions)

    @cached_property  # the tables never change: a decision made from them once holds
    def no_image_decisions(self) -> DecisionMemo:
        return DecisionMemo()

    @cached_property  # the tables never change: worked out once, copied for every decision
    def _versions(self) -> dict[str, str]:
        return {"rule_library": RULE_LIBRARY_VERSION, "catalogue": self.catalogue.version,
                "evidence_matrix": self.matrix.version, "thresholds": self.thresholds.version}


@dataclass(frozen=True)
class LineContext:
    """What every validation rule reads for one line. Without radiographs it is built from
    the line, the member's age, the narrative and the tables alone, which is what
    ``engine.validate_claim`` keys its reused decisions on: a field read from anywhere
    else must join that key."""

    resolved: ResolvedLine
    age_years: int
    readings: tuple[ImageReading, ...]
    narrative: NarrativeSignals
    tables: Tables
    tooth_evidence: ToothEvidence | None  # for tooth sites
    quadrant_teeth: tuple[int, ...] | None = None  # for quadrant sites: FDI numbers seen in that quadrant

    @property
    def line(self) -> ClaimLine:
        return self.resolved.line

    @property
    def concept(self) -> Concept:
        return self.resolved.concept

    @property
    def entry(self) -> MatrixEntry | None:
        name = self.concept.evidence
        return None if name is None else self.tables.matrix.entries[name]

    def reading_context(self) -> ReadingContext | None:
        if self.tooth_evidence is None:
            return None
        return ReadingContext(self.tooth_evidence, self.narrative, self.line.tooth_system, self.tables.thresholds)

    def images_of(self, kinds: tuple[RadiographKind, ...]) -> tuple[ImageReading, ...]:
        return tuple(r for r in self.readings if r.kind in kinds)

    def code_text(self, concept_id: str | None = None) -> str:
        """'D3330 (Endodontic therapy, molar tooth ...)' in the line's code system."""
        cid = concept_id or self.resolved.concept_id
        code = self.line.code if concept_id is None else self.tables.catalogue.code_for(cid, self.line.code_system)
        return f"{code or cid} ({self.tables.catalogue.concepts[cid].name})"
