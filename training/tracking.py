"""MLflow tracking for training runs: the only module that calls ``mlflow.log_*`` while
training. The store defaults to a SQLite file under the project's data folder with the
artifacts beside it; ``MLFLOW_TRACKING_URI`` (or the config) points elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnx
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Schema, TensorSpec

from models.model_card import ModelCard, card_path
from models.paths import data_dir, default_tracking_uri, resolve_tracking_uri


def default_artifact_location(experiment: str) -> str:
    return (data_dir() / "mlflow" / "artifacts" / experiment).as_uri()


def configure(configured: str | None = None) -> str:
    uri = resolve_tracking_uri(configured)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    client = MlflowClient()
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = default_artifact_location(name) if mlflow.get_tracking_uri() == default_tracking_uri() else None
    return client.create_experiment(name, artifact_location=location)


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


class RunTracker:
    """An open MLflow run."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_config(self, config_yaml: str, params: dict[str, Any]) -> None:
        mlflow.log_text(config_yaml, "config.yaml")
        flat = {k: str(v)[:500] for k, v in flatten("", params).items()}
        items = list(flat.items())
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per call
            mlflow.log_params(dict(items[start:start + 100]))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}, step=step)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        mlflow.log_dict(data, name)

    def log_text(self, text: str, name: str) -> None:
        mlflow.log_text(text, name)

    def log_figure(self, figure: Any, name: str) -> None:
        mlflow.log_figure(figure, name)

    def log_file(self, path: str | Path, directory: str | None = None) -> None:
        mlflow.log_artifact(str(path), directory)

    def log_onnx_model(self, onnx_path: str | Path, card: ModelCard, register: bool) -> str | None:
        """Log the ONNX model with its signature and card; register it. Returns the
        registered version (None when not registered)."""
        model = onnx.load(str(onnx_path))
        signature = onnx_signature(model)
        info = mlflow.onnx.log_model(
            model, name="model", signature=signature, save_as_external_data=False,
            registered_model_name=card.registered_name if register else None,
            extra_files=[str(card_path(onnx_path))],
            metadata={"model_card": card.model_dump(mode="json")},
        )
        self.log_file(card_path(onnx_path), "model_card")
        version = info.registered_model_version
        if version is not None:
            client = MlflowClient()
            client.set_model_version_tag(card.registered_name, str(version), "sha256", card.sha256)
            client.set_model_version_tag(card.registered_name, str(version), "training_data", card.training_data)
        return None if version is None else str(version)


def onnx_signature(model: onnx.ModelProto) -> ModelSignature:
    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        dims = tuple(d.dim_value if d.dim_value > 0 else -1 for d in value.type.tensor_type.shape.dim)
        return TensorSpec(np.dtype(np.float32), dims, value.name)
    return ModelSignature(inputs=Schema([spec(i) for i in model.graph.input]),
                          outputs=Schema([spec(o) for o in model.graph.output]))


def log_quantization(model_dir: Path, card: ModelCard, experiment: str = "dxv-detectors") -> str:
    """An MLflow run for an int8 copy made by ``dxv models quantize``: which float file it
    was made from, how and on what it was calibrated, the copy itself and the card."""
    assert card.int8 is not None
    with tracked_run(experiment, f"quantize {card.key.value} {card.version}", None, None) as tracker:
        mlflow.log_params({"model": card.key.value, "version": card.version, "float_sha256": card.sha256,
                           "float_size_bytes": card.size_bytes, "int8_sha256": card.int8.sha256,
                           "int8_size_bytes": card.int8.size_bytes, "scheme": card.int8.scheme[:500],
                           "calibration": card.int8.calibration[:500], "weight_bits": card.int8.weight_bits})
        tracker.log_file(model_dir / card.int8.onnx_file, "int8")
        tracker.log_file(card_path(model_dir / card.onnx_file), "model_card")
        return tracker.run_id


@contextmanager
def tracked_run(experiment: str, run_name: str, tracking_uri: str | None, resume_run_id: str | None) -> Iterator[RunTracker]:
    configure(tracking_uri)
    experiment_id = ensure_experiment(experiment)
    with mlflow.start_run(run_id=resume_run_id, experiment_id=None if resume_run_id else experiment_id,
                          run_name=None if resume_run_id else run_name) as run:
        yield RunTracker(run.info.run_id)
