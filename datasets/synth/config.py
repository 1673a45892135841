"""Generator settings: sizes, prevalences and the difficulty knobs.

The defaults are the "standard" difficulty; configs/synth/*.yaml hold named variants."""

from __future__ import annotations

from pydantic import Field, model_validator

from models.config_loading import FrozenConfig


class Range(FrozenConfig):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high < self.low:
            raise ValueError(f"range high ({self.high}) is below low ({self.low})")
        return self


def _r(low: float, high: float) -> Range:
    return Range(low=low, high=high)


class SensorConfig(FrozenConfig):
    width_px: int = Field(gt=16)
    height_px: int = Field(gt=16)
    pixel_spacing_mm: float = Field(gt=0)  # at full size, before ``scale``


class Prevalence(FrozenConfig):
    """Per-tooth probabilities (present teeth unless stated)."""

    missing: float = Field(0.06, ge=0, le=1)
    third_molar_missing: float = Field(0.35, ge=0, le=1)
    implant_at_missing_site: float = Field(0.3, ge=0, le=1)
    impacted_third_molar: float = Field(0.35, ge=0, le=1)
    impacted_canine: float = Field(0.03, ge=0, le=1)
    caries: float = Field(0.14, ge=0, le=1)
    restoration: float = Field(0.16, ge=0, le=1)
    crown: float = Field(0.05, ge=0, le=1)
    root_canal_filling: float = Field(0.06, ge=0, le=1)
    periapical_lesion: float = Field(0.05, ge=0, le=1)
    # Extra chance of a periapical lesion for a tooth with near-pulp caries or a root filling.
    periapical_lesion_if_indicated: float = Field(0.35, ge=0, le=1)
    typical_root_count: float = Field(0.85, ge=0, le=1)


class Difficulty(FrozenConfig):
    """Ranges that decide how hard detection is; they include barely visible lesions."""

    caries_contrast: Range = _r(0.12, 0.75)  # fraction of tooth density removed
    caries_size_mm: Range = _r(0.6, 2.4)
    periapical_contrast: Range = _r(0.12, 0.65)  # fraction of bone density removed
    periapical_radius_mm: Range = _r(1.0, 4.0)
    exposure: Range = _r(0.35, 0.75)
    gamma: Range = _r(0.8, 1.25)
    blur_sigma_px: Range = _r(0.5, 1.6)
    noise_sigma: Range = _r(0.008, 0.035)
    tilt_deg: Range = _r(-8.0, 8.0)
    marker_probability: float = Field(0.3, ge=0, le=1)


class SynthConfig(FrozenConfig):
    # Fraction of the real sensor size at which images are rendered (0.5: 500x650 periapicals).
    scale: float = Field(0.5, gt=0.05, le=2.0)
    periapical: SensorConfig = SensorConfig(width_px=1000, height_px=1300, pixel_spacing_mm=0.024)
    bitewing: SensorConfig = SensorConfig(width_px=1300, height_px=1000, pixel_spacing_mm=0.024)
    panoramic: SensorConfig = SensorConfig(width_px=2800, height_px=1400, pixel_spacing_mm=0.1)
    bits_stored: int = Field(12, ge=8, le=16)
    # A tooth cut by the image border is annotated when at least this fraction is inside.
    min_visible_fraction: float = Field(0.3, gt=0, le=1)
    prevalence: Prevalence = Prevalence()
    difficulty: Difficulty = Difficulty()
