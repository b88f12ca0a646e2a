"""Growth decisions (when and where) and their application (how new units start).

`senn_check` scores every candidate expansion with the natural expansion score and picks one;
`schedule_due` implements GradMax's fixed schedule; `expand` applies an expansion with the chosen
initialiser (gradmax, random, zero_out). All return new objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from pydantic import Field

from netsize import scores
from netsize.config import MAX_BATCH, MAX_LAYERS, MAX_PARAMS, MAX_STEPS, MAX_WIDTH, Strict
from netsize.graph import scores as graph_scores
from netsize.model import Net
from netsize.spec import NetSpec
from netsize.surgery import IndexMap, deepen, widen


class ScheduleConfig(Strict):
    """GradMax's fixed schedule: widen every hidden layer at steps start, start+every, ..."""

    start: int = Field(10_000, ge=0, le=MAX_STEPS)
    every: int = Field(2_500, ge=1, le=MAX_STEPS)
    times: int = Field(12, ge=1, le=MAX_LAYERS)
    # fraction of each layer's initial width added each time, at least 1 unit
    amount: float = Field(0.25, gt=0.0, le=64.0)


class GrowConfig(Strict):
    trigger: Literal["none", "senn", "schedule"] = "senn"
    init: Literal["gradmax", "random", "zero_out"] = "gradmax"
    candidates: list[Literal["width", "depth"]] = ["width", "depth"]
    tau: float = Field(2.0, ge=1.0, le=1e12)  # accept if eta_expanded / eta_current > tau
    # absolute gain threshold (SENN), relative to |dL/dy|^2
    alpha: float = Field(0.0, ge=0.0, le=1e12)
    lambda_n: float = Field(0.0, ge=0.0, le=1e12)  # size penalty exp(-lambda_n * added_params^2)
    damping: float = Field(1e-3, gt=0.0, le=1e12)  # added to the diagonal Fisher
    check_every: int = Field(50, ge=1, le=MAX_STEPS)  # steps between checks
    cooldown: int = Field(100, ge=0, le=MAX_STEPS)  # steps without checks after an expansion
    increment: int = Field(4, ge=1, le=MAX_WIDTH)  # units added by one width expansion
    fanout_scale: float = Field(0.5, gt=0.0, le=1e3)  # new fan-out column norm / mean existing norm
    score_batch: int = Field(256, ge=2, le=MAX_BATCH)  # training examples used per check
    max_width: int = Field(256, ge=1, le=MAX_WIDTH)
    max_layers: int = Field(8, ge=1, le=MAX_LAYERS)  # hidden layers in total (all stages for a CNN)
    max_params: int = Field(10_000_000, ge=1, le=MAX_PARAMS)
    max_events: int = Field(50, ge=0, le=MAX_STEPS)  # senn only: a schedule makes all its steps
    schedule: ScheduleConfig = ScheduleConfig()
    # graph networks: also grow channels tied by residual additions (a stage's residual
    # stream, every producer of the sum together); off: only free groups (block inner widths)
    coupled: bool = False


@dataclass(frozen=True)
class Candidate:
    kind: Literal["width", "depth"]
    layer: int  # layer widened, or layer after which the new one is inserted
    units: int  # units added (width) or width of the inserted layer (depth)
    added_params: int
    seed: int | None = None  # the random draw the candidate is scored and applied with


@dataclass
class Decision:
    """Outcome of one check: the chosen candidate (or None) and every score seen."""

    chosen: Candidate | None
    eta: float
    threshold: float
    scored: list[dict[str, Any]] = field(default_factory=list)


def _fanout_taps(spec: NetSpec, layer: int) -> int:
    last = layer == len(spec.layers) - 1
    return 1 if spec.kind == "mlp" or last else spec.kernel_size**2


def width_params(spec: NetSpec, layer: int, k: int) -> int:
    taps_in = 1 if spec.kind == "mlp" else spec.kernel_size**2
    last = layer == len(spec.layers) - 1
    d_next = spec.n_outputs if last else spec.layers[layer + 1].width
    per_unit = spec.in_width(layer) * taps_in + 1 + d_next * _fanout_taps(spec, layer)
    return k * (per_unit + (2 if spec.layers[layer].norm else 0))


def depth_params(spec: NetSpec, after: int) -> int:
    width = spec.layers[after].width
    taps = 1 if spec.kind == "mlp" else spec.kernel_size**2
    return width * (width * taps + 1)


def candidates(spec: NetSpec, cfg: GrowConfig, params_now: int,
               seed: int = 0) -> list[Candidate]:
    out: list[Candidate] = []
    for i, layer in enumerate(spec.layers):
        if "width" in cfg.candidates and layer.width + cfg.increment <= cfg.max_width:
            added = width_params(spec, i, cfg.increment)
            if params_now + added <= cfg.max_params:
                out.append(Candidate("width", i, cfg.increment, added, seed + len(out)))
        if "depth" in cfg.candidates and len(spec.layers) < cfg.max_layers:
            added = depth_params(spec, i)
            if params_now + added <= cfg.max_params:
                out.append(Candidate("depth", i, layer.width, added, seed + len(out)))
    return out


def senn_check(net: Net, x: torch.Tensor, y: torch.Tensor, task: str, cfg: GrowConfig,
               params_now: int, seed: int = 0) -> Decision:
    """Score every candidate; accept the best if eta_e / eta > tau and its gain passes alpha.

    A width candidate is scored with the fan-out (and for random inits the very draw) that
    `expand` then applies, and its GradMax matrix from this score batch, so its gain is
    eta(grown) - eta(now)."""
    p = scores.probe(net, x, y, task)
    eta = scores.current_score(net, p, cfg.damping)
    yardstick = max(scores.output_grad_norm(p), 1e-12)
    best: tuple[float, Candidate] | None = None
    scored = []
    for cand in candidates(net.spec, cfg, params_now, seed):
        if cand.kind == "width" and cfg.init == "zero_out":  # random fan-in: score the net
            _, grown, index_map = expand(net, cand, cfg, (x, y, task), torch.Generator())
            gain = graph_scores.gain(grown, index_map, x, y, task, cfg.damping)
        elif cand.kind == "width":
            m_n = scores.fanin_gradient_matrices(net, p, cand.layer)
            omega = width_fanout(net, cand.layer, cand.units, cfg.init, cfg.fanout_scale,
                                 m_n.mean(0), torch.Generator().manual_seed(cand.seed))
            gain = scores.width_gain(net, cand.layer, m_n, omega.to(m_n), cfg.damping)
        else:
            gain = scores.depth_gain(net, p, cand.layer, cfg.damping)
        penalty = math.exp(-cfg.lambda_n * cand.added_params**2)
        ratio = (eta + gain) * penalty / max(eta, 1e-12)
        passes = ratio > cfg.tau and gain / yardstick > cfg.alpha
        scored.append({"kind": cand.kind, "layer": cand.layer, "gain": gain, "ratio": ratio,
                       "added_params": cand.added_params, "passes": passes})
        if passes and (best is None or ratio > best[0]):
            best = (ratio, cand)
    return Decision(best[1] if best else None, eta, cfg.tau, scored)


def schedule_due(step: int, cfg: GrowConfig) -> bool:
    s = cfg.schedule
    if step < s.start or (step - s.start) % s.every != 0:
        return False
    return (step - s.start) // s.every < s.times


def schedule_units(initial_width: int, cfg: GrowConfig) -> int:
    return max(1, math.ceil(cfg.schedule.amount * initial_width))


def schedule_candidates(spec: NetSpec, initial_widths: list[int], cfg: GrowConfig,
                        params_now: int) -> list[Candidate]:
    """One scheduled growth: widen each layer by its share of its initial width, within
    grow.max_width (the last units up to it) and grow.max_params (a layer that would pass it
    is left as it is). Layers are widened in order, each counted on the network before it."""
    out: list[Candidate] = []
    for i, initial in enumerate(initial_widths[: len(spec.layers)]):
        layer = spec.layers[i]
        units = min(schedule_units(initial, cfg), cfg.max_width - layer.width)
        added = width_params(spec, i, units) if units > 0 else 0
        if units < 1 or params_now + added > cfg.max_params:
            continue
        out.append(Candidate("width", i, units, added))
        params_now += added
        wider = replace(layer, width=layer.width + units)
        spec = spec.with_layers((*spec.layers[:i], wider, *spec.layers[i + 1 :]))
    return out


def _next_weight(net: Net, layer: int) -> torch.Tensor:
    return net.next_op(layer).weight


def _fan_in_init(net: Net, layer: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """Random fan-in with PyTorch's default scale, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    weight = net.layer(layer).op.weight
    shape = (k, *weight.shape[1:])
    bound = 1.0 / math.sqrt(weight[0].numel())
    draw = torch.rand(shape, generator=generator, dtype=weight.dtype) * 2 - 1
    return (draw * bound).to(weight.device)


def width_fanout(net: Net, layer: int, k: int, init: str, fanout_scale: float,
                 m: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The fan-out (D_next, k) new units of `layer` start with: GradMax's top-k left singular
    vectors of M (gradmax) or random directions (random), each column scaled to
    fanout_scale x the mean norm of the existing fan-out columns."""
    nxt = _next_weight(net, layer).detach()  # (d_next, d_l[, kh, kw])
    target = float(fanout_scale * nxt.transpose(0, 1).flatten(1).norm(dim=1).mean())
    if init == "gradmax":
        omega = scores.gradmax_fanout(m.cpu().double(), k, generator).float()
    else:  # random directions, the same norm as GradMax's
        omega = torch.randn(nxt.shape[0] * nxt[0, 0].numel(), k, generator=generator)
    return omega / omega.norm(dim=0, keepdim=True).clamp_min(1e-12) * target


def expand_width(net: Net, layer: int, k: int, init: str, fanout_scale: float,
                 probe_batch: tuple[torch.Tensor, torch.Tensor, str],
                 generator: torch.Generator) -> tuple[NetSpec, Net, IndexMap]:
    """Widen `layer` by k units started by `init` (gradmax, random or zero_out)."""
    nxt = _next_weight(net, layer)  # (d_next, d_l[, kh, kw])
    taps, d_next = nxt.shape[2:], nxt.shape[0]
    if init == "zero_out":
        fan_out = torch.zeros(d_next, k, *taps)
        return widen(net, layer, fan_out, _fan_in_init(net, layer, k, generator))
    m = torch.zeros(0)
    if init == "gradmax":
        x, y, task = probe_batch
        m = scores.fanin_gradient_matrices(net, scores.probe(net, x, y, task), layer).mean(0)
    omega = width_fanout(net, layer, k, init, fanout_scale, m, generator)
    # rows of omega run over (out channel, tap): back to the weight's (d_next, k, kh, kw) layout
    fan_out = omega.T.reshape(k, d_next, *taps).transpose(0, 1)
    return widen(net, layer, fan_out.to(nxt.device))


def expand(net: Net, cand: Candidate, cfg: GrowConfig,
           probe_batch: tuple[torch.Tensor, torch.Tensor, str],
           generator: torch.Generator) -> tuple[NetSpec, Net, IndexMap]:
    """Apply a candidate; one with a seed draws from its own generator (as it was scored)."""
    if cand.kind == "depth":
        return deepen(net, cand.layer)
    if cand.seed is not None:
        generator = torch.Generator().manual_seed(cand.seed)
    return expand_width(net, cand.layer, cand.units, cfg.init, cfg.fanout_scale, probe_batch,
                        generator)
