"""Per-example gradients from one forward and one backward pass, as per-sample-gradient
libraries (Opacus, BackPACK) build them: each Linear, Conv2d and eval-mode BatchNorm weight's
per-example gradient is rebuilt from the module's input and its output gradient.

In eval mode example n's loss depends on example n alone, so the gradient of the summed loss
with respect to a module's output, at example n, is dl_n/d(output_n). Networks holding other
tensor modules (group norm, depthwise convs, dilated convs) fall back to torch.func.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
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


def unfolded(module: nn.Conv2d, x: Tensor) -> Tensor:
    """(N, C_in*kh*kw, L): the conv's input patches (im2col)."""
    padding = cast(tuple[int, ...], module.padding)  # supported() refused string paddings
    return F.unfold(x, module.kernel_size, padding=padding, stride=module.stride)


def _conv(module: nn.Conv2d, x: Tensor, g: Tensor, cols: Tensor | None = None) -> dict[str, Tensor]:
    cols = unfolded(module, x) if cols is None else cols
    per = torch.einsum("nol,nkl->nok", g.flatten(2), cols)  # (N, C_out, C_in*kh*kw)
    out = {"weight": per.reshape(len(x), *module.weight.shape)}
    if module.bias is not None:
        out["bias"] = g.sum(dim=(2, 3))
    return out


def _batch_norm(module: nn.modules.batchnorm._BatchNorm, x: Tensor,
                g: Tensor) -> dict[str, Tensor]:
    assert module.running_mean is not None and module.running_var is not None
    shape = (1, -1) + (1,) * (x.dim() - 2)
    dims = tuple(range(2, x.dim()))
    centred = g * (x - module.running_mean.view(shape))  # two full-size temporaries, not four
    scale = torch.rsqrt(module.running_var + module.eps)  # (C,): applied after the sum
    return {"weight": (centred.sum(dims) if dims else centred) * scale,
            "bias": g.sum(dims) if dims else g}


RULES: dict[type, Callable[..., dict[str, Tensor]]] = {
    nn.Linear: _linear, nn.Conv2d: _conv, nn.BatchNorm1d: _batch_norm,
    nn.BatchNorm2d: _batch_norm}


KEPT_PATCHES = 2**24  # elements of im2col a capture keeps (64 MiB in float32)


@dataclass
class Capture:
    """One forward and backward pass of the summed per-example loss (eval mode): each owner
    module's input and output gradient, and the gradient at the network's output (N, out)."""

    inputs: dict[str, Tensor]
    grads: dict[str, Tensor]
    out_grad: Tensor
    cols: dict[str, Tensor] = field(default_factory=dict)  # conv owners' im2col, once

    def patches(self, owner: str, module: nn.Conv2d) -> Tensor:
        """The conv input's im2col, kept for a second use while the kept ones stay small (a
        check holds its capture through every candidate: large networks recompute instead)."""
        if owner in self.cols:
            return self.cols[owner]
        cols = unfolded(module, self.inputs[owner])
        if sum(c.numel() for c in self.cols.values()) + cols.numel() <= KEPT_PATCHES:
            self.cols[owner] = cols
        return cols


def capture(net: nn.Module, owners: list[str], x: Tensor, y: Tensor, task: str) -> Capture:
    """Inputs and output gradients of the modules `owners` (names of net's submodules)."""
    modules = {o: net.get_submodule(o) for o in owners}
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
            out = net(x)
            loss = per_example_loss(out, y, task).sum()
            order = sorted(outputs)
            grads = torch.autograd.grad(loss, [*(outputs[o] for o in order), out],
                                        allow_unused=True, materialize_grads=True)
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    return Capture(inputs, dict(zip(order, grads[:-1], strict=True)), grads[-1])


def owners_of(names: list[str]) -> list[str]:
    return sorted({name.rsplit(".", 1)[0] for name in names})


def from_capture(net: nn.Module, names: list[str], cap: Capture) -> dict[str, Tensor]:
    """{name: (N, *shape)} per-example gradients of parameters whose owners `cap` holds."""
    per: dict[str, Tensor] = {}
    for owner in owners_of(names):
        module = net.get_submodule(owner)
        extra = (cap.patches(owner, module),) if isinstance(module, nn.Conv2d) else ()
        for tensor, value in RULES[type(module)](module, cap.inputs[owner], cap.grads[owner],
                                                 *extra).items():
            per[f"{owner}.{tensor}"] = value
    return {name: per[name] for name in names}


def capture_supported(net: nn.Module, owners: list[str], x: Tensor, y: Tensor,
                      task: str) -> Capture | None:
    """capture(), or None when an owner's per-example gradients need torch.func."""
    if not all(supported(net.get_submodule(o)) for o in owners):
        return None
    return capture(net, owners, x, y, task)


def from_hooks(net: nn.Module, names: list[str], x: Tensor, y: Tensor,
               task: str) -> dict[str, Tensor] | None:
    """{name: (N, *shape)} per-example gradients, or None when a module is not supported."""
    cap = capture_supported(net, owners_of(names), x, y, task)
    return None if cap is None else from_capture(net, names, cap)
