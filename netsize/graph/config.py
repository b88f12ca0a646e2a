"""Recipe sections for the graph vocabulary: the named presets and a free list of ops."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from netsize.config import MAX_LAYERS, MAX_WIDTH, Strict
from netsize.graph import presets
from netsize.graph.check import parse_node
from netsize.graph.spec import GraphSpec, Shape

Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Act = Literal["relu", "leaky_relu", "gelu", "silu", "tanh"]
Norm = Literal["none", "batch", "group"]
Multiplier = Annotated[float, Field(gt=0.0, le=64.0)]


class SecnnConfig(Strict):
    """SECNN's start network: three conv blocks, a concatenation skip, a flatten head."""

    kind: Literal["secnn"]
    width: Width = 16
    size_key: ClassVar[str] = "model.width"

    def scaled(self, factor: float) -> dict[str, Any]:
        return {self.size_key: max(1, round(self.width * factor))}

    def graph(self, shape: Shape, n_out: int) -> GraphSpec:
        return presets.secnn(shape, n_out, self.width)


class WrnConfig(Strict):
    """WRN-depth-widen, pre-activation blocks; width_multiplier scales the block widths."""

    kind: Literal["wrn"]
    depth: int = Field(28, ge=10, le=400)
    widen: int = Field(1, ge=1, le=64)
    width_multiplier: Multiplier = 1.0
    activation: Act = "relu"
    norm: Norm = "batch"
    size_key: ClassVar[str] = "model.width_multiplier"

    def scaled(self, factor: float) -> dict[str, Any]:
        return {self.size_key: self.width_multiplier * factor}

    @model_validator(mode="after")
    def _depth(self) -> WrnConfig:
        if (self.depth - 4) % 6:
            raise ValueError("depth must be 6n + 4 (10, 16, 22, 28, 40, ...)")
        return self

    def graph(self, shape: Shape, n_out: int) -> GraphSpec:
        return presets.wrn(shape, n_out, self.depth, self.widen, self.width_multiplier,
                           self.activation, self.norm)


class ResnetConfig(Strict):
    """CIFAR-style ResNet: blocks per stage and stage widths; basic or bottleneck blocks."""

    kind: Literal["resnet"]
    blocks: list[Annotated[int, Field(ge=1, le=MAX_LAYERS)]] = Field([3, 3, 3], min_length=1,
                                                                     max_length=16)
    widths: list[Width] = Field([16, 32, 64], min_length=1, max_length=16)
    bottleneck: bool = False
    activation: Act = "relu"
    norm: Norm = "batch"
    size_key: ClassVar[str] = "model.widths"

    def scaled(self, factor: float) -> dict[str, Any]:
        return {self.size_key: [max(1, round(w * factor)) for w in self.widths]}

    @model_validator(mode="after")
    def _same_length(self) -> ResnetConfig:
        if len(self.blocks) != len(self.widths):
            raise ValueError("blocks and widths need one entry per stage each")
        return self

    def graph(self, shape: Shape, n_out: int) -> GraphSpec:
        return presets.resnet(shape, n_out, self.blocks, self.widths, self.bottleneck,
                              self.activation, self.norm)


class VggConfig(Strict):
    kind: Literal["vgg"]
    variant: Literal[11, 16] = 11
    width_multiplier: Multiplier = 1.0
    hidden: list[Width] = Field([], max_length=8)  # linear layers before the output layer
    size_key: ClassVar[str] = "model.width_multiplier"

    def scaled(self, factor: float) -> dict[str, Any]:
        return {self.size_key: self.width_multiplier * factor,
                "model.hidden": [max(1, round(w * factor)) for w in self.hidden]}

    def graph(self, shape: Shape, n_out: int) -> GraphSpec:
        return presets.vgg(shape, n_out, self.variant, self.width_multiplier, self.hidden)


class GraphConfig(Strict):
    """Any network as a list of ops (see netsize/graph/spec.py); the last op is the output
    layer, whose width is the data's number of outputs (write 0 or leave it out)."""

    kind: Literal["graph"]
    nodes: list[dict[str, Any]] = Field(min_length=1, max_length=4 * MAX_LAYERS)
    size_key: ClassVar[str] = "model.nodes"

    def scaled(self, factor: float) -> dict[str, Any]:
        """Every conv and linear op but the last (the output layer) scaled."""
        nodes = [dict(n) for n in self.nodes]
        for node in nodes[:-1]:
            if node.get("op") in ("conv", "linear") and not node.get("depthwise"):
                node["width"] = max(1, round(node.get("width", 1) * factor))
        return {self.size_key: nodes}

    def graph(self, shape: Shape, n_out: int) -> GraphSpec:
        nodes = [parse_node(raw, f"model.nodes[{i}]") for i, raw in enumerate(self.nodes)]
        if nodes[-1].op == "linear" and nodes[-1].width == 0:
            nodes[-1] = replace(nodes[-1], width=n_out)
        return GraphSpec(tuple(shape), n_out, tuple(nodes))


GRAPH_CONFIGS = (SecnnConfig, WrnConfig, ResnetConfig, VggConfig, GraphConfig)
