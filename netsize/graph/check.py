"""Strict reading of graph specs from recipes and checkpoints: every field of every op is
checked for type and range before anything is built (messages name keys, never file values)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeGuard

from netsize.config import MAX_LAYERS, MAX_PARAMS, MAX_WIDTH
from netsize.graph.ops import OPS as OPS_TABLE
from netsize.graph.spec import GraphSpec, Node

MAX_SIDE = 4096
_INTS = {"width": (0, MAX_WIDTH), "kernel": (1, 15), "stride": (0, 16), "padding": (0, 16),
         "groups": (1, MAX_WIDTH)}


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_node(raw: Any, key: str) -> Node:
    names = [f.name for f in fields(Node)]
    if not isinstance(raw, dict) or any(k not in names for k in raw):
        raise ValueError(f"{key}: an op is an object with the keys {', '.join(names)}")
    if not isinstance(raw.get("name"), str) or raw.get("op") not in OPS_TABLE:
        raise ValueError(f"{key}: needs a name and an op from {', '.join(OPS_TABLE)}")
    inputs = raw.get("inputs", [])
    if not isinstance(inputs, list | tuple) or not all(isinstance(i, str) for i in inputs):
        raise ValueError(f"{key}.inputs: must be a list of op names")
    for name, (low, high) in _INTS.items():
        if name in raw and (not _is_int(raw[name]) or not low <= raw[name] <= high):
            raise ValueError(f"{key}.{name}: must be an integer from {low} to {high}")
    for name in ("bias", "depthwise"):
        if name in raw and not isinstance(raw[name], bool):
            raise ValueError(f"{key}.{name}: must be true or false")
    for name, (least, most) in {"slope": (0.0, 1.0), "p": (0.0, 0.99), "eps": (1e-12, 1.0),
                                "momentum": (0.0, 1.0)}.items():
        value: Any = raw.get(name, least)
        if not isinstance(value, int | float) or isinstance(value, bool) \
                or not least <= value <= most:
            raise ValueError(f"{key}.{name}: must be a number from {least} to {most}")
    allowed = OPS_TABLE[raw["op"]].kinds
    if allowed and raw.get("kind") not in allowed:
        raise ValueError(f"{key}.kind: a {raw['op']} op needs kind {' | '.join(allowed)}")
    return Node(**{**raw, "inputs": tuple(inputs)})


def parse_graph(raw: Any, key: str = "spec") -> GraphSpec:
    """A GraphSpec from its JSON form; ValueError with the dotted key on anything wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"{key}: must be an object")
    shape, n_out, nodes = raw.get("input_shape"), raw.get("n_outputs"), raw.get("nodes")
    if not isinstance(shape, list) or len(shape) not in (1, 3) or not all(
            _is_int(s) and 1 <= s <= (MAX_WIDTH if i == 0 else MAX_SIDE)
            for i, s in enumerate(shape)):
        raise ValueError(f"{key}.input_shape: must be [features] or [channels, height, width]")
    if not _is_int(n_out) or not 1 <= n_out <= MAX_WIDTH:
        raise ValueError(f"{key}.n_outputs: must be an integer from 1 to {MAX_WIDTH}")
    if not isinstance(nodes, list) or not 1 <= len(nodes) <= 4 * MAX_LAYERS:
        raise ValueError(f"{key}.nodes: must be a list of 1 to {4 * MAX_LAYERS} ops")
    parsed = tuple(parse_node(n, f"{key}.nodes[{i}]") for i, n in enumerate(nodes))
    spec = GraphSpec(tuple(shape), n_out, parsed)  # shape inference checks the wiring
    if spec.params() > MAX_PARAMS:
        raise ValueError(f"{key}: more than {MAX_PARAMS:,} parameters")
    return spec
