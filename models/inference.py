"""Running the exported networks with ONNX Runtime: the same pre- and post-processing for
evaluation and serving. CUDA is used when onnxruntime-gpu is installed and a GPU is there."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from models.detections import (
    FindingDetection,
    ImageReading,
    ToothDetection,
    assign_findings,
    findings_from_raw,
    teeth_from_raw,
)
from models.findings import FindingClass
from models.model_card import ModelCard, ModelCardError, ModelKey, Precision, card_path, read_card, verify_card
from models.postprocess import (
    RawDetections,
    cached_anchors,
    decode_detections,
    fuse_views,
    mirror_detections,
    mirror_input,
    shift_input,
    unshift_detections,
)
from models.preprocess import InputGeometry, crop_tooth, finding_crops, prepare_image, prepare_region, teeth_region
from models.radiographs import RadiographKind
from models.tasks import ROOT_COUNT_CLASSES, labels_from_names, nms_groups
from models.teeth import Tooth


def available_providers(prefer_gpu: bool = True) -> list[str]:
    import onnxruntime as ort

    have = ort.get_available_providers()
    if prefer_gpu and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(onnx_path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 spin: bool = False):
    """``spin=False`` (the default) stops ONNX Runtime's idle threads from busy-waiting for
    the next operator or run. On the 2-core machine here that made one periapical read (all
    three models, 2 threads) take 88-92 ms instead of 175 ms, and it leaves the cores to
    whatever runs beside the models (the service's ingress, decoding, the rules)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), options, providers=providers or available_providers())


def runs_int8(card: ModelCard, precision: Precision, providers: list[str]) -> bool:
    if precision == "int8" and card.int8 is None:
        raise ModelCardError(f"{card.key} {card.version} has no int8 file (make one with dxv models quantize)")
    if card.int8 is None or precision == "fp32":
        return False
    if precision == "int8":
        return True
    return providers == ["CPUExecutionProvider"] and (card.int8.weight_bits == 7 or cpu_multiplies_int8_exactly())


_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def has_vnni(cpuinfo_text: str) -> bool:
    """Whether /proc/cpuinfo's ``flags`` name an x86 instruction set that multiplies
    uint8 by int8 without saturating (AVX-512 VNNI, AVX-VNNI, AMX)."""
    for line in cpuinfo_text.splitlines():
        if line.startswith("flags"):
            return bool(_VNNI_FLAGS & set(line.partition(":")[2].split()))
    return False


@functools.lru_cache(maxsize=1)
def cpu_multiplies_int8_exactly() -> bool:
    """Whether this CPU multiplies uint8 activations by full 8-bit int8 weights without
    saturating. On x86-64 without VNNI, ONNX Runtime's kernels sum pairs of products in 16
    bits and 8-bit weights overflow them (its quantization docs advise 7-bit weights; on
    an AVX2-only EPYC an 8-bit copy of the finding detector lost 0.18 of its restoration
    sensitivity), so ``auto`` keeps the float file there for an 8-bit copy. Other
    architectures (ARM's dot products) have no such path."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True
    try:
        return has_vnni(Path("/proc/cpuinfo").read_text("utf-8", "replace"))
    except OSError:
        return False


@dataclass(frozen=True, eq=False)
class LoadedModel:
    card: ModelCard
    path: Path  # the file the session runs: the card's own, or its int8 copy
    session: object

    @classmethod
    def load(cls, onnx_path: str | Path, *, verify: bool = True, threads: int | None = None,
             providers: list[str] | None = None, spin: bool = False, precision: Precision = "auto") -> LoadedModel:
        """The model whose card sits beside ``onnx_path`` (the card's own file), run from
        that file or from its int8 copy as ``precision`` says."""
        path = Path(onnx_path)
        if not path.exists():
            raise ModelCardError(f"model file not found: {path}")
        card = read_card(card_path(path))
        providers = providers or available_providers()
        if runs_int8(card, precision, providers):
            assert card.int8 is not None
            path = path.with_name(card.int8.onnx_file)
            if not path.exists():
                raise ModelCardError(f"model file not found: {path} (the int8 copy {card.key} {card.version}'s card names)")
        if verify:
            verify_card(card, path)
        return cls(card, path, make_session(path, threads, providers, spin))

    @property
    def int8(self) -> bool:
        return self.card.int8 is not None and self.path.name == self.card.int8.onnx_file

    @property
    def version(self) -> str:
        """The card's version; ``+int8`` when the int8 copy runs (its readings differ slightly)."""
        return f"{self.card.version}+int8" if self.int8 else self.card.version

    def run(self, batches: list[np.ndarray]) -> list[list[np.ndarray]]:
        """Each batch's outputs (``run_batched``)."""
        return run_batched(self.session, self.card.input.name, batches)


def precision_for(precision: Precision, has_int8: bool) -> Precision:
    """What a model runs when ``precision`` is asked of a folder: ``int8`` falls back to the
    float file for a model without an int8 copy; the other choices stand."""
    return "fp32" if precision == "int8" and not has_int8 else precision


class Network(Protocol):
    """What the readers below need of a network: its card, the version it runs, and its
    outputs for input batches. A ``LoadedModel`` (an ONNX Runtime session in this process)
    is one; the service's per-model deployments stand behind another
    (``serving.networks.RemoteNetwork``), so that pre- and post-processing stay this code."""

    @property
    def card(self) -> ModelCard: ...

    @property
    def version(self) -> str: ...

    def run(self, batches: list[np.ndarray]) -> list[list[np.ndarray]]: ...


# A network run takes inputs of one shape from several images up to about this many input
# pixels (about one panoramic's views of one scale); a request larger alone still runs whole.
# On a GPU 16 inputs take about 2.4 times one's time (README, H100); on a CPU the bound keeps
# a run's memory near what one panoramic's views take.
MAX_RUN_PIXELS = 8_000_000


def run_batched(session, input_name: str, batches: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Each batch's outputs, as ``session.run`` would give them for it alone; batches of one
    shape (past the batch axis) go through the network together, in runs of at most
    ``MAX_RUN_PIXELS`` input pixels, and their outputs are split back."""
    results: list[list[np.ndarray] | None] = [None] * len(batches)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, batch in enumerate(batches):
        by_shape.setdefault(tuple(batch.shape[1:]), []).append(index)
    runs: list[list[int]] = []
    for shape, indices in by_shape.items():
        per_input, inputs = int(np.prod(shape)), 0
        run: list[int] = []
        for index in indices:
            if run and (inputs + len(batches[index])) * per_input > MAX_RUN_PIXELS:
                runs.append(run)
                run, inputs = [], 0
            run.append(index)
            inputs += len(batches[index])
        runs.append(run)
    for run in runs:
        joined = batches[run[0]] if len(run) == 1 else np.concatenate([batches[i] for i in run])
        outputs = session.run(None, {input_name: joined})
        start = 0
        for i in run:
            results[i] = [out[start:start + len(batches[i])] for out in outputs]
            start += len(batches[i])
    return [r for r in results if r is not None]


class Detector:
    def __init__(self, model: Network) -> None:
        card = model.card
        if card.task != "detection" or card.detector is None or card.decode is None:
            raise ModelCardError(f"{card.key} is not a detector")
        self.model = model
        self.labels = labels_from_names(card.classes)
        self.groups = nms_groups(self.labels)
        self.settings = card.decode.settings()
        if card.decode.finding_only and any(label.tooth is not None for label in self.labels):
            raise ModelCardError(f"{card.key}: test-time views and summed scores are for finding detectors; "
                                 f"tooth numbers are not fused (mirrored, a tooth's FDI number changes side) "
                                 f"and a tooth's score is its number's")

    def network_input(self, image_unit: np.ndarray, kind: RadiographKind,
                      region_xyxy_px: tuple[int, int, int, int] | None = None,
                      scale: float = 1.0) -> tuple[np.ndarray, InputGeometry]:
        """The network input for the whole image, or for only ``region_xyxy_px`` at the
        whole image's scale, with its geometry; ``scale`` times the card's long side."""
        long_side = self.model.card.long_side_for(kind)
        if scale != 1.0:
            long_side = round((long_side or max(image_unit.shape)) * scale)
        if region_xyxy_px is None:
            return prepare_image(image_unit, long_side)
        return prepare_region(image_unit, region_xyxy_px, long_side)

    def raw(self, image_unit: np.ndarray, kind: RadiographKind, region_xyxy_px: tuple[int, int, int, int] | None = None):
        """The detections of the whole image, or of only ``region_xyxy_px`` read at the
        whole image's scale (boxes in the network input's pixels, ``geometry`` maps them to
        the image's). A kind the card reads in several views (``decode.views``: mirrored,
        other scales, shifted) gets every view's detections fused, in the first view's
        pixels. The views of one scale go through the network as one batch."""
        return self.raw_many([(image_unit, kind, region_xyxy_px)])[0]

    def raw_many(self, items: list[tuple[np.ndarray, RadiographKind, tuple[int, int, int, int] | None]]
                 ) -> list[tuple[RawDetections, InputGeometry]]:
        """``raw`` for several images (image, kind, region) at once: the network inputs of
        one shape, every view of every image, go through the network together
        (``run_batched``); each image's detections are what ``raw`` gives it alone."""
        card = self.model.card
        assert card.detector is not None and card.decode is not None
        inputs: list[tuple[int, list[tuple[bool, int]], np.ndarray, InputGeometry]] = []
        for index, (image_unit, kind, region_xyxy_px) in enumerate(items):
            views = card.decode.views(kind)
            for scale in dict.fromkeys(s for s, _, _ in views):
                tensor, geometry = self.network_input(image_unit, kind, region_xyxy_px, scale)
                width = geometry.resized_hw[1]
                these = [(flip, shift) for s, flip, shift in views if s == scale]
                batch = np.concatenate([_view_input(tensor, width, flip, shift) for flip, shift in these])
                inputs.append((index, these, batch, geometry))
        outputs = self.model.run([batch for _, _, batch, _ in inputs])
        found: list[list[RawDetections]] = [[] for _ in items]
        base: list[InputGeometry | None] = [None] * len(items)
        for (index, these, _, geometry), (cls, box) in zip(inputs, outputs, strict=True):
            base_geometry: InputGeometry = base[index] or geometry
            base[index] = base_geometry
            width = geometry.resized_hw[1]
            anchors = cached_anchors(card.detector, geometry.padded_hw)
            for i, (flip, shift) in enumerate(these):
                raw = decode_detections(cls[i], box[i], anchors, geometry.padded_hw, self.settings, self.groups)
                raw = unshift_detections(raw, shift) if shift else raw
                raw = mirror_detections(raw, width) if flip else raw
                if geometry is not base_geometry:
                    raw = replace(raw, boxes_xyxy=base_geometry.to_input(geometry.to_original(raw.boxes_xyxy)))
                found[index].append(raw)
        out = []
        for views_found, first in zip(found, base, strict=True):
            assert first is not None
            fused = views_found[0] if len(views_found) == 1 else fuse_views(
                views_found, self.groups, card.decode.fusion_iou, self.settings.max_detections)
            out.append((fused, first))
        return out


def _view_input(tensor: np.ndarray, content_width_px: int, flip: bool, shift_px: int) -> np.ndarray:
    """One view's network input: mirrored within its content, then shifted."""
    view = mirror_input(tensor, content_width_px) if flip else tensor
    return shift_input(view, shift_px) if shift_px else view


class RootCounter:
    def __init__(self, model: Network) -> None:
        if model.card.task != "classification" or model.card.input.crop_hw_px is None:
            raise ModelCardError(f"{model.card.key} is not the root-count classifier")
        self.model = model
        self.crop_hw = tuple(model.card.input.crop_hw_px)

    def network_input(self, image_unit: np.ndarray, teeth: list[ToothDetection]) -> np.ndarray:
        """The teeth's crops, crown up, as one (N, 1, H, W) batch."""
        return np.stack([
            crop_tooth(image_unit, t.box_xyxy_px, Tooth.fdi_of(t.fdi).arch.value == "maxillary", self.crop_hw)  # type: ignore[arg-type]
            for t in teeth
        ])[:, None].astype(np.float32)

    def classify(self, image_unit: np.ndarray, teeth: list[ToothDetection]) -> list[tuple[int, float]]:
        return self.classify_many([(image_unit, teeth)])[0]

    def classify_many(self, items: list[tuple[np.ndarray, list[ToothDetection]]]) -> list[list[tuple[int, float]]]:
        """(root count, probability) for each tooth of each (image, teeth), the crops of
        every image read as one batch."""
        chosen = [i for i, (_, teeth) in enumerate(items) if teeth]
        batches = [self.network_input(items[i][0], items[i][1]) for i in chosen]
        out: list[list[tuple[int, float]]] = [[] for _ in items]
        for i, (logits,) in zip(chosen, self.model.run(batches), strict=True):
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = exp / exp.sum(axis=1, keepdims=True)
            best = probs.argmax(axis=1)
            out[i] = [(ROOT_COUNT_CLASSES[int(b)], float(probs[k, b])) for k, b in enumerate(best)]
        return out


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))).astype(np.float32)


def verified_score(detector: np.ndarray | float, verifier: np.ndarray | float, weight: float) -> np.ndarray:
    """A verified candidate's score: the weighted geometric mean of the detector's score and
    the verifier's probability (``VerifyConfig``)."""
    return np.asarray(detector, np.float64) ** (1 - weight) * np.asarray(verifier, np.float64) ** weight


class Verifier:
    """The finding verifier: reads the finding detector's candidates of its classes again,
    from crops of the original image, and combines the two opinions into the candidate's
    score (``VerifyConfig``)."""

    def __init__(self, model: Network) -> None:
        card = model.card
        if card.task != "verification" or card.verifier is None or card.verify is None:
            raise ModelCardError(f"{card.key} is not a finding verifier")
        self.model = model
        self.arch, self.verify = card.verifier, card.verify
        self.columns = {FindingClass(name): i for i, name in enumerate(card.classes)}

    def network_input(self, image_unit: np.ndarray, boxes_xyxy_px: np.ndarray) -> np.ndarray:
        return finding_crops(image_unit, boxes_xyxy_px, self.arch.contexts, self.arch.crop_px)

    def probabilities(self, image_unit: np.ndarray, findings: list[FindingDetection]) -> np.ndarray:
        """Each finding's probability of being a true finding of its class (the findings
        must be of verified classes)."""
        return self.probabilities_many([(image_unit, findings)])[0]

    def probabilities_many(self, items: list[tuple[np.ndarray, list[FindingDetection]]]) -> list[np.ndarray]:
        """``probabilities`` for the findings of several images, every image's crops read
        as one batch."""
        todo = [k for k, (_, findings) in enumerate(items) if findings]
        crops = [(self.network_input(items[k][0], np.array([f.box_xyxy_px for f in items[k][1]], np.float32)),
                  [f.finding_class for f in items[k][1]]) for k in todo]
        out = [np.zeros(0, np.float32) for _ in items]
        for k, probs in zip(todo, self.crop_probabilities_many(crops), strict=True):
            out[k] = probs
        return out

    def crop_probabilities(self, crops: np.ndarray, classes: list[FindingClass]) -> np.ndarray:
        """The probabilities for crops already cut (``network_input``), each read as its
        class; with ``verify.mirrored`` the plain and mirrored readings' logits averaged."""
        return self.crop_probabilities_many([(crops, classes)])[0]

    def crop_probabilities_many(self, items: list[tuple[np.ndarray, list[FindingClass]]]) -> list[np.ndarray]:
        """``crop_probabilities`` for the crops of several images, read as one batch."""
        batches = []
        for crops, _ in items:
            crops = np.asarray(crops, np.float32)
            batches.append(np.ascontiguousarray(np.concatenate([crops, crops[..., ::-1]]) if self.verify.mirrored
                                                else crops))
        out = []
        for (crops, classes), (logits,) in zip(items, self.model.run(batches), strict=True):
            rows, columns = np.arange(len(crops)), np.array([self.columns[c] for c in classes], np.int64)
            chosen = logits[rows, columns]
            if self.verify.mirrored:
                chosen = (chosen + logits[rows + len(crops), columns]) / 2
            out.append(sigmoid(chosen))
        return out

    def rescore(self, image_unit: np.ndarray, findings: list[FindingDetection]) -> list[FindingDetection]:
        """The findings with the verified ones' scores combined with the verifier's
        probability; the others (other classes, or under ``min_score``) unchanged."""
        return self.rescore_many([(image_unit, findings)])[0]

    def rescore_many(self, items: list[tuple[np.ndarray, list[FindingDetection]]]) -> list[list[FindingDetection]]:
        """``rescore`` for several (image, findings), every image's crops read as one batch."""
        chosen = [[i for i, f in enumerate(findings) if f.finding_class in self.columns
                   and f.score >= self.verify.min_score] for _, findings in items]
        probabilities = self.probabilities_many([(image, [findings[i] for i in picked])
                                                 for (image, findings), picked in zip(items, chosen, strict=True)])
        out = [list(findings) for _, findings in items]
        for k, probs in enumerate(probabilities):
            findings = items[k][1]
            for i, p in zip(chosen[k], probs, strict=True):
                out[k][i] = replace(findings[i], score=float(verified_score(findings[i].score, p, self.verify.weight)),
                                    verified=True)
        return out

    def threshold_for(self, finding_class: FindingClass) -> float | None:
        """The operating threshold of a verified class on the new scores (None: not verified,
        or no threshold of its own)."""
        if finding_class not in self.columns:
            return None
        return self.verify.class_thresholds.get(finding_class.value)


@dataclass(frozen=True, eq=False)
class DentalReader:
    """The detectors and the classifiers together; any of them may be absent (then that part
    of the reading is empty, or, for root counts, taken on the teeth passed in). A finding
    verifier, where there is one, re-scores the finding detector's candidates.

    ``branches``: where the networks run elsewhere (a deployment each), the root counter
    is read on this executor while the finding detector and verifier are read, since both
    need only the teeth: a claim waits for the longer of the two, not their sum. In one
    process each network already uses every core, so there it stays None (one by one)."""

    teeth: Detector | None = None
    findings: Detector | None = None
    roots: RootCounter | None = None
    verifier: Verifier | None = None
    branches: Executor | None = None

    def __post_init__(self) -> None:
        if self.verifier is not None and self.findings is None:
            raise ModelCardError("a finding verifier re-scores the finding detector's candidates: give the finding "
                                 "detector too")

    @classmethod
    def from_directory(cls, directory: str | Path, *, verify: bool = True, threads: int | None = None,
                       providers: list[str] | None = None, spin: bool = False,
                       precision: Precision = "auto", without: tuple[ModelKey, ...] = ()) -> DentalReader:
        """Every model with a card in ``directory`` (e.g. models/shipped), but those
        ``without`` names (e.g. the verifier, to read the detector's own scores)."""
        base = Path(directory)
        files = [base / read_card(base / f"{key.value}.card.json").onnx_file for key in ModelKey
                 if key not in without and (base / f"{key.value}.card.json").exists()]
        if not files:
            raise ModelCardError(f"no model cards (*.card.json) in {base}")
        return cls.from_files(files, verify=verify, threads=threads, providers=providers, spin=spin,
                              precision=precision)

    @classmethod
    def from_files(cls, onnx_files: list[Path], *, verify: bool = True, threads: int | None = None,
                   providers: list[str] | None = None, spin: bool = False,
                   precision: Precision = "auto") -> DentalReader:
        """The given ONNX files, each with its ``.card.json`` beside it. ``precision``
        applies to every model with an int8 copy; ``int8`` needs at least one."""
        has_int8 = {Path(p): Path(p).exists() and read_card(card_path(p)).int8 is not None for p in onnx_files}
        if precision == "int8" and not any(has_int8.values()):
            raise ModelCardError("no model here has an int8 file (make one with dxv models quantize)")
        return cls.from_networks([LoadedModel.load(path, verify=verify, threads=threads, providers=providers, spin=spin,
                                                   precision=precision_for(precision, has_int8[Path(path)]))
                                  for path in onnx_files])

    @classmethod
    def from_networks(cls, networks: Sequence[Network], branches: Executor | None = None) -> DentalReader:
        """A reader of these networks, each put in its place by its card's key."""
        parts: dict[str, object] = {}
        for network in networks:
            key = network.card.key
            attr = {ModelKey.TOOTH_NUMBERING: "teeth", ModelKey.FINDINGS: "findings", ModelKey.ROOT_COUNT: "roots",
                    ModelKey.FINDING_VERIFIER: "verifier"}[key]
            if attr in parts:
                raise ModelCardError(f"two {key.value} models given")
            parts[attr] = {ModelKey.ROOT_COUNT: RootCounter, ModelKey.FINDING_VERIFIER: Verifier}.get(key, Detector)(network)
        return cls(**parts, branches=branches)  # type: ignore[arg-type]

    def model_versions(self) -> tuple[tuple[str, str], ...]:
        out = []
        for part in (self.teeth, self.findings, self.roots, self.verifier):
            if part is not None:
                out.append((part.model.card.key.value, part.model.version))
        return tuple(out)

    def serves(self, kind: RadiographKind) -> bool:
        return all(kind in p.model.card.kinds_served for p in (self.teeth, self.findings, self.verifier) if p is not None)

    def ready(self) -> bool:
        """Every model this reader was built with is loaded."""
        return self.teeth is not None or self.findings is not None or self.roots is not None

    def read(self, image_id: str, image_unit: np.ndarray, kind: RadiographKind, *,
             operating_point: bool = True, given_teeth: list[ToothDetection] | None = None) -> ImageReading:
        """Read one image. With ``operating_point`` only detections at or above each model's
        operating threshold are kept (what the rules see); without, everything above the
        candidate threshold (what AP and FROC need)."""
        return self.read_many([(image_id, image_unit, kind)], operating_point=operating_point,
                              given_teeth=None if given_teeth is None else [given_teeth])[0]

    def read_many(self, images: list[tuple[str, np.ndarray, RadiographKind]], *, operating_point: bool = True,
                  given_teeth: list[list[ToothDetection]] | None = None) -> list[ImageReading]:
        """Read several images (id, pixels, kind) together, model by model: each model's
        inputs of one shape from every image go through it as one batch (``run_batched``),
        which is what a GPU reads fastest; each reading is the one ``read`` gives that
        image alone. ``given_teeth``: each image's teeth, instead of the tooth detector's."""
        teeth: list[list[ToothDetection]] = [list(t) for t in given_teeth] if given_teeth is not None \
            else [[] for _ in images]
        if self.teeth is not None and given_teeth is None:
            decode = self.teeth.model.card.decode
            unique_at = decode.operating_threshold if decode and decode.unique_tooth_numbers else None
            found = self.teeth.raw_many([(pixels, kind, None) for _, pixels, kind in images])
            teeth = [self._threshold(teeth_from_raw(raw, geometry, self.teeth.labels, unique_at), self.teeth,
                                     operating_point) for raw, geometry in found]
        # Bitewings do not show the apices, so no root count is read from them.
        counted = [k for k, (_, _, kind) in enumerate(images) if kind is not RadiographKind.BITEWING]
        counts = self._branch(self.roots.classify_many, [(images[k][1], teeth[k]) for k in counted]) \
            if self.roots is not None else None
        findings: list[list[FindingDetection]] = [[] for _ in images]
        if self.findings is not None:
            confident = self._confident(teeth)
            found = self.findings.raw_many([(pixels, kind, self.findings_region(pixels, kind, confident[k]))
                                            for k, (_, pixels, kind) in enumerate(images)])
            findings = [findings_from_raw(raw, geometry, self.findings.labels) for raw, geometry in found]
            if self.verifier is not None:
                findings = self.verifier.rescore_many([(pixels, findings[k]) for k, (_, pixels, _) in enumerate(images)])
            if operating_point:
                findings = [[f for f in these if f.score >= self.finding_threshold(f.finding_class)] for these in findings]
        if counts is not None:
            for k, these in zip(counted, counts(), strict=True):
                teeth[k] = [replace(t, root_count=n, root_count_score=sc) for t, (n, sc) in zip(teeth[k], these,
                                                                                               strict=True)]
        if self.findings is not None:
            confident = self._confident(teeth)  # now with their root counts
            findings = [assign_findings(these, confident[k]) for k, these in enumerate(findings)]
        versions = self.model_versions()
        return [ImageReading(image_id=image_id, kind=kind, width_px=pixels.shape[1], height_px=pixels.shape[0],
                             teeth=tuple(teeth[k]), findings=tuple(findings[k]), model_versions=versions)
                for k, (image_id, pixels, kind) in enumerate(images)]

    def _branch(self, work: Callable[[list], list], items: list) -> Callable[[], list]:
        """``work(items)`` started on ``branches`` (or done now, where there are none); the
        returned call gives its result."""
        if self.branches is None:
            done = work(items)
            return lambda: done
        return self.branches.submit(work, items).result

    def _confident(self, teeth: list[list[ToothDetection]]) -> list[list[ToothDetection]]:
        """Each image's teeth at or above the tooth detector's operating threshold (all of
        them without a tooth detector): those findings are placed on."""
        tooth_decode = self.teeth.model.card.decode if self.teeth else None
        tooth_threshold = tooth_decode.operating_threshold if tooth_decode else 0.0
        return [[t for t in these if t.score >= tooth_threshold] for these in teeth]

    def findings_region(self, image_unit: np.ndarray, kind: RadiographKind,
                         teeth: list[ToothDetection]) -> tuple[int, int, int, int] | None:
        """Where the finding detector reads: the teeth's region where its card asks for one
        for this kind and teeth were found (the tooth detector's, or those given), else the
        whole image (None)."""
        assert self.findings is not None
        margin = self.findings.model.card.input.teeth_region_margin.get(kind)
        if margin is None or not teeth:
            return None
        return teeth_region(np.array([t.box_xyxy_px for t in teeth]), image_unit.shape, margin)

    def finding_threshold(self, finding_class: FindingClass) -> float:
        """The operating threshold of a finding class: the verifier's for a class it
        verifies (its scores are the verified ones), else the finding detector's."""
        assert self.findings is not None and self.findings.model.card.decode is not None
        verified = self.verifier.threshold_for(finding_class) if self.verifier is not None else None
        return verified if verified is not None else self.findings.model.card.decode.threshold_for(finding_class.value)

    @staticmethod
    def _threshold(teeth: list[ToothDetection], detector: Detector, operating_point: bool) -> list[ToothDetection]:
        decode = detector.model.card.decode
        if not operating_point or decode is None:
            return teeth
        return [t for t in teeth if t.score >= decode.operating_threshold]


__all__ = [
    "DentalReader",
    "Detector",
    "LoadedModel",
    "Network",
    "Precision",
    "RootCounter",
    "Verifier",
    "available_providers",
    "cpu_multiplies_int8_exactly",
    "has_vnni",
    "make_session",
    "precision_for",
    "run_batched",
    "runs_int8",
    "sigmoid",
    "verified_score",
]
