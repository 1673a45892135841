"""``dxv rules diff OLD NEW``: what changed between two versions of a rule table or plan
(procedure catalogue, evidence matrix, score bands, frequency table, bundle library,
outlier settings, a plan). Both files are validated first; entries of lists are matched
by their ``id`` or ``version`` so that a reordered list is not reported as changed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from models.config_loading import ConfigError


@dataclass(frozen=True)
class Change:
    path: str
    kind: str  # added, removed, changed
    old: Any = None
    new: Any = None


def table_kind(data: dict[str, Any]) -> str:
    for key, kind in (("concepts", "procedure catalogue"), ("entries", "evidence matrix"), ("limits", "frequency table"),
                      ("bundles", "bundle library"), ("plan_id", "plan"), ("tooth_presence", "score bands"),
                      ("high_value_codes", "outlier settings")):
        if key in data:
            return kind
    raise ConfigError("not a rule table or plan this command knows (catalogue, evidence matrix, score bands, "
                      "frequency table, bundle library, outlier settings, plan)")


def _validate(path: Path, kind: str) -> None:
    from serving.catalogue import load_catalogue
    from serving.evidence_matrix import load_matrix, load_thresholds
    from serving.plans import load_plan
    from serving.rules.outliers import load_outlier_config
    from serving.rules.tables import load_bundles, load_frequency

    loaders = {"procedure catalogue": load_catalogue, "evidence matrix": load_matrix, "score bands": load_thresholds,
               "frequency table": load_frequency, "bundle library": load_bundles, "plan": load_plan,
               "outlier settings": load_outlier_config}
    loaders[kind](path)  # type: ignore[operator]


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    for key in ("id", "version", "clause"):
        if items and all(isinstance(x, dict) and key in x for x in items):
            return {str(x[key]): x for x in items}
    return None


def diff(old: Any, new: Any, path: str = "") -> list[Change]:
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[Change] = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in old:
                changes.append(Change(where, "added", new=new[key]))
            elif key not in new:
                changes.append(Change(where, "removed", old=old[key]))
            else:
                changes += diff(old[key], new[key], where)
        return changes
    if isinstance(old, list) and isinstance(new, list):
        a, b = _keyed(old), _keyed(new)
        if a is not None and b is not None:
            return diff(a, b, path)
    return [] if old == new else [Change(path, "changed", old, new)]


def diff_files(old_path: Path, new_path: Path) -> tuple[str, str, str, list[Change]]:
    """(kind, old version, new version, changes); both files are validated first."""
    def read(p: Path) -> dict[str, Any]:
        try:
            data = yaml.safe_load(p.read_text("utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"file not found: {p}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
        return data

    old, new = read(old_path), read(new_path)
    kind = table_kind(old)
    if table_kind(new) != kind:
        raise ConfigError(f"{old_path} is a {kind}, {new_path} is a {table_kind(new)}: nothing to compare")
    _validate(old_path, kind)
    _validate(new_path, kind)
    return kind, str(old.get("version", old.get("plan_id", "?"))), str(new.get("version", new.get("plan_id", "?"))), \
        diff(old, new)
