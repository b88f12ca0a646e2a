"""Small networks and batches shared by the surgery, optimizer-state and GradMax tests."""

from __future__ import annotations

import torch
from torch import nn

from netsize.model import Net, build
from netsize.spec import LayerSpec, NetSpec


def mlp(widths: list[int], act: str = "relu", norm: bool = False, n_in: int = 6,
        n_out: int = 3) -> NetSpec:
    layers = tuple(LayerSpec(w, norm) for w in widths)
    return NetSpec("mlp", (n_in,), n_out, layers, act, 0.0)


def cnn(stages: list[list[int]], shape: tuple[int, int, int], act: str = "relu",
        norm: bool = False, n_out: int = 3, kernel: int = 3) -> NetSpec:
    layers = tuple(LayerSpec(w, norm, stage=s, dropout=False)
                   for s, stage in enumerate(stages) for w in stage)
    return NetSpec("cnn", shape, n_out, layers, act, 0.0, kernel)


def randomize_norms(net: Net, gen: torch.Generator) -> None:
    """Put every BatchNorm at non-default gamma/beta/running stats so a wrong copy shows."""
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                c = mod.num_features
                dt = mod.weight.dtype
                mod.running_mean.copy_(torch.randn(c, generator=gen, dtype=dt))
                mod.running_var.copy_(torch.rand(c, generator=gen, dtype=dt) + 0.5)
                sign = torch.where(torch.rand(c, generator=gen) < 0.3, -1.0, 1.0).to(dt)
                mod.weight.copy_(sign * (torch.rand(c, generator=gen, dtype=dt) + 0.5))
                mod.bias.copy_(torch.randn(c, generator=gen, dtype=dt))
                mod.num_batches_tracked.fill_(7)


def make_net(spec: NetSpec, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = build(spec).double()
    randomize_norms(net, torch.Generator().manual_seed(seed + 100))
    return net


def batch(spec: NetSpec, n: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *spec.input_shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, spec.n_outputs, (n,), generator=gen)
    return x, y


def next_weight(net: Net, layer: int) -> torch.Tensor:
    return net.head.weight if layer == len(net.spec.layers) - 1 else \
        net.hidden[layer + 1].op.weight
