"""What the attached radiographs show about one billed tooth, and the three-state reading
of an evidence-matrix condition against it.

A condition is read as supported (a detection at or above its class's ``support`` band),
absent (the tooth is seen and nothing scores even the ``absent`` band) or uncertain
(anything between, or the tooth is not seen well enough to tell). ``any_of`` takes the
strongest of its parts, ``all_of`` the weakest (Kleene's three-valued logic). Pure
functions: readings, narrative and bands come in as arguments."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from models.detections import FindingDetection, ImageReading, ToothDetection, assign_findings
from models.findings import FindingClass
from models.radiographs import RadiographKind
from models.surfaces import SurfaceEstimate, surfaces_touched
from models.teeth import NumberingSystem, Tooth
from serving.decisions import EvidenceRef
from serving.evidence_matrix import (
    DEPTH_ORDER,
    AllOf,
    AnyOf,
    Condition,
    FindingAtom,
    NarrativeAtom,
    RootCountAtom,
    Thresholds,
    ToothPresentAtom,
)
from serving.narrative import NarrativeSignals


class State(IntEnum):
    ABSENT = 0
    UNCERTAIN = 1
    SUPPORTED = 2


class Presence(StrEnum):
    PRESENT = "present"  # seen with a confident tooth detection
    UNCERTAIN = "uncertain"  # a weak detection only
    ABSENT = "absent"  # an image covers its place and shows no tooth there (extracted, missing)
    NOT_SHOWN = "not_shown"  # no attached image covers it


# Classes a kind of radiograph cannot show: bitewings stop short of the apices.
_NOT_VISIBLE_ON: dict[RadiographKind, frozenset[FindingClass]] = {
    RadiographKind.BITEWING: frozenset({FindingClass.PERIAPICAL_LESION}),
}


@dataclass(frozen=True)
class Sighting:
    image_id: str
    kind: RadiographKind
    tooth: ToothDetection
    model: str


@dataclass(frozen=True)
class SeenFinding:
    image_id: str
    kind: RadiographKind
    detection: FindingDetection
    model: str
    surfaces: SurfaceEstimate | None  # None when the tooth box is not in that image

    def ref(self, tooth: Tooth) -> EvidenceRef:
        d = self.detection
        what = d.finding_class.value.replace("_", " ")
        if d.caries_depth is not None:
            what += f" ({d.caries_depth.value.replace('_', ' ')})"
        if self.surfaces is not None and self.surfaces.count:
            what += f" on {self.surfaces.text(tooth)}"
        return EvidenceRef(source="image", description=f"{what} on tooth {tooth.fdi}, score {d.score:.2f}",
                           image_id=self.image_id, box_xyxy_px=d.box_xyxy_px, score=round(d.score, 4),
                           model=self.model, finding_class=d.finding_class.value, tooth_fdi=tooth.fdi)


@dataclass(frozen=True)
class ToothEvidence:
    tooth: Tooth
    presence: Presence
    sightings: tuple[Sighting, ...]
    findings: tuple[SeenFinding, ...]
    covering_images: tuple[str, ...]  # images whose field shows the tooth's place
    root_count: int | None = None
    root_count_score: float | None = None
    root_count_ref: EvidenceRef | None = None

    @property
    def best_sighting(self) -> Sighting | None:
        return max(self.sightings, key=lambda s: s.tooth.score, default=None)

    def kinds_seen(self) -> frozenset[RadiographKind]:
        return frozenset(s.kind for s in self.sightings)

    def presence_ref(self) -> EvidenceRef | None:
        best = self.best_sighting
        if best is None:
            return None
        return EvidenceRef(source="image", description=f"tooth {self.tooth.fdi} seen, score {best.tooth.score:.2f}",
                           image_id=best.image_id, box_xyxy_px=best.tooth.box_xyxy_px,
                           score=round(best.tooth.score, 4), model=best.model, tooth_fdi=self.tooth.fdi)


def _model_name(reading: ImageReading, key: str) -> str:
    versions = dict(reading.model_versions)
    return f"{key}@{versions[key]}" if key in versions else key


def _neighbours(tooth: Tooth) -> tuple[int | None, int | None]:
    """FDI numbers of the mesial and distal neighbours (None past the end of the arch)."""
    q, p = tooth.quadrant, tooth.position
    last = 8 if q <= 4 else 5
    mesial = {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5, 7: 8, 8: 7}[q] * 10 + 1 if p == 1 else q * 10 + p - 1
    distal = q * 10 + p + 1 if p < last else None
    return mesial, distal


def _covers(reading: ImageReading, tooth: Tooth, present_at: float) -> bool:
    if reading.kind is RadiographKind.PANORAMIC:
        return True
    seen = {t.fdi for t in reading.teeth if t.score >= present_at}
    mesial, distal = _neighbours(tooth)
    return mesial in seen and distal is not None and distal in seen


def findings_by_tooth(reading: ImageReading, thresholds: Thresholds) -> tuple[FindingDetection, ...]:
    """The reading's findings with their teeth. The reader assigns findings to teeth above
    the tooth model's operating threshold; here a finding it left without a tooth goes to
    a tooth this layer counts as present (the ``tooth_presence.support`` band), and an
    impaction (often detected weakly as a tooth: it lies sideways, in bone) to the weaker
    tooth box it matches."""
    band = thresholds.tooth_presence
    loose = [f for f in reading.findings if f.fdi is None]
    if not loose:
        return reading.findings
    placed = {id(f): g for f, g in zip(loose, assign_findings(loose, [t for t in reading.teeth if t.score >= band.support]),
                                        strict=True)}
    weak = [t for t in reading.teeth if band.absent <= t.score < band.support]
    impactions = [f for f in loose if placed[id(f)].fdi is None and f.finding_class is FindingClass.IMPACTED_TOOTH]
    if weak and impactions:
        placed.update({id(f): g for f, g in zip(impactions, assign_findings(impactions, weak), strict=True)})
    return tuple(placed.get(id(f), f) for f in reading.findings)


def collect_tooth_evidence(tooth: Tooth, readings: tuple[ImageReading, ...], thresholds: Thresholds) -> ToothEvidence:
    band = thresholds.tooth_presence
    sightings, findings, covering = [], [], []
    for reading in readings:
        detection = reading.tooth(tooth.fdi)
        if detection is not None and detection.score >= band.absent:
            sightings.append(Sighting(reading.image_id, reading.kind, detection, _model_name(reading, "tooth-numbering")))
        if _covers(reading, tooth, band.support) or (detection is not None and detection.score >= band.support):
            covering.append(reading.image_id)
        for found in findings_by_tooth(reading, thresholds):
            if found.fdi != tooth.fdi:
                continue
            surfaces = surfaces_touched(found.box_xyxy_px, detection.box_xyxy_px, tooth) if detection else None
            model = _model_name(reading, "findings")
            if found.verified:  # its score is the detector's and the verifier's together
                model += f" + {_model_name(reading, 'finding-verifier')}"
            findings.append(SeenFinding(reading.image_id, reading.kind, found, model, surfaces))
    best = max((s.tooth.score for s in sightings), default=0.0)
    impacted = thresholds.findings[FindingClass.IMPACTED_TOOTH].support
    if best >= band.support or any(f.detection.finding_class is FindingClass.IMPACTED_TOOTH
                                   and f.detection.score >= impacted for f in findings):
        presence = Presence.PRESENT
    elif best >= band.absent:
        presence = Presence.UNCERTAIN
    else:
        presence = Presence.ABSENT if covering else Presence.NOT_SHOWN
    # Root count: the most confident reading, from images that show the apices.
    counted = [s for s in sightings if s.tooth.root_count is not None and s.tooth.root_count_score is not None]
    root = max(counted, key=lambda s: s.tooth.root_count_score or 0.0, default=None)
    root_ref = None
    if root is not None:
        n = root.tooth.root_count
        root_ref = EvidenceRef(source="image", description=f"{n}{'+' if n == 3 else ''} root(s) on tooth {tooth.fdi}, "
                               f"probability {root.tooth.root_count_score:.2f}", image_id=root.image_id,
                               box_xyxy_px=root.tooth.box_xyxy_px, score=root.tooth.root_count_score,
                               model=root.model.replace("tooth-numbering", "root-count"), tooth_fdi=tooth.fdi)
    return ToothEvidence(
        tooth=tooth, presence=presence, sightings=tuple(sightings), findings=tuple(findings),
        covering_images=tuple(covering), root_count=root.tooth.root_count if root else None,
        root_count_score=root.tooth.root_count_score if root else None, root_count_ref=root_ref,
    )


@dataclass(frozen=True)
class Verdict:
    state: State
    confidence: float
    evidence: tuple[EvidenceRef, ...]
    text: str  # what was looked for, and what was found, in words


@dataclass(frozen=True)
class ReadingContext:
    """Everything an atom reads: the tooth's evidence, the narrative, the bands."""

    evidence: ToothEvidence
    narrative: NarrativeSignals
    tooth_system: NumberingSystem
    thresholds: Thresholds


def _finding_matches(seen: SeenFinding, atom: FindingAtom) -> bool:
    d = seen.detection
    if d.finding_class is not atom.finding:
        return False
    if atom.min_depth is not None and (d.caries_depth is None
                                       or DEPTH_ORDER.index(d.caries_depth) < DEPTH_ORDER.index(atom.min_depth)):
        return False
    return atom.min_surfaces is None or (seen.surfaces is not None and seen.surfaces.count >= atom.min_surfaces)


def _read_finding(atom: FindingAtom, ctx: ReadingContext) -> Verdict:
    ev, band = ctx.evidence, ctx.thresholds.findings[atom.finding]
    tooth = ev.tooth
    matches = sorted((f for f in ev.findings if _finding_matches(f, atom)), key=lambda f: -f.detection.score)
    best = matches[0].detection.score if matches else 0.0
    refs = tuple(f.ref(tooth) for f in matches[:3])
    if best >= band.support:
        return Verdict(State.SUPPORTED, best, refs[:1], f"{atom.text()} seen (score {best:.2f})")
    able = [s for s in ev.sightings if s.tooth.score >= ctx.thresholds.tooth_presence.support
            and atom.finding not in _NOT_VISIBLE_ON.get(s.kind, frozenset())]
    if best < band.absent and able:
        return Verdict(State.ABSENT, 1.0 - best, refs, f"no {atom.text()} seen on tooth {tooth.fdi}")
    if not able:
        return Verdict(State.UNCERTAIN, best, refs, f"{atom.text()}: no attached image shows tooth {tooth.fdi} well enough")
    return Verdict(State.UNCERTAIN, best, refs, f"{atom.text()} possible (score {best:.2f})")


def _read_root_count(atom: RootCountAtom, ctx: ReadingContext) -> Verdict:
    ev = ctx.evidence
    if ev.root_count is None or ev.root_count_score is None:
        return Verdict(State.UNCERTAIN, 0.0, (), f"{atom.text()}: no periapical or panoramic image shows the roots")
    refs = (ev.root_count_ref,) if ev.root_count_ref else ()
    holds = atom.root_count.holds(ev.root_count)
    shown = f"{ev.root_count}{'+' if ev.root_count == 3 else ''}"
    if ev.root_count_score < ctx.thresholds.root_count.support:
        return Verdict(State.UNCERTAIN, ev.root_count_score, refs, f"{atom.text()}: read as {shown}, not clearly")
    state = State.SUPPORTED if holds else State.ABSENT
    return Verdict(state, ev.root_count_score, refs, f"root count {shown} (needed {atom.root_count.text()})")


def _read_narrative(atom: NarrativeAtom, ctx: ReadingContext) -> Verdict:
    statement = ctx.narrative.state(atom.narrative, ctx.evidence.tooth, ctx.tooth_system)
    name = atom.narrative.value.replace("_", " ")
    if statement is None:
        return Verdict(State.ABSENT, 1.0, (), f"the narrative does not state {name}")
    ref = EvidenceRef(source="narrative", description=f"narrative: '{statement.phrase}'"
                      + (" (negated)" if statement.negated else ""), tooth_fdi=ctx.evidence.tooth.fdi)
    if statement.negated:
        return Verdict(State.ABSENT, 1.0, (ref,), f"the narrative rules out {name}")
    return Verdict(State.SUPPORTED, 1.0, (ref,), f"the narrative states {name} ('{statement.phrase}')")


def _read_presence(ctx: ReadingContext) -> Verdict:
    ev = ctx.evidence
    ref = ev.presence_ref()
    refs = (ref,) if ref else ()
    score = ev.best_sighting.tooth.score if ev.best_sighting else 0.0
    state = {Presence.PRESENT: State.SUPPORTED, Presence.ABSENT: State.ABSENT}.get(ev.presence, State.UNCERTAIN)
    return Verdict(state, score if state is not State.ABSENT else 1.0 - score, refs, f"tooth {ev.tooth.fdi} {ev.presence.value}")


def read_condition(condition: Condition, ctx: ReadingContext) -> Verdict:
    if isinstance(condition, AnyOf | AllOf):
        parts = [read_condition(c, ctx) for c in (condition.any_of if isinstance(condition, AnyOf) else condition.all_of)]
        strongest = isinstance(condition, AnyOf)
        pick = max if strongest else min
        state = pick(p.state for p in parts)
        chosen = [p for p in parts if p.state == state]
        deciding = max(chosen, key=lambda p: p.confidence)
        if (state is State.ABSENT) == strongest:  # every part was needed to reach this state
            refs = tuple(r for p in chosen for r in p.evidence)
            text = "; ".join(p.text for p in chosen)
            return Verdict(state, min(p.confidence for p in chosen), refs, text)
        return Verdict(state, deciding.confidence, deciding.evidence, deciding.text)
    if isinstance(condition, FindingAtom):
        return _read_finding(condition, ctx)
    if isinstance(condition, RootCountAtom):
        return _read_root_count(condition, ctx)
    if isinstance(condition, NarrativeAtom):
        return _read_narrative(condition, ctx)
    assert isinstance(condition, ToothPresentAtom)
    return _read_presence(ctx)


def evidenced_surfaces(evidence: ToothEvidence, thresholds: Thresholds, *, at_least: str = "support") -> SurfaceEstimate:
    """Union of the surfaces that caries (and restorations next to caries) touch, from
    detections scoring at least the ``support`` (or ``absent``) band of their class."""
    visible: set = set()
    central = 0
    for seen in evidence.findings:
        d = seen.detection
        if d.finding_class not in (FindingClass.CARIES, FindingClass.RESTORATION) or seen.surfaces is None:
            continue
        band = thresholds.findings[d.finding_class]
        if d.score < (band.support if at_least == "support" else band.absent):
            continue
        visible |= seen.surfaces.visible
        central += int(seen.surfaces.buccal_or_lingual)
    return SurfaceEstimate(frozenset(visible), buccal_or_lingual=central > 0)
