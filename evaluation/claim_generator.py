"""Synthetic claims with known correct outcomes, built on the synthetic radiographs' truth.

Each claim carries one generated radiograph and the lines a careful dentist would bill for
what that image shows (fillings for dentin caries on the surfaces they touch, root canals
for periapical lesions and deep caries, removal of impacted teeth, crowns and build-ups
on root-filled teeth, the image itself). At a configurable rate a problem line is
injected: an upcoded tooth type, a surgical or impaction extraction of an erupted tooth,
extra filling surfaces, a procedure with no indication, a tooth the image does not show.
Every line's truth says whether it is clean and, for a downcode, which code is right."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from datasets.annotations import FindingAnnotation, ImageAnnotations, ToothAnnotation
from datasets.synth.generator import SyntheticCase, generate_case
from models.detections import FindingDetection, ImageReading, ToothDetection
from models.findings import CariesDepth, FindingClass
from models.radiographs import RadiographKind
from models.teeth import ALL_FDI, PERMANENT_FDI, Dentition, NumberingSystem, Surface, Tooth, ToothType, format_surfaces
from serving.catalogue import Catalogue, RadiographNeed, load_catalogue
from serving.claims import Attachment, Claim, ClaimLine, Member, Provider


class Problem(StrEnum):
    UPCODE_TOOTH_TYPE = "upcode_tooth_type"
    SURGICAL_ON_ERUPTED = "surgical_on_erupted"
    IMPACTION_ON_ERUPTED = "impaction_on_erupted"
    EXTRA_SURFACES = "extra_surfaces"
    UNSUPPORTED = "unsupported"
    WRONG_TOOTH = "wrong_tooth"


@dataclass(frozen=True)
class LineTruth:
    line_id: str
    problem: Problem | None = None
    expected_code: str | None = None  # the right code when the problem is an upcode

    @property
    def clean(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class SyntheticClaim:
    claim: Claim
    case: SyntheticCase
    truth: tuple[LineTruth, ...]

    def truth_of(self, line_id: str) -> LineTruth:
        return next(t for t in self.truth if t.line_id == line_id)


_ENDO = {ToothType.INCISOR: "D3310", ToothType.CANINE: "D3310", ToothType.PREMOLAR: "D3320", ToothType.MOLAR: "D3330"}
_RETREAT = {ToothType.INCISOR: "D3346", ToothType.CANINE: "D3346", ToothType.PREMOLAR: "D3347", ToothType.MOLAR: "D3348"}
_COMPOSITE_POSTERIOR = ("D2391", "D2392", "D2393", "D2394")
_COMPOSITE_ANTERIOR = ("D2330", "D2331", "D2332", "D2335")
_AMALGAM = ("D2140", "D2150", "D2160", "D2161")
_IMPACTION_CODES = ("D7220", "D7230", "D7240")
_IMAGE_CODE = {RadiographKind.PANORAMIC: "D0330", RadiographKind.PERIAPICAL: "D0220"}


def truth_reading(case: SyntheticCase) -> ImageReading:
    """The image's truth as a perfect model would report it (score 1.0 everywhere): the
    oracle that isolates the rules from the detectors in ``dxv eval-claims --oracle``."""
    ann = case.annotations
    shows_roots = case.kind is not RadiographKind.BITEWING
    teeth = tuple(ToothDetection(fdi=t.fdi, box_xyxy_px=t.box_xyxy_px, score=1.0,
                                 root_count=t.root_count if shows_roots and t.roots_visible else None,
                                 root_count_score=1.0 if shows_roots and t.roots_visible and t.root_count else None)
                  for t in ann.teeth)
    findings = tuple(FindingDetection(finding_class=f.finding_class, box_xyxy_px=f.box_xyxy_px, score=1.0,
                                      caries_depth=f.caries_depth, fdi=f.fdi) for f in ann.findings)
    return ImageReading(image_id=ann.image_id, kind=case.kind, width_px=ann.width_px, height_px=ann.height_px,
                        teeth=teeth, findings=findings, model_versions=(("truth", "synthetic"),))


class _Builder:
    def __init__(self, case: SyntheticCase, rng: np.random.Generator, catalogue: Catalogue) -> None:
        self.case, self.rng, self.catalogue = case, rng, catalogue
        ann: ImageAnnotations = case.annotations
        self.teeth: dict[int, ToothAnnotation] = {t.fdi: t for t in ann.teeth if not t.truncated or (
            case.kind is RadiographKind.BITEWING and _inside_sideways(t, ann.width_px))}
        self.on: dict[int, list[FindingAnnotation]] = {}
        for f in ann.findings:
            if f.fdi is not None:
                self.on.setdefault(f.fdi, []).append(f)
        self.lines: list[ClaimLine] = []
        self.truth: list[LineTruth] = []
        self.used: set[int] = set()

    def has(self, fdi: int, cls: FindingClass, depth: CariesDepth | None = None) -> bool:
        return any(f.finding_class is cls and (depth is None or f.caries_depth is depth) for f in self.on.get(fdi, []))

    def add(self, code: str, tooth: int | None = None, surfaces: str | None = None, fee: float = 100.0,
            problem: Problem | None = None, expected: str | None = None) -> None:
        """Add a line. A careful dentist sends the radiograph the procedure needs, so a
        clean line whose documentation is not this image's kind is not billed."""
        concept = self.catalogue.concepts[self.catalogue.codes["CDT"][code][0]]
        if problem is None and concept.radiograph is RadiographNeed.REQUIRED and self.case.kind not in concept.documents:
            return
        line_id = str(len(self.lines) + 1)
        universal = Tooth.fdi_of(tooth).universal if tooth is not None else None
        self.lines.append(ClaimLine(line_id=line_id, code=code, tooth=universal, tooth_system=NumberingSystem.UNIVERSAL,
                                    surfaces=surfaces, fee=fee))
        self.truth.append(LineTruth(line_id, problem, expected))
        if tooth is not None:
            self.used.add(tooth)

    def erupted_simple(self, fdi: int) -> bool:
        """Present, not impacted, nothing that would justify a surgical removal."""
        return not any(self.has(fdi, c) for c in (FindingClass.IMPACTED_TOOTH, FindingClass.ROOT_CANAL_FILLING,
                                                  FindingClass.CROWN, FindingClass.IMPLANT))

    def sound(self, fdi: int) -> bool:
        return not self.on.get(fdi)


def _inside_sideways(tooth: ToothAnnotation, width: int) -> bool:
    """Bitewings cut every root, so a bitewing tooth counts as shown when its crown is
    not cut by the left or right border."""
    margin = 0.02 * width
    return tooth.box_xyxy_px[0] > margin and tooth.box_xyxy_px[2] < width - margin


def _restoration_code(tooth: Tooth, count: int, rng: np.random.Generator) -> str:
    index = min(count, 4) - 1
    if tooth.is_anterior:
        return _COMPOSITE_ANTERIOR[index]
    return (_AMALGAM if rng.random() < 0.3 else _COMPOSITE_POSTERIOR)[index]


def _clean_lines(b: _Builder) -> None:
    kind = b.case.kind
    for fdi, tooth_ann in sorted(b.teeth.items()):
        tooth = Tooth.fdi_of(fdi)
        if b.has(fdi, FindingClass.CROWN) or b.has(fdi, FindingClass.IMPLANT) or fdi in b.used:
            continue
        shows_roots = kind is not RadiographKind.BITEWING and tooth_ann.roots_visible
        deep = b.has(fdi, FindingClass.CARIES, CariesDepth.NEAR_PULP)
        lesion = b.has(fdi, FindingClass.PERIAPICAL_LESION)
        rcf = b.has(fdi, FindingClass.ROOT_CANAL_FILLING)
        if b.has(fdi, FindingClass.IMPACTED_TOOTH) and kind is not RadiographKind.BITEWING:
            b.add(str(b.rng.choice(_IMPACTION_CODES)), fdi, fee=350.0)
        elif rcf and lesion and shows_roots and tooth.dentition is Dentition.PERMANENT:
            b.add(_RETREAT[tooth.tooth_type], fdi, fee=900.0)
        elif (deep or lesion) and shows_roots and tooth.dentition is Dentition.PERMANENT and not rcf and \
                (tooth.tooth_type is not ToothType.MOLAR or (tooth_ann.root_count or 0) >= 2):
            b.add(_ENDO[tooth.tooth_type], fdi, fee=800.0)
        elif rcf and not lesion and kind is not RadiographKind.BITEWING and b.rng.random() < 0.5:
            b.add("D2950", fdi, fee=250.0)
            b.add("D2750", fdi, fee=1100.0)
        else:
            dentin = [f for f in b.on.get(fdi, []) if f.finding_class is FindingClass.CARIES
                      and f.caries_depth is CariesDepth.DENTIN and f.surfaces]
            if dentin and not b.has(fdi, FindingClass.RESTORATION):
                surfaces = frozenset().union(*(f.surfaces for f in dentin))
                code = _restoration_code(tooth, len(surfaces), b.rng)
                b.add(code, fdi, format_surfaces(surfaces, tooth), fee=150.0 + 40 * len(surfaces))
        if len(b.lines) >= 6:
            break
    if kind in _IMAGE_CODE:
        b.add(_IMAGE_CODE[kind], fee=60.0)


def _inject(b: _Builder, problem: Problem) -> bool:
    """Add one problem line; False when this image offers no place for that problem."""
    rng, kind = b.rng, b.case.kind
    free = [fdi for fdi in sorted(b.teeth) if fdi not in b.used and Tooth.fdi_of(fdi).dentition is Dentition.PERMANENT]
    rng.shuffle(free)
    if problem is Problem.UPCODE_TOOTH_TYPE and kind is not RadiographKind.BITEWING:
        for fdi in free:
            t = Tooth.fdi_of(fdi)
            if t.tooth_type is not ToothType.MOLAR and not b.has(fdi, FindingClass.ROOT_CANAL_FILLING):
                b.add("D3330", fdi, fee=1100.0, problem=problem, expected=_ENDO[t.tooth_type])
                return True
    if problem in (Problem.SURGICAL_ON_ERUPTED, Problem.IMPACTION_ON_ERUPTED) and kind is not RadiographKind.BITEWING:
        for fdi in free:
            if b.erupted_simple(fdi) and b.teeth[fdi].roots_visible:
                code = "D7210" if problem is Problem.SURGICAL_ON_ERUPTED else "D7240"
                b.add(code, fdi, fee=300.0 if code == "D7210" else 500.0, problem=problem, expected="D7140")
                return True
    if problem is Problem.EXTRA_SURFACES:
        for fdi in free:
            t = Tooth.fdi_of(fdi)
            caries = [f for f in b.on.get(fdi, []) if f.finding_class is FindingClass.CARIES and f.surfaces
                      and f.caries_depth is not CariesDepth.ENAMEL]
            if t.is_posterior and caries and not b.has(fdi, FindingClass.CROWN) and not b.has(fdi, FindingClass.RESTORATION):
                seen = frozenset().union(*(f.surfaces for f in caries))
                if len(seen) > 2:
                    continue
                extra = [s for s in (Surface.MESIAL, Surface.OCCLUSAL_INCISAL, Surface.DISTAL, Surface.BUCCAL_FACIAL)
                         if s not in seen]
                billed = seen | frozenset(extra[: 4 - len(seen)])
                b.add("D2394", fdi, format_surfaces(billed, t), fee=320.0, problem=problem,
                      expected=_COMPOSITE_POSTERIOR[len(seen) - 1])
                return True
    if problem is Problem.UNSUPPORTED and kind is not RadiographKind.BITEWING:
        for fdi in free:
            if b.sound(fdi) and b.teeth[fdi].roots_visible:
                b.add(_ENDO[Tooth.fdi_of(fdi).tooth_type], fdi, fee=800.0, problem=problem)
                return True
    if problem is Problem.UNSUPPORTED:
        for fdi in free:
            t = Tooth.fdi_of(fdi)
            if b.sound(fdi) and t.is_posterior:
                b.add("D2392", fdi, "MO" if t.side.value == "right" else "DO", fee=190.0, problem=problem)
                return True
    if problem is Problem.WRONG_TOOTH:
        shown = {t.fdi for t in b.case.annotations.teeth}
        elsewhere = [fdi for fdi in PERMANENT_FDI if fdi not in shown and fdi % 10 != 8]
        if elsewhere:
            fdi = int(rng.choice(elsewhere))
            t = Tooth.fdi_of(fdi)
            surfaces = "O" if t.is_posterior else "M"
            b.add(_restoration_code(t, 1, rng), fdi, surfaces, fee=150.0, problem=problem)
            return True
    return False


_KINDS = (RadiographKind.PERIAPICAL, RadiographKind.BITEWING, RadiographKind.PANORAMIC)


def generate_claims(n: int, seed: int, *, problem_rate: float = 0.35,
                    kind_weights: tuple[float, float, float] = (0.5, 0.25, 0.25)) -> Iterator[SyntheticClaim]:
    """``n`` claims; about ``problem_rate`` of them carry one injected problem line."""
    rng = np.random.default_rng(seed)
    catalogue = load_catalogue()
    problems = tuple(Problem)
    for index in range(n):
        kind = _KINDS[int(rng.choice(3, p=np.asarray(kind_weights) / sum(kind_weights)))]
        case = generate_case(kind, seed, index)
        b = _Builder(case, rng, catalogue)
        if rng.random() < problem_rate:  # first, so that the problem may take a tooth a clean line would use
            for problem in rng.permutation(problems):
                if _inject(b, Problem(problem)):
                    break
        _clean_lines(b)
        if not b.lines:
            b.add("D1110", fee=90.0)
        claim = Claim(
            claim_id=f"CLM-{seed}-{index:05d}", tenant="demo",
            member=Member(member_id=case.patient.patient_id, birth_date=case.patient.birth_date),
            provider=Provider(provider_id=f"PRV-{int(rng.integers(1, 40)):03d}", specialty="general", region="north"),
            date_of_service=dt.date(2026, 1, 5) + dt.timedelta(days=index % 300),
            lines=tuple(b.lines), narrative="",
            attachments=(Attachment(radiograph_id=case.image_id, kind=kind, content=f"{case.image_id}.dcm"),),
        )
        yield SyntheticClaim(claim=claim, case=case, truth=tuple(b.truth))


def with_narrative(item: SyntheticClaim, narrative: str) -> SyntheticClaim:
    return replace(item, claim=item.claim.model_copy(update={"narrative": narrative}))


__all__ = ["ALL_FDI", "LineTruth", "Problem", "SyntheticClaim", "generate_claims", "truth_reading", "with_narrative"]
