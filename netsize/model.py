"""Build an nn.Module from a NetSpec, and expose per-layer taps for scoring."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from netsize.spec import NetSpec

_TINY: dict[torch.dtype, float] = {}


def relu0(x: torch.Tensor) -> torch.Tensor:
    """ReLU whose derivative at 0 is 1, so zero-fan-in units (GradMax) still receive gradient.

    torch.relu and clamp both give gradient 0 at exactly 0, which would leave new units dead.
    F.threshold(x, t, 0) passes x where x > t: with t = -(smallest normal number), 0 passes
    with gradient 1 and the output differs from ReLU only on negative subnormals. It is one
    fused kernel, about 3x faster than a torch.where in forward plus backward.
    """
    tiny = _TINY.get(x.dtype)
    if tiny is None:
        tiny = _TINY[x.dtype] = float(torch.finfo(x.dtype).tiny)
    return F.threshold(x, -tiny, 0.0)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": relu0,
    "leaky_relu": F.leaky_relu,  # f(0) = 0, f'(0) = 0.01
    "gelu": F.gelu,  # f(0) = 0, f'(0) = 0.5
    "tanh": torch.tanh,  # f(0) = 0, f'(0) = 1
}


def activation_slope_at_zero(name: str) -> float:
    x = torch.zeros((), requires_grad=True)
    (grad,) = torch.autograd.grad(ACTIVATIONS[name](x), x)
    return float(grad)


def running_stats(norm: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    assert norm.running_mean is not None and norm.running_var is not None
    return norm.running_mean, norm.running_var


@dataclass
class Tap:
    """Tensors of one hidden layer on one batch (N = batch)."""

    x_in: torch.Tensor  # input of the linear/conv op: (N, d_in) or (N, C_in, H, W)
    z: torch.Tensor  # op output, before norm: (N, d) or (N, C, H, W)
    a: torch.Tensor  # after activation (and dropout), before pooling
    n: torch.Tensor  # after the norm (the same tensor as z without one)


class Hidden(nn.Module):
    """One hidden layer: op -> [norm] -> activation -> [dropout]."""

    op: nn.Linear | nn.Conv2d
    norm: nn.BatchNorm1d | nn.BatchNorm2d | nn.Identity

    def __init__(self, op: nn.Linear | nn.Conv2d, norm: nn.BatchNorm1d | nn.BatchNorm2d |
                 nn.Identity, activation: str, dropout: float):
        super().__init__()
        self.op = op
        self.norm = norm
        self.activation = activation
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward_tap(self, x: torch.Tensor) -> Tap:
        z = self.op(x)
        n = self.norm(z)
        a = self.drop(ACTIVATIONS[self.activation](n))
        return Tap(x, z, a, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tap(x).a


class Net(nn.Module):
    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        self.hidden = nn.ModuleList(_make_hidden(spec, i) for i in range(len(spec.layers)))
        self.head = nn.Linear(spec.layers[-1].width, spec.n_outputs)

    def layer(self, i: int) -> Hidden:
        return cast(Hidden, self.hidden[i])

    def batch_norm(self, i: int) -> nn.BatchNorm1d | nn.BatchNorm2d:
        norm = self.layer(i).norm
        if not isinstance(norm, nn.BatchNorm1d | nn.BatchNorm2d):
            raise ValueError(f"hidden layer {i} has no batch norm")
        return norm

    def next_op(self, i: int) -> nn.Linear | nn.Conv2d:
        """The op that reads hidden layer i's output: layer i+1's op, or the head."""
        return self.head if i == len(self.hidden) - 1 else self.layer(i + 1).op

    def route(self, i: int, a: torch.Tensor) -> torch.Tensor:
        route = self.spec.route_after(i)
        if route == "maxpool":
            return F.max_pool2d(a, 2)
        if route == "avgpool":
            return a.mean(dim=(2, 3))
        return a

    def forward_taps(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Tap]]:
        if self.spec.kind == "mlp":
            x = x.flatten(1)
        taps = []
        for i in range(len(self.hidden)):
            tap = self.layer(i).forward_tap(x)
            taps.append(tap)
            x = self.route(i, tap.a)
        return self.head(x), taps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.kind == "mlp":
            x = x.flatten(1)
        for i, layer in enumerate(self.hidden):
            x = self.route(i, layer(x))
        return self.head(x)


def _make_hidden(spec: NetSpec, i: int) -> Hidden:
    layer = spec.layers[i]
    d_in = spec.in_width(i)
    op: nn.Linear | nn.Conv2d
    norm: nn.BatchNorm1d | nn.BatchNorm2d | nn.Identity
    if spec.kind == "mlp":
        op = nn.Linear(d_in, layer.width)
        norm = nn.BatchNorm1d(layer.width) if layer.norm else nn.Identity()
    else:
        k = spec.kernel_size
        op = nn.Conv2d(d_in, layer.width, k, padding=k // 2)
        norm = nn.BatchNorm2d(layer.width) if layer.norm else nn.Identity()
    dropout = spec.dropout if layer.dropout else 0.0
    return Hidden(op, norm, spec.activation, dropout)


def build(spec: NetSpec) -> Net:
    """A fresh network with PyTorch's default initialisation (seed the global RNG first)."""
    return Net(spec)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs for one example of `input_shape`, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(net.parameters()).device
    x = torch.zeros((1, *input_shape), device=device)
    was_training = net.training
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    net.train(was_training)
    return int(counter.get_total_flops())
