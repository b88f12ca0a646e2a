"""GradMax's student-teacher experiment: does GradMax growth train better than random growth?

For each seed 0..N-1 this runs recipes/teacher_student.yaml (a random 10-10-10 teacher MLP labels
1,000 Gaussian inputs; the student starts with 5 hidden units and gains one every 200 steps, up to
10) with five methods:

  gradmax   grow.init=gradmax   (zero fan-in, fan-out from the SVD of the gradient)
  random    grow.init=random
  zero_out  grow.init=zero_out
  small     grow.trigger=none, the start size (model.hidden=[5])
  big       grow.trigger=none, the end size   (model.hidden=[10])

The seed sets the teacher, the data split, the student's initialisation and the batch order, as in
`netsize grow --set seed=S`. It reports per method the final training loss (the last epoch's mean
train_loss, 0.5 * squared error summed over the 10 targets) and the final validation R^2, each as
mean +- sample std over seeds, the final parameter count, and in how many seeds GradMax ends with a
lower training loss than random growth, followed by a one-line verdict.

Threads: torch runs with 1 intra-op thread by default (--threads). Measured on the 2-core dev
machine, alternating 1 and 2 threads over 16 runs each: 46.1 s vs 45.5 s in all, i.e. no
difference for MLPs this small, so 1 thread (deterministic, leaves a core free). The default
(5 seeds x 5 methods, 25 runs of 1,400 steps) takes about 1-2 minutes.

    /work/venv/bin/python benchmarks/teacher_student.py                # seeds 0..4
    /work/venv/bin/python benchmarks/teacher_student.py --seeds 10 --json ts.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from netsize import Recipe, derive, load_recipe, run_grow

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = ROOT / "recipes" / "teacher_student.yaml"
GROWN = ("gradmax", "random", "zero_out")


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
    """One whole run through the public API; its run folder is temporary."""
    with tempfile.TemporaryDirectory(prefix="netsize-teacher-student-") as folder:
        summary = run_grow(recipe, folder, name="teacher_student", device="cpu").summary
    last = summary.history[-1]
    return {
        "train_loss": float(last["train_loss"]),
        "val_r2": float(last["val_metric"]),
        "params": int(last["params"]),
        "architecture": last["architecture"],
        "events": len(summary.events),
        "wall_seconds": summary.wall_seconds,
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def num(x: float) -> str:
    """4 decimals, or 2 significant digits in e-notation below 0.001 (losses reach ~1e-6)."""
    return f"{x:.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:.1e}"


def fmt(mean: float, std: float) -> str:
    return f"{num(mean)} ± {num(std)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="run seeds 0..N-1 (default 5)")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="extra recipe override for every run")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1; 0 keeps torch's default)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = Console(width=None if sys.stdout.isatty() else 120)  # piped: don't wrap at 80
    err = Console(stderr=True)
    base = load_recipe(args.recipe, args.overrides)
    changes = method_changes(base)
    methods = {m: as_overrides(c) for m, c in changes.items()}  # printed and saved as --set text
    seeds = list(range(args.seeds))

    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for seed in seeds:
        for method, change in changes.items():
            recipe = derive(base, {"seed": seed, **change}, "benchmarks/teacher_student.py")
            result = run_one(recipe)
            runs[method].append(result)
            err.print(f"seed {seed} {method:<8} train_loss {num(result['train_loss'])} "
                      f"val R^2 {result['val_r2']:.4f} {result['architecture']} "
                      f"({result['wall_seconds']:.1f}s)", highlight=False)
    total = time.perf_counter() - started

    table = Table(title=f"Teacher-student, {len(seeds)} seeds ({args.recipe.name}): "
                        "final epoch, mean ± std over seeds")
    for col in ("method", "overrides", "train loss", "val R^2", "params", "events", "s/run"):
        table.add_column(col, justify="left" if col in ("method", "overrides") else "right")
    aggregate: dict[str, Any] = {}
    for method, results in runs.items():
        loss = mean_std([r["train_loss"] for r in results])
        r2 = mean_std([r["val_r2"] for r in results])
        params = sorted({r["params"] for r in results})
        secs = statistics.fmean(r["wall_seconds"] for r in results)
        aggregate[method] = {"overrides": methods[method], "train_loss_mean": loss[0],
                             "train_loss_std": loss[1], "val_r2_mean": r2[0], "val_r2_std": r2[1],
                             "params": params, "seconds_per_run": secs}
        table.add_row(method, " ".join(methods[method]), fmt(*loss), fmt(*r2),
                      "/".join(map(str, params)),
                      str(round(statistics.fmean(r["events"] for r in results), 1)),
                      f"{secs:.1f}")
    out.print(table)

    seed_table = Table(title="Final training loss per seed")
    seed_table.add_column("seed", justify="right")
    for method in methods:
        seed_table.add_column(method, justify="right")
    seed_table.add_column("gradmax < random", justify="center")
    wins = 0
    for i, seed in enumerate(seeds):
        gm, rnd = runs["gradmax"][i]["train_loss"], runs["random"][i]["train_loss"]
        win = gm < rnd
        wins += win
        seed_table.add_row(str(seed), *(num(runs[m][i]["train_loss"]) for m in methods),
                           "yes" if win else "no")
    out.print(seed_table)

    gm_mean, rnd_mean = aggregate["gradmax"]["train_loss_mean"], aggregate["random"][
        "train_loss_mean"]
    verdict = (f"GradMax ends with lower training loss than random growth in {wins} of "
               f"{len(seeds)} seeds; mean {gm_mean:.4f} vs {rnd_mean:.4f}.")
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
            "gradmax_beats_random": wins, "verdict": verdict,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
