"""What a rule returns (``RuleHit``) and what a claim line gets back (``LineDecision``).

Actions are ordered by severity: pass < flag < downcode < reject. A line's action is
the most severe of its hits; any flag among them sends the line to a reviewer."""

from __future__ import annotations

import functools
import operator
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

BoxXYXY = tuple[float, float, float, float]

# Version of the rule library (the rule functions of serving/validation and serving/rules);
# every RuleHit records it. Bump it whenever a rule's logic changes.
RULE_LIBRARY_VERSION = "1.2.0"  # 1.1.0: R0.preauthorization; 1.2.0: R1.recycled_image


class Action(StrEnum):
    PASS = "pass"
    FLAG = "flag"
    DOWNCODE = "downcode"
    REJECT = "reject"

    # Python 3.11's Enum.value is a descriptor written in Python, and pydantic reads it for every
    # action it serialises (tens per claim decision): read in C, a decision's JSON takes a
    # fifth less time. Same value, same type.
    value = property(operator.attrgetter("_value_"))

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.PASS: 0, Action.FLAG: 1, Action.DOWNCODE: 2, Action.REJECT: 3}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EvidenceRef(_Frozen):
    """One thing a decision rests on: a detection on an image (box, score, model), a
    phrase of the narrative, or a fact of the claim (e.g. no attachment)."""

    source: str  # "image", "narrative" or "claim"
    description: str
    image_id: str | None = None
    box_xyxy_px: BoxXYXY | None = None
    score: float | None = None
    model: str | None = None  # "findings@0.1.1"
    finding_class: str | None = None
    tooth_fdi: int | None = None


class RuleHit(_Frozen):
    rule_id: str
    rule_version: str
    action: Action
    reason: str
    suggested_code: str | None = None
    suggested_code_system: str | None = None
    evidence: tuple[EvidenceRef, ...] = ()
    confidence: float = Field(1.0, ge=0.0, le=1.0)
    fired: bool = True  # False: the rule ran and found nothing to object to (recorded all the same)


class LineDecision(_Frozen):
    line_id: str
    action: Action
    suggested_code: str | None = None
    suggested_code_system: str | None = None
    approved_amount: float | None = None  # set by the sub-limit ledger; None before it runs
    rule_hits: tuple[RuleHit, ...] = ()
    confidence: float = 1.0
    needs_review: bool = False
    member_notice: str | None = None  # e.g. the residual beyond a sub-limit, for member communication

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(h.reason for h in self.rule_hits if h.fired)


def make_hit(rule_id: str, action: Action, reason: str, *, suggested: str | None = None, system: str | None = None,
             evidence: tuple[EvidenceRef, ...] = (), confidence: float = 1.0, fired: bool = True) -> RuleHit:
    """A RuleHit of this rule library, the confidence clipped to [0, 1]. Built without
    re-validation (every field is produced here with its type), which keeps the rules fast;
    the many identical "nothing to object to" hits are shared (they are immutable)."""
    if not evidence and not suggested and confidence == 1.0:
        return _plain_hit(rule_id, action, reason, fired)
    return _build_hit(rule_id, action, reason, suggested, system, tuple(evidence), confidence, fired)


@functools.lru_cache(maxsize=4096)
def _plain_hit(rule_id: str, action: Action, reason: str, fired: bool) -> RuleHit:
    return _build_hit(rule_id, action, reason, None, None, (), 1.0, fired)


def claim_evidence(description: str) -> EvidenceRef:
    """An evidence reference to a fact of the claim, built without re-validation (every
    field is given here with its type), as rule hits are."""
    return assemble(EvidenceRef, {"source": "claim", "description": description, "image_id": None,
                                  "box_xyxy_px": None, "score": None, "model": None, "finding_class": None,
                                  "tooth_fdi": None})


_Model = TypeVar("_Model", bound=BaseModel)


def assemble(model: type[_Model], values: dict[str, Any]) -> _Model:
    """``model.model_construct(**values)`` for a caller that gives every field, already of
    its type: the same object without model_construct's per-field bookkeeping, which is a
    large part of adjudicating a line (tens of thousands of hits per second)."""
    obj = model.__new__(model)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def _build_hit(rule_id: str, action: Action, reason: str, suggested: str | None, system: str | None,
               evidence: tuple[EvidenceRef, ...], confidence: float, fired: bool) -> RuleHit:
    return assemble(RuleHit, {"rule_id": rule_id, "rule_version": RULE_LIBRARY_VERSION, "action": action, "reason": reason,
                              "suggested_code": suggested, "suggested_code_system": system if suggested else None,
                              "evidence": evidence, "confidence": round(min(max(confidence, 0.0), 1.0), 4),
                              "fired": fired})


def combine_hits(line_id: str, hits: tuple[RuleHit, ...], *, approved_amount: float | None = None,
                 member_notice: str | None = None) -> LineDecision:
    """Most severe action wins; its suggested code goes with it. Confidence is that of the
    deciding hit; a flag anywhere means a person looks at the line."""
    fired = [h for h in hits if h.fired and h.action is not Action.PASS]
    # Built without re-validation: every field comes from validated hits.
    if not fired:
        return assemble(LineDecision, {
            "line_id": line_id, "action": Action.PASS, "suggested_code": None, "suggested_code_system": None,
            "approved_amount": approved_amount, "rule_hits": tuple(hits),
            "confidence": min((h.confidence for h in hits), default=1.0), "needs_review": False,
            "member_notice": member_notice})
    worst = max(fired, key=lambda h: (h.action.severity, h.confidence))
    return assemble(LineDecision, {
        "line_id": line_id, "action": worst.action, "suggested_code": worst.suggested_code,
        "suggested_code_system": worst.suggested_code_system, "approved_amount": approved_amount,
        "rule_hits": tuple(hits), "confidence": worst.confidence,
        "needs_review": any(h.action is Action.FLAG for h in fired), "member_notice": member_notice})
