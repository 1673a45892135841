"""Scene planning: which teeth a radiograph shows, where, and in what condition.

Coordinates are image pixels (x right, y down). The patient's right is on the viewer's
left, as radiographs are conventionally mounted."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from datasets.synth.anatomy import (
    MANDIBULAR_ORDER,
    MAXILLARY_ORDER,
    crown_squareness,
    mesial_sign,
    tooth_dimensions,
)
from datasets.synth.config import SynthConfig
from datasets.synth.physics import uniform
from datasets.synth.render import (
    CariesPlan,
    ImplantPlan,
    PeriapicalPlan,
    RestorationPlan,
    ToothPlan,
)
from models.findings import CariesDepth
from models.radiographs import RadiographKind
from models.teeth import Arch, Surface, Tooth, ToothType

_POSTERIOR_CARIES_SURFACES: tuple[tuple[Surface, ...], ...] = (
    (Surface.MESIAL,), (Surface.DISTAL,), (Surface.OCCLUSAL_INCISAL,),
    (Surface.MESIAL, Surface.OCCLUSAL_INCISAL), (Surface.OCCLUSAL_INCISAL, Surface.DISTAL),
    (Surface.BUCCAL_FACIAL,), (Surface.LINGUAL_PALATAL,),
)
_POSTERIOR_CARIES_WEIGHTS = (0.22, 0.22, 0.2, 0.12, 0.12, 0.06, 0.06)
_ANTERIOR_CARIES_SURFACES: tuple[tuple[Surface, ...], ...] = (
    (Surface.MESIAL,), (Surface.DISTAL,), (Surface.BUCCAL_FACIAL,), (Surface.LINGUAL_PALATAL,),
)
_POSTERIOR_FILLINGS: tuple[tuple[Surface, ...], ...] = (
    (Surface.OCCLUSAL_INCISAL,), (Surface.MESIAL, Surface.OCCLUSAL_INCISAL),
    (Surface.OCCLUSAL_INCISAL, Surface.DISTAL), (Surface.MESIAL, Surface.OCCLUSAL_INCISAL, Surface.DISTAL),
    (Surface.BUCCAL_FACIAL,),
)
_ANTERIOR_FILLINGS: tuple[tuple[Surface, ...], ...] = (
    (Surface.MESIAL,), (Surface.DISTAL,), (Surface.BUCCAL_FACIAL,), (Surface.MESIAL, Surface.LINGUAL_PALATAL),
)


@dataclass
class Scene:
    kind: RadiographKind
    height: int
    width: int
    px_per_mm: float
    teeth: list[ToothPlan] = field(default_factory=list)
    implants: list[ImplantPlan] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    # Bone: soft 0..1 mask of where bone lies, and a density multiplier (sinus, cortex).
    bone_mask: np.ndarray | None = None
    bone_density: np.ndarray | None = None
    soft_tissue: np.ndarray | None = None


def _pick(rng: np.random.Generator, options: tuple[tuple[Surface, ...], ...],
          weights: tuple[float, ...] | None = None) -> frozenset[Surface]:
    p = None if weights is None else np.asarray(weights) / sum(weights)
    return frozenset(options[int(rng.choice(len(options), p=p))])


def _root_count(tooth: Tooth, rng: np.random.Generator, p_typical: float) -> int:
    profile = tooth.roots
    if profile.variants and rng.random() > p_typical:
        return min(int(rng.choice(sorted(profile.variants))), 3)
    return min(profile.typical, 3)


def _conditions(tooth: Tooth, rng: np.random.Generator, cfg: SynthConfig, px_per_mm: float) -> dict[str, object]:
    """Restorations, crowns, root fillings, caries and periapical lesions of one tooth."""
    prevalence, difficulty = cfg.prevalence, cfg.difficulty
    posterior = tooth.is_posterior
    result: dict[str, object] = {}
    crown_density = None
    if posterior and rng.random() < prevalence.crown:
        crown_density = float(rng.choice([6.5, 2.6]))  # metal / ceramic
    result["crown_density"] = crown_density
    root_filled = rng.random() < (prevalence.root_canal_filling * (4.0 if crown_density else 1.0))
    result["root_canal_filling"] = root_filled
    restoration = None
    if crown_density is None and rng.random() < prevalence.restoration * (1.0 if posterior else 0.4):
        surfaces = _pick(rng, _POSTERIOR_FILLINGS if posterior else _ANTERIOR_FILLINGS)
        density = float(rng.choice([7.0, 2.4])) if posterior else 2.4
        restoration = RestorationPlan(surfaces=surfaces, density=density)
    result["restoration"] = restoration
    caries: list[CariesPlan] = []
    if crown_density is None and rng.random() < prevalence.caries * (1.0 if posterior else 0.5):
        if posterior:
            surfaces = _pick(rng, _POSTERIOR_CARIES_SURFACES, _POSTERIOR_CARIES_WEIGHTS)
        else:
            surfaces = _pick(rng, _ANTERIOR_CARIES_SURFACES)
        if restoration is not None:  # recurrent caries beside a filling, or keep apart
            surfaces = frozenset(s for s in surfaces if s not in restoration.surfaces) or surfaces
        depth = CariesDepth(str(rng.choice([d.value for d in CariesDepth], p=[0.35, 0.4, 0.25])))
        caries.append(CariesPlan(
            surfaces=surfaces,
            depth=depth,
            contrast=uniform(rng, difficulty.caries_contrast),
            size_px=uniform(rng, difficulty.caries_size_mm) * px_per_mm,
        ))
    result["caries"] = tuple(caries)
    indicated = root_filled or any(c.depth is CariesDepth.NEAR_PULP for c in caries)
    p_lesion = prevalence.periapical_lesion_if_indicated if indicated else prevalence.periapical_lesion
    periapical = None
    if rng.random() < p_lesion:
        periapical = PeriapicalPlan(
            root_index=int(rng.integers(0, 3)),
            radius_px=uniform(rng, difficulty.periapical_radius_mm) * px_per_mm,
            contrast=uniform(rng, difficulty.periapical_contrast),
        )
    result["periapical"] = periapical
    return result


def _plan_tooth(tooth: Tooth, x: float, occlusal_y: float, rng: np.random.Generator, cfg: SynthConfig,
                px_per_mm: float, width_scale: float = 1.0, tilt_deg: float = 0.0,
                impacted: bool = False) -> ToothPlan:
    dims = tooth_dimensions(tooth)
    jitter = rng.uniform(0.94, 1.06)
    crown_h = dims.crown_height_mm * px_per_mm * jitter
    apical = 1 if tooth.arch is Arch.MANDIBULAR else -1
    cej_y = occlusal_y + apical * crown_h  # crowns meet at the occlusal plane
    angle = np.deg2rad(tilt_deg + uniform(rng, cfg.difficulty.tilt_deg) * 0.5)
    if impacted:
        mesial = mesial_sign(tooth)
        if tooth.tooth_type is ToothType.MOLAR:
            magnitude = float(rng.choice([rng.uniform(25, 60), rng.uniform(70, 95), rng.uniform(-5, 10)]))
            depth_mm = rng.uniform(3.0, 7.0)
        else:  # canine: high in the bone, steeply angled
            magnitude = rng.uniform(25, 70)
            depth_mm = rng.uniform(6.0, 10.0)
        # Positive magnitude tips the crown towards the mesial.
        angle = np.deg2rad(magnitude) * (-mesial if apical == 1 else mesial)
        cej_y += apical * depth_mm * px_per_mm
        x += -mesial * rng.uniform(0.5, 2.0) * px_per_mm
    conditions = _conditions(tooth, rng, cfg, px_per_mm) if not impacted else {}
    return ToothPlan(
        tooth=tooth,
        cej_x_px=float(x),
        cej_y_px=float(cej_y),
        angle_rad=float(angle),
        width_px=dims.crown_width_mm * px_per_mm * width_scale * jitter,
        crown_height_px=crown_h,
        root_length_px=dims.root_length_mm * px_per_mm * rng.uniform(0.92, 1.08),
        root_count=_root_count(tooth, rng, cfg.prevalence.typical_root_count),
        squareness=crown_squareness(tooth),
        px_per_mm=px_per_mm,
        pulp_scale=float(rng.uniform(0.7, 1.2)),
        root_length_factors=tuple(float(f) for f in rng.uniform(0.94, 1.06, size=3)),  # type: ignore[arg-type]
        root_curve=float(rng.uniform(-0.06, 0.1)),
        cusp_phase=float(rng.uniform(-0.3, 0.3)),
        impacted=impacted,
        caries=conditions.get("caries", ()),  # type: ignore[arg-type]
        restoration=conditions.get("restoration"),  # type: ignore[arg-type]
        crown_density=conditions.get("crown_density"),  # type: ignore[arg-type]
        root_canal_filling=bool(conditions.get("root_canal_filling", False)),
        periapical=conditions.get("periapical"),  # type: ignore[arg-type]
    )


def _place_row(scene: Scene, fdis: tuple[int, ...], x_start: float, occlusal_y, rng: np.random.Generator,
               cfg: SynthConfig, *, width_scale=lambda tooth: 1.0, tilt=lambda x: 0.0,
               allow_impaction: bool = True) -> None:
    """Place a row of neighbouring teeth left to right, with tight overlapping contacts."""
    px = scene.px_per_mm
    x = x_start
    prevalence = cfg.prevalence
    for fdi in fdis:
        tooth = Tooth.fdi_of(fdi)
        scale = width_scale(tooth)
        width = tooth_dimensions(tooth).crown_width_mm * px * scale
        centre = x + width / 2
        x += width - rng.uniform(0.0, 0.5) * px  # contacts overlap a little
        p_missing = prevalence.third_molar_missing if tooth.position == 8 else prevalence.missing
        if rng.random() < p_missing:
            scene.missing.append(fdi)
            if tooth.position != 8 and rng.random() < prevalence.implant_at_missing_site:
                scene.implants.append(_implant(tooth, centre, occlusal_y(centre), rng, px, scale))
            continue
        impacted = False
        if allow_impaction:
            if tooth.position == 8:
                impacted = rng.random() < prevalence.impacted_third_molar
            elif tooth.position == 3:
                impacted = rng.random() < prevalence.impacted_canine
        scene.teeth.append(_plan_tooth(tooth, centre, occlusal_y(centre), rng, cfg, px, scale,
                                       tilt(centre), impacted))


def _implant(site: Tooth, x: float, occlusal_y: float, rng: np.random.Generator, px: float,
             width_scale: float) -> ImplantPlan:
    dims = tooth_dimensions(site)
    apical = 1 if site.arch is Arch.MANDIBULAR else -1
    crown_h = dims.crown_height_mm * px
    return ImplantPlan(
        site=site,
        top_x_px=x,
        top_y_px=occlusal_y + apical * crown_h,
        angle_rad=float(np.deg2rad(rng.uniform(-5, 5))),
        width_px=rng.uniform(3.8, 4.8) * px * width_scale,
        length_px=rng.uniform(9.0, 12.0) * px,
        crown_height_px=crown_h,
        crown_width_px=dims.crown_width_mm * px * width_scale * 0.95,
    )


def _crest_line(scene: Scene, arch: Arch, rng: np.random.Generator, bone_loss_mm: float) -> np.ndarray | None:
    """Height of the alveolar crest along x: 1.5-2 mm apical of the necks of erupted
    teeth, lower where teeth are missing."""
    apical = 1 if arch is Arch.MANDIBULAR else -1
    points = [(t.cej_x_px, t.cej_y_px) for t in scene.teeth if t.tooth.arch is arch and not t.impacted]
    points += [(i.top_x_px, i.top_y_px) for i in scene.implants if i.site.arch is arch]
    if not points:
        return None
    points.sort()
    xs = np.array([p[0] for p in points])
    ys = np.array([p[1] for p in points]) + apical * (1.7 + bone_loss_mm) * scene.px_per_mm
    crest = np.interp(np.arange(scene.width, dtype=np.float32), xs, ys)
    return crest.astype(np.float32)


def _bone_side(scene: Scene, crest: np.ndarray, arch: Arch) -> np.ndarray:
    rows = np.arange(scene.height, dtype=np.float32)[:, None]
    soft = 0.6 * scene.px_per_mm
    distance = (rows - crest[None, :]) if arch is Arch.MANDIBULAR else (crest[None, :] - rows)
    return np.clip(distance / soft + 0.5, 0.0, 1.0)


def _intraoral_bone(scene: Scene, rng: np.random.Generator, arches: tuple[Arch, ...]) -> None:
    bone_loss = float(rng.choice([0.0, 0.0, rng.uniform(0.5, 3.5)]))
    mask = np.zeros((scene.height, scene.width), np.float32)
    for arch in arches:
        crest = _crest_line(scene, arch, rng, bone_loss)
        if crest is None:
            # No erupted tooth on this arch: bone fills the apical half of the image.
            crest = np.full(scene.width, scene.height * 0.5, np.float32)
        mask = np.maximum(mask, _bone_side(scene, crest, arch))
    scene.bone_mask = mask
    scene.bone_density = np.full_like(mask, rng.uniform(0.75, 1.05))
    scene.soft_tissue = np.full_like(mask, rng.uniform(0.25, 0.45))


def plan_periapical(rng: np.random.Generator, cfg: SynthConfig) -> Scene:
    sensor = cfg.periapical
    px = cfg.scale / sensor.pixel_spacing_mm
    arch = Arch.MANDIBULAR if rng.random() < 0.5 else Arch.MAXILLARY
    order = MANDIBULAR_ORDER if arch is Arch.MANDIBULAR else MAXILLARY_ORDER
    centre_index = int(rng.integers(1, len(order) - 1))
    anterior = Tooth.fdi_of(order[centre_index]).is_anterior
    # Anterior films stand upright; posterior films lie on their side.
    w_full, h_full = (sensor.width_px, sensor.height_px) if anterior else (sensor.height_px, sensor.width_px)
    width, height = round(w_full * cfg.scale), round(h_full * cfg.scale)
    scene = Scene(RadiographKind.PERIAPICAL, height, width, px)
    window = order[max(0, centre_index - 3): centre_index + 4]
    widths = [tooth_dimensions(Tooth.fdi_of(f)).crown_width_mm * px for f in window]
    offset = sum(widths[: min(centre_index, 3)]) + widths[min(centre_index, 3)] / 2
    x_start = width / 2 - offset + rng.uniform(-0.15, 0.15) * widths[min(centre_index, 3)]
    margin = rng.uniform(2.5, 4.0) * px  # occlusal edge a few millimetres inside the film
    occlusal = margin if arch is Arch.MANDIBULAR else height - margin
    _place_row(scene, window, x_start, lambda x: occlusal, rng, cfg)
    _intraoral_bone(scene, rng, (arch,))
    return scene


def plan_bitewing(rng: np.random.Generator, cfg: SynthConfig) -> Scene:
    sensor = cfg.bitewing
    px = cfg.scale / sensor.pixel_spacing_mm
    width, height = round(sensor.width_px * cfg.scale), round(sensor.height_px * cfg.scale)
    scene = Scene(RadiographKind.BITEWING, height, width, px)
    right = rng.random() < 0.5
    upper = (17, 16, 15, 14, 13) if right else (23, 24, 25, 26, 27)
    lower = (47, 46, 45, 44, 43) if right else (33, 34, 35, 36, 37)
    occlusal = height / 2 + rng.uniform(-0.06, 0.06) * height
    gap = rng.uniform(0.2, 0.8) * px
    for fdis, y in ((upper, occlusal - gap / 2), (lower, occlusal + gap / 2)):
        row_width = sum(tooth_dimensions(Tooth.fdi_of(f)).crown_width_mm for f in fdis) * px
        x_start = (width - row_width) / 2 + rng.uniform(-4, 4) * px + (-0.15 if right else 0.15) * row_width
        _place_row(scene, fdis, x_start, lambda x, y=y: y, rng, cfg, allow_impaction=False)
    _intraoral_bone(scene, rng, (Arch.MAXILLARY, Arch.MANDIBULAR))
    return scene


def plan_panoramic(rng: np.random.Generator, cfg: SynthConfig) -> Scene:
    sensor = cfg.panoramic
    px = cfg.scale / sensor.pixel_spacing_mm * 1.28  # panoramic projection magnifies ~1.28x
    width, height = round(sensor.width_px * cfg.scale), round(sensor.height_px * cfg.scale)
    scene = Scene(RadiographKind.PANORAMIC, height, width, px)
    mid_x = width / 2 + rng.uniform(-0.02, 0.02) * width
    mid_y = height * rng.uniform(0.5, 0.56)
    smile = rng.uniform(0.6, 1.1) * 9.0 * px / (65.0 * px) ** 2  # sides ~9 mm higher

    def occlusal(x: float) -> float:
        return mid_y - smile * (x - mid_x) ** 2

    def magnification(tooth: Tooth) -> float:  # panoramic: narrow anteriors, wide posteriors
        return 0.85 if tooth.is_anterior else 1.12

    def tilt(x: float) -> float:  # roots fan out along the smile curve
        return float(np.rad2deg(np.arctan(2 * smile * (x - mid_x)))) * 0.6

    gap = rng.uniform(0.3, 1.0) * px
    for order, dy in ((MAXILLARY_ORDER, -gap / 2), (MANDIBULAR_ORDER, gap / 2)):
        half = order[:8]
        left_width = sum(tooth_dimensions(Tooth.fdi_of(f)).crown_width_mm * magnification(Tooth.fdi_of(f))
                         for f in half) * px * 0.97
        _place_row(scene, order, mid_x - left_width, lambda x, dy=dy: occlusal(x) + dy, rng, cfg,
                   width_scale=magnification, tilt=tilt)
    _panoramic_anatomy(scene, rng, mid_x, mid_y)
    return scene


def _panoramic_anatomy(scene: Scene, rng: np.random.Generator, mid_x: float, mid_y: float) -> None:
    """Mandible with its cortex and rami, maxilla with palate and sinuses, spine shadows."""
    px, height, width = scene.px_per_mm, scene.height, scene.width
    bone_loss = float(rng.choice([0.0, rng.uniform(0.5, 3.0)]))
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    upper_crest = _crest_line(scene, Arch.MAXILLARY, rng, bone_loss)
    lower_crest = _crest_line(scene, Arch.MANDIBULAR, rng, bone_loss)
    upper = _bone_side(scene, upper_crest, Arch.MAXILLARY) if upper_crest is not None else 0.0
    lower = _bone_side(scene, lower_crest, Arch.MANDIBULAR) if lower_crest is not None else 0.0
    dx = (xs - mid_x) / px
    border = mid_y + (rng.uniform(36, 42) - 0.006 * dx**2) * px  # lower border of the mandible
    in_body = np.clip((border - ys) / (1.5 * px), 0, 1) * (np.abs(dx) < 85)
    ramus_x = rng.uniform(74, 80)
    in_ramus = ((np.abs(dx) > ramus_x - 8) & (np.abs(dx) < ramus_x + 18)).astype(np.float32) * (
        ys > mid_y - 35 * px) * np.clip((border - ys) / (1.5 * px), 0, 1)
    mandible = np.clip(np.maximum(lower * in_body, in_ramus), 0, 1)
    palate_y = mid_y - rng.uniform(26, 32) * px
    maxilla = upper * (ys > palate_y - 6 * px) * np.clip((88 - np.abs(dx)) / 6, 0, 1)
    scene.bone_mask = np.maximum(mandible, maxilla).astype(np.float32)
    density = np.full((height, width), rng.uniform(0.8, 1.0), np.float32)
    cortex = (np.abs(border - ys) < 3.0 * px) & (np.abs(dx) < 85)
    density = np.where(cortex, density * 1.8, density)
    palate = np.abs(ys - palate_y) < 2.0 * px
    density = np.where(palate & (np.abs(dx) < 70), density * 1.5, density)
    for side in (-1, 1):  # maxillary sinuses above the premolar and molar roots
        sx, sy = mid_x + side * rng.uniform(38, 48) * px, palate_y + 4 * px
        r2 = ((xs - sx) / (22 * px)) ** 2 + ((ys - sy) / (10 * px)) ** 2
        density = np.where(r2 < 1, density * 0.45, density)
    scene.bone_density = density.astype(np.float32)
    soft = np.full((height, width), rng.uniform(0.35, 0.5), np.float32)
    for side in (-1, 1):  # cervical spine ghosts at both edges
        sx = mid_x + side * rng.uniform(95, 102) * px
        soft += 0.35 * np.exp(-(((xs - sx) / (8 * px)) ** 2)).astype(np.float32)
    # Tongue, lips and cheeks overlap the crowns between the arches.
    soft += 0.45 * np.exp(-((dx / 75) ** 2) - ((ys - mid_y) / (14 * px)) ** 2).astype(np.float32)
    airway = np.abs(ys - (mid_y - 4 * px)) < 2.5 * px
    scene.soft_tissue = np.where(airway & (np.abs(dx) > 30), soft * 0.6, soft).astype(np.float32)


def plan_scene(kind: RadiographKind, rng: np.random.Generator, cfg: SynthConfig) -> Scene:
    match kind:
        case RadiographKind.PERIAPICAL:
            return plan_periapical(rng, cfg)
        case RadiographKind.BITEWING:
            return plan_bitewing(rng, cfg)
        case RadiographKind.PANORAMIC:
            return plan_panoramic(rng, cfg)
