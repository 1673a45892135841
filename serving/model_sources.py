"""Where the service's models come from: the local folder of ONNX files and model cards
(``models.source`` in ``configs/serving.yaml``), with any model replaced by a version of
the MLflow registry (``models.mlflow``: model key -> ``models:/NAME@alias`` or
``models:/NAME/VERSION``).

An alias is resolved to a pinned version once, when the service starts, so a replica
never changes model under a running service (promoting another version takes a restart);
the pinned versions are printed and every decision records the model versions it used.
The registry's files (``model.onnx`` and the card logged beside it) are downloaded into
``data/serve/models/`` and put together with the local models in one folder, which the
model deployment loads and verifies against the cards' sha256 like any other."""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from models.errors import DxvError
from models.model_card import ModelKey, read_card, write_card
from models.paths import data_dir, resolve_tracking_uri
from serving.service_config import ServingConfig

_URI = re.compile(r"^models:/(?P<name>[^/@\s]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))$")


class ModelSourceError(DxvError):
    code = "config.model_source"


@dataclass(frozen=True)
class PinnedModel:
    key: ModelKey
    reference: str  # as configured
    name: str
    version: str


def parse_reference(reference: str) -> tuple[str, str | None, str | None]:
    """(registered name, alias, version) of a ``models:/`` URI; exactly one of the last two."""
    found = _URI.match(reference)
    if found is None:
        raise ModelSourceError(f"{reference!r} is not a registry reference (models:/NAME@alias or models:/NAME/VERSION)")
    return found["name"], found["alias"], found["version"]


def resolve_model_dir(config: ServingConfig, tracking_uri: str | None = None,
                      cache: Path | None = None) -> tuple[Path, tuple[PinnedModel, ...]]:
    """The folder the model deployment loads, and the registry versions pinned into it."""
    local = config.resolve(config.models.source)
    if not config.models.mlflow:
        return local, ()
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    pins: list[PinnedModel] = []
    for key_text, reference in sorted(config.models.mlflow.items()):
        try:
            key = ModelKey(key_text)
        except ValueError as exc:
            raise ModelSourceError(f"models.mlflow: unknown model key {key_text!r} "
                                   f"(known: {', '.join(k.value for k in ModelKey)})") from exc
        name, alias, version = parse_reference(reference)
        try:
            pinned = client.get_model_version_by_alias(name, alias).version if alias else \
                client.get_model_version(name, str(version)).version
        except MlflowException as exc:
            raise ModelSourceError(f"models.mlflow.{key_text}: {reference} is not in the registry at {uri} "
                                   f"({exc.message})") from exc
        pins.append(PinnedModel(key, reference, name, str(pinned)))
    label = hashlib.sha256("|".join(f"{p.key}={p.name}/{p.version}" for p in pins).encode()).hexdigest()[:12]
    target = (cache or data_dir() / "serve" / "models") / label
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    replaced = {p.key for p in pins}
    for card_file in local.glob("*.card.json"):  # the local models that stay
        card = read_card(card_file)
        if card.key not in replaced:
            shutil.copy2(card_file, staging / card_file.name)
            shutil.copy2(local / card.onnx_file, staging / card.onnx_file)
            if card.int8 is not None:
                shutil.copy2(local / card.int8.onnx_file, staging / card.int8.onnx_file)
    for pin in pins:
        download = staging / f"download-{pin.key.value}"
        downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{pin.name}/{pin.version}",
                                                              dst_path=str(download), tracking_uri=uri))
        cards = sorted(downloaded.rglob("*.card.json"))
        if not cards or not (downloaded / "model.onnx").exists():
            raise ModelSourceError(f"{pin.name} version {pin.version} has no model.onnx with a model card beside it")
        card = read_card(cards[0])
        if card.key is not pin.key:
            raise ModelSourceError(f"models.mlflow.{pin.key.value}: {pin.reference} is a {card.key.value!r} model")
        if card.int8 is not None:  # the registry holds the float file only (the copy is made after training)
            card = card.model_copy(update={"int8": None})
        write_card(card, staging / f"{pin.key.value}.card.json")
        shutil.copy2(downloaded / "model.onnx", staging / card.onnx_file)
        shutil.rmtree(download, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target, tuple(pins)
