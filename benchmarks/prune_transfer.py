"""Prune-and-transfer (ODF2NNA) against the original and a from-scratch control, over seeds.

For each data set (digits: classification, diabetes: regression) and seed: train the recipe's
wide MLP, prune it by the recipe's criterion at one epsilon, fine-tune the transfer, and train the
same small architecture from scratch for the original's epochs plus the fine-tuning epochs.
Prints test metric (accuracy or R^2), parameters removed and the transfer-minus-control gap.

    python benchmarks/prune_transfer.py                      # 3 seeds, default epsilons
    python benchmarks/prune_transfer.py --seeds 1 --epsilon 1.2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from netsize.transfer import Original, finetune, measure, prune_once, scratch_control, train_fixed
from rich.console import Console
from rich.table import Table

from netsize.data import load_data
from netsize.model import build
from netsize.recipe import load_recipe
from netsize.spec import spec_from_config

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"digits": ROOT / "recipes" / "digits_mlp.yaml",
           "diabetes": ROOT / "recipes" / "diabetes_mlp.yaml"}


DEFAULT_EPSILON = {"digits": 1.05, "diabetes": 1.0}


def one_run(name: str, seed: int, epsilon: float) -> dict[str, float]:
    recipe = load_recipe(RECIPES[name], [f"seed={seed}", f"prune.epsilon=[{epsilon}]"])
    device = torch.device("cpu")
    splits = load_data(recipe.data, seed)
    torch.manual_seed(seed)
    wide = build(spec_from_config(recipe.model, splits.input_shape, splits.n_outputs))
    wide = train_fixed(recipe, splits, device, wide)
    original = Original(wide, recipe, name, recipe.train.epochs, foreign=False)
    base = measure(wide, splits, device)
    pruned = prune_once(original, splits, epsilon, device)
    transfer = measure(finetune(original, splits, device, pruned), splits, device)
    control = measure(scratch_control(original, splits, device, pruned), splits, device)
    return {"seed": seed, "original_params": base["params"], "pruned_params": transfer["params"],
            "removed": 1 - transfer["params"] / base["params"],
            "original_test": base["test_metric"], "transfer_test": transfer["test_metric"],
            "control_test": control["test_metric"], "transfer_val_before_ft": pruned.transfer_val}


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
