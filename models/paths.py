"""Where the project keeps its local state (runs, MLflow store, generated data)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """``$DXV_DATA_DIR`` when set, else ``data/`` in the project folder (git-ignored)."""
    return Path(os.environ.get("DXV_DATA_DIR") or PROJECT_ROOT / "data").resolve()


def default_tracking_uri() -> str:
    """The local MLflow store: an absolute ``sqlite:///`` + ``/abs/path`` URI (three slashes
    followed by a relative path would depend on the working folder)."""
    return f"sqlite:///{(data_dir() / 'mlflow' / 'mlflow.db').as_posix()}"


def resolve_tracking_uri(configured: str | None = None) -> str:
    """A configured URI, else ``$MLFLOW_TRACKING_URI``, else the local store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
