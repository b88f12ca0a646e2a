"""Training throughput: netsize's step loop against a plain PyTorch loop with a DataLoader.

Data: scikit-learn digits as in recipes/digits.yaml (`load_data`, 1x8x8 images). Two models, each
built twice from the same seed so both loops start from identical weights:

  cnn  the recipe's model (stages [[4], [4]], batch norm)
  mlp  {kind: mlp, hidden: [64, 64]} (--mlp-hidden)

netsize: a `Trainer` with grow.trigger=none; the timed loop is exactly the inner loop of
`Trainer.fit` (a seeded permutation per epoch, batches drawn by index, `trainer.train_step(idx)`,
the batch loss summed on the device). Evaluation, checkpoints and growth checks are excluded, i.e.
only training steps are timed.

plain: `TensorDataset` + `DataLoader(batch_size, shuffle=True, num_workers=0)` and the standard
loop (zero_grad, forward, `F.cross_entropy`, backward, Adam step with the recipe's lr). Both loops
also step the recipe's per-step scheduler (cosine for digits) and sum the loss the same way, so
they do the same work per step; both drop a final batch of one example, as the Trainer does.

Each loop is warmed up for one epoch, then the two alternate for --rounds rounds of --epochs
epochs each (which one goes first alternates too). The table gives samples/s (median over rounds)
and the ratio netsize / plain (the median of the per-round ratios: a round times the two back to
back under the same machine load, so on a busy machine this is steadier than the ratio of the two
medians), its range, and in how many rounds netsize was faster, against the goal ">= 1.0" (no
slower).

Threads: torch's default intra-op thread count (the number of cores; 2 on the dev machine) unless
--threads N is given. On a shared machine with another busy process, 2 threads can be many times
slower than 1 (oversubscription); compare with --threads 1.

    /work/venv/bin/python benchmarks/throughput.py                 # ~30 s
    /work/venv/bin/python benchmarks/throughput.py --threads 1 --json tp.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, TensorDataset

from netsize import Recipe, derive, load_recipe
from netsize.architecture import NATIVE, MlpConfig, spec_from_config
from netsize.data import Splits, load_data
from netsize.graph.build import GraphNet
from netsize.model import count_params
from netsize.networks import build_network
from netsize.train import Trainer, make_scheduler

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = ROOT / "recipes" / "digits.yaml"
GOAL = 1.0


def variant(base: Recipe, model: dict[str, Any] | None) -> Recipe:
    """The recipe with grow.trigger=none and optionally another model, validated as a recipe."""
    changes: dict[str, Any] = {"grow.trigger": "none"}
    if model is not None:
        changes["model"] = model
    return derive(base, changes, "benchmarks/throughput.py")


class NetsizeLoop:
    """The inner loop of Trainer.fit, without evaluation."""

    def __init__(self, recipe: Recipe, splits: Splits, device: torch.device):
        self.trainer = Trainer(recipe, splits, device)
        self.trainer.net.train()
        self.n, self.bs = len(self.trainer.splits.x_train), recipe.train.batch_size

    @property
    def net(self) -> GraphNet:
        return self.trainer.net

    def epoch(self) -> int:
        t = self.trainer
        perm = torch.randperm(self.n, generator=t.gen).to(t.device)
        loss_sum = torch.zeros((), device=t.device)
        seen = 0
        for b in range(t.steps_per_epoch):
            idx = perm[b * self.bs : (b + 1) * self.bs]
            loss_sum += t.train_step(idx)
            t.step += 1
            seen += len(idx)
        float(loss_sum)  # what _end_epoch reads
        return seen


class PlainLoop:
    """Textbook PyTorch: DataLoader over a TensorDataset, zero_grad/forward/backward/step."""

    def __init__(self, recipe: Recipe, splits: Splits, device: torch.device, total_steps: int):
        assert isinstance(recipe.model, NATIVE), "a model netsize builds itself"
        torch.manual_seed(recipe.seed)  # as Trainer.__init__ does: identical initial weights
        spec = spec_from_config(recipe.model, splits.input_shape, splits.n_outputs)
        self.net = build_network(spec).to(device)
        self.net.train()
        self.device = device
        n, bs = len(splits.x_train), recipe.train.batch_size
        self.loader = DataLoader(TensorDataset(splits.x_train, splits.y_train), batch_size=bs,
                                 shuffle=True, num_workers=0, drop_last=n % bs == 1)
        assert recipe.train.optimizer == "adam", "the plain loop mirrors an adam recipe"
        self.opt = torch.optim.Adam(self.net.parameters(), lr=recipe.train.lr,
                                    weight_decay=recipe.train.weight_decay)
        self.sched = make_scheduler(self.opt, recipe.train, total_steps)
        if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.sched = None  # stepped per epoch on validation: not part of the step loop

    def epoch(self) -> int:
        loss_sum = torch.zeros((), device=self.device)
        seen = 0
        for xb, yb in self.loader:
            xb, yb = xb.to(self.device), yb.to(self.device)
            self.opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.net(xb), yb)
            loss.backward()
            self.opt.step()
            if self.sched is not None:
                self.sched.step()
            loss_sum += loss.detach()
            seen += len(xb)
        float(loss_sum)
        return seen


def timed(epoch: Callable[[], int], epochs: int) -> float:
    """Samples per second over `epochs` epochs."""
    started = time.perf_counter()
    seen = sum(epoch() for _ in range(epochs))
    return seen / (time.perf_counter() - started)


def compare(name: str, recipe: Recipe, splits: Splits, epochs: int, rounds: int,
            err: Console) -> dict[str, Any]:
    device = torch.device("cpu")
    ours = NetsizeLoop(recipe, splits, device)
    plain = PlainLoop(recipe, splits, device, ours.trainer.total_steps)
    same = all(torch.equal(a, b) for a, b in zip(ours.net.state_dict().values(),
                                                  plain.net.state_dict().values(), strict=True))
    ours.epoch()  # warm-up
    plain.epoch()
    rates: dict[str, list[float]] = {"netsize": [], "plain": []}
    for r in range(rounds):
        order: list[tuple[str, Callable[[], int]]] = [("netsize", ours.epoch),
                                                      ("plain", plain.epoch)]
        for label, epoch in order if r % 2 == 0 else reversed(order):
            rates[label].append(timed(epoch, epochs))
        err.print(f"{name} round {r + 1}: netsize {rates['netsize'][-1]:,.0f}/s, "
                  f"plain {rates['plain'][-1]:,.0f}/s", highlight=False)
    med = {k: statistics.median(v) for k, v in rates.items()}
    # Each round times the two back to back, so a round's ratio sees the same machine load.
    per_round = [a / b for a, b in zip(rates["netsize"], rates["plain"], strict=True)]
    return {
        "model": name, "architecture": ours.net.spec.describe(), "params": count_params(ours.net),
        "identical_initial_weights": same, "train_samples": ours.n,
        "batch_size": recipe.train.batch_size, "steps_per_epoch": ours.trainer.steps_per_epoch,
        "epochs_per_round": epochs, "rounds": rounds,
        "netsize_samples_per_s": rates["netsize"], "plain_samples_per_s": rates["plain"],
        "netsize_median": med["netsize"], "plain_median": med["plain"],
        "ratio_per_round": per_round, "ratio": statistics.median(per_round),
        "ratio_per_round_min": min(per_round), "ratio_per_round_max": max(per_round),
        "rounds_netsize_faster": sum(x > 1.0 for x in per_round),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per timed round")
    parser.add_argument("--rounds", type=int, default=12, help="alternating timed rounds")
    parser.add_argument("--mlp-hidden", default="64,64", help="hidden widths of the mlp model")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (default 0: torch's default)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = Console(width=None if sys.stdout.isatty() else 120)
    err = Console(stderr=True)

    base = load_recipe(args.recipe)
    splits = load_data(base.data, base.seed)
    hidden = [int(w) for w in args.mlp_hidden.split(",")]
    mlp = MlpConfig(kind="mlp", hidden=hidden).model_dump(mode="json")
    results = [compare(name, variant(base, model), splits, args.epochs, args.rounds, err)
               for name, model in (("cnn", None), ("mlp", mlp))]

    table = Table(title=f"Training throughput, {args.recipe.name} data: median of {args.rounds} "
                        f"rounds x {args.epochs} epochs, batch {base.train.batch_size}, "
                        f"torch threads: {torch.get_num_threads()}")
    table.caption = ("samples/s: median over rounds; ratio = netsize / plain, the median of the "
                     "per-round ratios")
    for col in ("model", "params", "netsize samples/s", "plain samples/s",
                "ratio", "ratio range", "netsize faster", "goal >= 1.0"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        table.add_row(r["architecture"], str(r["params"]),
                      f"{r['netsize_median']:,.0f}", f"{r['plain_median']:,.0f}",
                      f"{r['ratio']:.2f}",
                      f"{r['ratio_per_round_min']:.2f}-{r['ratio_per_round_max']:.2f}",
                      f"{r['rounds_netsize_faster']}/{r['rounds']} rounds",
                      "met" if r["ratio"] >= GOAL else "missed")
    out.print(table)
    out.print(f"Timed: training steps only (no evaluation); {results[0]['train_samples']} "
              f"training samples per epoch; identical initial weights: "
              f"{'yes' if all(r['identical_initial_weights'] for r in results) else 'NO'}.",
              highlight=False)
    if args.json:
        payload = {"benchmark": "throughput", "recipe": str(args.recipe),
                   "torch_threads": torch.get_num_threads(), "goal_ratio": GOAL,
                   "results": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
