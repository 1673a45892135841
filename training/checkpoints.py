"""Checkpoints every epoch (``last.pt``) and at the best validation score (``best.pt``);
``--resume`` continues from ``last.pt`` with the same MLflow run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.errors import DxvError


class CheckpointError(DxvError):
    code = "training.checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    epoch: int  # the last finished epoch (0-based)
    model_state: dict[str, Any]
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any]
    scaler_state: dict[str, Any] | None
    best_selection: float
    best_epoch: int
    run_id: str | None
    config_yaml: str
    history: list[dict[str, float]]


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(checkpoint.__dict__, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind


def load_checkpoint(path: str | Path) -> Checkpoint:
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=False)
        return Checkpoint(**data)
    except (OSError, RuntimeError, TypeError, KeyError) as exc:
        raise CheckpointError(f"cannot resume from {path}: {exc}") from exc
