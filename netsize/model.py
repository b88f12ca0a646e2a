"""Pieces every network shares: netsize's relu (gradient 1 at 0, so GradMax's zero-fan-in units
learn), the activations a layer-list spec may name (checked when an old checkpoint is read), and
parameter and FLOP counts of any module. The networks themselves are graph networks
(netsize.graph.build, through netsize.networks)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

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


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs for one example of `input_shape`, as torch.utils.flop_counter counts them
    (2 per multiply-add of convs and matrix products; norms, activations and pooling free).
    A graph network's come from its spec's shapes: FlopCounterMode's first use costs seconds."""
    from_spec = graph_flops(net)
    if from_spec is not None:
        return from_spec
    from torch.utils.flop_counter import FlopCounterMode

    device = next(net.parameters()).device
    x = torch.zeros((1, *input_shape), device=device)
    was_training = net.training
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    net.train(was_training)
    return int(counter.get_total_flops())


def graph_flops(net: nn.Module) -> int | None:
    """count_flops of a graph network from its spec (None for other modules)."""
    spec = getattr(net, "spec", None)
    if spec is None or not hasattr(spec, "shape") or not hasattr(spec, "nodes"):
        return None
    total = 0
    for node in spec.nodes:
        out = spec.shape(node.name)
        if node.op == "conv":
            per_output = node.kernel**2 * (1 if node.depthwise else spec.shape(node.inputs[0])[0])
            total += 2 * math.prod(out) * per_output
        elif node.op == "linear":
            total += 2 * spec.shape(node.inputs[0])[0] * node.width
    return total
