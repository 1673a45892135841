"""The MONAI networks: a RetinaNet-style detector (ResNet + FPN + MONAI's RetinaNet heads)
and a small ResNet classifier for the root count of a tooth crop.

MONAI's own ``resnet_fpn_feature_extractor`` goes through torchvision
(``IntermediateLayerGetter``, ``_validate_trainable_layers``), which does not import with
the CPU build of torch used here, so ``ResNetFPN`` wires MONAI's ``ResNet`` layers into
MONAI's ``FeaturePyramidNetwork`` directly. Only these modules go into ONNX; anchors,
decoding and NMS are numpy code in ``models.postprocess``."""

from __future__ import annotations

from collections import OrderedDict

import torch
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork
from monai.networks.nets.resnet import ResNet, ResNetBlock
from torch import Tensor, nn

from models.architecture import (
    LEVEL_STRIDES,
    SIZE_DIVISIBLE,
    ClassifierArchitecture,
    DetectorArchitecture,
    VerifierArchitecture,
)

# The sizes live in models.architecture (no torch there, for serving); they are named here too.
__all__ = ["LEVEL_STRIDES", "SIZE_DIVISIBLE", "ClassifierArchitecture", "DetectorArchitecture", "DetectorForExport",
           "FindingVerifier", "ResNetFPN", "RootCountClassifier", "VerifierArchitecture", "build_detector",
           "flatten_head_maps"]


def _resnet(block_inplanes: tuple[int, ...], layers: tuple[int, ...], num_classes: int, feed_forward: bool,
            channels: int = 1, stem_size: int = 7, stem_stride: int = 2) -> ResNet:
    return ResNet(
        block=ResNetBlock, layers=list(layers), block_inplanes=list(block_inplanes), spatial_dims=2,
        n_input_channels=channels, conv1_t_size=stem_size, conv1_t_stride=stem_stride, num_classes=num_classes,
        feed_forward=feed_forward,
    )


class ResNetFPN(nn.Module):
    """MONAI ResNet body (stem + layer1..4) feeding a MONAI FPN over layers 2..4."""

    def __init__(self, arch: DetectorArchitecture) -> None:
        super().__init__()
        self.body = _resnet(arch.block_inplanes, arch.layers, num_classes=1, feed_forward=False)
        self.fpn = FeaturePyramidNetwork(spatial_dims=2, in_channels_list=list(arch.block_inplanes[1:]),
                                         out_channels=arch.fpn_channels)
        self.out_channels = arch.fpn_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        b = self.body
        x = b.maxpool(b.act(b.bn1(b.conv1(x))))
        c2 = b.layer1(x)
        c3 = b.layer2(c2)
        c4 = b.layer3(c3)
        c5 = b.layer4(c4)
        return self.fpn(OrderedDict([("p3", c3), ("p4", c4), ("p5", c5)]))


def build_detector(arch: DetectorArchitecture, num_classes: int) -> RetinaNet:
    return RetinaNet(spatial_dims=2, num_classes=num_classes, num_anchors=arch.anchors_per_location,
                     feature_extractor=ResNetFPN(arch), size_divisible=SIZE_DIVISIBLE)


def flatten_head_maps(maps: list[Tensor], anchors_per_location: int, channels: int) -> Tensor:
    """(B, A*K, H, W) per level -> (B, sum(H*W*A), K) in the anchor order of MONAI's
    ``RetinaNetDetector`` and of ``models.postprocess.anchors_xyxy``. K is passed as a
    number so that the exported graph has a fixed class dimension."""
    flat = []
    for m in maps:
        b, _, h, w = m.shape
        flat.append(m.view(b, anchors_per_location, channels, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, channels))
    return torch.cat(flat, dim=1)


class DetectorForExport(nn.Module):
    """What goes into ONNX: image (B, 1, H, W) -> class logits (B, N, C), box deltas (B, N, 4)."""

    def __init__(self, network: RetinaNet) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        features = list(self.network.feature_extractor(image).values())
        a = self.network.num_anchors
        cls = flatten_head_maps(self.network.classification_head(features), a, self.network.num_classes)
        box = flatten_head_maps(self.network.regression_head(features), a, 4)
        return cls, box


class RootCountClassifier(nn.Module):
    """Tooth crop (B, 1, crop_h, crop_w), crown up -> logits for 1, 2, 3+ roots."""

    NUM_CLASSES = 3

    def __init__(self, arch: ClassifierArchitecture) -> None:
        super().__init__()
        self.net = _resnet(arch.block_inplanes, arch.layers, num_classes=self.NUM_CLASSES, feed_forward=True)

    def forward(self, crops: Tensor) -> Tensor:
        return self.net(crops)


class FindingVerifier(nn.Module):
    """Crops around a detector's candidates (B, contexts, crop, crop) -> one logit per
    verified class (is this candidate a true finding of that class). The stem keeps full
    resolution (5x5, stride 1): the crops are small and a caries is a few of their pixels."""

    def __init__(self, arch: VerifierArchitecture, num_classes: int) -> None:
        super().__init__()
        self.net = _resnet(arch.block_inplanes, arch.layers, num_classes=num_classes, feed_forward=True,
                           channels=arch.channels, stem_size=5, stem_stride=1)

    def forward(self, crops: Tensor) -> Tensor:
        return self.net(crops)
