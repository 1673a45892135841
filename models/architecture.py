"""The networks' sizes and strides, without torch: the card, pre- and post-processing
(and so the service) read them, and only training and export build the networks
(``models.networks``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from models.config_loading import FrozenConfig

# Output strides of the pyramid levels P3, P4, P5 (input size must be divisible by 32).
LEVEL_STRIDES: tuple[int, ...] = (8, 16, 32)
SIZE_DIVISIBLE = 32


class DetectorArchitecture(FrozenConfig):
    """Size of the detector; the defaults are sized for 2-core CPU serving."""

    block_inplanes: tuple[int, int, int, int] = (32, 64, 128, 256)
    layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    fpn_channels: int = Field(96, ge=16)
    # Anchor shapes (height, width) in model-input pixels at the finest level (stride 8);
    # each coarser level uses them times 2 and 4.
    anchor_shapes_px: tuple[tuple[float, float], ...] = ((32.0, 16.0), (32.0, 32.0), (16.0, 32.0))
    feature_map_scales: tuple[float, float, float] = (1.0, 2.0, 4.0)

    @model_validator(mode="after")
    def _positive(self) -> DetectorArchitecture:
        if not self.anchor_shapes_px or any(h <= 0 or w <= 0 for h, w in self.anchor_shapes_px):
            raise ValueError("anchor_shapes_px needs at least one (height, width) pair of positive sizes")
        return self

    @property
    def anchors_per_location(self) -> int:
        return len(self.anchor_shapes_px)


class ClassifierArchitecture(FrozenConfig):
    block_inplanes: tuple[int, int, int, int] = (16, 32, 64, 128)
    layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    crop_height_px: int = Field(128, ge=32)
    crop_width_px: int = Field(64, ge=16)


class CropContext(FrozenConfig):
    """One channel of a finding verifier's input: the candidate's box, centred, grown to a
    square of ``box_multiple`` times its long side (at least ``min_side_px`` image pixels,
    so a tiny box still shows its tooth), resized to the crop size."""

    box_multiple: float = Field(ge=1.0)
    min_side_px: float = Field(ge=4.0)


class VerifierArchitecture(FrozenConfig):
    """A crop classifier (MONAI ResNet) that reads a detector's candidates again, each at
    full image resolution and at two extents of context, one channel each: the close view
    shows the candidate's own shape and contrast, the wide one its tooth, where a caries
    and a healthy crown's outline meeting its neighbour differ. Sized for CPU serving."""

    block_inplanes: tuple[int, int, int, int] = (32, 64, 128, 256)
    layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    crop_px: int = Field(48, ge=16)
    contexts: tuple[CropContext, ...] = (CropContext(box_multiple=3.0, min_side_px=24.0),
                                         CropContext(box_multiple=8.0, min_side_px=64.0))

    @model_validator(mode="after")
    def _some_context(self) -> VerifierArchitecture:
        if not self.contexts:
            raise ValueError("contexts needs at least one crop context (one input channel each)")
        return self

    @property
    def channels(self) -> int:
        return len(self.contexts)
