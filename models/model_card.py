"""Model cards: what a shipped or registered network is, what it expects, how well it did
and which exact file it is. Looked up by key (``get_model_card(ModelKey.TOOTH_NUMBERING)``),
and checked against the ONNX file it describes."""

from __future__ import annotations

import hashlib
import json
import typing
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from models.architecture import SIZE_DIVISIBLE, ClassifierArchitecture, DetectorArchitecture, VerifierArchitecture
from models.config_loading import FrozenConfig
from models.errors import DxvError
from models.findings import FindingClass
from models.postprocess import DecodeSettings
from models.radiographs import RadiographKind

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
NOT_FOR_CLINICAL_USE = "synthetic only — not for clinical use"


class ModelKey(StrEnum):
    TOOTH_NUMBERING = "tooth-numbering"
    FINDINGS = "findings"
    ROOT_COUNT = "root-count"
    FINDING_VERIFIER = "finding-verifier"


# Which of a card's files to run: ``auto`` takes the card's int8 copy (``card.int8``) where
# ONNX Runtime runs on the CPU alone (an 8-bit-weight copy: one with VNNI, on x86) and the
# float file on a GPU;
# ``fp32`` and ``int8`` ask for one (``int8`` refused for a card without the copy).
Precision = Literal["auto", "fp32", "int8"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)


class ModelCardError(DxvError):
    code = "model.card_mismatch"


class DecodeConfig(FrozenConfig):
    score_threshold: float = Field(0.05, ge=0, le=1)  # candidates kept for NMS and for AP
    operating_threshold: float = Field(0.4, ge=0, le=1)  # detections reported at the operating point
    # Finding detectors: the operating threshold of a finding class ('caries', 'crown', ...)
    # where it has its own; one threshold for all is a compromise between classes whose
    # best F1 lies far apart (lesions high, caries lower).
    class_thresholds: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    nms_iou: float = Field(0.5, gt=0, le=1)
    candidates: int = Field(1000, ge=1)
    max_detections: int = Field(100, ge=1)
    # Tooth detectors: teeth at or above the operating threshold get distinct FDI numbers.
    unique_tooth_numbers: bool = True
    # Finding detectors: the kinds read twice, as given and mirrored left-right (one batch of
    # two), the two views' detections fused (``postprocess.fuse_views``, boxes overlapping
    # above ``fusion_iou``). Findings look alike mirrored; tooth numbers do not.
    test_time_flip: tuple[RadiographKind, ...] = ()
    # Finding detectors: per kind, scales (times the card's long side) read besides the
    # card's own, each mirrored too where the kind flips; every view is fused.
    test_time_scales: dict[RadiographKind, tuple[Annotated[float, Field(ge=0.5, le=2.0)], ...]] = Field(
        default_factory=dict)
    # Finding detectors: per kind, diagonal shifts (network-input pixels, at the card's own
    # scale) read besides the unshifted view, each mirrored too where the kind flips. A
    # shift moves the image against the anchor grid (stride 8), so a finding of a few pixels
    # is boxed by other anchors: another opinion on where its edges are.
    test_time_shifts: dict[RadiographKind, tuple[Annotated[int, Field(ge=1, le=31)], ...]] = Field(
        default_factory=dict)
    fusion_iou: float = Field(0.55, gt=0, lt=1)
    # Finding detectors: a finding's score is its class's probability ("top_class"), or
    # its finding's ("summed": the probabilities of the classes that differ only in an
    # attribute, the caries depths, added up and capped at 1). The network splits a
    # caries's evidence between depths, most for the small, ambiguous ones.
    finding_score: Literal["top_class", "summed"] = "top_class"

    @model_validator(mode="after")
    def _known_classes_and_distinct_views(self) -> DecodeConfig:
        unknown = set(self.class_thresholds) - {c.value for c in FindingClass}
        if unknown:
            raise ValueError(f"class_thresholds names no finding class: {sorted(unknown)} "
                             f"(finding classes: {', '.join(c.value for c in FindingClass)})")
        for kind, scales in self.test_time_scales.items():
            if 1.0 in scales or len(set(scales)) != len(scales):
                raise ValueError(f"test_time_scales[{kind.value}] lists scales besides the card's own (1.0), "
                                 f"each once; got {list(scales)}")
        for kind, shifts in self.test_time_shifts.items():
            if len(set(shifts)) != len(shifts):
                raise ValueError(f"test_time_shifts[{kind.value}] lists each shift once; got {list(shifts)}")
        return self

    @property
    def reads_in_views(self) -> bool:
        return bool(self.test_time_flip or self.test_time_scales or self.test_time_shifts)

    @property
    def finding_only(self) -> bool:
        """Settings that only a finding detector may have (views, summed scores)."""
        return self.reads_in_views or self.finding_score == "summed"

    def threshold_for(self, finding_class: str) -> float:
        """The operating threshold of a finding class (its own, or the general one)."""
        return self.class_thresholds.get(finding_class, self.operating_threshold)

    def views(self, kind: RadiographKind) -> tuple[tuple[float, bool, int], ...]:
        """(scale, mirrored, shift px) of every view a ``kind`` radiograph is read in;
        (1.0, False, 0) first."""
        flips = (False, True) if kind in self.test_time_flip else (False,)
        scaled = tuple((scale, flip, 0) for scale in (1.0, *self.test_time_scales.get(kind, ())) for flip in flips)
        return scaled + tuple((1.0, flip, shift) for shift in self.test_time_shifts.get(kind, ()) for flip in flips)

    def settings(self) -> DecodeSettings:
        return DecodeSettings(score_threshold=self.score_threshold, nms_iou=self.nms_iou, candidates=self.candidates,
                              max_detections=self.max_detections, summed_scores=self.finding_score == "summed")


class VerifyConfig(FrozenConfig):
    """How a finding verifier changes the finding detector's scores. Candidates of the
    verified classes scoring at least ``min_score`` are read again by the verifier; a
    candidate's score becomes ``detector ** (1 - weight) * verifier ** weight`` (a
    weighted geometric mean of two opinions: a candidate both find likely stays high, one
    that either doubts falls). Candidates under ``min_score`` keep their score: below the
    operating thresholds and the validation layer's bands they decide nothing, and
    reading them would cost the most (a panoramic has about 80 caries candidates over
    0.05 and 22 over 0.2). ``class_thresholds``: the operating thresholds of the verified
    classes on the new scores (each class's best validation F1), in place of the finding
    detector's own for those classes."""

    min_score: float = Field(0.2, ge=0, le=1)
    weight: float = Field(0.3, gt=0, le=1)
    mirrored: bool = True  # each crop is also read mirrored left-right, the two logits averaged
    class_thresholds: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)


# Per radiograph kind, the margin around the teeth's region (a fraction of the image's size).
TeethRegionMargins = dict[RadiographKind, Annotated[float, Field(ge=0, le=0.5)]]


class InputContract(FrozenConfig):
    """The network input: float32 NCHW, one channel, values in [0, 1] with radiopaque
    bright. Detectors: the image is resized so its long side is ``long_side_px[kind]``
    (null keeps the original size), then zero-padded at the bottom and right to a multiple
    of ``size_divisible``. Root-count classifier: tooth crops, crown up, resized to
    ``crop_hw_px``.

    Finding detectors, ``teeth_region_margin[kind]``: for that kind only the region around
    the teeth the tooth detector found is read (grown on each side by this fraction of the
    image's width and height), at the scale ``long_side_px`` gives the whole image. Teeth
    fill about a third of a panoramic; the rest is bone, sinuses and air, so the region
    lets the detector read panoramics at a finer scale for the same time. With no tooth
    detector or no tooth found, the whole image is read."""

    name: str = "image"
    layout: Literal["NCHW"] = "NCHW"
    channels: int = 1
    dtype: Literal["float32"] = "float32"
    value_range: str = "0..1, radiopaque bright"
    long_side_px: dict[RadiographKind, int | None] = Field(default_factory=dict)
    size_divisible: int = SIZE_DIVISIBLE
    crop_hw_px: tuple[int, int] | None = None
    teeth_region_margin: TeethRegionMargins = Field(default_factory=dict)


class QuantizedFile(FrozenConfig):
    """An 8-bit integer copy of the card's network for CPUs (``dxv models quantize``):
    static QDQ quantization by ONNX Runtime, weights per output channel, activations
    calibrated on the radiographs named in ``calibration``. Same inputs and outputs as the
    float file; its readings differ slightly (measured in the README), so a reading says
    which file made it (the version gets ``+int8``)."""

    onnx_file: str
    sha256: str
    size_bytes: int
    scheme: str  # how it was quantized (``models.quantize.scheme``)
    calibration: str  # the radiographs the activation ranges were taken on
    # 7: exact on every x86 CPU; 8: saturates on x86 without VNNI (``models.quantize``).
    # Copies made before the choice existed were 8-bit.
    weight_bits: Literal[7, 8] = 8


class ModelCard(FrozenConfig):
    key: ModelKey
    registered_name: str
    version: str
    task: Literal["detection", "classification", "verification"]
    classes: tuple[str, ...]
    kinds_served: tuple[RadiographKind, ...]
    input: InputContract
    outputs: tuple[str, ...]
    detector: DetectorArchitecture | None = None
    classifier: ClassifierArchitecture | None = None
    decode: DecodeConfig | None = None
    verifier: VerifierArchitecture | None = None  # finding verifier: its network and crops
    verify: VerifyConfig | None = None  # finding verifier: how its probability changes a score
    training_data: str = NOT_FOR_CLINICAL_USE
    training_run_id: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    metrics_dataset: str | None = None
    # Images (root-count: crops) per second through ONNX Runtime, keyed
    # '<provider>_<input>_batch<n>_images_per_s'; measured by `bench_models --throughput`.
    throughput: dict[str, float] = Field(default_factory=dict)
    throughput_device: str | None = None  # the processor those figures were measured on
    int8: QuantizedFile | None = None  # served on CPUs where present (see ``models.inference.Precision``)
    onnx_file: str
    sha256: str
    size_bytes: int

    @model_validator(mode="after")
    def _verifier_parts(self) -> ModelCard:
        if self.task != "verification":
            return self
        if self.verifier is None or self.verify is None:
            raise ValueError("a verification model's card needs verifier (its network) and verify (its scoring)")
        findings = {c.value for c in FindingClass}
        unknown = [c for c in self.classes if c not in findings]
        if unknown:
            raise ValueError(f"a finding verifier's classes are finding classes; not {unknown}")
        stray = set(self.verify.class_thresholds) - set(self.classes)
        if stray:
            raise ValueError(f"verify.class_thresholds names classes this verifier does not verify: {sorted(stray)}")
        if self.input.channels != self.verifier.channels or self.input.crop_hw_px != (self.verifier.crop_px,) * 2:
            raise ValueError("the input contract must give one channel per crop context, crop_px square")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def long_side_for(self, kind: RadiographKind) -> int | None:
        if kind not in self.kinds_served:
            raise ModelCardError(f"model {self.key} does not serve {kind.value} radiographs "
                                 f"(serves {', '.join(k.value for k in self.kinds_served)})")
        return self.input.long_side_px.get(kind)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_path(onnx_path: str | Path) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.name.removesuffix(".onnx") + ".card.json")


def write_card(card: ModelCard, path: str | Path) -> Path:
    Path(path).write_text(json.dumps(card.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n", "utf-8")
    return Path(path)


def read_card(path: str | Path) -> ModelCard:
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text("utf-8"))
        return ModelCard.model_validate(data)
    except (OSError, ValueError) as exc:
        raise ModelCardError(f"cannot read model card {path}: {exc}") from exc


def get_model_card(key: ModelKey | str, directory: str | Path = SHIPPED_DIR) -> ModelCard:
    key = ModelKey(key)
    return read_card(Path(directory) / f"{key.value}.card.json")


def shipped_model_path(key: ModelKey | str, directory: str | Path = SHIPPED_DIR) -> Path:
    card = get_model_card(key, directory)
    return Path(directory) / card.onnx_file


CARRIED_THROUGHPUT_NOTE = "measured on a retrained file of this network: same graph and input sizes, other weights"


def same_network(a: ModelCard, b: ModelCard) -> bool:
    """True when two cards describe the same graph fed the same inputs (only the weights may
    differ): the condition under which throughput measured on one holds for the other."""
    return (a.key == b.key and a.task == b.task and a.classes == b.classes and a.outputs == b.outputs
            and a.detector == b.detector and a.classifier == b.classifier and a.verifier == b.verifier
            and a.input == b.input and a.kinds_served == b.kinds_served)


def with_carried_throughput(new: ModelCard, previous: ModelCard) -> ModelCard:
    """``new`` with ``previous``'s throughput figures when it has none of its own and both
    cards describe the same network; retraining changes weights, not speed. Otherwise
    ``new`` unchanged: a changed network must be measured again."""
    if new.throughput or not previous.throughput or not same_network(new, previous):
        return new
    device = previous.throughput_device or "unknown processor"
    if CARRIED_THROUGHPUT_NOTE not in device:
        device = f"{device} ({CARRIED_THROUGHPUT_NOTE})"
    return new.model_copy(update={"throughput": dict(previous.throughput), "throughput_device": device})


def verify_card(card: ModelCard, onnx_path: str | Path) -> None:
    """Raise ModelCardError when the card does not describe this ONNX file: hash, input
    name and rank, output names and the class count of the class output. ``onnx_path``
    may be the card's own file or its int8 copy (``card.int8``)."""
    import onnx

    path = Path(onnx_path)
    problems = []
    copy = card.int8 if card.int8 is not None and path.name == card.int8.onnx_file else None
    sha256, size_bytes = (copy.sha256, copy.size_bytes) if copy else (card.sha256, card.size_bytes)
    if sha256_of(path) != sha256:
        problems.append("sha256 differs")
    if path.stat().st_size != size_bytes:
        problems.append("size differs")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError for a damaged file
        raise ModelCardError(f"card {card.key} does not match {path.name}: " + "; ".join(
            [*problems, f"not a readable ONNX file ({type(exc).__name__})"])) from exc
    inputs = [i for i in model.graph.input]
    if [i.name for i in inputs] != [card.input.name]:
        problems.append(f"inputs are {[i.name for i in inputs]}, card says {[card.input.name]}")
    else:
        dims = inputs[0].type.tensor_type.shape.dim
        if len(dims) != 4 or dims[1].dim_value != card.input.channels:
            problems.append("input is not N x channels x H x W")
        if card.input.crop_hw_px is not None and (dims[2].dim_value, dims[3].dim_value) != tuple(card.input.crop_hw_px):
            problems.append("crop size differs")
    outputs = [o.name for o in model.graph.output]
    if tuple(outputs) != card.outputs:
        problems.append(f"outputs are {outputs}, card says {list(card.outputs)}")
    else:
        last = model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
        if last != card.num_classes:
            problems.append(f"class output has {last} classes, card lists {card.num_classes}")
    if problems:
        raise ModelCardError(f"card {card.key} does not match {path.name}: " + "; ".join(problems))
