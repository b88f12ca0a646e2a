"""Per-example gradients from one forward and one backward pass, as per-sample-gradient
libraries (Opacus, BackPACK) build them: each Linear, Conv2d and eval-mode BatchNorm weight's
per-example gradient is rebuilt from the module's input and its output gradient.

In eval mode example n's loss depends on example n alone, so the gradient of the summed loss
with respect to a module's output, at example n, is dl_n/d(output_n). Networks holding other
tensor modules (group norm, depthwise convs, dilated convs) fall back to torch.func.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from netsize.losses import per_example_loss

Tensor = torch.Tensor


def supported(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.dilation == (1, 1) \
            and isinstance(module.padding, tuple)
    return isinstance(module, nn.Linear | nn.BatchNorm1d | nn.BatchNorm2d)


def _linear(module: nn.Linear, x: Tensor, g: Tensor) -> dict[str, Tensor]:
    out = {"weight": torch.einsum("no,ni->noi", g, x)}  # (N, out, in)
    if module.bias is not None:
        out["bias"] = g
    return out


def _conv(module: nn.Conv2d, x: Tensor, g: Tensor) -> dict[str, Tensor]:
    padding = cast(tuple[int, ...], module.padding)  # supported() refused string paddings
    cols = F.unfold(x, module.kernel_size, padding=padding,
                    stride=module.stride)  # (N, C_in*kh*kw, L)
    per = torch.einsum("nol,nkl->nok", g.flatten(2), cols)  # (N, C_out, C_in*kh*kw)
    out = {"weight": per.reshape(len(x), *module.weight.shape)}
    if module.bias is not None:
        out["bias"] = g.sum(dim=(2, 3))
    return out


def _batch_norm(module: nn.modules.batchnorm._BatchNorm, x: Tensor,
                g: Tensor) -> dict[str, Tensor]:
    assert module.running_mean is not None and module.running_var is not None
    shape = (1, -1) + (1,) * (x.dim() - 2)
    xhat = (x - module.running_mean.view(shape)) / torch.sqrt(
        module.running_var.view(shape) + module.eps)
    dims = tuple(range(2, x.dim()))
    return {"weight": (g * xhat).sum(dims) if dims else g * xhat,
            "bias": g.sum(dims) if dims else g}


RULES: dict[type, Callable[..., dict[str, Tensor]]] = {
    nn.Linear: _linear, nn.Conv2d: _conv, nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm}


def from_hooks(net: nn.Module, names: list[str], x: Tensor, y: Tensor,
               task: str) -> dict[str, Tensor] | None:
    """{name: (N, *shape)} per-example gradients, or None when a module is not supported."""
    owners = {name.rsplit(".", 1)[0] for name in names}
    modules = {o: net.get_submodule(o) for o in owners}
    if not all(supported(m) for m in modules.values()):
        return None
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def keep(owner: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            inputs[owner], outputs[owner] = args[0].detach(), out
        return hook

    handles = [m.register_forward_hook(keep(o)) for o, m in modules.items()]
    was_training = net.training
    net.eval()
    try:
        with torch.enable_grad():
            loss = per_example_loss(net(x), y, task).sum()
            order = sorted(outputs)
            grads = torch.autograd.grad(loss, [outputs[o] for o in order], allow_unused=True)
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    per: dict[str, Tensor] = {}
    for owner, g in zip(order, grads, strict=True):
        module = modules[owner]
        g = torch.zeros_like(outputs[owner]) if g is None else g
        for tensor, value in RULES[type(module)](module, inputs[owner], g).items():
            per[f"{owner}.{tensor}"] = value
    return {name: per[name] for name in names}
