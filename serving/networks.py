"""A network in a Serve deployment of its own (``models.placement: pipeline``), as the
readers of ``models.inference`` see one: a card, a version, and outputs for input batches.

In that layout the deployment that decodes radiographs and does the pre- and
post-processing holds a ``DentalReader`` of ``RemoteNetwork`` objects, one per model; each
stands for a deployment whose only work is ONNX Runtime, batched across requests with
``@serve.batch`` (``serving.service.network_deployment``). The readings are made by the same
code as in one process; only the network runs travel (input tensors out, outputs back)."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.model_card import ModelCard


class RemoteNetwork:
    """``models.inference.Network`` for a network deployment's handle. Its card is read
    from the models' folder; its version is asked of the deployment, once (that replica
    knows whether it runs the card's int8 copy). Calls block until the deployment answers:
    they are made from worker threads, never from a replica's event loop."""

    def __init__(self, card: ModelCard, handle: Any) -> None:
        self.card, self.handle = card, handle
        self._version: str | None = None

    def answers(self, timeout_s: float = 5.0) -> bool:
        """Whether the deployment answers now (the readiness check; each check asks)."""
        try:
            self._version = str(self.handle.version.remote().result(timeout_s=timeout_s))
        except Exception:  # a replica still starting is simply not ready
            return False
        return True

    @property
    def version(self) -> str:
        if self._version is None:
            self._version = str(self.handle.version.remote().result())
        return self._version

    def run(self, batches: list[np.ndarray]) -> list[list[np.ndarray]]:
        if not batches:  # nothing to read (e.g. no teeth for the root counter): no trip
            return []
        return list(self.handle.run.remote(batches).result())


def split_outputs(requests: list[list[np.ndarray]], outputs: list[list[np.ndarray]]) -> list[list[list[np.ndarray]]]:
    """The outputs of the requests' batches run as one list (in order), back per request."""
    out, start = [], 0
    for batches in requests:
        out.append(outputs[start:start + len(batches)])
        start += len(batches)
    return out
