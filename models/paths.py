"""Where the project keeps its local state (runs, MLflow store, generated data)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """``$DXV_DATA_DIR`` when set, else ``data/`` in the project folder (git-ignored)."""
    return Path(os.environ.get("DXV_DATA_DIR") or PROJECT_ROOT / "data").resolve()
