"""The training loop: one loop, with growth checks at named points.

Data are whole tensors on the device; batches are drawn by index, augmentation runs batched.
The loop performs no I/O: it reports progress, epochs, growth events and checkpoints to a
`Reporter` supplied by the caller (the CLI writes files and draws progress bars).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import torch
from pydantic import Field, model_validator
from torch import nn

from netsize.architecture import ForeignModelConfig
from netsize.config import MAX_BATCH, MAX_EPOCHS, Strict
from netsize.data import Splits, augment_batch
from netsize.errors import UserError
from netsize.foreign_graph import foreign_graph, left_alone
from netsize.graph.build import GraphNet
from netsize.graph.spec import GraphSpec
from netsize.grower import Grower
from netsize.growth import describe_cadence, in_steps, uses_epochs
from netsize.losses import batch_loss
from netsize.model import count_flops, count_params
from netsize.networks import build_network, moves_for
from netsize.preflight import check_network, growth_params_limit, plan_network
from netsize.step import Stepper
from netsize.surgery import IndexMap, carry_optimizer_state

if TYPE_CHECKING:
    from netsize.recipe import Recipe


EVAL_BATCH = 256


class TrainConfig(Strict):
    epochs: int = Field(20, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=1e3)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0, le=1e3)
    scheduler: Literal["none", "cosine", "plateau"] = "none"
    plateau_patience: int = Field(3, ge=0, le=MAX_EPOCHS)  # epochs without validation improvement
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    # 256: Fashion-MNIST CNNs evaluated 1.8x faster on the CPU than in batches of 1024 (cache)
    eval_batch_size: int = Field(EVAL_BATCH, ge=1, le=MAX_BATCH)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype of the training step
    channels_last: bool = False  # NHWC conv weights and image batches
    compile: bool = False  # torch.compile the training step (again after every growth event)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> TrainConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0.0):
            raise ValueError("nesterov needs optimizer: sgd with momentum > 0")
        return self


@dataclass
class Checkpoint:
    tag: str  # "event-003", "final", "best"
    step: int
    epoch: int
    spec: GraphSpec | None  # None for a timm/torchvision module
    state: dict[str, torch.Tensor]  # CPU copies
    params: int
    flops: int
    val_metric: float
    test_metric: float


def point_of(ckpt: Checkpoint) -> dict[str, Any]:
    """The checkpoint's row among a run's size/metric points (no tensors)."""
    keys = ("tag", "step", "epoch", "params", "flops", "val_metric", "test_metric")
    return {k: getattr(ckpt, k) for k in keys}


class Reporter(Protocol):
    def start(self, total_steps: int) -> None: ...
    def step(self, step: int, epoch: int) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def event(self, record: dict[str, Any]) -> None: ...
    def checkpoint(self, ckpt: Checkpoint) -> None: ...
    def note(self, text: str) -> None: ...  # one line before training (what will not grow)


class SilentReporter:
    def note(self, text: str) -> None: ...
    def start(self, total_steps: int) -> None: ...
    def step(self, step: int, epoch: int) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def event(self, record: dict[str, Any]) -> None: ...
    def checkpoint(self, ckpt: Checkpoint) -> None: ...


@dataclass
class RunSummary:
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)  # every senn check, grown or not
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # metadata only
    wall_seconds: float = 0.0
    growth_seconds: float = 0.0  # scoring + surgery + optimizer rebuild
    compile_seconds: float = 0.0  # first steps after each torch.compile (train.compile)
    train_flops: float = 0.0  # 3 x forward FLOPs x examples, summed over training steps
    final_spec: GraphSpec | None = None
    early_stopped: bool = False


# ------------------------------------------------------------------------ optimizer & metrics
def make_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = net.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    kind = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
    if cfg.scheduler == "cosine":  # stepped once per optimizer step
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    if cfg.scheduler == "plateau":  # stepped once per epoch on the validation metric
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", patience=cfg.plateau_patience, factor=cfg.plateau_factor)
    return None


@torch.inference_mode()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str,
             batch: int = EVAL_BATCH) -> tuple[float, float]:
    """(mean loss, metric): accuracy for classification, R^2 (mean over targets) for regression."""
    was_training = net.training
    net.eval()
    outs = torch.cat([net(x[i : i + batch]) for i in range(0, len(x), batch)])
    net.train(was_training)
    loss = float(batch_loss(outs, y, task))
    if task == "classification":
        return loss, float((outs.argmax(1) == y).float().mean())
    ss_res = (outs - y).pow(2).sum(0)
    ss_tot = (y - y.mean(0)).pow(2).sum(0).clamp_min(1e-12)
    return loss, float((1 - ss_res / ss_tot).mean())


# ----------------------------------------------------------------------------------- the loop
class Trainer:
    def __init__(self, recipe: Recipe, splits: Splits, device: torch.device,
                 reporter: Reporter | None = None, net: nn.Module | None = None,
                 grow: bool = True, stopper: Callable[[dict[str, Any]], bool] | None = None,
                 flops_budget: float | None = None,
                 saver: Callable[[Trainer], None] | None = None):
        """Train `net` (default: a fresh one from recipe.model, seeded by recipe.seed).

        grow=False trains at a fixed size whatever recipe.grow says (fine-tuning, controls).
        stopper(epoch record) -> True ends training early (the search's early stopping).
        flops_budget: stop once the training FLOPs reach it (compare's equal budgets).
        saver(trainer) is called at every epoch end (resumable runs save their state there);
        netsize.resume.restore puts a new Trainer back where a saved one stood, and fit()
        continues from that epoch.
        """
        self.stopper, self.flops_budget, self.saver = stopper, flops_budget, saver
        self.recipe, self.splits, self.device = recipe, splits.to(device), device
        self.reporter = reporter or SilentReporter()
        self.grow = grow and recipe.grow.trigger != "none"
        # growth stops at grow.max_params or at what memory holds, whichever comes first
        self.grow_cfg = recipe.grow.model_copy(
            update={"max_params": growth_params_limit(recipe.grow.max_params)})
        torch.manual_seed(recipe.seed)
        foreign = isinstance(recipe.model, ForeignModelConfig)
        if foreign and self.grow_cfg.depth_kind == "auto":  # timm / torchvision: depth grows
            self.grow_cfg = self.grow_cfg.model_copy(update={"depth_kind": "block"})  # by blocks
        if net is None and isinstance(recipe.model, ForeignModelConfig):
            net = foreign_graph(recipe.model, splits.input_shape, splits.n_outputs)
            check_network(net.spec, recipe, splits)
        elif net is None:
            # plan_network returns spec_from_config's GraphSpec (annotated as any spec)
            net = build_network(cast(GraphSpec, plan_network(recipe, splits)))
        self.net: Any = net.to(device)
        # lines printed before training: what will not grow, the cadence given in epochs
        self.notes = [left_alone(net.spec, self.grow_cfg.coupled)
                      if foreign and self.grow and isinstance(net, GraphNet) else ""]
        spec = getattr(net, "spec", None)
        self.initial_architecture = spec.describe() if spec else type(net).__name__
        self.initial_params = count_params(self.net)
        # per-example forward FLOPs, counted again only when surgery changes the network
        self.flops_per_example = count_flops(self.net, splits.input_shape)
        self.gen = torch.Generator().manual_seed(recipe.seed)  # batch order, growth draws
        self.aug_gen = torch.Generator(device=device).manual_seed(recipe.seed + 1)
        n = len(self.splits.x_train)
        bs = recipe.train.batch_size
        # Drop a trailing batch of one example: batch norm cannot train on it.
        self.steps_per_epoch = n // bs + (1 if n % bs > 1 else 0)
        self.total_steps = self.steps_per_epoch * recipe.train.epochs
        # the Grower runs on steps: cadences given in epochs become steps here, once
        self.grow_cfg = in_steps(self.grow_cfg, self.steps_per_epoch)
        if self.grow and uses_epochs(recipe.grow):
            self.notes.append(f"growth cadence at {self.steps_per_epoch} steps per epoch: "
                              f"{describe_cadence(recipe.grow, self.grow_cfg)}")
        self.opt = make_optimizer(self.net, recipe.train)
        self.sched = make_scheduler(self.opt, recipe.train, self.total_steps)
        self.stepper = Stepper(recipe.train, device)
        self.summary = RunSummary()
        self.step = self.epoch = 0
        self.best: tuple[float, Checkpoint] | None = None
        # (step, network, val, test) of the last epoch end: the final checkpoint reuses it
        self._last_eval: tuple[int, nn.Module, float, float] | None = None
        self.grower = Grower(self.grow_cfg, moves_for(self.net), self.total_steps, self.gen,
                             moves_for(self.net).initial(self.net) if self.grow else {})
        self.summary.checks = self.grower.checks

    # -- growth -----------------------------------------------------------------------------
    def _score_batch(self) -> tuple[torch.Tensor, torch.Tensor, str]:
        n = len(self.splits.x_train)
        size = min(self.recipe.grow.score_batch, n)
        idx = torch.randperm(n, generator=self.gen)[:size].to(self.device)
        return self.splits.x_train[idx], self.splits.y_train[idx], self.splits.task

    def _replace_net(self, new_net: nn.Module, index_map: IndexMap) -> None:
        opt = make_optimizer(new_net, self.recipe.train)
        sched = make_scheduler(opt, self.recipe.train, self.total_steps)
        if sched is not None and self.sched is not None:
            sched.load_state_dict(self.sched.state_dict())
        carry_optimizer_state(self.opt, self.net, opt, new_net, index_map)
        self.net, self.opt, self.sched = new_net, opt, sched
        self.flops_per_example = count_flops(self.net, self.splits.input_shape)

    def maybe_grow(self) -> None:
        """The loop's growth hook: the Grower decides; the new network and its optimizer
        state replace the old ones; the network just before is a checkpoint of its own."""
        if not self.grower.due(self.step):
            return
        batch = self._score_batch()
        checkpointed = False
        while True:  # once, or with grow.repeat (SENN) until no candidate passes
            try:
                moves = self.grower.decide(self.net, self.step, self.epoch, batch)
            except (torch.linalg.LinAlgError, RuntimeError, ValueError):
                self._raise_if_diverged()  # a NaN network breaks the scores' SVD first
                raise
            finally:
                self.summary.growth_seconds = self.grower.seconds
            if not moves:
                return
            if not checkpointed:  # the network before this step's growth is a point of its own
                self._raise_if_diverged()  # a schedule scores nothing: never grow a NaN network
                self.reporter.checkpoint(
                    self._checkpoint(f"event-{len(self.summary.events) + 1:03d}"))
                checkpointed = True
            for move in moves:
                grown = self.grower.apply(self.net, move, self.step, self.epoch, batch)
                self._replace_net(grown.net, grown.index_map)
                self.summary.events.append(grown.record)
                self.reporter.event(grown.record)
            self.summary.growth_seconds = self.grower.seconds
            if not self.grower.again():
                return

    def _raise_if_diverged(self) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in self.net.parameters()):
            raise UserError(f"training diverged: the weights hold NaN or inf at step "
                            f"{self.step} (epoch {self.epoch}); lower train.lr or add "
                            "train.weight_decay.")

    # -- checkpoints and epochs -------------------------------------------------------------
    def _checkpoint(self, tag: str) -> Checkpoint:
        """Evaluate now (unless the epoch end just did, on this network at this step) and
        record the checkpoint among the run's points."""
        last = self._last_eval
        if last is not None and last[:2] == (self.step, self.net):
            val, test = last[2:]
        else:
            s, batch = self.splits, self.recipe.train.eval_batch_size
            _, val = evaluate(self.net, s.x_val, s.y_val, s.task, batch)
            _, test = evaluate(self.net, s.x_test, s.y_test, s.task, batch)
        ckpt = self._snapshot(tag, val, test)
        self.summary.checkpoints.append(point_of(ckpt))
        return ckpt

    def _end_epoch(self, loss_sum: torch.Tensor, batches: int, started: float) -> None:
        s, cfg = self.splits, self.recipe.train
        val_loss, val = evaluate(self.net, s.x_val, s.y_val, s.task, cfg.eval_batch_size)
        _, test = evaluate(self.net, s.x_test, s.y_test, s.task, cfg.eval_batch_size)
        self._last_eval = (self.step, self.net, val, test)
        if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.sched.step(val)
        record = {
            "epoch": self.epoch, "step": self.step, "train_loss": float(loss_sum) / batches,
            "val_loss": val_loss, "val_metric": val, "test_metric": test,
            "params": count_params(self.net),
            "flops": self.flops_per_example,
            "train_flops": self.summary.train_flops,  # so far (anytime metrics in compare)
            "lr": self.opt.param_groups[0]["lr"], "seconds": time.perf_counter() - started,
            "architecture": self._describe(),
        }
        self.summary.history.append(record)
        self.reporter.epoch(record)
        if self.best is None or val > self.best[0]:
            self.best = (val, self._snapshot("best", val, test))

    def _describe(self) -> str:
        spec = getattr(self.net, "spec", None)
        return spec.describe() if spec else type(self.net).__name__

    def _snapshot(self, tag: str, val: float, test: float) -> Checkpoint:
        state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        return Checkpoint(tag, self.step, self.epoch, getattr(self.net, "spec", None), state,
                          count_params(self.net), self.flops_per_example, val, test)

    def train_step(self, idx: torch.Tensor) -> torch.Tensor:
        s = self.splits
        xb, yb = s.x_train[idx], s.y_train[idx]
        xb = augment_batch(xb, self.recipe.data.augment, self.aug_gen) if s.is_image() else xb
        loss = self.stepper(self.net, self.opt, xb, yb, s.task)
        if isinstance(self.sched, torch.optim.lr_scheduler.CosineAnnealingLR):
            self.sched.step()
        return loss

    def fit(self) -> RunSummary:
        """Train from the epoch after self.epoch (0 for a new run, later for a resumed one)."""
        started = time.perf_counter() - self.summary.wall_seconds  # a resumed run's time counts
        self.net.train()
        for text in filter(None, self.notes):
            self.reporter.note(text)
        self.reporter.start(self.total_steps)
        if self.step:
            self.reporter.step(self.step, self.epoch)
        n, bs = len(self.splits.x_train), self.recipe.train.batch_size
        last = self.epoch if self.summary.early_stopped else self.recipe.train.epochs
        for epoch in range(self.epoch + 1, last + 1):
            self.epoch = epoch
            perm = torch.randperm(n, generator=self.gen).to(self.device)
            loss_sum = torch.zeros((), device=self.device)
            for b in range(self.steps_per_epoch):
                idx = perm[b * bs : (b + 1) * bs]
                loss_sum += self.train_step(idx)
                # forward + backward ~ 3 forward passes (FlopCounterMode counts a multiply-add as 2)
                self.summary.train_flops += 3.0 * self.flops_per_example * len(idx)
                self.step += 1
                self.reporter.step(self.step, self.epoch)
                if self.grow:
                    self.maybe_grow()
            self._end_epoch(loss_sum, self.steps_per_epoch, started)
            loss = self.summary.history[-1]["train_loss"]
            if not math.isfinite(loss):
                raise UserError(f"training diverged: the loss is {loss} in epoch {epoch}; "
                                "lower train.lr or add train.weight_decay.")
            record = self.summary.history[-1]
            if (self.stopper is not None and self.stopper(record)) or (
                    self.flops_budget is not None
                    and self.summary.train_flops >= self.flops_budget):
                self.summary.early_stopped = True
            if self.saver is not None:
                self.summary.wall_seconds = time.perf_counter() - started
                self.saver(self)
            if self.summary.early_stopped:
                break
        self._finish(started)
        return self.summary

    def _finish(self, started: float) -> None:
        final = self._checkpoint("final")
        self.reporter.checkpoint(final)
        assert self.best is not None
        best = self.best[1]
        self.summary.checkpoints.append(point_of(best))
        self.reporter.checkpoint(best)
        self.summary.final_spec = getattr(self.net, "spec", None)
        self.summary.compile_seconds = self.stepper.compile_seconds
        self.summary.wall_seconds = time.perf_counter() - started
