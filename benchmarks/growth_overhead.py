"""Growth overhead: what share of a run's wall time goes to deciding and applying growth?

Runs a recipe (recipes/digits.yaml by default) through `Trainer.fit()` as is, then, in the same
process, the same recipe with grow.trigger=none (a fixed network, training only). It prints both
side by side: wall time (`RunSummary.wall_seconds`: the whole fit, including the per-epoch
evaluation), growth time (`RunSummary.growth_seconds`: scoring + surgery + optimizer rebuild) and
the share growth / wall against the goal "<= 5%", plus the number of growth events, the best
validation metric (accuracy for classification) and the final size.

To split growth time into its parts, the script wraps `netsize.growth.senn_check` (scoring one
check) and `netsize.growth.expand` (building the wider/deeper network) with timers; the library is
not modified. The rest of growth_seconds is the optimizer rebuild and bookkeeping.

Threads: 1 by default (--threads). On the shared 2-core dev machine torch's default of 2 threads
made a 5-epoch digits run take 14-15 s instead of 0.7-3 s whenever another process was busy
(oversubscription), so timings with 2 threads were mostly noise.

    /work/venv/bin/python benchmarks/growth_overhead.py                       # digits, ~20 s
    /work/venv/bin/python benchmarks/growth_overhead.py --set grow.check_every=50 --json go.json
    /work/venv/bin/python benchmarks/growth_overhead.py --recipe recipes/teacher_student.yaml
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from netsize import Recipe, derive, growth, load_recipe
from netsize.data import load_data
from netsize.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = ROOT / "recipes" / "digits.yaml"
GOAL = 0.05


class Timed:
    """Wraps a function of `netsize.growth` in place and accumulates its calls and seconds."""

    def __init__(self, name: str):
        self.name, self.calls, self.seconds = name, 0, 0.0
        self.original: Callable[..., Any] = getattr(growth, name)

        @functools.wraps(self.original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        setattr(growth, name, wrapper)

    def restore(self) -> None:
        setattr(growth, self.name, self.original)


def run(recipe: Recipe) -> dict[str, Any]:
    splits = load_data(recipe.data, recipe.seed)
    check, expand = Timed("senn_check"), Timed("expand")
    try:
        trainer = Trainer(recipe, splits, torch.device("cpu"))
        summary = trainer.fit()
    finally:
        check.restore()
        expand.restore()
    best = max(summary.history, key=lambda h: h["val_metric"])
    return {
        "trigger": recipe.grow.trigger,
        "task": splits.task,
        "epochs": recipe.train.epochs,
        "steps": trainer.total_steps,
        "wall_seconds": summary.wall_seconds,
        "growth_seconds": summary.growth_seconds,
        "growth_share": summary.growth_seconds / summary.wall_seconds,
        "other_seconds": summary.wall_seconds - summary.growth_seconds,
        "checks": check.calls,
        "check_seconds": check.seconds,
        "expansions": expand.calls,
        "expand_seconds": expand.seconds,
        "events": len(summary.events),
        "best_val_metric": float(best["val_metric"]),
        "best_val_epoch": int(best["epoch"]),
        "final_val_metric": float(summary.history[-1]["val_metric"]),
        "initial_params": trainer.initial_params,
        "initial_architecture": trainer.initial_architecture,
        "final_params": int(summary.history[-1]["params"]),
        "final_architecture": summary.history[-1]["architecture"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="recipe override, repeatable (train.epochs=5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1; 0 keeps torch's default)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = Console(width=None if sys.stdout.isatty() else 120)
    err = Console(stderr=True)

    err.print(f"growing: {args.recipe} {' '.join(args.overrides)}", highlight=False)
    recipe = load_recipe(args.recipe, args.overrides)
    grown = run(recipe)
    err.print(f"  {grown['wall_seconds']:.1f}s; fixed: grow.trigger=none", highlight=False)
    fixed = run(derive(recipe, {"grow.trigger": "none"}, "benchmarks/growth_overhead.py"))
    err.print(f"  {fixed['wall_seconds']:.1f}s", highlight=False)

    metric = "accuracy" if grown["task"] == "classification" else "R^2"
    table = Table(title=f"Growth overhead: {args.recipe.name} "
                        f"({grown['epochs']} epochs, {grown['steps']} steps, "
                        f"torch threads: {torch.get_num_threads()})")
    table.add_column("")
    table.add_column(f"grown (trigger={grown['trigger']})", justify="right")
    table.add_column("fixed (trigger=none)", justify="right")

    def per(seconds: float, calls: int) -> str:
        return f"{seconds:.2f}s ({1000 * seconds / calls:.0f} ms each)" if calls else "-"

    rows = [
        ("wall time (fit)", *(f"{r['wall_seconds']:.2f}s" for r in (grown, fixed))),
        ("growth time", *(f"{r['growth_seconds']:.2f}s" for r in (grown, fixed))),
        ("growth share (goal <= 5%)", *(f"{100 * r['growth_share']:.1f}%" for r in (grown, fixed))),
        ("wall - growth", *(f"{r['other_seconds']:.2f}s" for r in (grown, fixed))),
        ("  senn checks", *(f"{r['checks']}" for r in (grown, fixed))),
        ("  scoring (senn_check)", *(per(r["check_seconds"], r["checks"]) for r in (grown, fixed))),
        ("  surgery (expand)", *(per(r["expand_seconds"], r["expansions"])
                                 for r in (grown, fixed))),
        ("growth events", *(str(r["events"]) for r in (grown, fixed))),
        (f"best val {metric} (epoch)", *(f"{r['best_val_metric']:.4f} ({r['best_val_epoch']})"
                                         for r in (grown, fixed))),
        (f"final val {metric}", *(f"{r['final_val_metric']:.4f}" for r in (grown, fixed))),
        ("params start -> end", *(f"{r['initial_params']} -> {r['final_params']}"
                                  for r in (grown, fixed))),
        ("architecture at end", *(r["final_architecture"] for r in (grown, fixed))),
    ]
    for row in rows:
        table.add_row(*row)
    out.print(table)

    share = grown["growth_share"]
    status = "meets" if share <= GOAL else "misses"
    ratio = grown["wall_seconds"] / fixed["wall_seconds"]
    out.print(f"Growth takes {100 * share:.1f}% of the grown run's wall time: {status} the "
              f"<= {100 * GOAL:.0f}% goal.\nThe grown run's wall time is {ratio:.2f}x the fixed "
              f"run's.", highlight=False)
    if args.json:
        payload = {"benchmark": "growth_overhead", "recipe": str(args.recipe),
                   "overrides": args.overrides, "torch_threads": torch.get_num_threads(),
                   "goal_share": GOAL, "meets_goal": share <= GOAL,
                   "grown": grown, "fixed": fixed}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
