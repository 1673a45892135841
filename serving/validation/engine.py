"""Runs the validation rules over every line of a claim, in a declared order, and combines
each line's hits into its decision (most severe action wins; every rule is recorded,
fired or not, with the rule-library and table versions)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from models.detections import ImageReading
from models.teeth import Tooth
from serving.catalogue import DEFAULT_CATALOGUE, Site, UnknownCodeError, load_catalogue
from serving.claims import Claim, ClaimLine
from serving.decisions import Action, EvidenceRef, LineDecision, RuleHit, combine_hits
from serving.evidence_matrix import DEFAULT_MATRIX, DEFAULT_THRESHOLDS, Thresholds, load_matrix, load_thresholds
from serving.narrative import NarrativeSignals, parse_narrative
from serving.tooth_evidence import collect_tooth_evidence
from serving.validation.context import RULE_LIBRARY_VERSION, LineContext, Tables
from serving.validation.necessity import check_contraindications, check_documentation, check_indication
from serving.validation.substitution import check_image_count, check_site, check_surfaces, check_tier

Rule = Callable[[LineContext], RuleHit]

# The order rules run in (and are listed in a decision).
RULES: tuple[Rule, ...] = (
    check_documentation, check_contraindications, check_indication,
    check_site, check_image_count, check_surfaces, check_tier,
)
CATALOGUE_RULE = "R0.catalogue"


class ClaimValidation(BaseModel):
    """The validation layer's answer for one claim (the rule module adds ledgers and history)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    claim_id: str
    lines: tuple[LineDecision, ...]
    versions: dict[str, str]

    def line(self, line_id: str) -> LineDecision:
        return next(x for x in self.lines if x.line_id == line_id)


def load_tables(catalogue: str | Path = DEFAULT_CATALOGUE, matrix: str | Path = DEFAULT_MATRIX,
                thresholds: str | Path = DEFAULT_THRESHOLDS) -> Tables:
    cat = load_catalogue(catalogue)
    return Tables(catalogue=cat, matrix=load_matrix(matrix, cat), thresholds=load_thresholds(thresholds))


def quadrant_teeth(quadrant: int, readings: tuple[ImageReading, ...], thresholds: Thresholds) -> tuple[int, ...]:
    """FDI numbers seen confidently in a quadrant (permanent ``q`` and primary ``q + 4``)."""
    seen = {t.fdi for r in readings for t in r.teeth
            if t.score >= thresholds.tooth_presence.support and t.fdi // 10 in (quadrant, quadrant + 4)}
    return tuple(sorted(seen))


def _line_context(line: ClaimLine, age_years: int, readings: tuple[ImageReading, ...], narrative: NarrativeSignals,
                  tables: Tables) -> LineContext:
    resolved = tables.catalogue.resolve(line)
    tooth: Tooth | None = line.fdi_tooth
    evidence = None
    if tooth is not None and resolved.concept.site is Site.TOOTH:
        evidence = collect_tooth_evidence(tooth, readings, tables.thresholds)
    quadrant = line.quadrant or (tooth.quadrant if tooth is not None and tooth.quadrant <= 4 else None)
    in_quadrant = None
    if resolved.concept.site is Site.QUADRANT and quadrant is not None:
        in_quadrant = quadrant_teeth(quadrant, readings, tables.thresholds)
    return LineContext(resolved=resolved, age_years=age_years, readings=readings,
                       narrative=narrative, tables=tables, tooth_evidence=evidence, quadrant_teeth=in_quadrant)


def validate_line(ctx: LineContext, rules: tuple[Rule, ...] = RULES) -> LineDecision:
    return combine_hits(ctx.line.line_id, tuple(rule(ctx) for rule in rules))


# What a line's validation reads of the line: every field but the fee.
_line_key = operator.attrgetter(*(name for name in ClaimLine.model_fields if name != "fee"))


def _decide_line(line: ClaimLine, age_years: int, images: tuple[ImageReading, ...],
                 narrative: NarrativeSignals, tables: Tables) -> LineDecision:
    try:
        ctx = _line_context(line, age_years, images, narrative, tables)
    except UnknownCodeError as exc:
        hit = RuleHit(rule_id=CATALOGUE_RULE, rule_version=RULE_LIBRARY_VERSION, action=Action.FLAG,
                      reason=f"{exc.message}; a reviewer must check it",
                      evidence=(EvidenceRef(source="claim", description=f"line {line.line_id}: {line.code_system} "
                                            f"{line.code}"),))
        return combine_hits(line.line_id, (hit,))
    return validate_line(ctx)


def validate_claim(claim: Claim, readings: Mapping[str, ImageReading] | tuple[ImageReading, ...], tables: Tables,
                   model_versions: Mapping[str, str] | None = None) -> ClaimValidation:
    """Decide every line of ``claim`` from the readings of its radiographs (keyed by
    radiograph id, or a tuple of readings). Pure: no I/O, no clock."""
    images = tuple(readings.values()) if isinstance(readings, Mapping) else tuple(readings)
    narrative = parse_narrative(claim.narrative)
    age = claim.member.age_on(claim.date_of_service)
    # Without radiographs a line's decision depends only on the line, the age, the narrative
    # and the tables: decided once, reused for every line like it (the rules are pure).
    memo = None if images else tables.no_image_decisions
    decisions = []
    for line in claim.lines:
        if memo is None:
            decisions.append(_decide_line(line, age, images, narrative, tables))
            continue
        key = (_line_key(line), age, claim.narrative)
        decision = memo.get(key)
        if decision is None:
            decision = _decide_line(line, age, images, narrative, tables)
            memo.put(key, decision)
        decisions.append(decision)
    versions = dict(tables.versions())
    for reading in images:
        versions.update({f"model:{k}": v for k, v in reading.model_versions})
    versions.update({f"model:{k}": v for k, v in (model_versions or {}).items()})
    return ClaimValidation(claim_id=claim.claim_id, lines=tuple(decisions), versions=versions)
