"""Build an nn.Module from a GraphSpec: each op's module and forward come from the op table."""

from __future__ import annotations

import torch
from torch import nn

from netsize.graph.ops import OPS
from netsize.graph.spec import GraphSpec, Node


def make_module(spec: GraphSpec, node: Node) -> nn.Module | None:
    return OPS[node.op].module(node, [spec.shape(i) for i in node.inputs])


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {"input": x.flatten(1) if len(self.spec.input_shape) == 1 else x}
        for node in self.spec.nodes:
            values[node.name] = self._run(node, [values[i] for i in node.inputs])
        return values[self.spec.output]

    def _run(self, node: Node, ins: list[torch.Tensor]) -> torch.Tensor:
        module = self.ops[node.name] if node.name in self.ops else None
        return OPS[node.op].run(node, ins, module)


def build_graph(spec: GraphSpec) -> GraphNet:
    """A fresh network with PyTorch's default initialisation (seed the global RNG first)."""
    return GraphNet(spec)
