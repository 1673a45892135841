"""Model sources from the MLflow registry: an alias is pinned to a version at start, the
files are put together with the local models, and the folder loads and verifies."""

from __future__ import annotations

import pytest

from models.inference import DentalReader
from models.model_card import SHIPPED_DIR, ModelKey, read_card
from serving.model_sources import ModelSourceError, parse_reference, resolve_model_dir
from serving.service_config import ModelSources, load_serving_config

pytestmark = pytest.mark.slow  # MLflow registry round trips


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A local MLflow store with the shipped findings model registered twice; 'champion'
    on version 1."""
    from mlflow.tracking import MlflowClient

    from training.tracking import tracked_run

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    card = read_card(SHIPPED_DIR / "findings.card.json")
    roots = read_card(SHIPPED_DIR / "root-count.card.json")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        for _ in range(2):
            with tracked_run("registry-test", "findings", None, None) as tracker:
                tracker.log_onnx_model(SHIPPED_DIR / card.onnx_file, card, register=True)
        with tracked_run("registry-test", "root-count", None, None) as tracker:
            tracker.log_onnx_model(SHIPPED_DIR / roots.onnx_file, roots, register=True)
    MlflowClient(tracking_uri=uri).set_registered_model_alias(card.registered_name, "champion", "1")
    return uri, card.registered_name


def _config(mlflow: dict[str, str]):
    config = load_serving_config()
    return config.model_copy(update={"models": ModelSources(source=config.models.source, mlflow=mlflow)})


def test_an_alias_is_pinned_and_the_folder_loads(registry, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    uri, name = registry
    folder, pins = resolve_model_dir(_config({"findings": f"models:/{name}@champion"}), uri, tmp_path)
    assert [(p.key, p.name, p.version) for p in pins] == [(ModelKey.FINDINGS, name, "1")]
    assert sorted(f.name for f in folder.glob("*.card.json")) == sorted(f.name for f in SHIPPED_DIR.glob("*.card.json"))
    reader = DentalReader.from_directory(folder, threads=1, providers=["CPUExecutionProvider"])
    assert reader.ready()  # every sha256 verified against its card
    # The registry holds the float file only: on a CPU it runs in float, not as an int8 copy it lacks.
    assert read_card(SHIPPED_DIR / "findings.card.json").int8 is not None
    assert read_card(folder / "findings.card.json").int8 is None and "+int8" not in dict(reader.model_versions())["findings"]
    # Moving the alias changes what the next start pins, not what a running one loaded.
    MlflowClient(tracking_uri=uri).set_registered_model_alias(name, "champion", "2")
    again, pins = resolve_model_dir(_config({"findings": f"models:/{name}@champion"}), uri, tmp_path)
    assert pins[0].version == "2" and again != folder and folder.exists()
    _, pinned = resolve_model_dir(_config({"findings": f"models:/{name}/1"}), uri, tmp_path)
    assert pinned[0].version == "1"


def test_a_local_model_keeps_its_int8_copy_beside_a_registry_model(registry, tmp_path) -> None:
    uri, _ = registry
    roots = read_card(SHIPPED_DIR / "root-count.card.json")
    folder, pins = resolve_model_dir(_config({"root-count": f"models:/{roots.registered_name}/1"}), uri, tmp_path)
    assert [p.key for p in pins] == [ModelKey.ROOT_COUNT]
    local = read_card(SHIPPED_DIR / "findings.card.json")
    assert (folder / local.int8.onnx_file).exists()
    reader = DentalReader.from_directory(folder, threads=1, providers=["CPUExecutionProvider"], precision="int8")
    assert dict(reader.model_versions())["findings"] == f"{local.version}+int8"


@pytest.mark.parametrize(("mlflow", "message"), [
    ({"findings": "models:/dxv-findings@nobody"}, "not in the registry"),
    ({"findings": "models:/no-such-model/3"}, "not in the registry"),
    ({"findings": "runs:/abc/model"}, "not a registry reference"),
    ({"teeth": "models:/dxv-findings@champion"}, "unknown model key"),
    ({"root-count": "models:/dxv-findings@champion"}, "is a 'findings' model"),
])
def test_bad_references_are_refused_with_the_reason(registry, tmp_path, mlflow, message) -> None:
    uri, _ = registry
    with pytest.raises(ModelSourceError, match=message):
        resolve_model_dir(_config(mlflow), uri, tmp_path)


def test_without_registry_references_the_local_folder_is_used() -> None:
    folder, pins = resolve_model_dir(_config({}))
    assert pins == () and folder.resolve() == SHIPPED_DIR.resolve()
    assert parse_reference("models:/dxv-findings@champion") == ("dxv-findings", "champion", None)
