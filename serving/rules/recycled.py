"""Recycled radiographs: the same (or a near-identical) image already sent on a claim for
another member, or for the same member on another date of service, puts the claim's
documentation in doubt; every line is flagged with the earlier claim as evidence. The same
image again for the same member and date (a corrected resubmission), or a pre-authorisation
image sent again with the claim it planned, is expected and passes.

``find_matches`` compares this claim's fingerprints with stored candidates (pure compute);
``check_recycled`` turns the matches into the rule's hit."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from serving.decisions import Action, EvidenceRef, RuleHit, make_hit
from serving.fingerprints import Candidates, Fingerprint, similarities, thresholds_for

RECYCLED = "R1.recycled_image"


@dataclass(frozen=True)
class ImagePrint:
    """A radiograph of the claim being decided: its id, kind and fingerprint."""

    radiograph_id: str
    kind: str
    fingerprint: Fingerprint


@dataclass(frozen=True)
class StoredPrint:
    """A radiograph of an earlier decided claim (a candidate for a match)."""

    claim_id: str
    mode: str
    radiograph_id: str
    kind: str
    same_member: bool
    date_of_service: dt.date
    fingerprint: Fingerprint


@dataclass(frozen=True)
class ImageMatch:
    radiograph_id: str  # on this claim
    earlier: StoredPrint
    score: float

    def suspicious(self, day: dt.date) -> bool:
        if not self.earlier.same_member:
            return True
        if self.earlier.mode == "preauthorization":
            return False  # the planning image sent again with the claim
        return self.earlier.date_of_service != day


def find_matches(prints: tuple[ImagePrint, ...], candidates: tuple[StoredPrint, ...]) -> tuple[ImageMatch, ...]:
    """Every (image, earlier image) pair of the same kind at or above the kind's match threshold."""
    found = []
    prepared: dict[str, tuple[list[StoredPrint], Candidates]] = {}  # per kind, for every image of it
    for image in prints:
        if image.kind not in prepared:
            same_kind = [c for c in candidates if c.kind == image.kind]
            prepared[image.kind] = same_kind, Candidates.of([c.fingerprint for c in same_kind])
        same_kind, templates = prepared[image.kind]
        scores = similarities(image.fingerprint, templates, image.kind)
        match_at = thresholds_for(image.kind).match
        found += [ImageMatch(image.radiograph_id, earlier, round(float(score), 4))
                  for earlier, score in zip(same_kind, scores, strict=True) if score >= match_at]
    return tuple(found)


def check_recycled(day: dt.date, matches: tuple[ImageMatch, ...]) -> RuleHit:
    suspicious = [m for m in matches if m.suspicious(day)]
    if not suspicious:
        why = ("the attached radiographs match no earlier claim's" if not matches else
               "the attached radiographs match only this member's earlier submission for the same care")
        return make_hit(RECYCLED, Action.PASS, why, fired=False)
    evidence = tuple(EvidenceRef(
        source="image", image_id=m.radiograph_id, score=m.score,
        description=(f"same radiograph as {m.earlier.radiograph_id} on claim {m.earlier.claim_id} "
                     f"({'another member' if not m.earlier.same_member else 'this member'}, "
                     f"{m.earlier.date_of_service.isoformat()}), similarity {m.score:.2f}"))
        for m in suspicious)
    first = suspicious[0]
    whose = "another member's claim" if not first.earlier.same_member else \
        f"this member's claim of {first.earlier.date_of_service.isoformat()}"
    return make_hit(RECYCLED, Action.FLAG, f"radiograph {first.radiograph_id} was already sent with {whose} "
                    f"({first.earlier.claim_id}); a recycled image does not document this care"
                    + (f" ({len(suspicious)} matches)" if len(suspicious) > 1 else ""), evidence=evidence)
