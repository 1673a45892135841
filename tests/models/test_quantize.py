"""The 8-bit integer copy of a network for CPUs: made by ``dxv models quantize``, checked
against its card, chosen by precision, and reading like the float file it was made from."""

import json
import shutil

import numpy as np
import pytest

from datasets.samples import synthetic_samples
from models import inference
from models.inference import DentalReader, LoadedModel, has_vnni
from models.model_card import SHIPPED_DIR, ModelCardError, ModelKey, card_path, get_model_card, read_card, verify_card
from models.postprocess import box_iou
from models.radiographs import RadiographKind
from serving.cli import main as dxv
from training.export import calibration_inputs

CPU = ["CPUExecutionProvider"]


def test_auto_runs_the_int8_copy_on_a_cpu_and_says_so_in_the_version(monkeypatch):
    monkeypatch.setattr(inference, "cpu_multiplies_int8_exactly", lambda: True)
    card = get_model_card(ModelKey.FINDINGS)
    assert card.int8 is not None, "the shipped finding detector has an int8 copy"
    model = LoadedModel.load(SHIPPED_DIR / card.onnx_file, providers=CPU)
    assert model.int8 and model.path.name == card.int8.onnx_file
    assert model.version == f"{card.version}+int8"
    float_model = LoadedModel.load(SHIPPED_DIR / card.onnx_file, providers=CPU, precision="fp32")
    assert not float_model.int8 and float_model.path.name == card.onnx_file and float_model.version == card.version


def test_without_vnni_auto_reads_a_7_bit_copy_and_keeps_the_float_file_for_an_8_bit_one(monkeypatch, tmp_path):
    """Without VNNI, ONNX Runtime's uint8 x int8 kernels saturate on 8-bit weights: auto
    reads in float there; a 7-bit copy (the default) runs anywhere; asked for by name,
    either copy runs."""
    monkeypatch.setattr(inference, "cpu_multiplies_int8_exactly", lambda: False)
    card = get_model_card(ModelKey.FINDINGS)
    assert card.int8 is not None and card.int8.weight_bits == 7, "the shipped copy reads the same on every x86 CPU"
    assert LoadedModel.load(SHIPPED_DIR / card.onnx_file, providers=CPU).int8
    for path in SHIPPED_DIR.glob("findings.*"):
        shutil.copy2(path, tmp_path / path.name)
    fields = json.loads(card_path(tmp_path / card.onnx_file).read_text())
    fields["int8"]["weight_bits"] = 8
    card_path(tmp_path / card.onnx_file).write_text(json.dumps(fields))
    assert not LoadedModel.load(tmp_path / card.onnx_file, providers=CPU).int8
    assert LoadedModel.load(tmp_path / card.onnx_file, providers=CPU, precision="int8").int8
    del fields["int8"]["weight_bits"]  # a card written before the choice: its copy was 8-bit
    card_path(tmp_path / card.onnx_file).write_text(json.dumps(fields))
    assert get_model_card(ModelKey.FINDINGS, tmp_path).int8.weight_bits == 8
    assert not LoadedModel.load(tmp_path / card.onnx_file, providers=CPU).int8
    monkeypatch.setattr(inference, "cpu_multiplies_int8_exactly", lambda: True)
    assert LoadedModel.load(tmp_path / card.onnx_file, providers=CPU).int8


def test_the_shipped_copy_computes_on_this_cpu_what_its_quantization_says():
    """ONNX Runtime's integer kernels (the optimised graph) against the same QDQ graph run
    unoptimised (dequantize, float convolution, quantize: what the quantization means).
    Rounding moves a few outputs by a step; a saturating kernel moves many (an 8-bit copy
    on an AVX2-only EPYC: 5-52 % of the class logits more than a step apart, its 7-bit
    copy 0-0.4 %)."""
    import onnxruntime as ort

    card = get_model_card(ModelKey.FINDINGS)

    def session(level):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        return ort.InferenceSession(str(SHIPPED_DIR / card.int8.onnx_file), options, providers=CPU)

    kernels = session(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    meaning = session(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    reader = DentalReader.from_directory(SHIPPED_DIR, providers=CPU, precision="fp32", threads=2)
    samples = synthetic_samples({RadiographKind.PERIAPICAL: 2, RadiographKind.BITEWING: 2}, seed=41)
    for network_input in calibration_inputs(reader, ModelKey.FINDINGS, samples):
        (fast,) = kernels.run(["class_logits"], {card.input.name: network_input})
        (exact,) = meaning.run(["class_logits"], {card.input.name: network_input})
        apart = np.abs(fast - exact)
        if not apart.any():
            continue
        step = apart[apart > 0].min()  # both are dequantized from the same uint8 grid
        assert (apart > 1.5 * step).mean() < 0.01, f"{(apart > 1.5 * step).mean():.1%} of the logits saturated"


def test_vnni_is_read_from_the_cpu_flags():
    flags = "processor\t: 0\nflags\t\t: fpu sse2 avx2 {}\nbogomips\t: 4000\n"
    assert has_vnni(flags.format("avx512_vnni")) and has_vnni(flags.format("avx_vnni"))
    assert not has_vnni(flags.format("avx512f")) and not has_vnni("no flags line here")


def test_int8_is_refused_for_a_model_without_a_copy_and_mixed_folders_keep_floats_elsewhere(tmp_path):
    roots = get_model_card(ModelKey.ROOT_COUNT)
    assert roots.int8 is None
    with pytest.raises(ModelCardError, match="no int8 file"):
        LoadedModel.load(SHIPPED_DIR / roots.onnx_file, providers=CPU, precision="int8")
    reader = DentalReader.from_directory(SHIPPED_DIR, providers=CPU, precision="int8")
    versions = dict(reader.model_versions())
    assert versions["findings"].endswith("+int8")
    assert versions["root-count"] == roots.version and versions["tooth-numbering"] == get_model_card(
        ModelKey.TOOTH_NUMBERING).version
    for path in SHIPPED_DIR.glob("root-count.*"):
        shutil.copy2(path, tmp_path / path.name)
    with pytest.raises(ModelCardError, match="no model here has an int8 file"):
        DentalReader.from_directory(tmp_path, precision="int8")


def test_a_changed_or_missing_int8_copy_is_refused(tmp_path):
    for path in SHIPPED_DIR.glob("findings.*"):
        shutil.copy2(path, tmp_path / path.name)
    card = get_model_card(ModelKey.FINDINGS, tmp_path)
    copy = tmp_path / card.int8.onnx_file
    with copy.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelCardError, match="sha256 differs"):
        LoadedModel.load(tmp_path / card.onnx_file, providers=CPU, precision="int8")
    LoadedModel.load(tmp_path / card.onnx_file, providers=CPU, precision="fp32")  # the float file is intact
    copy.unlink()
    with pytest.raises(ModelCardError, match="int8 copy"):
        LoadedModel.load(tmp_path / card.onnx_file, providers=CPU, precision="int8")


def _weight_range(onnx_path) -> int:
    """The largest magnitude among a QDQ file's int8 weights."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights, "a QDQ copy keeps its weights as int8 initializers"
    return max(int(np.abs(w.astype(np.int16)).max()) for w in weights)


def _matched_share(a, b) -> float:
    """Share of the findings in ``a`` that ``b`` has too: same class, IoU >= 0.5."""
    if not a:
        return 1.0
    hits = 0
    for f in a:
        same = [g.box_xyxy_px for g in b if g.finding_class == f.finding_class]
        hits += bool(same) and float(box_iou(np.array([f.box_xyxy_px]), np.array(same)).max()) >= 0.5
    return hits / len(a)


def test_the_int8_copy_reads_like_the_float_file():
    """At the operating point both files find the same findings (a few may cross a
    threshold); the README gives the AP either way. This holds on every x86 CPU for the
    7-bit copy; an 8-bit copy on an AVX2-only EPYC found 0.87 of the float file's."""
    int8 = DentalReader.from_directory(SHIPPED_DIR, providers=CPU, precision="int8", threads=2)
    float32 = DentalReader.from_directory(SHIPPED_DIR, providers=CPU, precision="fp32", threads=2)
    a, b = [], []
    samples = synthetic_samples({RadiographKind.PERIAPICAL: 3, RadiographKind.BITEWING: 2,
                                 RadiographKind.PANORAMIC: 1}, seed=41)
    for sample in samples:
        image = sample.load()
        a += float32.read("x", image, sample.kind).findings
        b += int8.read("x", image, sample.kind).findings
    assert len(a) >= 15
    assert _matched_share(a, b) >= 0.9 and _matched_share(b, a) >= 0.9
    assert [f.score for f in a] != [f.score for f in b], "the two readings are not the same file's"
    chosen = dict(DentalReader.from_directory(SHIPPED_DIR, providers=CPU, threads=2).model_versions())
    assert chosen["findings"].endswith("+int8"), "auto reads the 7-bit copy on any CPU"


def test_quantize_writes_a_verified_copy_and_a_new_card_version(tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for path in SHIPPED_DIR.iterdir():
        if path.suffix in (".onnx", ".json") and "int8" not in path.name:
            shutil.copy2(path, tmp_path / path.name)
    card = read_card(tmp_path / "root-count.card.json")
    assert card.int8 is None and card.metrics
    assert dxv(["models", "quantize", str(tmp_path), "root-count", "--version", "0.1.1-test", "--log",
                "--calibrate-on", "synthetic:seed=5,periapical=2,panoramic=1"]) == 0
    assert "root-count.int8.onnx" in "".join(capsys.readouterr().out.split())  # rich wraps anywhere
    quantized = read_card(tmp_path / "root-count.card.json")
    assert quantized.version == "0.1.1-test" and quantized.metrics == {} and quantized.metrics_dataset is None
    assert quantized.int8 is not None and quantized.int8.calibration.startswith("synthetic seed 5")
    assert quantized.int8.weight_bits == 7 and "7 bits" in quantized.int8.scheme
    assert _weight_range(tmp_path / quantized.int8.onnx_file) <= 64
    assert quantized.sha256 == card.sha256, "the float file is untouched"
    verify_card(quantized, tmp_path / quantized.int8.onnx_file)
    verify_card(quantized, tmp_path / quantized.onnx_file)
    assert quantized.int8.size_bytes < card.size_bytes / 2
    model = LoadedModel.load(tmp_path / quantized.onnx_file, providers=CPU, precision="int8")
    assert model.int8 and model.version == "0.1.1-test+int8"
    crops = np.random.default_rng(0).random((4, 1, *quantized.input.crop_hw_px)).astype(np.float32)
    (logits,) = model.session.run(None, {"image": crops})
    assert logits.shape == (4, 3)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("dxv-detectors").experiment_id])
    assert run.data.params["int8_sha256"] == quantized.int8.sha256 and run.data.params["float_sha256"] == card.sha256
    assert run.data.params["calibration"] == quantized.int8.calibration and run.data.params["weight_bits"] == "7"
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "int8")}
    assert logged == {"int8/root-count.int8.onnx"}


def test_quantize_needs_calibration_radiographs_and_a_known_model(tmp_path, capsys):
    assert dxv(["models", "quantize", str(tmp_path), "findings", "--version", "1",
                "--calibrate-on", "synthetic:seed=5"]) == 2
    assert "give counts for periapical" in " ".join(capsys.readouterr().err.split())


def test_shipping_a_retrained_file_removes_the_old_int8_copy(tmp_path):
    target = tmp_path / "shipped"
    target.mkdir()
    for path in SHIPPED_DIR.glob("findings.*"):
        shutil.copy2(path, target / path.name)
    card = get_model_card(ModelKey.FINDINGS)
    export = tmp_path / "run" / "export"
    export.mkdir(parents=True)
    shutil.copy2(SHIPPED_DIR / card.onnx_file, export / card.onnx_file)
    fresh = json.loads((SHIPPED_DIR / "findings.card.json").read_text())
    fresh.update(int8=None, version="9.9.9")
    card_path(export / card.onnx_file).write_text(json.dumps(fresh))
    assert (target / card.int8.onnx_file).exists()
    assert dxv(["models", "ship", str(tmp_path / "run"), "--to", str(target)]) == 0
    assert not (target / card.int8.onnx_file).exists(), "the old weights' copy went with them"
    assert read_card(target / "findings.card.json").int8 is None
    reader = DentalReader.from_directory(target, providers=CPU)
    assert dict(reader.model_versions())["findings"] == "9.9.9"


def test_quantize_calibrates_on_a_dataset_on_disk(tmp_path, capsys):
    """Real radiographs come as COCO/DENTEX or YOLO exports: a YOLO folder, whose files do
    not say their kind, calibrates with --kind."""
    for path in SHIPPED_DIR.glob("root-count.*"):
        shutil.copy2(path, tmp_path / path.name)
    coco = tmp_path / "synth"
    assert dxv(["synth", "--kind", "periapical", "--n", "2", "--seed", "3", "--out", str(coco)]) == 0
    yolo = tmp_path / "yolo"
    assert dxv(["data", "convert", "--from", "coco", str(coco / "annotations.json"), "--to", "yolo", str(yolo)]) == 0
    calibrate = ["models", "quantize", str(tmp_path), "root-count", "--version", "0.1.1-disk",
                 "--calibrate-on", str(yolo), "--format", "yolo", "--kind", "periapical", "--weight-bits", "8"]
    # The root counter reads the teeth the tooth detector finds: without it, nothing to calibrate on.
    assert dxv(calibrate) == 2
    assert "put the tooth detector in the folder" in " ".join(capsys.readouterr().err.split())
    for path in SHIPPED_DIR.glob("tooth-numbering.*"):
        shutil.copy2(path, tmp_path / path.name)
    assert dxv(calibrate) == 0
    card = read_card(tmp_path / "root-count.card.json")
    assert card.int8 is not None and card.int8.calibration == str(yolo)
    assert card.int8.weight_bits == 8 and "7 bits" not in card.int8.scheme
    assert _weight_range(tmp_path / card.int8.onnx_file) > 64
    verify_card(card, tmp_path / card.int8.onnx_file)


def test_card_metrics_say_which_file_was_read(tmp_path):
    for path in SHIPPED_DIR.iterdir():
        if path.suffix in (".onnx", ".json"):
            shutil.copy2(path, tmp_path / path.name)
    dataset = "synthetic:seed=5,periapical=2,panoramic=1"
    assert dxv(["eval", str(tmp_path), dataset, "--out", str(tmp_path / "eval"), "--write-card-metrics",
                "--precision", "int8"]) == 0
    findings, roots = read_card(tmp_path / "findings.card.json"), read_card(tmp_path / "root-count.card.json")
    assert findings.metrics and findings.metrics_dataset.endswith("; read with the int8 copy; caries re-scored by the "
                                                                  "finding verifier")
    assert roots.metrics and roots.metrics_dataset == "synthetic seed 5 (periapical 2, panoramic 1)"
    # The verifier's card: the figures of the class it re-scores, read with it.
    verifier = read_card(tmp_path / "finding-verifier.card.json")
    assert verifier.metrics and all(k.endswith("_caries") for k in verifier.metrics)
    assert verifier.metrics["ap50_caries"] == findings.metrics["ap50_caries"]
    assert verifier.metrics_dataset == roots.metrics_dataset + "; caries re-scored by the finding verifier"
    assert dxv(["eval", str(tmp_path), dataset, "--out", str(tmp_path / "eval"), "--write-card-metrics",
                "--precision", "fp32"]) == 0
    assert read_card(tmp_path / "findings.card.json").metrics_dataset == (roots.metrics_dataset
                                                                          + "; caries re-scored by the finding verifier")
    verify_card(read_card(tmp_path / "findings.card.json"), tmp_path / findings.onnx_file)


def test_the_finding_verifier_is_not_quantized(capsys):
    assert dxv(["models", "quantize", str(SHIPPED_DIR), "finding-verifier", "--version", "9",
                "--calibrate-on", "synthetic:seed=5,periapical=1"]) == 2
    assert "runs in float" in " ".join(capsys.readouterr().err.split())
