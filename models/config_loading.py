"""Load YAML configs into frozen pydantic models.

Unknown keys are refused, overrides (``--set a.b=value``) must name existing fields, and
the resolved config can be dumped back to YAML for logging with every run."""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from models.errors import DxvError


class ConfigError(DxvError, ValueError):
    code = "config.invalid"


class FrozenConfig(BaseModel):
    """Base of every config model: immutable, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=0.001' -> (['train', 'lr'], 0.001); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from exc
    return key.strip().split("."), value


def _config_model(annotation: Any) -> type[BaseModel] | None:
    """The config model a field holds: its type, or the one model of an optional field
    (``DecodeConfig | None``); None for plain values."""
    candidates = [annotation, *typing.get_args(annotation)]
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


def _apply_override(data: dict[str, Any], model: type[BaseModel], path: list[str], value: Any) -> None:
    node: dict[str, Any] = data
    current: type[BaseModel] | None = model
    for depth, part in enumerate(path):
        if current is None or part not in current.model_fields:
            known = ", ".join(sorted(current.model_fields)) if current is not None else "(none)"
            raise ConfigError(f"override {'.'.join(path)!r}: no field {part!r} here (fields: {known})")
        if depth == len(path) - 1:
            node[part] = value
            return
        current = _config_model(current.model_fields[part].annotation)
        child = node.get(part)
        if not isinstance(child, dict):
            child = {} if child is None else dict(child)
            node[part] = child
        node = child


def load_config(
    model: type[ConfigT],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> ConfigT:
    """Read ``path`` (or start from the model's defaults), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        source = Path(path)
        try:
            loaded = yaml.safe_load(source.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {source}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping")
        data = loaded
    return config_from_data(model, data, overrides, where=f" in {path}" if path is not None else "")


def config_from_data(model: type[ConfigT], data: dict[str, Any], overrides: list[str] | tuple[str, ...] = (),
                     where: str = "") -> ConfigT:
    """Apply overrides to already-read config data (e.g. the config stored in a
    checkpoint) and validate it; ``data`` itself is not changed."""
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        _apply_override(data, model, keys, value)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config{where}: {validation_problems(exc)}") from exc


def validation_problems(exc: ValidationError, root: str = "(top)") -> str:
    """A pydantic error as one line a user can act on: 'where: what (got value); ...'."""
    return "; ".join(_describe(err, root) for err in exc.errors())


def _describe(err: Any, root: str = "(top)") -> str:
    """'where: what' plus the offending value when it is a short scalar."""
    where = ".".join(str(p) for p in err["loc"]) or root
    value = err.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float) and len(repr(value)) <= 60 \
        and err.get("type") != "missing" else ""
    return f"{where}: {err['msg']}{shown}"


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML (what gets logged with a run)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
