"""Growth decisions and moves for graph networks (when the recipe says senn or schedule).

A width candidate adds `increment` units to one growable group (every producer of a coupled
group together); a depth candidate inserts a zero-initialised residual branch after an
activation or a residual sum. Each candidate is scored on the very network growth would build
(the same fan-out, the same random draw, the GradMax matrix from the score batch), so the gain
reported is eta(grown) - eta(now); the winner's network is the one applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn

from netsize.graph import scores
from netsize.graph.build import GraphNet
from netsize.graph.gradmax_closed import applies, fanin_grads, group_capture
from netsize.graph.groups import Group, find_groups, width_params
from netsize.graph.ops import GATES
from netsize.graph.per_example import Capture
from netsize.graph.spec import GraphSpec, node_params
from netsize.graph.surgery import deepen, widen
from netsize.surgery import IndexMap

Built = tuple[GraphSpec, GraphNet, IndexMap]


@dataclass(frozen=True)
class GraphCandidate:
    kind: Literal["width", "depth"]
    target: str  # the group widened, or the op after which a residual branch is inserted
    units: int  # units added (width) or channels of the branch (depth)
    added_params: int
    seed: int  # the draw the candidate is scored and applied with


@dataclass
class GraphDecision:
    chosen: GraphCandidate | None
    eta: float
    threshold: float
    scored: list[dict[str, Any]] = field(default_factory=list)
    built: Built | None = None  # the chosen candidate's network, ready to use


def _producers(spec: GraphSpec) -> list[str]:
    return [n.name for n in spec.nodes if n.op in ("conv", "linear") and not n.depthwise
            and n.name != spec.output]


def candidates(spec: GraphSpec, cfg: Any, params_now: int, seed: int) -> list[GraphCandidate]:
    out: list[GraphCandidate] = []
    if "width" in cfg.candidates:
        for group in growable(spec, cfg):
            k = math.ceil(cfg.increment / group.step) * group.step
            widest = max(spec.node(p).width for p in group.producers)
            added = width_params(spec, group, k)
            if widest + k <= cfg.max_width and params_now + added <= cfg.max_params:
                out.append(GraphCandidate("width", group.name, k, added, seed + len(out)))
    if "depth" in cfg.candidates and len(_producers(spec)) < cfg.max_layers:
        block = depth_kind(cfg) == "block"
        for name in stage_points(spec) if block else _depth_points(spec):
            added = _branch_params(spec, name, block)
            if params_now + added <= cfg.max_params:
                out.append(GraphCandidate("depth", name, spec.shape(name)[0], added,
                                          seed + len(out)))
    return out


def depth_kind(cfg: Any) -> str:
    """deepen's kind: block (a basic residual block) or residual (one op); auto is residual
    here (the trainer makes it block for timm / torchvision models)."""
    return "block" if getattr(cfg, "depth_kind", "auto") == "block" else "residual"


def _depth_points(spec: GraphSpec) -> list[str]:
    """Every activation (gates excepted) and residual sum before the output."""
    return [n.name for n in spec.nodes if n.name != spec.output and (
        n.op == "add" or (n.op == "act" and n.kind not in GATES))]


def stage_points(spec: GraphSpec) -> list[str]:
    """Where a residual block may go into a stage: after each residual block's output (its
    sum, or the activation reading the sum); without residual sums, every activation."""
    adds = {n.name for n in spec.nodes if n.op == "add"}
    if not adds:
        return _depth_points(spec)
    points = []
    for node in spec.nodes:
        readers = spec.readers(node.name)
        after_sum = node.op == "act" and node.kind not in GATES and node.inputs[0] in adds
        bare_sum = node.op == "add" and not (len(readers) == 1 and readers[0].op == "act")
        if (after_sum or bare_sum) and node.name != spec.output:
            points.append(node.name)
    return points


def _branch_params(spec: GraphSpec, after: str, block: bool = False) -> int:
    shape = spec.shape(after)
    c = shape[0]
    weights = c * c * (9 if len(shape) == 3 else 1)
    has_norm = any(n.op == "norm" for n in spec.nodes)
    return (2 if block else 1) * (weights + (2 * c if has_norm else 0))


def growable(spec: GraphSpec, cfg: Any) -> list[Group]:
    """The groups growth may widen: coupled ones (residual streams) only with grow.coupled."""
    return [g for g in find_groups(spec) if cfg.coupled or not g.coupled]


def group_named(spec: GraphSpec, name: str) -> Group:
    return next(g for g in find_groups(spec) if g.name == name)


# ------------------------------------------------------------------------------ building
def build(net: GraphNet, cand: GraphCandidate, cfg: Any,
          batch: tuple[torch.Tensor, torch.Tensor, str]) -> Built:
    """The network this candidate grows into: deterministic in (net, cand, batch)."""
    gen = torch.Generator().manual_seed(cand.seed)
    if cand.kind == "depth":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cand.seed)
            return deepen(net, cand.target, depth_kind(cfg))
    group = group_named(net.spec, cand.target)
    return grow_width(net, group, cand.units, cfg.init, cfg.fanout_scale, batch, gen)


def grow_width(net: GraphNet, group: Group, k: int, init: str, fanout_scale: float,
               batch: tuple[torch.Tensor, torch.Tensor, str], gen: torch.Generator) -> Built:
    """Widen `group` by k units started by init: gradmax (zero fan-in, fan-out from M's top
    singular vectors), random (zero fan-in, random fan-out of the same norm) or zero_out
    (random fan-in, zero fan-out). Fan-out columns get fanout_scale x the mean norm of the
    existing units' fan-out."""
    if init == "zero_out":
        return widen(net, group, k, {}, _random_fan_in(net, group, k, gen))
    probe, u = fan_out(net, group, k, init, fanout_scale, batch, gen)
    return _grown(probe, u)


def _grown(probe: scores.FanOutProbe, u: torch.Tensor) -> Built:
    grown, index_map = probe.grown_with(u)
    return cast(GraphNet, grown).spec, cast(GraphNet, grown), index_map


def fan_out(net: GraphNet, group: Group, k: int, init: str, fanout_scale: float,
            batch: tuple[torch.Tensor, torch.Tensor, str], gen: torch.Generator,
            cap: Capture | None = None) -> tuple[scores.FanOutProbe, torch.Tensor]:
    """The zero-fan-in probe and the scaled fan-out U (D_out, k) of gradmax or random. M of a
    plain group comes from the capture of `net` (the check's, else one pass here), so a
    check and a rebuild grow the very same network."""
    _, probe_net, index_map = widen(net, group, k, {})
    x, y, task = batch
    probe = scores.FanOutProbe(probe_net, group, k, index_map, x, y, task)
    if init == "gradmax":
        if cap is None and applies(probe):
            cap = group_capture(net, group, x, y, task)
        u = scores.gradmax_fanout(probe, k, gen, cap=cap)
    else:
        u = torch.randn(probe.dim(), k, generator=gen, dtype=x.dtype).to(x.device)
    u = scores.scale_columns(u, fanout_scale * existing_fanout_norm(net, group))
    return probe, u.to(x.dtype)


def existing_fanout_norm(net: nn.Module, group: Group) -> float:
    """Mean over the group's units of the norm of each unit's fan-out (all consumers)."""
    total = torch.zeros(group.units, dtype=torch.float64)
    for consumer in group.consumers:
        w = _weight(net, consumer).detach().double().cpu()
        taps = w[0, 0].numel() if w.dim() > 2 else 1
        for site in group.columns_of(consumer):
            cols = w[:, site.offset : site.offset + group.units * site.mult]
            per_unit = cols.reshape(w.shape[0], group.units, site.mult * taps)
            total += per_unit.pow(2).sum(dim=(0, 2))
    return float(total.sqrt().mean())


def _weight(net: nn.Module, op: str) -> torch.Tensor:
    return cast(torch.Tensor, net.get_submodule(f"ops.{op}").weight)


def _random_fan_in(net: GraphNet, group: Group, k: int,
                   gen: torch.Generator) -> dict[str, torch.Tensor]:
    """PyTorch's default scale, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for every producer."""
    out = {}
    for name in group.producers:
        w = _weight(net, name)
        rows = k * len(group.sites_of(name))
        bound = 1.0 / math.sqrt(w[0].numel())
        draw = torch.rand((rows, *w.shape[1:]), generator=gen, dtype=torch.float64)
        out[name] = ((draw * 2 - 1) * bound).to(w)
    return out


# ------------------------------------------------------------------------------ deciding
def senn_check(net: GraphNet, batch: tuple[torch.Tensor, torch.Tensor, str], cfg: Any,
               params_now: int, seed: int) -> GraphDecision:
    """Score every candidate; the best passes if (eta + gain) e^{-lambda dp^2} / eta > tau and
    gain / mean |dL/dy|^2 > alpha. Every score and the reason of every rejection is kept."""
    x, y, task = batch
    cap = scores.check_capture(net, x, y, task)  # one pass serves the whole check
    if cap is None:  # a module needs torch.func
        eta = scores.eta(net, x, y, task, cfg.damping)
        yardstick = scores.output_grad_norm(net, x, y, task)
    else:
        eta = scores.eta_from(net, cap, cfg.damping)
        yardstick = float(cap.out_grad.pow(2).sum(1).mean())
    yardstick = max(yardstick, 1e-12)
    best: tuple[float, GraphCandidate, Built] | None = None
    scored = []
    for cand in candidates(net.spec, cfg, params_now, seed):
        built, gain = _scored(net, cand, cfg, batch, cap)
        penalty = math.exp(-cfg.lambda_n * cand.added_params**2)
        ratio = (eta + gain) * penalty / max(eta, 1e-12)
        passes = ratio > cfg.tau and gain / yardstick > cfg.alpha
        scored.append({"kind": cand.kind, "target": cand.target, "units": cand.units,
                       "gain": gain, "ratio": ratio, "added_params": cand.added_params,
                       "passes": passes})
        if passes and (best is None or ratio > best[0]):
            best = (ratio, cand, built)
    if best is None:
        return GraphDecision(None, eta, cfg.tau, scored)
    return GraphDecision(best[1], eta, cfg.tau, scored, best[2])


def _scored(net: GraphNet, cand: GraphCandidate, cfg: Any,
            batch: tuple[torch.Tensor, torch.Tensor, str],
            cap: Capture | None) -> tuple[Built, float]:
    """The candidate's network (as build makes it) and its gain: in closed form from the
    check's capture for a zero-fan-in width candidate of a plain group, else from a pass over
    the grown network."""
    x, y, task = batch
    if cand.kind == "width" and cfg.init != "zero_out" and cap is not None:
        group = group_named(net.spec, cand.target)
        gen = torch.Generator().manual_seed(cand.seed)
        probe, u = fan_out(net, group, cand.units, cfg.init, cfg.fanout_scale, batch, gen, cap)
        grads = fanin_grads(probe, u, cap)
        built = _grown(probe, u)
        if grads is not None:
            return built, scores.natural_score(grads, cfg.damping)
    else:
        built = build(net, cand, cfg, batch)
    return built, scores.gain(built[1], built[2], x, y, task, cfg.damping)


def schedule_changes(net: GraphNet, initial: dict[str, int], cfg: Any,
                     params_now: int, seed: int) -> list[GraphCandidate]:
    """GradMax's schedule: every group grows by amount x its initial units (within caps)."""
    out: list[GraphCandidate] = []
    spec = net.spec
    for group in growable(spec, cfg):
        start = initial.get(group.name, group.units)
        widest = max(spec.node(p).width for p in group.producers)
        k = min(max(1, math.ceil(cfg.schedule.amount * start)), cfg.max_width - widest)
        k = k // group.step * group.step  # the last units up to grow.max_width, whole groups
        if k < 1:
            continue
        added = width_params(spec, group, k)
        if params_now + added <= cfg.max_params:
            out.append(GraphCandidate("width", group.name, k, added, seed + len(out)))
            params_now += added
    return out


__all__ = ["GraphCandidate", "GraphDecision", "build", "candidates", "node_params",
           "schedule_changes", "senn_check"]
