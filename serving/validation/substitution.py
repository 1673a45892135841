"""Rule 2, code substitution: is the billed tier the one the evidence supports?

Three signals: the site on the claim (tooth type, billed surfaces, quadrant, the member's
age), the image (root count, impaction, a previous root canal filling, how many surfaces
the lesion touches, how many teeth a quadrant has, how many images were taken) and the
narrative. A clear mismatch read from certain facts or a confident model is downcoded
to the code that fits; an uncertain one is flagged; a narrative that contradicts a clear
image is flagged with both, never silently overridden."""

from __future__ import annotations

from models.teeth import Surface
from serving.catalogue import Concept
from serving.decisions import Action, EvidenceRef, RuleHit, make_hit
from serving.tooth_evidence import State, evidenced_surfaces, read_condition
from serving.validation.context import LineContext

SITE = "R2.substitution.site"
IMAGE_COUNT = "R2.substitution.images"
SURFACES = "R2.substitution.surfaces"
TIER = "R2.substitution.tier"


_hit = make_hit


def _downcode(rule_id: str, ctx: LineContext, target: str, why: str, *, evidence: tuple[EvidenceRef, ...] = (),
              confidence: float = 1.0) -> RuleHit:
    """Downcode to ``target`` in the line's code system; a code system whose one code
    covers both tiers needs no change, so the line passes with the reason noted."""
    code = ctx.tables.catalogue.code_for(target, ctx.line.code_system)
    if code is None:
        return _hit(rule_id, Action.FLAG, f"{why}; {ctx.line.code_system} has no code for {target}, so a reviewer "
                    "must choose one", evidence=evidence, confidence=confidence)
    if code == ctx.line.code:
        return _hit(rule_id, Action.PASS, f"{why}; {code} covers it as billed", evidence=evidence,
                    confidence=confidence, fired=False)
    return _hit(rule_id, Action.DOWNCODE, f"{why}: {ctx.code_text(target)} applies", suggested=code,
                system=ctx.line.code_system, evidence=evidence, confidence=confidence)


def _facts_hold(concept: Concept, ctx: LineContext, surface_count: int | None) -> bool:
    tooth = ctx.line.fdi_tooth
    if tooth is not None and not concept.fits_tooth(tooth):
        return False
    if concept.surfaces is not None and surface_count and not concept.surfaces.holds(surface_count):
        return False
    if concept.age_years is not None and not concept.age_years.holds(ctx.age_years):
        return False
    return not (concept.teeth_in_quadrant is not None and ctx.quadrant_teeth is not None
                and not concept.teeth_in_quadrant.holds(len(ctx.quadrant_teeth)))


def _site_mismatch(ctx: LineContext) -> str | None:
    concept, line = ctx.concept, ctx.line
    tooth = line.fdi_tooth
    if tooth is not None and concept.tooth_types and tooth.tooth_type not in concept.tooth_types:
        return f"tooth {tooth.fdi} (Universal {tooth.universal}) is a {tooth.tooth_type.value}"
    if tooth is not None and concept.dentition and tooth.dentition not in concept.dentition:
        return f"tooth {tooth.fdi} is a {tooth.dentition.value} tooth"
    billed = len(line.surface_set)
    if concept.surfaces is not None and billed and not concept.surfaces.holds(billed):
        return f"{billed} surface(s) are listed ({line.surfaces})"
    if concept.age_years is not None and not concept.age_years.holds(ctx.age_years):
        return f"the member was {ctx.age_years} on the date of service"
    if concept.teeth_in_quadrant is not None and ctx.quadrant_teeth is not None \
            and not concept.teeth_in_quadrant.holds(len(ctx.quadrant_teeth)):
        return f"the images show {len(ctx.quadrant_teeth)} teeth in quadrant {line.quadrant}"
    return None


def check_site(ctx: LineContext) -> RuleHit:
    """The billed code must fit the tooth type, listed surfaces, age and quadrant size."""
    mismatch = _site_mismatch(ctx)
    if mismatch is None:
        return _hit(SITE, Action.PASS, "the code fits the billed site", fired=False)
    catalogue, concept = ctx.tables.catalogue, ctx.concept
    why = f"{ctx.code_text()} does not fit: {mismatch}"
    refs: tuple[EvidenceRef, ...] = (
        EvidenceRef(source="claim", description=f"line {ctx.line.line_id}: {ctx.line.code} on {ctx.line.site_text()}"),)
    if ctx.quadrant_teeth is not None and concept.teeth_in_quadrant is not None:
        refs += (EvidenceRef(source="image", description=f"teeth seen in quadrant {ctx.line.quadrant}: "
                             + (", ".join(map(str, ctx.quadrant_teeth)) or "none")),)
    fitting = [cid for cid in catalogue.family(concept.family)
               if _facts_hold(catalogue.concepts[cid], ctx, len(ctx.line.surface_set))]
    if not fitting:
        return _hit(SITE, Action.FLAG, f"{why}; no code of the same family fits, a reviewer must choose", evidence=refs)
    target = max(fitting, key=lambda cid: catalogue.concepts[cid].tier)
    if catalogue.concepts[target].tier >= concept.tier:
        return _hit(SITE, Action.FLAG, f"{why}; {ctx.code_text(target)} fits the site (billed below it)", evidence=refs)
    return _downcode(SITE, ctx, target, why, evidence=refs)


def check_image_count(ctx: LineContext) -> RuleHit:
    """Imaging codes: the billed series must be among the attachments."""
    need = ctx.concept.images
    if need is None:
        return _hit(IMAGE_COUNT, Action.PASS, "not an imaging code", fired=False)
    attached = ctx.images_of(need.kinds)
    ref = EvidenceRef(source="claim", description=f"{len(attached)} {'/'.join(k.value for k in need.kinds)} "
                      f"image(s) attached")
    if len(attached) >= need.min_count:
        return _hit(IMAGE_COUNT, Action.PASS, f"{len(attached)} image(s) attached", evidence=(ref,), fired=False)
    why = f"{ctx.code_text()} needs {need.min_count} {'/'.join(k.value for k in need.kinds)} image(s), {len(attached)} attached"
    target = ctx.concept.downcodes_to
    catalogue = ctx.tables.catalogue
    while target is not None:
        lower = catalogue.concepts[target].images
        if lower is not None and len(ctx.images_of(lower.kinds)) >= lower.min_count:
            return _downcode(IMAGE_COUNT, ctx, target, why, evidence=(ref,))
        target = catalogue.concepts[target].downcodes_to
    return _hit(IMAGE_COUNT, Action.FLAG, f"{why}; the billed images are not among the attachments", evidence=(ref,))


_VERIFIABLE = (Surface.MESIAL, Surface.DISTAL, Surface.OCCLUSAL_INCISAL)


def check_surfaces(ctx: LineContext) -> RuleHit:
    """Restorations: every billed surface should be touched by a lesion (or a restoration
    with caries on the tooth). A surface the model clearly sees clean is removed from the
    count (downcode); one it is unsure about goes to a reviewer."""
    billed = ctx.line.surface_set
    evidence, thresholds = ctx.tooth_evidence, ctx.tables.thresholds
    if ctx.concept.surfaces is None or not billed or evidence is None:
        return _hit(SURFACES, Action.PASS, "no surfaces to check", fired=False)
    clear = evidenced_surfaces(evidence, thresholds, at_least="support")
    possible = evidenced_surfaces(evidence, thresholds, at_least="absent")
    if not clear.count and not possible.count:
        return _hit(SURFACES, Action.PASS, "no lesion on the tooth to compare surfaces with (rule 1 decides)", fired=False)
    supported, unsure = 0, 0
    bl_clear, bl_possible = int(clear.buccal_or_lingual), int(possible.buccal_or_lingual)
    for surface in billed:
        if surface in _VERIFIABLE:
            supported += surface in clear.visible
            unsure += surface not in clear.visible and surface in possible.visible
        elif bl_clear:
            supported, bl_clear, bl_possible = supported + 1, bl_clear - 1, bl_possible - 1
        elif bl_possible:
            unsure, bl_possible = unsure + 1, bl_possible - 1
    tooth = evidence.tooth
    refs = tuple(f.ref(tooth) for f in evidence.findings if f.surfaces is not None and f.surfaces.count)[:4]
    seen = f"the lesion touches {clear.text(tooth)} (billed {ctx.line.surfaces})"
    if supported == len(billed):
        return _hit(SURFACES, Action.PASS, seen, evidence=refs, fired=False)
    if unsure or supported == 0:
        what = "some billed surfaces are uncertain" if unsure else "no billed surface is touched by the lesion seen"
        return _hit(SURFACES, Action.FLAG, f"{what}: {seen}", evidence=refs, confidence=0.5)
    catalogue = ctx.tables.catalogue
    fitting = [cid for cid in catalogue.family(ctx.concept.family)
               if _facts_hold(catalogue.concepts[cid], ctx, supported)]
    if not fitting:
        return _hit(SURFACES, Action.FLAG, f"{seen}; no code of the same family fits {supported} surface(s)", evidence=refs)
    target = min(fitting, key=lambda cid: catalogue.concepts[cid].tier)
    return _downcode(SURFACES, ctx, target, f"{len(billed)} surfaces billed, {seen}", evidence=refs,
                     confidence=min((r.score or 1.0) for r in refs) if refs else 1.0)


def check_tier(ctx: LineContext) -> RuleHit:
    """Tier evidence from the matrix (impaction for an impaction extraction, a previous
    root filling for a retreatment, two or more roots for a molar root canal)."""
    entry, reading = ctx.entry, ctx.reading_context()
    if entry is None or entry.tier_evidence is None or reading is None:
        return _hit(TIER, Action.PASS, "no tier evidence defined", fired=False)
    verdict = read_condition(entry.tier_evidence, reading)
    if verdict.state is State.SUPPORTED:
        return _hit(TIER, Action.PASS, f"tier supported: {verdict.text}", evidence=verdict.evidence,
                    confidence=verdict.confidence, fired=False)
    if verdict.state is State.UNCERTAIN:
        return _hit(TIER, Action.FLAG, f"{ctx.code_text()}: the evidence for this tier is not clear: {verdict.text}",
                    evidence=verdict.evidence, confidence=1.0 - verdict.confidence)
    conflicts = [s for s in (ctx.narrative.state(sig, reading.evidence.tooth, ctx.line.tooth_system)
                             for sig in entry.narrative_conflicts) if s is not None and not s.negated]
    if conflicts:
        said = "; ".join(f"'{s.phrase}'" for s in conflicts)
        refs = verdict.evidence + tuple(EvidenceRef(source="narrative", description=f"narrative: '{s.phrase}'",
                                                    tooth_fdi=reading.evidence.tooth.fdi) for s in conflicts)
        return _hit(TIER, Action.FLAG, f"the narrative and the image disagree on {ctx.code_text()}: the narrative says "
                    f"{said}, the image shows {verdict.text}", evidence=refs, confidence=0.5)
    # Walk down the tiers to the highest one whose own tier evidence is not clearly absent.
    catalogue, matrix = ctx.tables.catalogue, ctx.tables.matrix
    target = ctx.concept.downcodes_to
    while target is not None:
        lower = catalogue.concepts[target]
        lower_entry = matrix.entries.get(lower.evidence) if lower.evidence else None
        if lower_entry is None or lower_entry.tier_evidence is None:
            break
        lower_verdict = read_condition(lower_entry.tier_evidence, reading)
        if lower_verdict.state is State.SUPPORTED:
            break
        if lower_verdict.state is State.UNCERTAIN:
            return _hit(TIER, Action.FLAG, f"{ctx.code_text()}: {verdict.text}; whether {ctx.code_text(target)} applies "
                        f"is not clear: {lower_verdict.text}", evidence=verdict.evidence + lower_verdict.evidence,
                        confidence=0.5)
        target = lower.downcodes_to
    if target is None:
        return _hit(TIER, Action.FLAG, f"{ctx.code_text()}: {verdict.text}, and no lower tier is defined",
                    evidence=verdict.evidence, confidence=verdict.confidence)
    return _downcode(TIER, ctx, target, f"{ctx.code_text()} billed but {verdict.text}", evidence=verdict.evidence,
                     confidence=verdict.confidence)
