"""Rule 1, clinical necessity: the billed procedure needs a radiograph that shows the
billed tooth, and that radiograph must show the procedure's indication.

Three pure functions, each returning one ``RuleHit`` (fired or not, always recorded):
``check_documentation`` (a required radiograph is there and shows the tooth),
``check_contraindications`` (nothing on the tooth makes the procedure impossible as billed)
and ``check_indication`` (the evidence-matrix indication reads supported)."""

from __future__ import annotations

from models.teeth import Tooth
from serving.catalogue import RadiographNeed, Site
from serving.decisions import Action, EvidenceRef, RuleHit, claim_evidence, make_hit
from serving.tooth_evidence import Presence, State, read_condition
from serving.validation.context import LineContext

DOCUMENTATION = "R1.documentation"
CONTRAINDICATION = "R1.contraindication"
INDICATION = "R1.necessity"


def _hit(rule_id: str, action: Action, reason: str, *, evidence: tuple[EvidenceRef, ...] = (),
         confidence: float = 1.0, fired: bool = True) -> RuleHit:
    return make_hit(rule_id, action, reason, evidence=evidence, confidence=confidence, fired=fired)


def _kinds_text(ctx: LineContext) -> str:
    return " or ".join(k.value for k in ctx.concept.documents)


def check_documentation(ctx: LineContext) -> RuleHit:
    concept = ctx.concept
    if concept.radiograph is not RadiographNeed.REQUIRED:
        return _hit(DOCUMENTATION, Action.PASS, "no radiograph is required for this procedure", fired=False)
    documenting = ctx.images_of(concept.documents)
    claim_ref = claim_evidence(f"{len(ctx.readings)} radiograph(s) attached: "
                               + (", ".join(f"{r.image_id} ({r.kind.value})" for r in ctx.readings) or "none"))
    if not documenting:
        return _hit(DOCUMENTATION, Action.FLAG,
                    f"missing documentation: {ctx.code_text()} requires a {_kinds_text(ctx)} radiograph, and none is attached",
                    evidence=(claim_ref,))
    if concept.site is Site.QUADRANT:
        if not ctx.quadrant_teeth:
            return _hit(DOCUMENTATION, Action.FLAG, f"quadrant {ctx.line.quadrant} is not shown in the submitted images; "
                        f"a {_kinds_text(ctx)} radiograph of it is required", evidence=(claim_ref,))
        return _hit(DOCUMENTATION, Action.PASS, f"quadrant {ctx.line.quadrant} shown", fired=False)
    evidence = ctx.tooth_evidence
    if concept.site is not Site.TOOTH or evidence is None:
        return _hit(DOCUMENTATION, Action.PASS, f"{_kinds_text(ctx)} radiograph attached", fired=False)
    tooth: Tooth = evidence.tooth
    presence_ref = evidence.presence_ref()
    refs = (presence_ref,) if presence_ref else (claim_ref,)
    if evidence.presence is Presence.NOT_SHOWN:
        return _hit(DOCUMENTATION, Action.FLAG, f"tooth not in submitted images: no attached radiograph shows tooth "
                    f"{tooth.fdi} (Universal {tooth.universal}); a {_kinds_text(ctx)} radiograph of it is required",
                    evidence=(claim_ref,))
    if evidence.presence is Presence.ABSENT:
        images = ", ".join(evidence.covering_images)
        return _hit(DOCUMENTATION, Action.FLAG, f"tooth {tooth.fdi} (Universal {tooth.universal}) appears absent "
                    f"(extracted or missing) in {images}: its place is shown but no tooth is seen there",
                    evidence=(claim_ref,), confidence=0.8)
    if evidence.presence is Presence.UNCERTAIN:
        return _hit(DOCUMENTATION, Action.FLAG, f"tooth {tooth.fdi} is only faintly identified in the submitted images",
                    evidence=refs, confidence=0.5)
    score = evidence.best_sighting.tooth.score if evidence.best_sighting else 1.0
    return _hit(DOCUMENTATION, Action.PASS, f"tooth {tooth.fdi} shown", evidence=refs, confidence=score, fired=False)


def check_contraindications(ctx: LineContext) -> RuleHit:
    entry, reading = ctx.entry, ctx.reading_context()
    if entry is None or reading is None or not entry.contraindications:
        return _hit(CONTRAINDICATION, Action.PASS, "no contraindication defined", fired=False)
    found = []
    for contra in entry.contraindications:
        verdict = read_condition(contra.when, reading)
        if verdict.state is State.SUPPORTED:
            found.append((contra, verdict))
    if not found:
        return _hit(CONTRAINDICATION, Action.PASS, "nothing on the tooth contradicts the procedure", fired=False)
    contra, verdict = max(found, key=lambda cv: (cv[0].action is Action.REJECT, cv[1].confidence))
    return _hit(CONTRAINDICATION, contra.action, f"{ctx.code_text()} on tooth {reading.evidence.tooth.fdi}: {contra.reason}",
                evidence=verdict.evidence, confidence=verdict.confidence)


def check_indication(ctx: LineContext) -> RuleHit:
    entry, reading = ctx.entry, ctx.reading_context()
    if entry is None or entry.indication is None or reading is None:
        return _hit(INDICATION, Action.PASS, "no radiographic indication is defined for this procedure", fired=False)
    verdict = read_condition(entry.indication, reading)
    tooth = reading.evidence.tooth.fdi
    if verdict.state is State.SUPPORTED:
        return _hit(INDICATION, Action.PASS, f"indication seen: {verdict.text}", evidence=verdict.evidence,
                    confidence=verdict.confidence, fired=False)
    if verdict.state is State.UNCERTAIN:
        return _hit(INDICATION, Action.FLAG, f"the indication for {ctx.code_text()} on tooth {tooth} is not clear: "
                    f"{verdict.text}", evidence=verdict.evidence, confidence=1.0 - verdict.confidence)
    return _hit(INDICATION, Action.FLAG, f"no visible indication for {ctx.code_text()} on tooth {tooth}: {verdict.text}",
                evidence=verdict.evidence, confidence=verdict.confidence)
