"""Synthetic dental radiographs with exact ground truth.

``generate_case(kind, seed, index, config)`` renders one radiograph; each image has its
own random stream derived from (seed, kind, index), so a case never depends on how many
were generated before it and the same seed gives the same bytes."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.annotations import FindingAnnotation, ImageAnnotations, ToothAnnotation
from datasets.dicom_writer import DicomImageInfo, SyntheticPatient, build_dicom, dicom_bytes
from datasets.synth.config import SynthConfig
from datasets.synth.layout import Scene, plan_scene
from datasets.synth.physics import burn_in_marker, expose, quantise, trabecular_texture
from datasets.synth.render import Canvas, RenderedFinding, render_implant, render_tooth
from models.findings import FindingClass
from models.radiographs import RadiographKind
from models.teeth import Tooth, format_surfaces

_KIND_CODES = {RadiographKind.PERIAPICAL: 1, RadiographKind.BITEWING: 2, RadiographKind.PANORAMIC: 3}
_ID_PREFIX = {RadiographKind.PERIAPICAL: "pa", RadiographKind.BITEWING: "bw", RadiographKind.PANORAMIC: "px"}


@dataclass(frozen=True, eq=False)
class SyntheticCase:
    image_id: str
    kind: RadiographKind
    stored: np.ndarray  # uint16 values of ``bits_stored`` bits, MONOCHROME2
    bits_stored: int
    pixel_spacing_mm: float
    annotations: ImageAnnotations
    truth: dict[str, object]  # the truth.jsonl record (JSON-ready)
    patient: SyntheticPatient

    @property
    def pixels_unit(self) -> np.ndarray:
        return self.stored.astype(np.float32) / float(2**self.bits_stored - 1)


def case_id(kind: RadiographKind, seed: int, index: int) -> str:
    return f"{_ID_PREFIX[kind]}-s{seed}-{index:05d}"


def _rng(kind: RadiographKind, seed: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _KIND_CODES[kind], index, stream])


def generate_case(kind: RadiographKind, seed: int, index: int, config: SynthConfig = SynthConfig()) -> SyntheticCase:
    rng = _rng(kind, seed, index)
    scene = plan_scene(kind, rng, config)
    canvas = Canvas(scene.height, scene.width)
    rendered_teeth = []
    for plan in scene.teeth:
        rendered = render_tooth(canvas, plan, rng, config.min_visible_fraction)
        if rendered is not None:
            rendered_teeth.append((plan, rendered))
    implants = []
    for implant in scene.implants:
        apical = 1 if implant.site.arch.value == "mandibular" else -1
        found = render_implant(canvas, implant, apical)
        if found is not None:
            implants.append(found)

    attenuation = _attenuation(scene, canvas, rng)
    signal = expose(attenuation, config.difficulty, rng,
                    blur_scale=1.6 if kind is RadiographKind.PANORAMIC else 1.0)
    if rng.random() < config.difficulty.marker_probability:
        signal = burn_in_marker(signal, rng, "R" if rng.random() < 0.5 else "L")
    stored = quantise(signal, config.bits_stored)

    image_id = case_id(kind, seed, index)
    spacing = 1.0 / scene.px_per_mm
    annotations = _annotations(image_id, scene, rendered_teeth, implants)
    truth = _truth_record(image_id, seed, index, scene, spacing, rendered_teeth, implants)
    return SyntheticCase(
        image_id=image_id,
        kind=kind,
        stored=stored,
        bits_stored=config.bits_stored,
        pixel_spacing_mm=spacing,
        annotations=annotations,
        truth=truth,
        patient=_patient(kind, seed, index),
    )


def _attenuation(scene: Scene, canvas: Canvas, rng: np.random.Generator) -> np.ndarray:
    assert scene.bone_mask is not None and scene.bone_density is not None and scene.soft_tissue is not None
    texture = trabecular_texture((scene.height, scene.width), scene.px_per_mm, rng)
    bone = texture * scene.bone_mask * scene.bone_density * canvas.bone_factor
    return (scene.soft_tissue + bone + canvas.teeth).astype(np.float32)


def _patient(kind: RadiographKind, seed: int, index: int) -> SyntheticPatient:
    rng = _rng(kind, seed, index, stream=1)
    birth = date(1950, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 55)))
    return SyntheticPatient(
        name=f"SYNTHETIC^CASE{index:05d}",
        patient_id=f"SYN-{seed}-{_KIND_CODES[kind]}{index:05d}",
        birth_date=birth,
        sex=str(rng.choice(["F", "M", "O"])),
    )


_FINDING_CLASS = {
    "caries": FindingClass.CARIES,
    "periapical_lesion": FindingClass.PERIAPICAL_LESION,
    "impacted_tooth": FindingClass.IMPACTED_TOOTH,
    "restoration": FindingClass.RESTORATION,
    "crown": FindingClass.CROWN,
    "root_canal_filling": FindingClass.ROOT_CANAL_FILLING,
    "implant": FindingClass.IMPLANT,
}


def _finding(found: RenderedFinding) -> FindingAnnotation:
    return FindingAnnotation(
        finding_class=_FINDING_CLASS[found.kind],
        box_xyxy_px=found.box_xyxy_px,
        fdi=found.fdi,
        caries_depth=found.attributes.get("depth"),  # type: ignore[arg-type]
        surfaces=found.attributes.get("surfaces", frozenset()),  # type: ignore[arg-type]
    )


def _annotations(image_id: str, scene: Scene, rendered_teeth, implants) -> ImageAnnotations:
    teeth = tuple(
        ToothAnnotation(
            fdi=r.fdi,
            box_xyxy_px=r.box_xyxy_px,
            root_count=plan.root_count,
            roots_visible=r.roots_visible,
            truncated=r.visible_fraction < 0.98,
        )
        for plan, r in rendered_teeth
    )
    findings = tuple(_finding(f) for _, r in rendered_teeth for f in r.findings)
    findings += tuple(_finding(f) for f in implants)
    return ImageAnnotations(
        image_id=image_id,
        file_name=f"images/{image_id}.png",
        width_px=scene.width,
        height_px=scene.height,
        kind=scene.kind,
        teeth=teeth,
        findings=findings,
    )


def _finding_record(found: RenderedFinding) -> dict[str, object]:
    record: dict[str, object] = {"class": found.kind, "fdi": found.fdi,
                                 "box_xyxy_px": [round(v, 2) for v in found.box_xyxy_px]}
    for key, value in found.attributes.items():
        if key == "surfaces":
            record["surfaces"] = format_surfaces(value, Tooth.fdi_of(found.fdi))  # type: ignore[arg-type]
        elif key == "depth":
            record["caries_depth"] = str(value)
        else:
            record[key] = value
    return record


def _truth_record(image_id, seed, index, scene: Scene, spacing, rendered_teeth, implants) -> dict[str, object]:
    teeth = []
    for plan, r in rendered_teeth:
        tooth = plan.tooth
        teeth.append({
            "fdi": r.fdi,
            "universal": tooth.universal,
            "type": tooth.tooth_type.value,
            "box_xyxy_px": [round(v, 2) for v in r.box_xyxy_px],
            "root_count": plan.root_count,
            "roots_visible": r.roots_visible,
            "visible_fraction": r.visible_fraction,
            "impacted": plan.impacted,
            "findings": [_finding_record(f) for f in r.findings],
        })
    return {
        "image_id": image_id,
        "kind": scene.kind.value,
        "seed": seed,
        "index": index,
        "file_png": f"images/{image_id}.png",
        "file_dcm": f"images/{image_id}.dcm",
        "width_px": scene.width,
        "height_px": scene.height,
        "pixel_spacing_mm": round(spacing, 6),
        "teeth": teeth,
        "implants": [_finding_record(f) for f in implants],
        "missing_fdi": sorted(scene.missing),
    }


def png_bytes(case: SyntheticCase) -> bytes:
    """16-bit greyscale PNG; stored values are scaled to 16 bits by bit replication so that
    full scale maps to full scale."""
    shift = 16 - case.bits_stored
    wide = (case.stored.astype(np.uint32) << shift) | (case.stored.astype(np.uint32) >> max(case.bits_stored - shift, 0))
    image = Image.fromarray(wide.astype(np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def case_dicom_bytes(case: SyntheticCase) -> bytes:
    info = DicomImageInfo(
        kind=case.kind,
        pixel_spacing_mm=case.pixel_spacing_mm,
        bits_stored=case.bits_stored,
        study_date=date(2026, 1, 1) + timedelta(days=int(case.truth["index"]) % 300),  # type: ignore[call-overload]
        laterality="B",
    )
    return dicom_bytes(build_dicom(case.stored, info, uid_seed=case.image_id, patient=case.patient))


@dataclass(frozen=True)
class SynthSummary:
    out_dir: Path
    images: int
    teeth: int
    findings: dict[str, int]


def write_dataset(
    out_dir: str | Path,
    kind: RadiographKind,
    n: int,
    seed: int,
    config: SynthConfig = SynthConfig(),
    *,
    preview: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> SynthSummary:
    """Write images/<id>.dcm and .png, annotations.json (COCO, DENTEX-shaped) and
    truth.jsonl; with ``preview`` also preview.png."""
    from datasets.coco import write_coco
    from datasets.preview import write_preview

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    all_annotations: list[ImageAnnotations] = []
    finding_counts: dict[str, int] = {}
    preview_cases: list[tuple[np.ndarray, ImageAnnotations]] = []
    with (out / "truth.jsonl").open("w", encoding="utf-8") as truth_file:
        for index in range(n):
            case = generate_case(kind, seed, index, config)
            (out / "images" / f"{case.image_id}.dcm").write_bytes(case_dicom_bytes(case))
            (out / "images" / f"{case.image_id}.png").write_bytes(png_bytes(case))
            truth_file.write(json.dumps(case.truth, sort_keys=True) + "\n")
            all_annotations.append(case.annotations)
            for finding in case.annotations.findings:
                finding_counts[finding.finding_class.value] = finding_counts.get(finding.finding_class.value, 0) + 1
            if preview and len(preview_cases) < 8:
                preview_cases.append((case.pixels_unit, case.annotations))
            if on_progress is not None:
                on_progress(index + 1)
    write_coco(out / "annotations.json", all_annotations, description=f"dxv synth {kind.value} seed={seed} n={n}")
    if preview:
        write_preview(out / "preview.png", preview_cases)
    return SynthSummary(
        out_dir=out,
        images=n,
        teeth=sum(len(a.teeth) for a in all_annotations),
        findings=dict(sorted(finding_counts.items())),
    )
