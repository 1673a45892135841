"""Network weights back out of an exported ONNX file, for a warm start (``init_from:
models/shipped/findings.onnx``): the shipped models are committed as ONNX only, and an ML
engineer fine-tuning one on their own radiographs starts from exactly what is served.

The exporter folds each batch norm into the convolution before it (and writes group
norms as InstanceNormalization, Mul and Add), so weights are matched by position, not by
name: every call of the network's convolutions and group norms, in order, against the
file's operations in graph order (a head shared by the pyramid levels is met once per
level, with the same weights each time), each shape checked. A folded batch norm comes
back as the identity (mean 0, variance 1 - eps, scale 1) with the folded bias as its
shift, which is exact with frozen batch norm statistics (``optim.freeze_batchnorm``).
The result is checked by running both: the network must give the file's outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.checkpoints import CheckpointError

_CHECK_HW = (96, 128)


def _onnx_parameters(path: Path) -> tuple[list[tuple[np.ndarray, np.ndarray | None]], list[tuple[np.ndarray, np.ndarray]],
                                          dict[str, np.ndarray]]:
    """Every convolution (weight, bias) and group norm (scale, shift) the file computes, in
    graph order (a head shared by the pyramid levels appears once per level), and its
    initializers by name (the exporter keeps the names of what it did not fold, such as a
    classifier's final linear layer)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:  # a head's weights reach each pyramid level through Identity nodes
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def next_op(name: str, op: str) -> Any:
        return next((n for n in consumers.get(name, []) if n.op_type == op), None)

    convs, norms = [], []
    for node in graph.node:
        if node.op_type == "Conv":
            convs.append((values[node.input[1]], values.get(node.input[2]) if len(node.input) > 2 else None))
        elif node.op_type == "InstanceNormalization":  # a group norm: reshape, normalise, reshape, scale, shift
            reshape = next_op(node.output[0], "Reshape")
            mul = next_op(reshape.output[0], "Mul") if reshape is not None else None
            add = next_op(mul.output[0], "Add") if mul is not None else None
            if mul is None or add is None:
                raise CheckpointError(f"{path}: a normalisation without its scale and shift")
            norms.append((next(values[i] for i in mul.input if i in values),
                          next(values[i] for i in add.input if i in values)))
    return convs, norms, {i.name: values[i.name] for i in graph.initializer}


def _run_order(model: nn.Module, example: torch.Tensor, forward: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every call of ``model``'s convolutions and norms, in order (a module used at several
    pyramid levels appears once per level, as in the exported graph)."""
    order: list[tuple[str, nn.Module]] = []
    names = {id(m): n for n, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append((names[id(mod)], mod)))
             for m in model.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.GroupNorm)]
    try:
        with torch.no_grad():
            forward(example)
    finally:
        for hook in hooks:
            hook.remove()
    return order


def _assign(target: torch.Tensor, value: np.ndarray, what: str) -> None:
    source = torch.from_numpy(np.array(value, dtype=np.float32))  # a copy: onnx's arrays are read-only
    source = source.reshape(-1) if target.dim() == 1 else source
    if tuple(source.shape) != tuple(target.shape):
        raise CheckpointError(f"{what}: the file has shape {tuple(source.shape)}, the network {tuple(target.shape)}")
    target.copy_(source.to(target.dtype))


def load_onnx_weights(model: nn.Module, onnx_path: str | Path, forward: nn.Module | None = None,
                      example: torch.Tensor | None = None) -> bool:
    """Set ``model``'s weights from an ONNX file exported from the same architecture;
    ``forward`` is the module the file was exported from (default the model itself) and
    ``example`` an input for it. Returns whether batch norms were folded in the file (then
    only frozen statistics reproduce it). Raises ``CheckpointError`` where the file does
    not fit or the network does not give the file's outputs afterwards."""
    from models.inference import make_session

    path = Path(onnx_path)
    forward = forward or model
    example = example if example is not None else torch.rand(1, 1, *_CHECK_HW)
    convs, norms, named = _onnx_parameters(path)
    order = _run_order(model, example, forward)
    torch_convs = [(n, m) for n, m in order if isinstance(m, nn.Conv2d)]
    torch_norms = [(n, m) for n, m in order if isinstance(m, nn.GroupNorm)]
    if len(convs) != len(torch_convs) or len(norms) != len(torch_norms):
        raise CheckpointError(f"{path} does not fit this network: the file runs {len(convs)} convolutions and "
                              f"{len(norms)} group norms, the network {len(torch_convs)} and {len(torch_norms)}")
    folded = False
    next_conv, next_norm = iter(convs), iter(norms)
    with torch.no_grad():
        shift: np.ndarray | None = None  # the folded bias a batch norm right after a convolution takes
        for name, module in order:
            if isinstance(module, nn.Conv2d):
                weight, bias = next(next_conv)
                _assign(module.weight, weight, f"{name}.weight")
                shift = bias
                if module.bias is not None:  # the convolution's own bias takes it (the norm shifts by 0)
                    if bias is None:
                        raise CheckpointError(f"{path}: {name} has a bias the file lacks")
                    _assign(module.bias, bias, f"{name}.bias")
                    shift = np.zeros_like(bias)
            elif isinstance(module, nn.BatchNorm2d):
                if shift is None:
                    raise CheckpointError(f"{path}: no folded shift for batch norm {name}")
                folded = True
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.zero_()
                module.running_var.fill_(1.0 - module.eps)
                module.weight.fill_(1.0)
                _assign(module.bias, shift, f"{name}.bias")
                shift = None
            elif isinstance(module, nn.GroupNorm):
                scale, shift = next(next_norm)
                _assign(module.weight, scale, f"{name}.weight")
                _assign(module.bias, shift, f"{name}.bias")
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                for param in ("weight", "bias"):
                    value = next((named[k] for k in (f"{name}.{param}", f"network.{name}.{param}") if k in named), None)
                    if value is None:
                        raise CheckpointError(f"{path}: no {name}.{param} in the file")
                    _assign(getattr(module, param), value, f"{name}.{param}")
    was_training = forward.training
    forward.eval()
    with torch.no_grad():
        ours = forward(example)
    forward.train(was_training)
    ours = ours if isinstance(ours, tuple | list) else (ours,)
    session = make_session(path, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    worst = max(float(np.abs(a.numpy() - b).max()) for a, b in zip(ours, theirs, strict=True))
    if worst > 1e-3:
        raise CheckpointError(f"{path}: the network with the file's weights differs from it by {worst:.2g}")
    return folded
