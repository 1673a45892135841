"""Which surfaces of a tooth a finding touches, read from where its box lies on the tooth box.

A radiograph is a projection: it shows the mesial, distal and occlusal (incisal) sides of
a crown, but a buccal and a lingual lesion both project over the middle of the crown and
cannot be told apart. So the estimate names M, D and O/I when it sees them, and says only
"buccal or lingual" for a central lesion away from the occlusal edge.

Radiographs are read as the clinician faces the patient: the patient's right is on the
image's left, so the mesial side (towards the midline) of a tooth on the patient's right
faces image right. Crowns point to the occlusal plane: down for maxillary teeth, up for
mandibular ones."""

from __future__ import annotations

from dataclasses import dataclass

from models.teeth import Arch, Side, Surface, Tooth

BoxXYXY = tuple[float, float, float, float]

# Fractions of the tooth box, measured on synthetic truth (evaluation of single-surface
# lesions): a proximal lesion reaches the edge of the box (within EDGE) with its centre in
# the outer part (CENTRE); an occlusal one starts within OCCLUSAL_BAND of the crown end;
# findings beyond CROWN_FRACTION of the height are not on the crown at all.
EDGE = 0.1
CENTRE = 0.4
OCCLUSAL_BAND = 0.06
CROWN_FRACTION = 0.55


@dataclass(frozen=True)
class SurfaceEstimate:
    visible: frozenset[Surface]  # among MESIAL, DISTAL, OCCLUSAL_INCISAL
    buccal_or_lingual: bool = False  # a central lesion: one of the two, the image cannot say which

    @property
    def count(self) -> int:
        return len(self.visible) + int(self.buccal_or_lingual)

    def text(self, tooth: Tooth) -> str:
        from models.teeth import format_surfaces

        parts = format_surfaces(self.visible, tooth)
        return parts + ("+B/L" if self.buccal_or_lingual else "") if (parts or self.buccal_or_lingual) else "none"


def mesial_is_image_right(tooth: Tooth) -> bool:
    return tooth.side is Side.RIGHT


def surfaces_touched(finding_box: BoxXYXY, tooth_box: BoxXYXY, tooth: Tooth) -> SurfaceEstimate:
    fx0, fy0, fx1, fy1 = finding_box
    tx0, ty0, tx1, ty1 = tooth_box
    width, height = max(tx1 - tx0, 1e-6), max(ty1 - ty0, 1e-6)
    # Distance from the occlusal end of the tooth box, as a fraction of its height.
    if tooth.arch is Arch.MAXILLARY:  # crown at the bottom
        near, far = (ty1 - fy1) / height, (ty1 - fy0) / height
    else:
        near, far = (fy0 - ty0) / height, (fy1 - ty0) / height
    if near > CROWN_FRACTION:
        return SurfaceEstimate(frozenset())
    # Horizontal extent in "mesial-positive" fractions: 0 at the distal edge, 1 at the mesial edge.
    lo, hi = (fx0 - tx0) / width, (fx1 - tx0) / width
    if not mesial_is_image_right(tooth):
        lo, hi = 1.0 - hi, 1.0 - lo
    centre = (lo + hi) / 2
    spans = lo <= EDGE and hi >= 1.0 - EDGE  # e.g. an MOD restoration
    mesial = hi >= 1.0 - EDGE and (centre >= 1.0 - CENTRE or spans)
    distal = lo <= EDGE and (centre <= CENTRE or spans)
    occlusal = near <= OCCLUSAL_BAND
    visible = {s for s, on in ((Surface.MESIAL, mesial), (Surface.DISTAL, distal),
                               (Surface.OCCLUSAL_INCISAL, occlusal)) if on}
    central = not visible and far > 0
    return SurfaceEstimate(frozenset(visible), buccal_or_lingual=central)
