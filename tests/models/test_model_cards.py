"""Every shipped model card must describe its ONNX file exactly."""

import shutil

import onnxruntime as ort
import pytest

from models.findings import FindingClass
from models.model_card import NOT_FOR_CLINICAL_USE, SHIPPED_DIR, ModelCardError, ModelKey, get_model_card, verify_card
from models.radiographs import RadiographKind
from models.tasks import DetectorTask, class_names


@pytest.mark.parametrize("key", list(ModelKey))
def test_shipped_card_matches_its_onnx_file(key):
    card = get_model_card(key)
    path = SHIPPED_DIR / card.onnx_file
    verify_card(card, path)
    assert card.size_bytes <= 20 * 1024 * 1024
    assert card.training_data == NOT_FOR_CLINICAL_USE
    assert card.metrics, "held-out metrics are recorded"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == card.input.name and inp.shape[1] == card.input.channels
    assert session.get_outputs()[0].shape[-1] == len(card.classes)
    if key is ModelKey.TOOTH_NUMBERING:
        assert card.classes == class_names(DetectorTask.TEETH)
    elif key is ModelKey.FINDINGS:
        assert card.classes == class_names(DetectorTask.FINDINGS)
    elif key is ModelKey.FINDING_VERIFIER:
        assert set(card.classes) <= {c.value for c in FindingClass}
        assert tuple(inp.shape[2:]) == tuple(card.input.crop_hw_px)
    else:
        assert RadiographKind.BITEWING not in card.kinds_served
        assert tuple(inp.shape[2:]) == tuple(card.input.crop_hw_px)
    if card.int8 is not None:  # the CPU copy: its own hash, the same inputs and outputs
        copy = SHIPPED_DIR / card.int8.onnx_file
        verify_card(card, copy)
        assert card.int8.size_bytes <= 20 * 1024 * 1024 and card.int8.calibration
        quantized = ort.InferenceSession(str(copy), providers=["CPUExecutionProvider"])
        assert [i.name for i in quantized.get_inputs()] == [inp.name]
        assert [o.name for o in quantized.get_outputs()] == [o.name for o in session.get_outputs()]
        assert quantized.get_outputs()[0].shape[-1] == len(card.classes)


def test_a_changed_file_fails_verification(tmp_path):
    card = get_model_card(ModelKey.ROOT_COUNT)
    copy = tmp_path / card.onnx_file
    shutil.copy(SHIPPED_DIR / card.onnx_file, copy)
    with copy.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelCardError, match="sha256"):
        verify_card(card, copy)


def test_card_refuses_a_kind_it_does_not_serve():
    card = get_model_card(ModelKey.ROOT_COUNT)
    with pytest.raises(ModelCardError, match="bitewing"):
        card.long_side_for(RadiographKind.BITEWING)
