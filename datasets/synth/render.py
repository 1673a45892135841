"""Rasterise planned teeth into attenuation layers and exact boxes.

Each tooth is drawn in its own frame: u across the tooth (towards image right when the
tooth is upright), v along its axis from the crown tip (v = -crown height) through the
cemento-enamel junction (v = 0) to the apex (v = root length). Outlines come from 1-D
profiles along v, which keeps rendering fast enough for on-the-fly generation.

Layers (all float32, image sized):
- ``teeth``: additive attenuation of teeth, restorations, crowns, fillings, implants;
- ``bone_factor``: multiplies the bone layer (periodontal ligament space, lamina dura,
  follicles, periapical radiolucencies).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from datasets.synth.anatomy import mesial_sign
from models.findings import CariesDepth
from models.teeth import Surface, Tooth

# Attenuation per unit thickness (arbitrary units; bone is about 0.9).
ENAMEL = 2.0
DENTIN = 1.3
PULP = 0.15
GUTTA_PERCHA = 3.2
TITANIUM = 6.0


@dataclass(frozen=True)
class CariesPlan:
    surfaces: frozenset[Surface]
    depth: CariesDepth
    contrast: float
    size_px: float


@dataclass(frozen=True)
class RestorationPlan:
    surfaces: frozenset[Surface]
    density: float  # amalgam ~7, composite ~2.3


@dataclass(frozen=True)
class PeriapicalPlan:
    root_index: int
    radius_px: float
    contrast: float


@dataclass(frozen=True)
class ToothPlan:
    tooth: Tooth
    cej_x_px: float
    cej_y_px: float
    angle_rad: float  # rotation of the tooth axis from upright
    width_px: float
    crown_height_px: float
    root_length_px: float
    root_count: int
    squareness: float
    px_per_mm: float
    pulp_scale: float = 1.0
    root_length_factors: tuple[float, float, float] = (1.0, 1.0, 1.0)
    root_curve: float = 0.0  # apical bend, as a fraction of the crown width
    cusp_phase: float = 0.0
    impacted: bool = False
    caries: tuple[CariesPlan, ...] = ()
    restoration: RestorationPlan | None = None
    crown_density: float | None = None  # a prosthetic crown when set
    root_canal_filling: bool = False
    periapical: PeriapicalPlan | None = None

    @property
    def mesial(self) -> int:
        return mesial_sign(self.tooth)

    @property
    def apical_sign(self) -> int:
        """+1 when roots point down the image (mandible), -1 when up (maxilla)."""
        return 1 if self.tooth.arch.value == "mandibular" else -1


@dataclass(frozen=True)
class ImplantPlan:
    site: Tooth
    top_x_px: float
    top_y_px: float
    angle_rad: float
    width_px: float
    length_px: float
    crown_height_px: float
    crown_width_px: float


BoxXYXY = tuple[float, float, float, float]


@dataclass
class RenderedFinding:
    kind: str  # caries, periapical_lesion, restoration, crown, root_canal_filling, implant, impacted_tooth
    fdi: int
    box_xyxy_px: BoxXYXY
    attributes: dict[str, object] = field(default_factory=dict)


@dataclass
class RenderedTooth:
    fdi: int
    box_xyxy_px: BoxXYXY
    visible_fraction: float
    roots_visible: bool
    findings: list[RenderedFinding]


@dataclass
class Canvas:
    height: int
    width: int
    teeth: np.ndarray = field(init=False)
    bone_factor: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.teeth = np.zeros((self.height, self.width), np.float32)
        self.bone_factor = np.ones((self.height, self.width), np.float32)


@dataclass
class _Frame:
    """A patch of the image in one tooth's coordinates (may extend past the image)."""

    y0: int
    x0: int
    u: np.ndarray
    v: np.ndarray
    step: int = 1
    full_inside: bool = True

    def box_of(self, mask: np.ndarray) -> BoxXYXY | None:
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(mask.any(axis=0))
        return (
            float(self.x0 + cols[0]), float(self.y0 + rows[0]),
            float(self.x0 + cols[-1] + 1), float(self.y0 + rows[-1] + 1),
        )


def _frame(cx: float, cy: float, angle: float, apical: int, u_range: tuple[float, float],
           v_range: tuple[float, float], clip_hw: tuple[int, int] | None = None, step: int = 1) -> _Frame:
    cos, sin = np.cos(angle), np.sin(angle)
    # u axis (cos, -sin)*apical-independent; v axis points to the apex.
    ex, ey = cos, -sin
    dx, dy = apical * sin, apical * cos
    corners = [(u, v) for u in u_range for v in v_range]
    xs = [cx + u * ex + v * dx for u, v in corners]
    ys = [cy + u * ey + v * dy for u, v in corners]
    x0, x1 = int(np.floor(min(xs))), int(np.ceil(max(xs))) + 1
    full_inside = clip_hw is None or (min(xs) >= 0 and min(ys) >= 0 and x1 <= clip_hw[1] and max(ys) + 1 <= clip_hw[0])
    y0, y1 = int(np.floor(min(ys))), int(np.ceil(max(ys))) + 1
    if clip_hw is not None:
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = max(min(x1, clip_hw[1]), x0), max(min(y1, clip_hw[0]), y0)
    xx = (np.arange(x0, x1, step, dtype=np.float32) + 0.5 - cx)[None, :]
    yy = (np.arange(y0, y1, step, dtype=np.float32) + 0.5 - cy)[:, None]
    u = xx * np.float32(ex) + yy * np.float32(ey)
    v = xx * np.float32(dx) + yy * np.float32(dy)
    return _Frame(y0=y0, x0=x0, u=u, v=v, step=step, full_inside=full_inside)


def _paste(target: np.ndarray, frame: _Frame, patch: np.ndarray, op: str) -> None:
    h, w = patch.shape
    ty0, tx0 = max(frame.y0, 0), max(frame.x0, 0)
    ty1, tx1 = min(frame.y0 + h, target.shape[0]), min(frame.x0 + w, target.shape[1])
    if ty1 <= ty0 or tx1 <= tx0:
        return
    src = patch[ty0 - frame.y0:ty1 - frame.y0, tx0 - frame.x0:tx1 - frame.x0]
    if op == "add":
        target[ty0:ty1, tx0:tx1] += src
    else:
        target[ty0:ty1, tx0:tx1] *= src


def _visible_fraction(plan: ToothPlan, frame_args: tuple, canvas: Canvas) -> float:
    """Share of the tooth inside the image, estimated on a coarse grid (edge teeth only)."""
    coarse = _frame(*frame_args, step=4)  # type: ignore[misc]
    dentin = _ToothGeometry(plan, coarse).dentin
    total = int(dentin.sum())
    if total == 0:
        return 0.0
    ys = coarse.y0 + 4 * np.arange(dentin.shape[0])[:, None]
    xs = coarse.x0 + 4 * np.arange(dentin.shape[1])[None, :]
    inside = (ys >= 0) & (ys < canvas.height) & (xs >= 0) & (xs < canvas.width)
    return float((dentin & inside).sum()) / total


def _clip_box(box: BoxXYXY | None, height: int, width: int) -> BoxXYXY | None:
    if box is None:
        return None
    x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
    x1, y1 = min(box[2], float(width)), min(box[3], float(height))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return (x0, y0, x1, y1)


def _smooth_disc(r2: np.ndarray, edge: float = 3.0) -> np.ndarray:
    """1 inside, 0 outside, with a soft rim, from a squared normalised radius."""
    return np.clip((1.0 - r2) * edge, 0.0, 1.0)


def _cervical_ratio(plan: ToothPlan) -> float:
    return 0.72 if plan.tooth.is_posterior else 0.68


def crown_half_width(s: np.ndarray | np.floating, half: float, squareness: float, cervical: float) -> np.ndarray:
    """Crown half-width at relative height s (0 tip, 1 CEJ): rounded to the tip, widest at
    the contact areas (s = 0.35), narrowing to the neck."""
    top = np.clip((0.35 - s) / 0.35, 0.0, 1.0)
    body = 1.0 - (1.0 - cervical) * np.clip((s - 0.35) / 0.65, 0.0, 1.0) ** 1.4
    return half * np.where(s < 0.35, (1.0 - top**squareness) ** (1.0 / squareness), body)


class _ToothGeometry:
    """Masks and thickness of one tooth over a frame.

    Every outline is a function of v alone (or u alone for the cusps), so it is computed
    on a 1-D table and gathered per pixel, which costs far less than evaluating it per
    pixel."""

    _TABLE_STEP = 0.5  # table resolution along v, in pixels

    def __init__(self, plan: ToothPlan, frame: _Frame) -> None:
        self.plan = plan
        w, hc, length = plan.width_px, plan.crown_height_px, plan.root_length_px
        u, v = frame.u, frame.v
        self.u, self.v = u, v
        half = w / 2.0
        v_min = -hc - 2.0
        table_v = np.arange(v_min, length * 1.3 + 4.0, self._TABLE_STEP, dtype=np.float32)
        index = np.clip(((v - v_min) / self._TABLE_STEP).astype(np.int32), 0, table_v.size - 1)

        def gather(table: np.ndarray) -> np.ndarray:
            return table[index]

        cervical = _cervical_ratio(plan)
        s_table = np.clip((table_v + hc) / hc, 0.0, 1.0)  # 0 at the tip, 1 at the CEJ
        crown_half_table = crown_half_width(s_table, half, plan.squareness, cervical).astype(np.float32)
        self.crown_half = gather(crown_half_table)
        tip: np.floating | np.ndarray = np.float32(-hc)
        if plan.tooth.is_posterior:  # cusps and fissures on the occlusal outline
            cusps = 2 if plan.tooth.tooth_type.value == "premolar" else 3
            # cusp height depends on u only; evaluated on the frame directly
            tip = tip + np.float32(0.09 * hc) * (0.5 - 0.5 * np.cos(
                np.float32(2 * np.pi * (cusps - 1)) * (u / np.float32(w) + np.float32(0.5 + plan.cusp_phase / cusps))))
        self.tip = tip
        abs_u = np.abs(u)
        self.crown = (v >= tip) & (v <= 0.5) & (abs_u <= self.crown_half)
        # Roots: a trunk under the crown, then one to three tapering roots.
        neck = half * cervical
        n = plan.root_count
        offsets = {1: [0.0], 2: [-0.27, 0.27], 3: [-0.3, 0.04, 0.3]}[n]
        widths = {1: 0.95, 2: 0.5, 3: 0.42}[n]
        lengths = list(plan.root_length_factors[:n])
        if n == 3:
            lengths[1] = max(lengths) + 0.05  # the palatal/lingual root is longest
        curve = plan.root_curve * w * -plan.mesial  # apical thirds bend distally
        t_table = table_v / length
        self.roots: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
        root_union = np.zeros(u.shape, bool)
        canal_tables = []
        for offset, root_len in zip(offsets, lengths, strict=True):
            tr = np.clip(t_table / root_len, 0.0, 1.2)
            centre_t = offset * w * (0.55 + 0.45 * tr) + curve * tr**2
            width_t = neck * widths * np.clip(1.0 - 0.78 * np.clip(tr, 0, 1) ** 1.5, 0.0, 1.0)
            apex_round = np.sqrt(np.clip(1.0 - ((tr - 0.92) / 0.08).clip(0) ** 2, 0.0, 1.0))
            width_t = np.where(tr > 0.92, width_t * apex_round, width_t)
            width_t = np.where((table_v >= 0) & (tr <= 1.0), width_t, -1.0).astype(np.float32)
            centre, halfwidth = gather(centre_t.astype(np.float32)), gather(width_t)
            mask = np.abs(u - centre) <= halfwidth
            root_union |= mask
            self.roots.append((centre, halfwidth, mask, root_len))
            canal_t = np.where(t_table <= 0.97 * root_len, np.maximum(width_t * 0.22 * plan.pulp_scale, 0.8), -1.0)
            canal_tables.append(canal_t.astype(np.float32))
        trunk_len = (0.3 if n > 1 else 0.0) * length
        trunk_t = neck * (1.0 - 0.15 * np.clip(table_v / max(trunk_len, 1.0), 0, 1))
        trunk_t = np.where((table_v >= -0.5) & (table_v <= trunk_len), trunk_t, -1.0).astype(np.float32)
        trunk_half = gather(trunk_t)
        self.trunk = abs_u <= trunk_half
        self.dentin = self.crown | root_union | self.trunk
        self.neck = neck
        # Enamel: the crown's outer shell, thick at the occlusal surface, ending at the CEJ.
        side_enamel = min((1.1 if plan.tooth.is_posterior else 0.7) * plan.px_per_mm, 0.18 * w)
        occlusal_enamel = min(2.0 * side_enamel, 0.3 * hc)
        self.enamel_side_px = side_enamel
        self.enamel_occlusal_px = occlusal_enamel
        inner_t = np.where(s_table < 0.97, crown_half_table - side_enamel * (1.0 - s_table**3), 1e9)
        self.enamel = self.crown & ((abs_u > gather(inner_t.astype(np.float32))) | (v < tip + occlusal_enamel)) & (
            v < -0.03 * hc)
        # Pulp: a chamber, widest at the neck and rounding off to the pulp horns, then canals.
        chamber_top = -0.45 * hc * plan.pulp_scale
        chamber_bottom = max(trunk_len, 0.08 * length)
        rise = np.clip((table_v - chamber_top) / max(-chamber_top, 1.0), 0.0, 1.0)
        sink = np.clip(1.0 - table_v / max(chamber_bottom, 1.0), 0.0, 1.0)
        chamber_t = neck * 0.42 * plan.pulp_scale * np.sqrt(rise) * np.where(table_v > 0, 0.5 + 0.5 * sink, 1.0)
        chamber_t = np.where((table_v >= chamber_top) & (table_v <= chamber_bottom), chamber_t, -1.0)
        self.chamber = abs_u <= gather(chamber_t.astype(np.float32))
        canals = np.zeros(u.shape, bool)
        self.canal_masks: list[np.ndarray] = []
        for (centre, _, mask, _), canal_t in zip(self.roots, canal_tables, strict=True):
            canal = mask & (np.abs(u - centre) <= gather(canal_t))
            self.canal_masks.append(canal)
            canals |= canal
        self.pulp = (self.chamber | canals) & self.dentin
        # Projected thickness: rounder teeth are thicker in the middle.
        thickness = np.where(self.trunk, np.sqrt(np.clip(1.0 - (u / max(neck, 1.0)) ** 2, 0.06, 1.0)), 0.0)
        for centre, halfwidth, mask, _ in self.roots:
            rt = np.sqrt(np.clip(1.0 - ((u - centre) / np.maximum(halfwidth, 1.0)) ** 2, 0.06, 1.0))
            thickness = np.where(mask, np.maximum(thickness, rt), thickness)
        crown_thick = np.sqrt(np.clip(1.0 - (u / np.maximum(self.crown_half, 1.0)) ** 2, 0.06, 1.0))
        self.thickness = np.where(self.crown, crown_thick, thickness).astype(np.float32)

    def apex(self, root_index: int) -> tuple[float, float]:
        """Apex position (u, v) of one root."""
        centre, _, mask, root_len = self.roots[root_index]
        v_apex = root_len * self.plan.root_length_px
        rows = self.v <= v_apex
        if not (mask & rows).any():
            return 0.0, v_apex
        selected = mask & (self.v > 0.9 * v_apex)
        u_apex = float(self.u[selected].mean()) if selected.any() else float(centre.mean())
        return u_apex, v_apex


def _in_order(surfaces: frozenset[Surface]) -> list[Surface]:
    """A set of surfaces in the enum's order: iterating the set itself follows string hashes,
    which change from one Python process to the next, and with them the random draws."""
    return [s for s in Surface if s in surfaces]


def _caries_mask(geo: _ToothGeometry, plan: CariesPlan, rng: np.random.Generator) -> np.ndarray:
    """Union of lesion ellipses, one per surface, reaching the planned depth."""
    tooth = geo.plan
    u, v = geo.u, geo.v
    hc = tooth.crown_height_px
    mask = np.zeros(u.shape, np.float32)
    depth_fraction = {CariesDepth.ENAMEL: rng.uniform(0.45, 0.85), CariesDepth.DENTIN: rng.uniform(1.3, 1.9),
                      CariesDepth.NEAR_PULP: rng.uniform(2.3, 2.7)}[plan.depth]
    for surface in _in_order(plan.surfaces):
        if surface in (Surface.MESIAL, Surface.DISTAL):
            sign = tooth.mesial if surface is Surface.MESIAL else -tooth.mesial
            v_c = -hc * rng.uniform(0.55, 0.72)  # at the contact area, where proximal caries start
            if Surface.OCCLUSAL_INCISAL in plan.surfaces:
                v_c = -hc * 0.78  # reaching up to the occlusal part of the same lesion
            half = float(crown_half_width(np.float32(1.0 + v_c / hc), tooth.width_px / 2,
                                          tooth.squareness, _cervical_ratio(tooth)))
            gap = max(half * 0.62 - geo.enamel_side_px, 2.0)  # enamel-dentin junction to pulp
            reach = geo.enamel_side_px * depth_fraction if depth_fraction < 1 else (
                geo.enamel_side_px + (depth_fraction - 1.0) / 1.7 * gap)
            ru, rv = max(reach, 2.0) / 2 + 1.0, max(plan.size_px / 2, 2.0)
            u_c = sign * (half - ru + 1.5)
        elif surface is Surface.OCCLUSAL_INCISAL:
            gap = max(0.45 * hc * tooth.pulp_scale - geo.enamel_occlusal_px, 2.0)
            reach = geo.enamel_occlusal_px * depth_fraction if depth_fraction < 1 else (
                geo.enamel_occlusal_px + (depth_fraction - 1.0) / 1.7 * gap)
            rv, ru = max(reach, 2.0) / 2 + 1.0, max(plan.size_px / 2, 2.0)
            u_c = rng.uniform(-0.2, 0.2) * tooth.width_px
            proximal = [s for s in _in_order(plan.surfaces) if s in (Surface.MESIAL, Surface.DISTAL)]
            if proximal:  # one lesion running from the marginal ridge over the proximal face
                side = tooth.mesial if proximal[0] is Surface.MESIAL else -tooth.mesial
                u_c = side * 0.3 * tooth.width_px
                ru = max(ru, 0.2 * tooth.width_px)
            v_c = -hc * (1.0 - 0.04) + rv - 1.0
        else:  # buccal or lingual: seen face-on, over the middle of the crown
            ru = rv = max(plan.size_px / 2, 2.0) * (0.7 + 0.3 * min(depth_fraction, 2.0))
            u_c = rng.uniform(-0.25, 0.25) * tooth.width_px
            v_c = -hc * rng.uniform(0.35, 0.6)
        r2 = ((u - u_c) / ru) ** 2 + ((v - v_c) / rv) ** 2
        mask = np.maximum(mask, _smooth_disc(r2))
    return mask * geo.dentin


def _restoration_mask(geo: _ToothGeometry, plan: RestorationPlan, rng: np.random.Generator) -> np.ndarray:
    tooth = geo.plan
    u, v, w, hc = geo.u, geo.v, tooth.width_px, tooth.crown_height_px
    mask = np.zeros(u.shape, bool)
    floor = -hc * rng.uniform(0.5, 0.65)
    for surface in _in_order(plan.surfaces):
        if surface is Surface.OCCLUSAL_INCISAL:
            mask |= (np.abs(u) <= w * rng.uniform(0.16, 0.24)) & (v <= -hc * rng.uniform(0.6, 0.72))
        elif surface in (Surface.MESIAL, Surface.DISTAL):
            sign = tooth.mesial if surface is Surface.MESIAL else -tooth.mesial
            inner = w * rng.uniform(0.18, 0.3)
            mask |= (u * sign >= inner) & (v <= floor)
            mask |= (np.abs(u) <= w * 0.18) & (u * sign >= 0) & (v <= -hc * 0.72)  # occlusal isthmus
        else:
            r2 = (u / (0.22 * w)) ** 2 + ((v + 0.5 * hc) / (0.2 * hc)) ** 2
            mask |= r2 <= 1.0
    return mask & geo.crown


def render_tooth(canvas: Canvas, plan: ToothPlan, rng: np.random.Generator,
                 min_visible_fraction: float) -> RenderedTooth | None:
    margin = 0.1 * plan.width_px + 6
    frame_args = (plan.cej_x_px, plan.cej_y_px, plan.angle_rad, plan.apical_sign,
                  (-plan.width_px / 2 - margin, plan.width_px / 2 + margin),
                  (-plan.crown_height_px - margin, plan.root_length_px * 1.1 + margin))
    frame = _frame(*frame_args, clip_hw=(canvas.height, canvas.width))
    if frame.u.size == 0:
        return None
    visible = 1.0 if frame.full_inside else _visible_fraction(plan, frame_args, canvas)
    geo = _ToothGeometry(plan, frame)
    thick = geo.thickness.astype(np.float32)
    density = DENTIN * thick * geo.dentin + (ENAMEL - DENTIN) * thick * geo.enamel
    # The pulp is only the middle of the projected thickness: dentin lies in front and behind.
    density -= (DENTIN - PULP) * thick * geo.pulp * 0.4
    findings: list[RenderedFinding] = []
    fdi = plan.tooth.fdi

    def add_finding(kind: str, mask: np.ndarray, **attributes: object) -> None:
        box = _clip_box(frame.box_of(mask), canvas.height, canvas.width)
        if box is not None:
            findings.append(RenderedFinding(kind, fdi, box, dict(attributes)))

    for caries in plan.caries:
        lesion = _caries_mask(geo, caries, rng)
        density *= 1.0 - caries.contrast * lesion
        add_finding("caries", lesion > 0.5, depth=caries.depth, surfaces=caries.surfaces,
                    contrast=round(caries.contrast, 3))
    if plan.restoration is not None:
        fill = _restoration_mask(geo, plan.restoration, rng)
        density = np.where(fill, plan.restoration.density * np.maximum(thick, 0.5), density)
        add_finding("restoration", fill, surfaces=plan.restoration.surfaces,
                    material="amalgam" if plan.restoration.density > 4 else "composite")
    if plan.root_canal_filling:
        filled = np.zeros_like(geo.dentin)
        end = rng.uniform(0.9, 0.99)
        for (_, _, _, root_len), canal in zip(geo.roots, geo.canal_masks, strict=True):
            filled |= canal & (geo.v <= end * root_len * plan.root_length_px)
        filled |= geo.chamber & geo.dentin
        density = np.where(filled, GUTTA_PERCHA * np.maximum(thick, 0.6), density)
        add_finding("root_canal_filling", filled)
    if plan.crown_density is not None:
        cap = (np.abs(geo.u) <= geo.crown_half * 1.05 + 1.5) & (geo.v >= geo.tip - 1.5) & (geo.v <= -0.02 * plan.crown_height_px)
        density = np.where(cap, plan.crown_density * np.maximum(thick, 0.55), density)
        add_finding("crown", cap, material="metal" if plan.crown_density > 4 else "ceramic")
    _paste(canvas.teeth, frame, density.astype(np.float32), "add")

    # Bone around the roots: dark ligament space, bright lamina dura; a follicle around
    # an impacted crown; a radiolucency at the apex of an infected root.
    factor = np.ones(geo.u.shape, np.float32)
    for centre, halfwidth, _mask, _ in geo.roots:
        edge = np.abs(geo.u - centre) - halfwidth
        along = (geo.v > 0.15 * plan.crown_height_px) & ~geo.dentin
        ligament = max(0.2 * plan.px_per_mm, 1.0)
        factor = np.where(along & (edge > 0) & (edge <= ligament) & (halfwidth > 0), 0.55, factor)
        factor = np.where(along & (edge > ligament) & (edge <= 2.5 * ligament) & (halfwidth > 0), 1.3, factor)
    if plan.impacted:
        crown_edge = np.abs(geo.u) - geo.crown_half
        follicle = ((geo.v < 0.2 * plan.crown_height_px) & (geo.v > geo.tip - 0.1 * plan.crown_height_px - 4)
                    & (crown_edge < 0.06 * plan.width_px + 3) & ~geo.crown)
        factor = np.where(follicle, 0.45, factor)
        add_finding("impacted_tooth", geo.dentin)
    if plan.periapical is not None:
        root_index = min(plan.periapical.root_index, len(geo.roots) - 1)
        u_a, v_a = geo.apex(root_index)
        radius = plan.periapical.radius_px
        r2 = ((geo.u - u_a) / radius) ** 2 + ((geo.v - v_a - 0.35 * radius) / (radius * 0.9)) ** 2
        lesion = _smooth_disc(r2, edge=2.5)
        factor *= 1.0 - plan.periapical.contrast * lesion
        add_finding("periapical_lesion", lesion > 0.5, contrast=round(plan.periapical.contrast, 3))
    _paste(canvas.bone_factor, frame, factor, "mul")

    if visible < min_visible_fraction:
        return None
    box = _clip_box(frame.box_of(geo.dentin | (density > 0)), canvas.height, canvas.width)
    if box is None:
        return None
    apex_rows = [geo.apex(i) for i in range(len(geo.roots))]
    roots_visible = all(_point_inside(frame, plan, ua, va, canvas) for ua, va in apex_rows)
    return RenderedTooth(fdi=fdi, box_xyxy_px=box, visible_fraction=round(visible, 3),
                         roots_visible=roots_visible, findings=findings)


def _point_inside(frame: _Frame, plan: ToothPlan, u: float, v: float, canvas: Canvas) -> bool:
    cos, sin = np.cos(plan.angle_rad), np.sin(plan.angle_rad)
    x = plan.cej_x_px + u * cos + v * plan.apical_sign * sin
    y = plan.cej_y_px - u * sin + v * plan.apical_sign * cos
    return 0 <= x < canvas.width and 0 <= y < canvas.height


def render_implant(canvas: Canvas, plan: ImplantPlan, apical: int) -> RenderedFinding | None:
    """A threaded titanium fixture in the bone with a crown on top."""
    w, length = plan.width_px, plan.length_px
    frame = _frame(plan.top_x_px, plan.top_y_px, plan.angle_rad, apical,
                   (-plan.crown_width_px / 2 - 4, plan.crown_width_px / 2 + 4),
                   (-plan.crown_height_px - 4, length + 4))
    u, v = frame.u, frame.v
    t = np.clip(v / length, 0.0, 1.0)
    thread = 0.08 * w * (0.5 + 0.5 * np.sin(v / max(w * 0.09, 1.0) * np.pi))
    half = w / 2 * (1.0 - 0.25 * t**3) - thread
    fixture = (v >= 0) & (v <= length) & (np.abs(u) <= half)
    crown = (v < 0) & (v >= -plan.crown_height_px) & (
        np.abs(u) <= plan.crown_width_px / 2 * (1.0 - 0.25 * (1.0 + v / plan.crown_height_px)))
    density = TITANIUM * fixture + 4.5 * crown
    _paste(canvas.teeth, frame, density.astype(np.float32), "add")
    box = _clip_box(frame.box_of(fixture), canvas.height, canvas.width)
    if box is None:
        return None
    return RenderedFinding("implant", plan.site.fdi, box, {})
