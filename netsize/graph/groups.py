"""Growable groups of a GraphSpec: which ops grow together, what their new channels pass
through, and where the ops that read them get new input columns.

Producers are conv (not depthwise) and linear ops: each new unit is one new output channel
(row). Every other op passes channels through one by one: norm, act, pool, gap, dropout,
depthwise conv, flatten (a channel becomes H*W features, channel-major), concat (channels move
by an offset) and add. Conv and linear ops that read the channels are the consumers: they get
new input columns.

An add ties the channels of its inputs position by position, and so does a scale (an image
times a squeeze-excitation gate): the gate's producer grows with the image's channels, and a
gate activation (f(0) = 1/2) may sit on a group's path only where it feeds a scale's gate.
The ties are followed channel by channel (a producer whose output is added to a concat is cut
into segments, one per concatenated part), and every class of tied segments is one group: its
segments all grow by k at their end, together. `coupled` marks groups with an add on the way
(a scale does not couple). A class tied to the network input, to the output op, or reaching the
output without a consumer cannot grow and is left out, as is one whose ties do not line up (an
add of a flattened tensor with one that is not).

Positions are in the old tensor's channel (or feature) dimension. A `Site` is where a group's
entries sit in one tensor: from `offset`, `mult` entries per unit (1 for channels, H*W after a
flatten); new entries go in at offset + units * mult (`Group.insert_at`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from netsize.graph.ops import GATES
from netsize.graph.spec import GraphSpec, Node

Piece = tuple[str, int, int, int]  # (producer, first channel, end channel, entries per channel)
Segment = tuple[str, int]  # (producer, first channel): one run of a producer's output channels
TIES = ("add", "scale")  # ops whose inputs' channels are tied position by position
FIXED = ("", -1)  # the class of everything that cannot grow


@dataclass(frozen=True)
class Site:
    offset: int  # index of the group's first entry in this tensor's channels (or features)
    mult: int = 1  # entries per unit: 1 for channels, H*W after a flatten


Sites = tuple[Site, ...]


@dataclass(frozen=True)
class Group:
    name: str  # the first producer's name (name:i when its output is cut into segments)
    producers: tuple[str, ...]  # topological order
    path: tuple[str, ...]  # pass-through ops the channels go through, topological order
    consumers: tuple[str, ...]  # conv/linear ops reading the channels (new input columns)
    coupled: bool  # an add ties producers together
    units: int  # current number of units (channels of each producer segment)
    step: int  # k must be a multiple of this (group norms grow by whole groups)
    sites: tuple[tuple[str, Sites], ...]  # producer or path op -> where its output holds the group
    columns: tuple[tuple[str, Sites], ...]  # consumer -> where its input holds the group

    def sites_of(self, name: str) -> Sites:
        return dict(self.sites)[name]

    def columns_of(self, consumer: str) -> Sites:
        return dict(self.columns)[consumer]

    def insert_at(self, sites: Sites) -> list[tuple[int, int]]:
        """(position, entries per new unit) of every site: new entries go in before position."""
        return [(s.offset + self.units * s.mult, s.mult) for s in sites]


def is_producer(node: Node) -> bool:
    return node.op == "linear" or (node.op == "conv" and not node.depthwise)


# --------------------------------------------------------------------------------- pieces
def _pieces(spec: GraphSpec, cuts: dict[str, set[int]]) -> dict[str, list[Piece]]:
    """Every op's output as a list of producer segments, in channel (feature) order."""
    def segments(name: str, width: int) -> list[Piece]:
        ends = sorted(cuts.get(name, set()) | {0, width})
        return [(name, a, b, 1) for a, b in zip(ends, ends[1:], strict=False)]

    out = {"input": segments("input", spec.input_shape[0])}
    for node in spec.nodes:
        ins = [out[i] for i in node.inputs]
        if is_producer(node):
            out[node.name] = segments(node.name, node.width)
        elif node.op == "concat":
            out[node.name] = [p for pieces in ins for p in pieces]
        elif node.op == "flatten":
            hw = math.prod(spec.shape(node.inputs[0])[1:])
            out[node.name] = [(p, a, b, m * hw) for p, a, b, m in ins[0]]
        else:  # per-channel ops; an add's inputs are lined up (see _align)
            out[node.name] = ins[0]
    return out


def _bounds(pieces: list[Piece]) -> list[int]:
    """Entry positions where pieces end."""
    ends, pos = [], 0
    for _, a, b, m in pieces:
        pos += (b - a) * m
        ends.append(pos)
    return ends


def _align(inputs: list[list[Piece]]) -> set[tuple[str, int]] | None:
    """Cuts (producer, channel) that line up the pieces of an add's inputs; None when a bound
    falls inside a channel (a flattened tensor added to one that is not)."""
    bounds = set().union(*(_bounds(pieces) for pieces in inputs))
    cuts = set()
    for pieces in inputs:
        pos = 0
        for p, a, b, m in pieces:
            end = pos + (b - a) * m
            for x in bounds:
                if pos < x < end:
                    off, rest = divmod(x - pos, m)
                    if rest:
                        return None
                    cuts.add((p, a + off))
            pos = end
    return cuts


def _cut(spec: GraphSpec) -> tuple[dict[str, list[Piece]], set[str]]:
    """Cut producers until every add's inputs line up; also the adds that cannot line up."""
    cuts: dict[str, set[int]] = {}
    while True:
        pieces, bad, new = _pieces(spec, cuts), set(), set()
        for node in spec.nodes:
            if node.op in TIES:
                found = _align([pieces[i] for i in node.inputs])
                if found is None:
                    bad.add(node.name)
                else:
                    new |= {(p, c) for p, c in found if c not in cuts.get(p, set())}
        if not new:
            return pieces, bad
        for p, c in new:
            cuts.setdefault(p, set()).add(c)


# ------------------------------------------------------------------------------- classes
class _Classes:
    def __init__(self) -> None:
        self.parent: dict[Segment, Segment] = {}

    def find(self, x: Segment) -> Segment:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, x: Segment, y: Segment) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:  # FIXED stays a root, so "tied to FIXED" is find(x) == FIXED
            self.parent[ry if rx == FIXED else rx] = rx if rx == FIXED else ry


def _classes(spec: GraphSpec, pieces: dict[str, list[Piece]], bad: set[str]) -> _Classes:
    classes = _Classes()
    for p, a, _, _ in pieces["input"] + pieces[spec.output]:
        classes.union(FIXED, (p, a))
    for node in spec.nodes:
        if node.op not in TIES:
            continue
        inputs = [pieces[i] for i in node.inputs]
        if node.name in bad or len({len(x) for x in inputs}) > 1:
            for p, a, _, _ in (p for x in inputs for p in x):
                classes.union(FIXED, (p, a))
            continue
        for lined in zip(*inputs, strict=True):
            tie = (lined[0][0], lined[0][1]) if len({m for *_, m in lined}) == 1 else FIXED
            for p, a, _, _ in lined:
                classes.union(tie, (p, a))
    return classes


# -------------------------------------------------------------------------------- groups
def find_groups(spec: GraphSpec) -> list[Group]:
    """Every growable group, ordered by its first producer."""
    pieces, bad = _cut(spec)
    classes = _classes(spec, pieces, bad)
    roots: list[Segment] = []
    for node in spec.nodes:
        if is_producer(node):
            for p, a, _, _ in pieces[node.name]:
                root = classes.find((p, a))
                if root != FIXED and root not in roots:
                    roots.append(root)
    groups = (_group(spec, pieces, classes, root) for root in roots)
    return [g for g in groups if g is not None]


def _sites(pieces: list[Piece], classes: _Classes, root: Segment) -> Sites:
    out, pos = [], 0
    for p, a, b, m in pieces:
        if classes.find((p, a)) == root:
            out.append(Site(pos, m))
        pos += (b - a) * m
    return tuple(out)


def _group(spec: GraphSpec, pieces: dict[str, list[Piece]], classes: _Classes,
           root: Segment) -> Group | None:
    sites: list[tuple[str, Sites]] = []
    columns: list[tuple[str, Sites]] = []
    producers, path = [], []
    for node in spec.nodes:
        here = _sites(pieces[node.name], classes, root)
        if is_producer(node):
            read = _sites(pieces[node.inputs[0]], classes, root)
            if read:
                columns.append((node.name, read))
            if here:
                producers.append(node.name)
        elif here:
            path.append(node.name)
        if here:
            sites.append((node.name, here))
    if not columns or spec.output in path or not _gates_feed_scales(spec, path):
        return None
    first = pieces[producers[0]]
    units, index = next((b - a, i) for i, (p, a, b, _) in enumerate(first)
                        if classes.find((p, a)) == root)
    name = producers[0] if len(first) == 1 else f"{producers[0]}:{index}"
    step = _step(spec, dict(sites), path, units)
    if step is None:
        return None
    coupled = any(spec.node(n).op == "add" for n in path)
    return Group(name, tuple(producers), tuple(path), tuple(c for c, _ in columns), coupled,
                 units, step, tuple(sites), tuple(columns))


def _gates_feed_scales(spec: GraphSpec, path: list[str]) -> bool:
    """Every gate activation on the path is read only as the gate of a scale (its new
    channels, 1/2 at zero fan-in, then multiply the image's new zero channels)."""
    for name in path:
        node = spec.node(name)
        if node.op == "act" and node.kind in GATES and not all(
                r.op == "scale" and r.inputs[1] == name and r.inputs[0] != name
                for r in spec.readers(name)):
            return False
    return True


def _step(spec: GraphSpec, sites: dict[str, Sites], path: list[str], units: int) -> int | None:
    """Smallest k that adds whole groups to every group norm on the path; None when new
    entries would land inside an existing group."""
    step = 1
    for name in path:
        node = spec.node(name)
        if node.op != "norm" or node.kind != "group":
            continue
        per_group = spec.shape(name)[0] // node.groups
        for site in sites[name]:
            if (site.offset + units * site.mult) % per_group:
                return None
            step = math.lcm(step, per_group // math.gcd(per_group, site.mult))
    return step


# ------------------------------------------------------------------------------- helpers
def resize(spec: GraphSpec, group: Group, units: int) -> GraphSpec:
    """The spec with the group at `units` units per segment (no check of group-norm steps)."""
    delta = units - group.units
    nodes = []
    for node in spec.nodes:
        if node.name in group.producers:
            node = replace(node, width=node.width + delta * len(group.sites_of(node.name)))
        elif node.name in group.path and node.op in ("norm", "conv"):
            node = _resize_per_channel(spec, node, delta * sum(
                s.mult for s in group.sites_of(node.name)))
        nodes.append(node)
    return replace(spec, nodes=tuple(nodes))


def _resize_per_channel(spec: GraphSpec, node: Node, added: int) -> Node:
    old = spec.shape(node.name)[0]
    if node.op == "norm" and node.kind == "group":
        per_group = old // node.groups
        if added % per_group:
            raise ValueError(f"{node.name}: group norm grows by whole groups of {per_group}")
        return replace(node, groups=node.groups + added // per_group)
    if node.op == "conv" and node.width == old:  # depthwise: width = channels when given
        return replace(node, width=old + added)
    return node


def width_params(spec: GraphSpec, group: Group, k: int) -> int:
    """Parameters that k new units add (from the shapes alone)."""
    return resize(spec, group, group.units + k).params() - spec.params()


def describe(group: Group) -> str:
    """One line: what grows and where the new columns go."""
    def where(sites: Sites) -> str:
        return "+".join(f"{p}" if m == 1 else f"{p} (x{m})" for p, m in group.insert_at(sites))

    cols = ", ".join(f"{c} at {where(s)}" for c, s in group.columns)
    kind = "coupled, " if group.coupled else ""
    step = f", k in steps of {group.step}" if group.step > 1 else ""
    return (f"{group.name} ({kind}{group.units} units{step}): grows "
            f"{', '.join(group.producers)}; new columns in {cols}")
