"""GradMax's student-teacher experiment: does GradMax growth train better than random growth?

For each seed 0..N-1 this runs recipes/teacher_student.yaml, GradMax's protocol (a teacher MLP
10-10-10 without biases, weights U[-1, 1], labels 1,000 Gaussian inputs; the biasless student
starts with 5 hidden units and gains one every 200 steps up to 10; full-batch plain SGD; the
GradMax matrix from the full batch) with five methods:

  gradmax   grow.init=gradmax   (zero fan-in, fan-out from the SVD of the gradient matrix M)
  random    grow.init=random    (zero fan-in, random fan-out of the same norm)
  zero_out  grow.init=zero_out  (random fan-in, zero fan-out)
  small     grow.trigger=none, the start size (model.hidden=[5])
  big       grow.trigger=none, the end size   (model.hidden=[10])

The seed sets the teacher, the data split, the student's initialisation and the growth draws,
as in `netsize grow --set seed=S`. It reports per method the final full-batch training loss
(0.5 x squared error summed over the 10 targets, mean over the 1,000 training inputs, after the
last step) and validation R^2 (mean ± sample std over seeds), and for the grown methods the
norm of the new units' fan-in gradient at each growth (the full-batch loss's gradient with
respect to the new fan-in weights, right after the growth: what GradMax maximises), averaged
over the run's growths. Then per seed, gradmax against random, and the verdict against the
acceptance: gradmax's loss below random's in at least 7 of 10 seeds, and its fan-in gradient
norm at least 1.5x random's.

Threads: 1 torch thread by default (--threads): deterministic, and no faster with 2 for MLPs
this small. The default (10 seeds x 5 methods, 50 runs of 1,500 full-batch steps) takes about
4 minutes on the 2-core dev machine.

    python benchmarks/teacher_student.py                     # seeds 0..9
    python benchmarks/teacher_student.py --seeds 3 --json ts.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from netsize import Recipe, derive, load_recipe
from netsize.data import load_data
from netsize.train import Trainer, evaluate

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = ROOT / "recipes" / "teacher_student.yaml"
GROWN = ("gradmax", "random", "zero_out")
WINS_NEEDED, GRAD_RATIO_NEEDED = 0.7, 1.5  # the acceptance: 7 of 10 seeds, 1.5x the gradient


def method_changes(recipe: Recipe) -> dict[str, dict[str, Any]]:
    """Recipe changes of each method; the fixed baselines get the start and the scheduled end
    size."""
    hidden = list(recipe.model.hidden)  # type: ignore[union-attr]
    schedule = recipe.grow.schedule  # each time, ceil(amount x the initial width), at least 1
    end = [w + schedule.times * max(1, math.ceil(schedule.amount * w)) for w in hidden]
    methods: dict[str, dict[str, Any]] = {m: {"grow.init": m} for m in GROWN}
    methods["small"] = {"grow.trigger": "none", "model.hidden": hidden}
    methods["big"] = {"grow.trigger": "none", "model.hidden": end}
    return methods


def as_overrides(changes: dict[str, Any]) -> list[str]:
    """The changes as --set would write them: grow.init=gradmax, model.hidden=[5]."""
    return [f"{key}={value if isinstance(value, str) else json.dumps(value)}"
            for key, value in changes.items()]


def run_one(recipe: Recipe) -> dict[str, Any]:
    """One whole run on the library's training loop (no files); the final network's loss on
    the whole training set."""
    splits = load_data(recipe.data, recipe.seed)
    trainer = Trainer(recipe, splits, torch.device("cpu"))
    summary = trainer.fit()
    train_loss, _ = evaluate(trainer.net, splits.x_train, splits.y_train, splits.task)
    grads = [e["fanin_grad_norm"] for e in summary.events if "fanin_grad_norm" in e]
    last = summary.history[-1]
    return {
        "train_loss": train_loss,
        "val_r2": float(last["val_metric"]),
        "params": int(last["params"]),
        "architecture": last["architecture"],
        "events": len(summary.events),
        "fanin_grad_norms": grads,
        "fanin_grad_norm": statistics.fmean(grads) if grads else math.nan,
        "wall_seconds": summary.wall_seconds,
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std; (nan, nan) where a value is missing (no growth, no gradient)."""
    if not all(math.isfinite(v) for v in values):
        return math.nan, math.nan
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def num(x: float) -> str:
    """4 decimals, or 2 significant digits in e-notation below 0.001."""
    if not math.isfinite(x):
        return "-"
    return f"{x:.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:.1e}"


def fmt(mean: float, std: float) -> str:
    return "-" if not math.isfinite(mean) else f"{num(mean)} ± {num(std)}"


def run_all(base: Recipe, changes: dict[str, dict[str, Any]], seeds: list[int],
            err: Console) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in changes}
    for seed in seeds:
        for method, change in changes.items():
            recipe = derive(base, {"seed": seed, **change}, "benchmarks/teacher_student.py")
            result = run_one(recipe)
            runs[method].append(result)
            err.print(f"seed {seed} {method:<8} train loss {num(result['train_loss'])} "
                      f"fan-in grad {num(result['fanin_grad_norm'])} {result['architecture']} "
                      f"({result['wall_seconds']:.1f}s)", highlight=False)
    return runs


def method_table(runs: dict[str, list[dict[str, Any]]], overrides: dict[str, list[str]],
                 title: str) -> tuple[Table, dict[str, Any]]:
    table = Table(title=title)
    for col in ("method", "overrides", "final train loss", "val R^2", "new fan-in grad",
                "params", "s/run"):
        table.add_column(col, justify="left" if col in ("method", "overrides") else "right")
    aggregate: dict[str, Any] = {}
    for method, results in runs.items():
        loss = mean_std([r["train_loss"] for r in results])
        r2 = mean_std([r["val_r2"] for r in results])
        grad = mean_std([r["fanin_grad_norm"] for r in results])
        params = sorted({r["params"] for r in results})
        secs = statistics.fmean(r["wall_seconds"] for r in results)
        aggregate[method] = {"overrides": overrides[method], "train_loss_mean": loss[0],
                             "train_loss_std": loss[1], "val_r2_mean": r2[0],
                             "val_r2_std": r2[1], "fanin_grad_norm_mean": grad[0],
                             "fanin_grad_norm_std": grad[1], "params": params,
                             "seconds_per_run": secs}
        table.add_row(method, " ".join(overrides[method]), fmt(*loss), fmt(*r2), fmt(*grad),
                      "/".join(map(str, params)), f"{secs:.1f}")
    return table, aggregate


def seed_table(runs: dict[str, list[dict[str, Any]]], seeds: list[int]) -> tuple[Table, int]:
    table = Table(title="Per seed: final full-batch training loss and mean new fan-in gradient")
    for col in ("seed", "gradmax loss", "random loss", "gradmax < random", "gradmax grad",
                "random grad", "ratio"):
        table.add_column(col, justify="right")
    wins = 0
    for i, seed in enumerate(seeds):
        gm, rnd = runs["gradmax"][i], runs["random"][i]
        win = gm["train_loss"] < rnd["train_loss"]
        wins += win
        table.add_row(str(seed), num(gm["train_loss"]), num(rnd["train_loss"]),
                      "yes" if win else "no", num(gm["fanin_grad_norm"]),
                      num(rnd["fanin_grad_norm"]),
                      f"{gm['fanin_grad_norm'] / rnd['fanin_grad_norm']:.2f}")
    return table, wins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="run seeds 0..N-1 (default 10)")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="extra recipe override for every run")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1; 0 keeps torch's default)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = Console(width=None if sys.stdout.isatty() else 140)  # piped: don't wrap at 80
    err = Console(stderr=True)
    base = load_recipe(args.recipe, args.overrides)
    changes = method_changes(base)
    overrides = {m: as_overrides(c) for m, c in changes.items()}
    seeds = list(range(args.seeds))

    started = time.perf_counter()
    runs = run_all(base, changes, seeds, err)
    total = time.perf_counter() - started
    table, aggregate = method_table(
        runs, overrides, f"Teacher-student, {len(seeds)} seeds ({args.recipe.name}): "
                         "mean ± std over seeds")
    out.print(table)
    per_seed, wins = seed_table(runs, seeds)
    out.print(per_seed)

    gm, rnd = aggregate["gradmax"], aggregate["random"]
    ratio = gm["fanin_grad_norm_mean"] / rnd["fanin_grad_norm_mean"]
    holds = wins >= WINS_NEEDED * len(seeds) and ratio >= GRAD_RATIO_NEEDED
    verdict = (f"GradMax ends with a lower full-batch training loss than random growth in {wins} "
               f"of {len(seeds)} seeds (mean {num(gm['train_loss_mean'])} vs "
               f"{num(rnd['train_loss_mean'])}); its new fan-in gradient is {ratio:.2f}x "
               f"random's. Acceptance (>= {WINS_NEEDED:.0%} of seeds, >= {GRAD_RATIO_NEEDED}x): "
               f"{'holds' if holds else 'fails'}.")
    out.print(verdict, highlight=False)
    out.print(f"torch threads: {torch.get_num_threads()}; {sum(map(len, runs.values()))} runs in "
              f"{total:.1f}s", highlight=False)
    if any(not math.isfinite(r["train_loss"]) for rs in runs.values() for r in rs):
        out.print("warning: some runs diverged (non-finite training loss)")
    if args.json:
        payload = {
            "benchmark": "teacher_student", "recipe": str(args.recipe), "seeds": seeds,
            "extra_overrides": args.overrides, "torch_threads": torch.get_num_threads(),
            "total_seconds": total, "methods": aggregate,
            "per_seed": {m: [{"seed": s, **r} for s, r in zip(seeds, rs, strict=True)]
                         for m, rs in runs.items()},
            "gradmax_beats_random": wins, "fanin_grad_ratio": ratio, "verdict": verdict,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
