"""ONNX Runtime must give what torch gives: raw outputs within 1e-4 and the same
detections after the shared post-processing."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.networks import ClassifierArchitecture, DetectorArchitecture, DetectorForExport, RootCountClassifier, build_detector
from models.onnx_export import export_classifier, export_detector
from models.postprocess import DecodeSettings, anchors_xyxy, decode_detections

ARCH = DetectorArchitecture(block_inplanes=(8, 16, 32, 64), fpn_channels=16, anchor_shapes_px=((32, 16), (24, 24)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    net = build_detector(ARCH, num_classes=5).eval()
    # Random init gives near-constant logits; spread the class bias so detections differ.
    with torch.no_grad():
        net.classification_head.cls_logits.bias.copy_(torch.linspace(-3, 1, net.classification_head.cls_logits.bias.numel()))
    path = export_detector(net, tmp_path_factory.mktemp("onnx") / "det.onnx")
    return net, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("shape", [(1, 1, 128, 160), (2, 1, 224, 96), (1, 1, 320, 640)])
def test_detector_onnx_equals_torch(exported, shape):
    net, session = exported
    image = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cls_t, box_t = DetectorForExport(net)(image)
    cls_o, box_o = session.run(None, {"image": image.numpy()})
    assert cls_o.shape == tuple(cls_t.shape) and cls_o.shape[-1] == 5
    assert np.abs(cls_o - cls_t.numpy()).max() <= 1e-4
    assert np.abs(box_o - box_t.numpy()).max() <= 1e-4
    hw = shape[2:]
    settings = DecodeSettings(score_threshold=0.2, nms_iou=0.5)
    groups = np.arange(5)
    for b in range(shape[0]):
        a = decode_detections(cls_t[b].numpy(), box_t[b].numpy(), anchors_xyxy(ARCH, hw), hw, settings, groups)
        o = decode_detections(cls_o[b], box_o[b], anchors_xyxy(ARCH, hw), hw, settings, groups)
        assert len(a.labels) > 0
        # The same detections; two whose scores tie to float rounding may come out in either
        # order (it differs between CPUs), so both are compared in one canonical order.
        a_order, o_order = _canonical(a.labels, a.boxes_xyxy), _canonical(o.labels, o.boxes_xyxy)
        assert a.labels[a_order].tolist() == o.labels[o_order].tolist()
        np.testing.assert_allclose(a.boxes_xyxy[a_order], o.boxes_xyxy[o_order], atol=1e-3)


def _canonical(labels: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    rounded = np.round(boxes, 1)
    return np.lexsort((*rounded.T[::-1], labels))


def test_classifier_onnx_equals_torch(tmp_path):
    torch.manual_seed(0)
    arch = ClassifierArchitecture(crop_height_px=64, crop_width_px=32)
    model = RootCountClassifier(arch).eval()
    path = export_classifier(model, tmp_path / "roots.onnx", (64, 32))
    crops = torch.rand(5, 1, 64, 32)
    with torch.no_grad():
        expected = model(crops).numpy()
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": crops.numpy()})
    assert np.abs(got - expected).max() <= 1e-4
    assert got.argmax(1).tolist() == expected.argmax(1).tolist()
