"""An 8-bit integer copy of an exported network for CPUs, by ONNX Runtime's static
quantization (``onnxruntime.quantization``, not our own code): QDQ format, int8 weights per
output channel, uint8 activations whose ranges are taken (MinMax) on calibration inputs
prepared exactly as serving prepares them.

Weights are kept to 7 bits by default (``reduce_range``): an x86 CPU without VNNI
(AVX2, AVX-512 without VNNI) multiplies uint8 by int8 in pairs summed into 16 bits
(``vpmaddubsw``), which 8-bit weights can overflow (255 x 127 x 2 > 32767) and 7-bit
weights cannot (255 x 64 x 2 < 32768). With them the copy reads the same on every x86
CPU; 8-bit copies are read only where VNNI is (``models.inference.runs_int8``).

On the two-core machines here the finding detector's copy runs in about 60-70 % of the
float file's time (AVX-512 VNNI and AVX2 alike), which pays for more test-time views
within the same budget; the README gives the accuracy either way."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np

WeightBits = Literal[7, 8]


def scheme(weight_bits: WeightBits) -> str:
    """What ``quantize_int8`` does, as the model card records it."""
    weights = "int8 weights in 7 bits (reduce_range)" if weight_bits == 7 else "int8 weights"
    return f"ONNX Runtime static QDQ: {weights} per channel, uint8 activations, MinMax calibration"


class _Inputs:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over network inputs."""

    def __init__(self, name: str, inputs: Iterable[np.ndarray]) -> None:
        self._name = name
        self._inputs: Iterator[np.ndarray] = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        tensor = next(self._inputs, None)
        return None if tensor is None else {self._name: np.ascontiguousarray(tensor, np.float32)}

    def rewind(self) -> None:  # one pass is all MinMax needs
        pass


def quantize_int8(float_path: str | Path, out_path: str | Path, calibration_inputs: Iterable[np.ndarray],
                  input_name: str = "image", weight_bits: WeightBits = 7) -> Path:
    """Write the int8 copy of ``float_path`` to ``out_path``; activation ranges from
    ``calibration_inputs`` (network inputs of any size, one (1, C, H, W) array each);
    ``weight_bits`` 7 for a copy every x86 CPU reads exactly, 8 for VNNI CPUs only."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # ORT's tooling logs a warning per normalisation constant it leaves in float.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(float_path), str(prepared))
            quantize_static(str(prepared), str(out_path), _Inputs(input_name, calibration_inputs),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            reduce_range=weight_bits == 7)
            # Not CalibMaxIntermediateOutputs: in ONNX Runtime 1.32 it drops the outputs it
            # has collected without taking their ranges. Every intermediate tensor of every
            # input is held until the end: a few dozen radiographs fit in memory.
    finally:
        root.setLevel(level)
    return Path(out_path)


__all__ = ["WeightBits", "quantize_int8", "scheme"]
