"""Prune-and-transfer (ODF2NNA) against the original and a from-scratch control, over seeds.

For each data set (digits: classification, diabetes: regression) and seed: train the recipe's
wide MLP, prune it by the recipe's criterion at one epsilon, fine-tune the transfer, and train the
same small architecture from scratch for the original's epochs plus the fine-tuning epochs.
Prints test metric (accuracy or R^2), parameters removed and the transfer-minus-control gap.

Each run goes through the public API as `netsize train` + `netsize prune` would: `run_grow`
(grow.trigger=none) trains the original into a temporary folder, `load_original` reads its best
checkpoint back and `run_prune` prunes, fine-tunes and trains the control.

    python benchmarks/prune_transfer.py                      # 3 seeds, default epsilons
    python benchmarks/prune_transfer.py --seeds 1 --epsilon 1.2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from netsize import derive, load_original, load_recipe, run_grow, run_prune

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"digits": ROOT / "recipes" / "digits_mlp.yaml",
           "diabetes": ROOT / "recipes" / "diabetes_mlp.yaml"}


DEFAULT_EPSILON = {"digits": 1.05, "diabetes": 1.0}


def one_run(name: str, seed: int, epsilon: float) -> dict[str, float]:
    recipe = derive(load_recipe(RECIPES[name]),
                    {"seed": seed, "grow.trigger": "none", "prune.epsilon": [epsilon],
                     "prune.control": True}, "benchmarks/prune_transfer.py")
    with tempfile.TemporaryDirectory(prefix="netsize-prune-transfer-") as folder:
        trained = run_grow(recipe, Path(folder) / "original", name=name, device="cpu")
        original, splits = load_original(trained.run_dir / "checkpoints" / "best")
        rows = run_prune(original, splits, Path(folder) / "prune", device="cpu").rows
    base, transfer, control = (next(r for r in rows if r["variant"] == variant)
                               for variant in ("original", "pruned+transfer", "from-scratch"))
    return {"seed": seed, "original_params": base["params"], "pruned_params": transfer["params"],
            "removed": 1 - transfer["params"] / base["params"],
            "original_test": base["test_metric"], "transfer_test": transfer["test_metric"],
            "control_test": control["test_metric"],
            "transfer_val_before_ft": transfer["transfer_val_metric"]}


def summarise(name: str, runs: list[dict[str, float]], console: Console) -> dict[str, float]:
    metric = "accuracy" if name == "digits" else "R^2"
    table = Table(title=f"{name}: test {metric} per seed")
    for col in ("seed", "params", "removed", "original", "pruned+transfer", "from-scratch"):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(str(r["seed"]), f"{r['original_params']:,.0f} -> {r['pruned_params']:,.0f}",
                      f"{100 * r['removed']:.1f}%", f"{r['original_test']:.4f}",
                      f"{r['transfer_test']:.4f}", f"{r['control_test']:.4f}")

    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in runs)

    table.add_row("mean", "", f"{100 * mean('removed'):.1f}%", f"{mean('original_test'):.4f}",
                  f"{mean('transfer_test'):.4f}", f"{mean('control_test'):.4f}")
    console.print(table)
    drop = mean("original_test") - mean("transfer_test")
    gap = mean("transfer_test") - mean("control_test")
    unit, scale = ("points", 100.0) if name == "digits" else ("R^2", 1.0)
    console.print(f"{name}: {100 * mean('removed'):.1f}% of parameters removed (goal: >= 70%); "
                  f"original minus transfer: {drop * scale:+.3f} {unit} (goal: <= "
                  f"{'0.5 points' if name == 'digits' else '0.01 R^2'}); transfer minus "
                  f"from-scratch: {gap * scale:+.3f} {unit} (goal: >= 0).")
    return {"removed": mean("removed"), "original": mean("original_test"),
            "transfer": mean("transfer_test"), "control": mean("control_test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epsilon", type=float, default=None,
                        help="one epsilon for every data set (default: digits 1.05, diabetes 1.0)")
    parser.add_argument("--data", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console(width=110)
    out = {}
    for name in args.data:
        epsilon = args.epsilon if args.epsilon is not None else DEFAULT_EPSILON[name]
        runs = [one_run(name, seed, epsilon) for seed in range(args.seeds)]
        out[name] = {"runs": runs, "mean": summarise(name, runs, console)}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
