"""Build an nn.Module from a GraphSpec: one module per tensor-holding op, the rest functional."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from netsize.graph.spec import GraphSpec, Node
from netsize.model import relu0


def activation(node: Node) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(0) = 0 for every kind, so a unit with zero fan-in outputs 0; relu's gradient at 0 is
    1 (netsize's relu0), so such a unit still learns (GradMax)."""
    if node.kind == "relu":
        return relu0
    if node.kind == "leaky_relu":
        slope = node.slope
        return lambda x: F.leaky_relu(x, slope)
    return {"gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}[node.kind]


def make_module(spec: GraphSpec, node: Node) -> nn.Module | None:
    if node.op == "conv":
        c_in = spec.in_channels(node)
        out = c_in if node.depthwise else node.width
        return nn.Conv2d(c_in, out, node.kernel, node.stride, node.padding, bias=node.bias,
                         groups=c_in if node.depthwise else 1)
    if node.op == "linear":
        return nn.Linear(spec.in_channels(node), node.width, bias=node.bias)
    if node.op == "norm":
        c = spec.in_channels(node)
        if node.kind == "group":
            return nn.GroupNorm(node.groups, c)
        return nn.BatchNorm2d(c) if len(spec.shape(node.inputs[0])) == 3 else nn.BatchNorm1d(c)
    if node.op == "dropout":
        return nn.Dropout(node.p)
    return None


class GraphNet(nn.Module):
    """Runs the spec's ops in order; `ops[name]` holds the modules (state_dict: ops.NAME.*)."""

    def __init__(self, spec: GraphSpec):
        super().__init__()
        self.spec = spec
        self.ops = nn.ModuleDict()
        for node in spec.nodes:
            module = make_module(spec, node)
            if module is not None:
                self.ops[node.name] = module
        self._acts = {n.name: activation(n) for n in spec.nodes if n.op == "act"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {"input": x.flatten(1) if len(self.spec.input_shape) == 1 else x}
        for node in self.spec.nodes:
            values[node.name] = self._run(node, [values[i] for i in node.inputs])
        return values[self.spec.output]

    def _run(self, node: Node, ins: list[torch.Tensor]) -> torch.Tensor:
        x = ins[0]
        if node.name in self.ops:
            return self.ops[node.name](x)
        if node.op == "act":
            return self._acts[node.name](x)
        if node.op == "pool":
            stride = node.stride or node.kernel
            pool = F.max_pool2d if node.kind == "max" else F.avg_pool2d
            return pool(x, node.kernel, stride)
        if node.op == "gap":
            return x.mean(dim=(2, 3))
        if node.op == "flatten":
            return x.flatten(1)
        if node.op == "add":
            out = x
            for other in ins[1:]:
                out = out + other
            return out
        return torch.cat(ins, dim=1)  # concat


def build_graph(spec: GraphSpec) -> GraphNet:
    """A fresh network with PyTorch's default initialisation (seed the global RNG first)."""
    return GraphNet(spec)
