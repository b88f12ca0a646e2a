"""The one place that knows the two network descriptions: netsize's layer-list `NetSpec` (MLP and
stage CNN, grown by the layer surgery) and the op-graph `GraphSpec` (every architecture of the
graph vocabulary). Everything else builds, reads and describes networks through here."""

from __future__ import annotations

from typing import Any

from torch import nn

from netsize.graph.build import build_graph
from netsize.graph.check import parse_graph
from netsize.graph.spec import GraphSpec
from netsize.model import build
from netsize.spec import NetSpec

AnySpec = NetSpec | GraphSpec


def build_network(spec: AnySpec) -> nn.Module:
    """A fresh network with PyTorch's default initialisation (seed the global RNG first)."""
    return build_graph(spec) if isinstance(spec, GraphSpec) else build(spec)


def spec_from_json(raw: Any, key: str = "spec") -> AnySpec:
    """A checkpoint's network description, validated field by field (ValueError naming the
    key on anything wrong)."""
    if isinstance(raw, dict) and raw.get("kind") == "graph":
        return parse_graph(raw, key)
    return NetSpec.from_dict(raw)
