"""Training configuration: one YAML file per recipe (configs/train/*.yaml), validated into
frozen models; unknown keys are refused and ``--set`` overrides must name a field."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from models.architecture import ClassifierArchitecture, DetectorArchitecture, VerifierArchitecture
from models.config_loading import FrozenConfig
from models.findings import CariesDepth, FindingClass
from models.model_card import DecodeConfig, ModelKey, TeethRegionMargins, VerifyConfig
from models.radiographs import RadiographKind
from models.tasks import DetectorTask


class SyntheticSource(FrozenConfig):
    """Images rendered in memory by the synthetic generator."""

    format: Literal["synthetic"] = "synthetic"
    counts: dict[RadiographKind, int] = Field(default_factory=lambda: {RadiographKind.PERIAPICAL: 100})
    seed: int = 1
    synth_config: Path | None = None  # a configs/synth/*.yaml; None for the standard settings

    @model_validator(mode="after")
    def _some(self) -> SyntheticSource:
        if not self.counts or any(n < 0 for n in self.counts.values()) or sum(self.counts.values()) == 0:
            raise ValueError("counts must ask for at least one image and no negative numbers")
        return self


class DiskSource(FrozenConfig):
    """An annotated dataset on disk. ``path``: the COCO/DENTEX JSON file, or the YOLO root
    (with data.yaml or classes.txt). Image file names are relative to ``images_root``
    (default: the JSON file's folder, or the YOLO root)."""

    format: Literal["coco", "dentex", "yolo"]
    path: Path
    images_root: Path | None = None
    kind: RadiographKind | None = None  # when the files do not say; else guessed from the aspect ratio
    category_map: dict[str, str] = Field(default_factory=dict)  # dataset name -> ours ('tooth-36', 'caries-dentin')


class DataConfig(FrozenConfig):
    sources: tuple[SyntheticSource | DiskSource, ...] = (SyntheticSource(),)
    val_fraction: float = Field(0.15, ge=0, lt=1)
    split_seed: int = 0
    # Public datasets often label caries without a depth; the finding detector learns such
    # boxes as this depth (counted and logged with the run).
    caries_without_depth: CariesDepth = CariesDepth.DENTIN
    # Finding detector: where an earlier model reported findings these images do not hold
    # (``dxv models mine-negatives`` on the same data), for augment.patch_hard_negative_prob.
    hard_negatives: Path | None = None


class AugmentConfig(FrozenConfig):
    flip_prob: float = Field(0.5, ge=0, le=1)
    zoom: tuple[float, float] = (0.85, 1.15)
    intensity: bool = True
    # Detectors: train on square patches of this side (model-input pixels) instead of whole
    # images; validation and serving still read whole images (the network is convolutional).
    patch_px: int | None = Field(None, ge=64)
    patch_focus_prob: float = Field(0.7, ge=0, le=1)  # share of patches placed around a box
    # Patches per image and epoch, by kind (default 1): panoramics hold most of the small
    # findings, so a recipe can show them more often.
    patches_per_image: dict[RadiographKind, int] = Field(default_factory=dict)
    # Finding detector: how much more often a focused patch centres a box of these classes
    # than one of the others (weight 1), e.g. {caries: 3}: the hard, small classes get more
    # of the training steps than crowns, which the detector finds anyway.
    patch_focus_weights: dict[FindingClass, float] = Field(default_factory=dict)
    # Finding detector: share of patches centred on a tooth, with or without a finding. On
    # panoramics the detector took the outline of a crown where it meets its neighbour for
    # caries; these patches show such healthy margins more often (the rest stays random).
    patch_tooth_focus_prob: float = Field(0.0, ge=0, le=1)
    # Finding detector: share of patches centred on one of data.hard_negatives' boxes (an
    # earlier model's false findings), so the next run meets those mistakes more often.
    patch_hard_negative_prob: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _patches(self) -> AugmentConfig:
        if any(n < 1 for n in self.patches_per_image.values()):
            raise ValueError("patches_per_image must be at least 1 for every kind named")
        if self.patches_per_image and self.patch_px is None:
            raise ValueError("patches_per_image needs patch_px")
        if any(w <= 0 for w in self.patch_focus_weights.values()):
            raise ValueError("patch_focus_weights must be positive")
        if self.patch_focus_weights and self.patch_px is None:
            raise ValueError("patch_focus_weights needs patch_px")
        if self.patch_tooth_focus_prob and self.patch_px is None:
            raise ValueError("patch_tooth_focus_prob needs patch_px")
        if self.patch_hard_negative_prob and self.patch_px is None:
            raise ValueError("patch_hard_negative_prob needs patch_px")
        if self.patch_focus_prob + self.patch_tooth_focus_prob + self.patch_hard_negative_prob > 1:
            raise ValueError("patch_focus_prob + patch_tooth_focus_prob + patch_hard_negative_prob are shares of the "
                             "patches: at most 1 together")
        return self


class OptimConfig(FrozenConfig):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_iters: int = Field(100, ge=0)
    grad_clip: float = Field(10.0, gt=0)
    max_iters_per_epoch: int | None = Field(None, ge=1)  # for smoke runs
    # Batch norm layers keep their running statistics (eval mode) while the rest trains, as
    # detection fine-tuning usually does; needed to warm-start from an ONNX file, whose batch
    # norms the exporter folded into the convolutions.
    freeze_batchnorm: bool = False


class SamplerConfig(FrozenConfig):
    """MONAI's ATSS matcher and hard-negative sampler settings."""

    atss_candidates: int = Field(6, ge=1)
    samples_per_image: int = Field(256, ge=8)
    positive_fraction: float = Field(0.5, gt=0, lt=1)
    hard_negative_pool: int = Field(20, ge=1)


class VerificationConfig(FrozenConfig):
    """Finding verifier: where its training examples come from. The finding detector in
    ``candidates_from`` (a model folder, read as served: with its tooth detector the
    panoramic's teeth region) reads every image; its candidates of ``classes`` scoring at
    least ``candidate_min_score`` are the examples, true where they overlap a true box of
    their class at IoU >= ``match_iou``. Each true box also gives ``true_box_copies``
    jittered copies (centre moved by ``jitter`` of its size, sides scaled by up to the same
    share; kept only at IoU >= ``match_iou``) as more true examples, since a detector finds
    each true finding once and misses some. ``positive_fraction`` of every batch is true.
    ``weights``: the fusion weights tried on the validation split after training; the best
    re-scored AP50 goes into the card (``verify.weight`` is what validation reads with)."""

    candidates_from: Path = Path("models/shipped")
    classes: tuple[FindingClass, ...] = (FindingClass.CARIES,)
    candidate_min_score: float = Field(0.05, ge=0, le=1)
    match_iou: float = Field(0.5, gt=0, le=1)
    true_box_copies: int = Field(6, ge=0)
    jitter: float = Field(0.12, ge=0, le=0.5)
    positive_fraction: float = Field(0.25, gt=0, lt=1)
    weights: tuple[Annotated[float, Field(gt=0, le=1)], ...] = (0.2, 0.3, 0.4, 0.5)

    @model_validator(mode="after")
    def _some(self) -> VerificationConfig:
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError("verification.classes names the finding classes to verify, each once")
        if not self.weights:
            raise ValueError("verification.weights needs at least one fusion weight to try")
        return self


class TrackingConfig(FrozenConfig):
    experiment: str = "dxv-detectors"
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else the local SQLite store
    register_model: bool = True
    enabled: bool = True


_DEFAULT_LONG_SIDE: dict[RadiographKind, int | None] = {
    RadiographKind.PERIAPICAL: 384, RadiographKind.BITEWING: 384, RadiographKind.PANORAMIC: 896}


class TrainConfig(FrozenConfig):
    model: ModelKey
    registered_name: str | None = None  # default: 'dxv-<model key>'
    version_label: str = "0.1.0"
    kinds_served: tuple[RadiographKind, ...] = tuple(RadiographKind)
    long_side_px: dict[RadiographKind, int | None] = Field(default_factory=lambda: dict(_DEFAULT_LONG_SIDE))
    # Finding detector: kinds whose served reading covers only the teeth's region (this
    # margin around them, a fraction of the image's size) at long_side_px's scale; written
    # into the model card (see models.model_card.InputContract). Training reads patches,
    # so it is unchanged by it.
    teeth_region_margin: TeethRegionMargins = Field(default_factory=dict)
    detector: DetectorArchitecture = DetectorArchitecture()
    classifier: ClassifierArchitecture = ClassifierArchitecture()
    decode: DecodeConfig = DecodeConfig()
    verifier: VerifierArchitecture = VerifierArchitecture()  # finding verifier: network and crops
    verify: VerifyConfig = VerifyConfig()  # finding verifier: how it re-scores (weight chosen again at the end)
    verification: VerificationConfig = VerificationConfig()  # finding verifier: its training examples
    sampler: SamplerConfig = SamplerConfig()
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    tracking: TrackingConfig = TrackingConfig()
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # used on GPU only
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None leaves torch's default
    # Processes that render/read and prepare the images and augment the batches (0: all in
    # the training process). A GPU machine's cores keep its GPU fed; results do not depend
    # on the count for rendering and preparing, and are reproducible for a given count.
    workers: int = Field(0, ge=0)
    output_dir: Path = Path("data/runs")
    # Warm start: the network weights of another run's checkpoint, or of an exported ONNX
    # file such as a shipped model (same architecture; an ONNX file needs
    # optim.freeze_batchnorm); the optimiser, schedule and MLflow run start afresh.
    # Recorded with the run's params.
    init_from: Path | None = None
    export_onnx: bool = True

    @property
    def name(self) -> str:
        return self.registered_name or f"dxv-{self.model.value}"

    @model_validator(mode="after")
    def _focus_weights_for_findings(self) -> TrainConfig:
        if self.augment.patch_focus_weights and self.model is not ModelKey.FINDINGS:
            raise ValueError("augment.patch_focus_weights applies to the finding detector only")
        if self.teeth_region_margin and self.model is not ModelKey.FINDINGS:
            raise ValueError("teeth_region_margin applies to the finding detector only")
        if self.augment.patch_tooth_focus_prob and self.model is not ModelKey.FINDINGS:
            raise ValueError("augment.patch_tooth_focus_prob applies to the finding detector only")
        if (self.augment.patch_hard_negative_prob or self.data.hard_negatives) and self.model is not ModelKey.FINDINGS:
            raise ValueError("hard negatives apply to the finding detector only")
        if bool(self.augment.patch_hard_negative_prob) != (self.data.hard_negatives is not None):
            raise ValueError("data.hard_negatives and augment.patch_hard_negative_prob go together: the file says "
                             "where, the share how often")
        return self

    @property
    def is_detector(self) -> bool:
        return self.model in (ModelKey.TOOTH_NUMBERING, ModelKey.FINDINGS)

    @property
    def is_verifier(self) -> bool:
        return self.model is ModelKey.FINDING_VERIFIER

    @property
    def detector_task(self) -> DetectorTask:
        return DetectorTask.TEETH if self.model is ModelKey.TOOTH_NUMBERING else DetectorTask.FINDINGS
