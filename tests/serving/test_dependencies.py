"""The design's one-way dependencies, checked in a fresh interpreter: the service's
request path (rules, validation, the API, the ONNX reader) never imports torch, MONAI,
Ray or MLflow at import time (the ingress and model replicas start without them)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "monai", "ray", "mlflow", "torchvision")


@pytest.mark.parametrize("module", ["serving.adjudication", "serving.rules.frequency", "serving.validation.engine",
                                    "serving.api.app", "models.inference", "serving.image_analysis", "serving.service"])
def test_the_request_path_imports_no_training_or_cluster_library(module: str) -> None:
    probe = (f"import importlib, json, sys; importlib.import_module({module!r}); "
             f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                                       timeout=120).stdout.strip().splitlines()[-1])
    assert loaded == []


def test_the_networks_still_name_their_sizes() -> None:
    from models import architecture, networks

    assert networks.DetectorArchitecture is architecture.DetectorArchitecture
    assert networks.LEVEL_STRIDES == architecture.LEVEL_STRIDES and networks.SIZE_DIVISIBLE == 32
