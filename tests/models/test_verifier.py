"""The finding verifier: its crops, its card, ONNX against torch, and how a reader
re-scores and thresholds the verified classes."""

import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.architecture import CropContext, VerifierArchitecture
from models.detections import FindingDetection, ImageReading
from models.findings import CariesDepth, FindingClass
from models.inference import DentalReader, LoadedModel, Verifier, verified_score
from models.model_card import SHIPPED_DIR, ModelCard, ModelCardError, ModelKey, VerifyConfig, get_model_card
from models.networks import FindingVerifier
from models.onnx_export import VERIFIER_INPUT, VERIFIER_OUTPUTS, export_verifier, finalise_card
from models.preprocess import finding_crops
from models.radiographs import RadiographKind

TINY = VerifierArchitecture(block_inplanes=(4, 8, 8, 16), crop_px=24,
                            contexts=(CropContext(box_multiple=3, min_side_px=12), CropContext(box_multiple=6, min_side_px=24)))


def _card_fields(arch=TINY, classes=("caries",), verify=None):
    verify = verify or VerifyConfig(min_score=0.2, weight=0.5, class_thresholds={"caries": 0.4})
    return {"key": "finding-verifier", "registered_name": "dxv-finding-verifier", "version": "0.0.1",
            "task": "verification", "classes": list(classes), "kinds_served": ["periapical", "bitewing", "panoramic"],
            "input": {"name": VERIFIER_INPUT, "channels": arch.channels, "crop_hw_px": [arch.crop_px, arch.crop_px]},
            "outputs": list(VERIFIER_OUTPUTS), "verifier": arch.model_dump(mode="json"),
            "verify": verify.model_dump(mode="json")}


@pytest.fixture
def verifier_file(tmp_path):
    """A small untrained verifier, exported with its card into a copy of the shipped
    models (so that a reader has the finding detector it re-scores)."""
    folder = tmp_path / "models"
    shutil.copytree(SHIPPED_DIR, folder, ignore=shutil.ignore_patterns("finding-verifier.*"))
    torch.manual_seed(0)
    net = FindingVerifier(TINY, 1)
    path = export_verifier(net, folder / "finding-verifier.onnx", TINY.channels, TINY.crop_px, 1)
    finalise_card(_card_fields(), path)
    return path, net


def test_crops_are_centred_square_normalised_and_zero_beyond_the_edge():
    image = np.zeros((100, 120), np.float32)
    image[40:50, 60:70] = 1.0  # a bright square
    crops = finding_crops(image, np.array([[60, 40, 70, 50], [0, 0, 4, 4]], np.float32), TINY.contexts, TINY.crop_px)
    assert crops.shape == (2, 2, 24, 24) and crops.dtype == np.float32
    np.testing.assert_allclose(crops.mean(axis=(2, 3)), 0, atol=1e-5)
    assert np.all(crops[0].std(axis=(1, 2)) > 0.9)
    # Close view: 3 x 10 px around the square, which fills its middle third.
    close = crops[0, 0]
    assert close[12, 12] > 0 and close[1, 1] < 0 and close[12, 12] == pytest.approx(close[10:14, 10:14].max())
    # Wide view: 6 x 10 = 60 px, so the square is a sixth of it, still centred.
    wide = crops[0, 1]
    assert wide[12, 12] > 0 and wide[4, 4] < 0
    # A 4 px box at the corner: at least 12 px (min_side), its upper-left part beyond the image is 0 before normalising.
    corner = crops[1, 0]
    assert corner[0, 0] == pytest.approx(corner.min())


def test_onnx_verifier_equals_torch(verifier_file):
    path, net = verifier_file
    crops = np.random.default_rng(1).standard_normal((5, 2, 24, 24)).astype(np.float32)
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(crops)).numpy()
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {VERIFIER_INPUT: crops})
    assert got.shape == (5, 1)
    assert np.abs(got - expected).max() <= 1e-4


def test_rescoring_changes_only_verified_classes_at_or_above_min_score(verifier_file):
    path, _ = verifier_file
    verifier = Verifier(LoadedModel.load(path))
    image = np.random.default_rng(2).random((200, 160)).astype(np.float32)
    findings = [FindingDetection(FindingClass.CARIES, (40, 40, 52, 50), 0.6, CariesDepth.DENTIN),
                FindingDetection(FindingClass.CARIES, (80, 90, 90, 100), 0.19),  # under min_score 0.2
                FindingDetection(FindingClass.CROWN, (20, 100, 80, 150), 0.9)]  # not verified
    out = verifier.rescore(image, findings)
    p = verifier.probabilities(image, [findings[0]])[0]
    assert 0 < p < 1
    assert out[0].score == pytest.approx(float(verified_score(0.6, p, 0.5)))
    assert out[0].box_xyxy_px == findings[0].box_xyxy_px and out[0].caries_depth is CariesDepth.DENTIN
    assert out[0].verified and out[1] == findings[1] and out[2] == findings[2] and not out[1].verified
    # The stored reading says which scores were verified (and only those), and reads back the same.
    reading = ImageReading("x", RadiographKind.PERIAPICAL, 160, 200, findings=tuple(out))
    stored = reading.to_json()["findings"]
    assert stored[0]["verified"] is True and "verified" not in stored[1]
    back = ImageReading.from_json(reading.to_json())
    assert back.to_json() == reading.to_json() and [f.verified for f in back.findings] == [True, False, False]
    # Mirrored reading: the logits of the crop and of its mirror image are averaged.
    crops = verifier.network_input(image, np.array([findings[0].box_xyxy_px], np.float32))
    (logits,) = verifier.model.session.run(None, {VERIFIER_INPUT: np.concatenate([crops, crops[..., ::-1]]).copy()})
    assert p == pytest.approx(1 / (1 + np.exp(-(logits[0, 0] + logits[1, 0]) / 2)), rel=1e-5)


def test_reader_thresholds_verified_classes_with_the_verifiers_thresholds(verifier_file):
    path, _ = verifier_file
    reader = DentalReader.from_directory(path.parent)
    assert reader.verifier is not None
    assert ("finding-verifier", "0.0.1") in reader.model_versions()
    detector = reader.findings.model.card.decode
    assert reader.finding_threshold(FindingClass.CARIES) == 0.4  # the verifier's
    assert reader.finding_threshold(FindingClass.CROWN) == detector.threshold_for("crown")
    without = DentalReader.from_directory(path.parent, without=(ModelKey.FINDING_VERIFIER,))
    assert without.verifier is None
    assert without.finding_threshold(FindingClass.CARIES) == detector.threshold_for("caries")
    # At the operating point every finding reported is at or above its class's threshold in effect.
    from datasets.synth.generator import generate_case

    case = generate_case(RadiographKind.BITEWING, 11, 0)
    everything = reader.read("x", case.pixels_unit, RadiographKind.BITEWING, operating_point=False)
    reported = reader.read("x", case.pixels_unit, RadiographKind.BITEWING)
    expected = sorted((f.finding_class.value, f.box_xyxy_px) for f in everything.findings
                      if f.score >= reader.finding_threshold(f.finding_class))
    assert sorted((f.finding_class.value, f.box_xyxy_px) for f in reported.findings) == expected
    plain = without.read("x", case.pixels_unit, RadiographKind.BITEWING, operating_point=False)
    caries = [(f.box_xyxy_px, f.score) for f in plain.findings if f.finding_class is FindingClass.CARIES and f.score >= 0.2]
    rescored = {f.box_xyxy_px: f.score for f in everything.findings if f.finding_class is FindingClass.CARIES}
    assert caries and all(rescored[box] != pytest.approx(score) for box, score in caries)


def test_a_verifier_needs_the_finding_detector(verifier_file):
    path, _ = verifier_file
    with pytest.raises(ModelCardError, match="finding detector"):
        DentalReader.from_files([path])


def test_verifier_card_is_checked():
    ModelCard.model_validate({**_card_fields(), "onnx_file": "v.onnx", "sha256": "0", "size_bytes": 1})
    for bad, message in ((_card_fields(classes=("tooth-11",)), "finding classes"),
                         ({**_card_fields(), "verify": None}, "verify"),
                         (_card_fields(verify=VerifyConfig(class_thresholds={"crown": 0.5})), "does not verify"),
                         ({**_card_fields(), "input": {"name": "crops", "channels": 1, "crop_hw_px": [24, 24]}},
                          "one channel per crop context")):
        with pytest.raises(ValueError, match=message):
            ModelCard.model_validate({**bad, "onnx_file": "v.onnx", "sha256": "0", "size_bytes": 1})


def test_shipped_verifier_card_describes_its_network():
    card = get_model_card(ModelKey.FINDING_VERIFIER)
    assert card.task == "verification" and card.verifier is not None and card.verify is not None
    assert card.input.channels == card.verifier.channels
    assert set(card.verify.class_thresholds) <= set(card.classes)
    session = ort.InferenceSession(str(SHIPPED_DIR / card.onnx_file), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape[1:] == [card.verifier.channels, card.verifier.crop_px, card.verifier.crop_px]
