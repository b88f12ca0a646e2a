"""Where networks come from: every network netsize builds, trains, grows and prunes is a graph
network (`GraphSpec`, netsize.graph), built here and grown through `GraphMoves`. The layer-list
`NetSpec` of netsize 0.1 survives only in old checkpoints: `spec_from_json` reads either
description and `layer_list_as_graph` turns a layer-list one into the same graph (netsize.io
loads it so)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from netsize.graph import grow as graph_grow
from netsize.graph.build import GraphNet, build_graph
from netsize.graph.check import parse_graph
from netsize.graph.groups import find_groups
from netsize.graph.scores import fanin_grad_norm
from netsize.graph.spec import GraphSpec, Node
from netsize.spec import NetSpec
from netsize.surgery import IndexMap

# what a checkpoint's spec.json may describe: a graph, or a layer-list network of netsize 0.1
AnySpec = NetSpec | GraphSpec
Batch = tuple[torch.Tensor, torch.Tensor, str]


def build_network(spec: GraphSpec) -> GraphNet:
    """A fresh network with PyTorch's default initialisation (seed the global RNG first)."""
    return build_graph(spec)


def spec_from_json(raw: Any, key: str = "spec") -> AnySpec:
    """A checkpoint's network description, validated field by field (ValueError naming the
    key on anything wrong)."""
    if isinstance(raw, dict) and raw.get("kind") == "graph":
        return parse_graph(raw, key)
    return NetSpec.from_dict(raw)


# ------------------------------------------------------------------------------ growth moves
class GraphMoves:
    """Growth of netsize's networks (every architecture is a graph): netsize.graph.grow."""

    @staticmethod
    def initial(net: Any) -> dict[str, int]:
        return {g.name: g.units for g in find_groups(net.spec)}

    @staticmethod
    def seed(generator: torch.Generator) -> int:
        return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))

    @staticmethod
    def senn(net: Any, batch: Batch, cfg: Any, params: int, seed: int) -> Any:
        return graph_grow.senn_check(net, batch, cfg, params, seed)

    @staticmethod
    def schedule(net: Any, initial: dict[str, int], cfg: Any, params: int,
                 seed: int) -> list[Any]:
        return graph_grow.schedule_changes(net, initial, cfg, params, seed)

    @staticmethod
    def apply(net: Any, move: Any, cfg: Any, batch: Batch,
              generator: torch.Generator) -> tuple[nn.Module, IndexMap, dict[str, Any]]:
        cand = getattr(move, "chosen", move)
        built = getattr(move, "built", None) or graph_grow.build(net, cand, cfg, batch)
        depth = "residual block" if graph_grow.depth_kind(cfg) == "block" else "residual"
        record: dict[str, Any] = {"kind": cand.kind, "layer": cand.target, "units": cand.units,
                                  "init": cfg.init if cand.kind == "width" else depth}
        if cand.kind == "width":  # the new fan-in's gradient on the score batch (GradMax's aim)
            producers = graph_grow.group_named(net.spec, cand.target).producers
            record["fanin_grad_norm"] = fanin_grad_norm(built[1], list(producers), built[2],
                                                        *batch)
        return built[1], built[2], {**record, **_scores(move, cand.kind, cand.target)}


def _scores(move: Any, kind: str, target: str) -> dict[str, Any]:
    """eta, threshold, the chosen candidate's ratio and gain, and every score of a senn check."""
    if not hasattr(move, "scored"):
        return {}
    mine = [s for s in move.scored if s["kind"] == kind and s["target"] == target]
    return {"eta": move.eta, "threshold": move.threshold,
            "ratio": mine[0]["ratio"] if mine else None,
            "gain": mine[0]["gain"] if mine else None, "scores": move.scored}


def moves_for(net: nn.Module) -> GraphMoves:
    """The growth moves of a network: one growth core, whatever the architecture."""
    return GraphMoves()


# -------------------------------------------------------------------- layer-list checkpoints
def layer_list_as_graph(spec: NetSpec) -> tuple[GraphSpec, dict[str, str]]:
    """A layer-list spec (checkpoints of netsize 0.1) as the same network in the graph
    vocabulary, and {old tensor name: new tensor name} for its state_dict."""
    nodes: list[Node] = []
    names: dict[str, str] = {}
    x = "input"
    for i, layer in enumerate(spec.layers):
        op, h = ("linear", "fc") if spec.kind == "mlp" else ("conv", "conv")
        k = 1 if spec.kind == "mlp" else spec.kernel_size
        nodes.append(Node(f"{h}{i}", op, (x,), width=layer.width, kernel=k, padding=k // 2))
        names.update({f"hidden.{i}.op.{t}": f"ops.{h}{i}.{t}" for t in ("weight", "bias")})
        x = f"{h}{i}"
        if layer.norm:
            nodes.append(Node(f"bn{i}", "norm", (x,), kind="batch"))
            names.update({f"hidden.{i}.norm.{t}": f"ops.bn{i}.{t}" for t in (
                "weight", "bias", "running_mean", "running_var", "num_batches_tracked")})
            x = f"bn{i}"
        nodes.append(Node(f"act{i}", "act", (x,), kind=spec.activation))
        x = f"act{i}"
        if spec.kind == "mlp" and layer.dropout and spec.dropout > 0:
            nodes.append(Node(f"drop{i}", "dropout", (x,), p=spec.dropout))
            x = f"drop{i}"
        route = spec.route_after(i)
        if route != "direct":
            pool = Node("gap", "gap", (x,)) if route == "avgpool" else \
                Node(f"pool{i}", "pool", (x,), kind="max", kernel=2, stride=2)
            nodes.append(pool)
            x = pool.name
    nodes.append(Node("head", "linear", (x,), width=spec.n_outputs))
    names.update({f"head.{t}": f"ops.head.{t}" for t in ("weight", "bias")})
    return GraphSpec(spec.input_shape, spec.n_outputs, tuple(nodes)), names
