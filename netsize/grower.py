"""When, where and how to grow, for the training loop: `Grower.maybe_grow` is its one hook.

The Grower decides when a check is due (SENN checks every check_every steps outside a cooldown,
or GradMax's schedule; its config is in steps, cadences given in epochs converted by
`netsize.growth.in_steps`), asks the network's moves where to grow (`netsize.networks.GraphMoves`,
the one growth core: every architecture is a graph network), and logs every check (grown or
not, with every candidate's score and the reason) and every event.
The loop swaps in the grown network and carries the optimizer state through the index map.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from netsize.model import count_params
from netsize.surgery import IndexMap


@dataclass
class Grown:
    """One applied growth move: the new network, its index map and the event record."""

    net: nn.Module
    index_map: IndexMap
    record: dict[str, Any]


@dataclass
class Grower:
    cfg: Any  # GrowConfig, max_params already lowered to what memory holds
    moves: Any  # GraphMoves (netsize.networks.moves_for)
    total_steps: int
    generator: torch.Generator  # score batches and random draws
    initial: dict[str, int] = field(default_factory=dict)  # start units of each growable part
    checks: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    last_event_step: int = -(10**9)
    seconds: float = 0.0  # scoring + surgery

    def due(self, step: int) -> bool:
        cfg = self.cfg
        if step == self.total_steps:
            return False  # never on the last step: the grown units would not train at all
        if cfg.trigger == "schedule":
            s = cfg.schedule
            return step >= s.start and (step - s.start) % s.every == 0 \
                and (step - s.start) // s.every < s.times
        # max_events caps senn growth; a schedule makes all its `times` steps (never cut short)
        return cfg.trigger == "senn" and self.events < cfg.max_events \
            and step % cfg.check_every == 0 and step - self.last_event_step >= cfg.cooldown

    def again(self) -> bool:
        """grow.repeat (SENN's rule): check again at once on the grown network."""
        return self.cfg.trigger == "senn" and self.cfg.repeat \
            and self.events < self.cfg.max_events

    def decide(self, net: nn.Module, step: int, epoch: int,
               batch: tuple[torch.Tensor, torch.Tensor, str]) -> list[Any]:
        """The moves to make now (possibly none); a senn check is logged either way."""
        started = time.perf_counter()
        seed = self.moves.seed(self.generator)
        params = count_params(net)
        if self.cfg.trigger == "schedule":
            chosen = self.moves.schedule(net, self.initial, self.cfg, params, seed)
            self.seconds += time.perf_counter() - started
            return chosen
        decision = self.moves.senn(net, batch, self.cfg, params, seed)
        self.checks.append(self._check_record(step, epoch, params, decision))
        self.seconds += time.perf_counter() - started
        return [decision] if decision.chosen is not None else []

    def _check_record(self, step: int, epoch: int, params: int, decision: Any) -> dict:
        passing = [s for s in decision.scored if s["passes"]]
        if decision.chosen is not None:
            reason = "grew"
        elif not decision.scored:
            reason = "no candidate within grow.max_width, max_layers and max_params"
        elif not passing:
            best = max(s["ratio"] for s in decision.scored)
            reason = (f"no candidate passed: best ratio {best:.4g} <= tau {decision.threshold:g}"
                      if best <= decision.threshold else "no candidate passed grow.alpha")
        else:
            reason = "grew"
        return {"step": step, "epoch": epoch, "params": params, "eta": decision.eta,
                "threshold": decision.threshold, "grew": decision.chosen is not None,
                "reason": reason, "candidates": decision.scored}

    def apply(self, net: nn.Module, move: Any, step: int, epoch: int,
              batch: tuple[torch.Tensor, torch.Tensor, str]) -> Grown:
        started = time.perf_counter()
        before = count_params(net)
        new_net, index_map, record = self.moves.apply(net, move, self.cfg, batch, self.generator)
        record.update(step=step, epoch=epoch, trigger=self.cfg.trigger, params_before=before,
                      params_after=count_params(new_net),
                      architecture=new_net.spec.describe())
        self.events += 1
        self.last_event_step = step
        self.seconds += time.perf_counter() - started
        return Grown(new_net, index_map, record)
