"""netsize's training against the loop a user writes by hand, on Fashion-MNIST stage CNNs.

Steps (default): for each model (--models, default 16,32 and 32,64,128: conv-BN-ReLU-2x2 max pool
blocks and a linear head on the flattened map) and each thread count (--threads, default 1 and
2), netsize's `Trainer.train_step` against a hand-written step on the same data tensors (the
recipe's training split), from identical initial weights: an nn.Sequential of nn.Conv2d,
nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Flatten and nn.Linear, Adam with the recipe's lr and
cosine schedule, batches of --batch-size (128) drawn by index from one permutation, the loss
summed on the device and read once per round. Both sides are warmed up, then alternate for
--rounds rounds of --steps steps (which goes first alternates too). The table gives images/s
(median over rounds) and the ratio netsize / hand: the median of the per-round ratios, with their
range (a round times the two back to back under the same machine load), against the goal >= 0.97.

Whole runs (--whole): `netsize train recipes/fashion_mnist.yaml` (--set for the model, batch
size, data.limit and epochs; --threads) against `python benchmarks/hand_train.py` doing the same
work (the same data read from the same files, the same steps, validation and test evaluation
after every epoch, the best state kept, final and best weights saved), each a fresh process
timed from start to exit, alternating for --whole-rounds rounds.

    python benchmarks/hand_loop.py                               # steps, ~5 min on 2 cores
    python benchmarks/hand_loop.py --models 16,32 --threads 1 --rounds 10
    python benchmarks/hand_loop.py --set train.channels_last=true
    python benchmarks/hand_loop.py --whole --models 16,32 --epochs 3 --limit 10000
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hand_train import hand_cnn
from rich.console import Console
from rich.table import Table

from netsize import load_recipe
from netsize.data import load_data
from netsize.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "fashion_mnist.yaml"
GOAL = 0.97


def widths(text: str) -> list[int]:
    return [int(w) for w in text.split(",")]


def overrides(model: str, args: argparse.Namespace) -> list[str]:
    stages = ", ".join(f"[{w}]" for w in widths(model))
    return [f"model.stages=[{stages}]", "grow.trigger=none", f"data.limit={args.limit}",
            f"train.batch_size={args.batch_size}", f"train.epochs={args.epochs}", *args.set]


def copy_state(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Load `source`'s tensors into `target` in order (the two list the same shapes in the same
    order: the hand-written model declares its layers in netsize's node order)."""
    theirs = list(source.state_dict().values())
    ours = target.state_dict()
    assert [v.shape for v in ours.values()] == [v.shape for v in theirs]
    target.load_state_dict(dict(zip(ours, theirs, strict=True)))


class HandStep:
    """The step a user writes: forward, cross-entropy, zero_grad, backward, Adam, cosine."""

    def __init__(self, trainer: Trainer, model: str):
        self.net = hand_cnn(widths(model))
        copy_state(trainer.net, self.net)  # identical start
        self.net.train()
        cfg = trainer.recipe.train
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, trainer.total_steps)
        self.x, self.y = trainer.splits.x_train, trainer.splits.y_train

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(self.net(self.x[idx]), self.y[idx])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return loss.detach()


def timed_round(step: Any, perm: torch.Tensor, steps: int, bs: int, start: int) -> float:
    """Images per second over `steps` steps from batch `start` of the permutation."""
    batches = len(perm) // bs
    loss_sum = torch.zeros((), device=perm.device)
    synchronize(perm.device)  # the clock starts once earlier queued work is done
    began = time.perf_counter()
    for b in range(start, start + steps):
        loss_sum += step(perm[(b % batches) * bs : (b % batches + 1) * bs])
    float(loss_sum)  # the one read per round, as the epoch end reads it
    synchronize(perm.device)
    return steps * bs / (time.perf_counter() - began)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(sides: dict[str, Any], perm: torch.Tensor, bs: int, steps: int, rounds: int,
              label: str, err: Console) -> dict[str, Any]:
    """Warm both sides ("netsize", "hand") up, then `rounds` rounds of `steps` steps each (which
    goes first alternates): images/s per round, their medians and the per-round ratios."""
    for step in sides.values():
        timed_round(step, perm, max(3, steps // 4), bs, 0)  # warm-up
    rates: dict[str, list[float]] = {"netsize": [], "hand": []}
    for r in range(rounds):
        names = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in names:
            rates[name].append(timed_round(sides[name], perm, steps, bs, r * steps))
        err.print(f"{label} round {r + 1}: netsize {rates['netsize'][-1]:,.0f}/s, hand "
                  f"{rates['hand'][-1]:,.0f}/s", highlight=False)
    ratios = [a / b for a, b in zip(rates["netsize"], rates["hand"], strict=True)]
    return {"netsize_per_s": rates["netsize"], "hand_per_s": rates["hand"],
            "netsize_median": statistics.median(rates["netsize"]),
            "hand_median": statistics.median(rates["hand"]), "ratios": ratios,
            "ratio": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios)}


def compare_steps(model: str, threads: int, args: argparse.Namespace, err: Console) -> dict:
    torch.set_num_threads(threads)
    recipe = load_recipe(RECIPE, overrides(model, args))
    trainer = Trainer(recipe, load_data(recipe.data, recipe.seed), torch.device("cpu"))
    trainer.net.train()
    sides = {"netsize": trainer.train_step, "hand": HandStep(trainer, model)}
    perm = torch.randperm(len(trainer.splits.x_train), generator=torch.Generator().manual_seed(0))
    bs = recipe.train.batch_size
    params = sum(p.numel() for p in trainer.net.parameters())
    return {"model": model, "threads": threads, "params": params,
            **alternate(sides, perm, bs, args.steps, args.rounds, f"{model} threads {threads}",
                        err)}


def whole_runs(model: str, threads: int, args: argparse.Namespace, err: Console) -> dict:
    """Wall seconds of whole processes: netsize train against hand_train.py, alternating."""
    exe = Path(sys.executable)
    netsize_cli = [str(exe.parent / "netsize"), "train", str(RECIPE), "--threads", str(threads),
                   "--overwrite", "--device", "cpu"]
    for item in overrides(model, args):
        netsize_cli += ["--set", item]
    hand_cli = [str(exe), str(Path(__file__).parent / "hand_train.py"), "--stages", model,
                "--epochs", str(args.epochs), "--limit", str(args.limit), "--batch-size",
                str(args.batch_size), "--threads", str(threads)]
    seconds: dict[str, list[float]] = {"netsize": [], "hand": []}
    with tempfile.TemporaryDirectory() as tmp:
        commands = {"netsize": [*netsize_cli, "--out", f"{tmp}/netsize"],
                    "hand": [*hand_cli, "--out", f"{tmp}/hand"]}
        for r in range(args.whole_rounds):
            for name in list(commands) if r % 2 == 0 else list(reversed(commands)):
                began = time.perf_counter()
                subprocess.run(commands[name], check=True, capture_output=True)
                seconds[name].append(time.perf_counter() - began)
            err.print(f"whole {model} round {r + 1}: netsize {seconds['netsize'][-1]:.1f}s, "
                      f"hand {seconds['hand'][-1]:.1f}s", highlight=False)
    ratios = [h / n for n, h in zip(seconds["netsize"], seconds["hand"], strict=True)]
    return {"model": model, "threads": threads, "netsize_s": seconds["netsize"],
            "hand_s": seconds["hand"], "netsize_median": statistics.median(seconds["netsize"]),
            "hand_median": statistics.median(seconds["hand"]), "ratios": ratios,
            "ratio": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios)}


def table(results: list[dict], title: str, unit: str, fmt: str) -> Table:
    out = Table(title=title, caption="ratio: netsize speed / hand speed, median of the "
                                     "per-round ratios (range); goal >= 0.97")
    for col in ("model", "threads", f"netsize {unit}", f"hand {unit}", "ratio", "range", "goal"):
        out.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        out.add_row(r["model"], str(r["threads"]), format(r["netsize_median"], fmt),
                    format(r["hand_median"], fmt), f"{r['ratio']:.3f}",
                    f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}",
                    "met" if r["ratio"] >= GOAL else "missed")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["16,32", "32,64,128"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=10, help="alternating step rounds")
    parser.add_argument("--steps", type=int, default=30, help="steps per round")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=20000, help="training images read")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of a whole run")
    parser.add_argument("--whole", action="store_true", help="time whole runs, not steps")
    parser.add_argument("--whole-rounds", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="netsize recipe override, e.g. train.channels_last=true")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)
    out = Console(width=None if sys.stdout.isatty() else 120)
    err = Console(stderr=True)
    if args.whole:
        results = [whole_runs(m, t, args, err) for m in args.models for t in args.threads]
        out.print(table(results, f"Whole runs, {args.epochs} epochs of {args.limit:,} images "
                        f"(90% train), batch {args.batch_size}: median of {args.whole_rounds} "
                        "alternating processes", "s", ".1f"))
    else:
        results = [compare_steps(m, t, args, err) for m in args.models for t in args.threads]
        out.print(table(results, f"Training steps, Fashion-MNIST, batch {args.batch_size}"
                        f"{' '.join(['', *args.set])}: median of {args.rounds} alternating "
                        f"rounds x {args.steps} steps",
                        "images/s", ",.0f"))
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "hand_loop", "whole": args.whole,
                                         "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
