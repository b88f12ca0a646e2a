"""Prune-and-transfer (ODF2NNA) against the original and a from-scratch control, over seeds:
where does the method's claim (over 70% fewer parameters, no loss) hold?

For each data set (digits, breast_cancer, wine, iris: classification; diabetes: regression)
and seed: train a wide MLP (256-256, recipes/digits_mlp.yaml or diabetes_mlp.yaml), prune it
by variability at every epsilon (prune's default epsilons, or --epsilon), fine-tune each
transfer, and train the same small architecture from scratch for the original's epochs plus
the fine-tuning epochs. Prints per epsilon the parameters removed and the test metric (accuracy
or R^2) of the original, the transfer and the control, means over seeds, and whether the claim
holds there (>= 70% removed, the transfer within 0.005 accuracy or 0.01 R^2 of the original).

Each run goes through the public API as `netsize train` + `netsize prune` would: `run_grow`
(grow.trigger=none) trains the original into a temporary folder, `load_original` reads its best
checkpoint back and `run_prune` prunes, fine-tunes and trains the control.

    python benchmarks/prune_transfer.py                      # 3 seeds, default epsilons
    python benchmarks/prune_transfer.py --seeds 1 --epsilon 0.5,1.0,1.2 --data iris wine
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from netsize import derive, load_original, load_recipe, run_grow, run_prune
from netsize.prune import PruneConfig

ROOT = Path(__file__).resolve().parent.parent
MLP, REGRESSOR = ROOT / "recipes" / "digits_mlp.yaml", ROOT / "recipes" / "diabetes_mlp.yaml"
# each data set: the wide MLP recipe (256-256) and its changes
DATA: dict[str, tuple[Path, dict[str, Any]]] = {
    "digits": (MLP, {}),
    "breast_cancer": (MLP, {"data.name": "breast_cancer"}),
    "wine": (MLP, {"data.name": "wine"}),
    "iris": (MLP, {"data.name": "iris"}),
    "diabetes": (REGRESSOR, {}),
}
# "no loss": the transfer's mean test metric at most this far below the original's
TOLERANCE = {"accuracy": 0.005, "R^2": 0.01}
CLAIM_REMOVED = 0.70


def one_run(name: str, seed: int, epsilons: list[float] | None) -> list[dict[str, float]]:
    """Train the original once, then prune at every epsilon (the recipe's default list when
    None): one row per epsilon."""
    path, changes = DATA[name]
    changes = {**changes, "seed": seed, "grow.trigger": "none", "prune.control": True}
    if epsilons is not None:
        changes["prune.epsilon"] = epsilons
    recipe = derive(load_recipe(path), changes, "benchmarks/prune_transfer.py")
    if epsilons is None:  # the library's default epsilons, not the recipe's own list
        recipe = derive(recipe, {"prune.epsilon": PruneConfig().epsilons()},
                        "benchmarks/prune_transfer.py")
    with tempfile.TemporaryDirectory(prefix="netsize-prune-transfer-") as folder:
        trained = run_grow(recipe, Path(folder) / "original", name=name, device="cpu")
        original, splits = load_original(trained.run_dir / "checkpoints" / "best")
        rows = run_prune(original, splits, Path(folder) / "prune", device="cpu").rows
    base = next(r for r in rows if r["variant"] == "original")
    out = []
    for eps in recipe.prune.epsilons():
        transfer, control = (next(r for r in rows if r["variant"] == v and r["epsilon"] == eps)
                             for v in ("pruned+transfer", "from-scratch"))
        out.append({"seed": seed, "epsilon": eps, "original_params": base["params"],
                    "pruned_params": transfer["params"],
                    "removed": 1 - transfer["params"] / base["params"],
                    "original_test": base["test_metric"],
                    "transfer_test": transfer["test_metric"],
                    "control_test": control["test_metric"],
                    "transfer_val_before_ft": transfer["transfer_val_metric"]})
    return out


def summarise(name: str, runs: list[dict[str, float]], console: Console) -> list[dict[str, Any]]:
    """One row per epsilon (means over seeds); the claim holds at an epsilon when it removes
    >= 70% of the parameters and the transfer's test metric is within the tolerance."""
    metric = "R^2" if DATA[name][0] == REGRESSOR else "accuracy"
    table = Table(title=f"{name}: test {metric}, mean over {len({r['seed'] for r in runs})} "
                        "seeds")
    for col in ("epsilon", "params", "removed", "original", "pruned+transfer", "from-scratch",
                "claim"):
        table.add_column(col, justify="right")
    rows = []
    for eps in sorted({r["epsilon"] for r in runs}):
        mine = [r for r in runs if r["epsilon"] == eps]

        def mean(key: str, mine: list[dict[str, float]] = mine) -> float:
            return statistics.fmean(r[key] for r in mine)

        loss = mean("original_test") - mean("transfer_test")
        claim = mean("removed") >= CLAIM_REMOVED and loss <= TOLERANCE[metric]
        row = {"data": name, "metric": metric, "epsilon": eps, "removed": mean("removed"),
               "original_params": mean("original_params"), "pruned_params": mean("pruned_params"),
               "original": mean("original_test"), "transfer": mean("transfer_test"),
               "control": mean("control_test"), "claim_holds": claim}
        rows.append(row)
        table.add_row(f"{eps:g}", f"{row['original_params']:,.0f} -> {row['pruned_params']:,.0f}",
                      f"{100 * row['removed']:.1f}%", f"{row['original']:.4f}",
                      f"{row['transfer']:.4f}", f"{row['control']:.4f}",
                      "holds" if claim else "no")
    console.print(table)
    holding = [r["epsilon"] for r in rows if r["claim_holds"]]
    console.print(f"{name}: over 70% fewer parameters with no loss (<= {TOLERANCE[metric]} "
                  f"{metric}) at epsilon {', '.join(f'{e:g}' for e in holding) or 'none'}.",
                  highlight=False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epsilon", default=None,
                        help="epsilons for every data set, e.g. 0.5,1.0 (default: prune's "
                             "default epsilons)")
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console(width=110)
    epsilons = None if args.epsilon is None else [float(e) for e in args.epsilon.split(",")]
    out = {}
    for name in args.data:
        runs = [row for seed in range(args.seeds) for row in one_run(name, seed, epsilons)]
        out[name] = {"runs": runs, "per_epsilon": summarise(name, runs, console)}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
