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

# Fractions of the tooth box: a finding reaching within the outer PROXIMAL_BAND of the
# width touches that proximal side; one reaching the occlusal OCCLUSAL_BAND of the height
# touches the occlusal surface; only findings in the CROWN_FRACTION count at all.
PROXIMAL_BAND = 0.3
OCCLUSAL_BAND = 0.12
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
    left, right = (fx0 - tx0) / width, (fx1 - tx0) / width
    right_side, left_side = right >= 1.0 - PROXIMAL_BAND, left <= PROXIMAL_BAND
    mesial, distal = (right_side, left_side) if mesial_is_image_right(tooth) else (left_side, right_side)
    occlusal = near <= OCCLUSAL_BAND
    visible = {s for s, on in ((Surface.MESIAL, mesial), (Surface.DISTAL, distal),
                               (Surface.OCCLUSAL_INCISAL, occlusal)) if on}
    central = not visible and far > 0
    return SurfaceEstimate(frozenset(visible), buccal_or_lingual=central)
