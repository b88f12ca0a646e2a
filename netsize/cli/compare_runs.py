"""The runs behind `netsize compare RECIPE`, and reading run folders back as rows.

Every method writes ordinary run folders (as grow, train and prune do); the comparison itself is
always made from folders, so comparing saved runs and comparing fresh ones are the same code.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from netsize.cli.grow import run_grow
from netsize.cli.prune import run_prune, write_outputs
from netsize.data import Splits, load_data
from netsize.errors import UserError
from netsize.io import load_checkpoint, write_json
from netsize.recipe import CnnConfig, MlpConfig, Recipe, recipe_from_dict, recipe_to_dict
from netsize.transfer import Original

METHODS = ("fixed", "grow-senn", "grow-gradmax", "grow-random", "prune")


def _with(recipe: Recipe, overrides: list[str]) -> Recipe:
    return recipe_from_dict(recipe_to_dict(recipe), "compare", overrides)


def _scaled_model(recipe: Recipe, factor: float) -> str:
    model = recipe.model
    if isinstance(model, MlpConfig):
        return f"model.hidden={[max(1, round(w * factor)) for w in model.hidden]}"
    if isinstance(model, CnnConfig):
        stages = [[max(1, round(w * factor)) for w in stage] for stage in model.stages]
        return f"model.stages={stages}"
    raise UserError("netsize compare RECIPE needs model.kind mlp or cnn.")


def _schedule(recipe: Recipe, splits: Splits, init: str) -> list[str]:
    n, bs = len(splits.x_train), recipe.train.batch_size
    total = (n // bs + (1 if n % bs > 1 else 0)) * recipe.train.epochs
    times = recipe.compare.schedule_times
    every = max(1, total // (times + 2))
    return ["grow.trigger=schedule", f"grow.init={init}", f"grow.schedule.start={every}",
            f"grow.schedule.every={every}", f"grow.schedule.times={times}",
            f"grow.schedule.amount={recipe.compare.schedule_amount}"]


def run_method(method: str, recipe: Recipe, splits: Splits, root: Path, device: torch.device,
               budget: float | None) -> None:
    """Train one method for one seed, writing its run folders under root/<method>/."""
    folder = root / method
    if method == "fixed":
        for factor in recipe.compare.width_factors:
            r = _with(recipe, ["grow.trigger=none", _scaled_model(recipe, factor)])
            run_grow(r, "fixed", folder / f"x{factor:g}", device, False, flops_budget=budget)
    elif method == "grow-senn":
        r = _with(recipe, ["grow.trigger=senn", "grow.init=gradmax"])
        run_grow(r, method, folder, device, False, flops_budget=budget)
    elif method in ("grow-gradmax", "grow-random"):
        r = _with(recipe, _schedule(recipe, splits, method.removeprefix("grow-")))
        run_grow(r, method, folder, device, False, flops_budget=budget)
    elif method == "prune":
        _run_prune(recipe, splits, root, device, budget)
    else:
        raise UserError(f"--methods: unknown method {method!r}; choose from {', '.join(METHODS)}.")


def _run_prune(recipe: Recipe, splits: Splits, root: Path, device: torch.device,
               budget: float | None) -> None:
    """Prune the widest fixed model (trained here unless the fixed sweep already did)."""
    started = time.perf_counter()
    widest = max(recipe.compare.width_factors)
    source = root / "fixed" / f"x{widest:g}"
    if not (source / "checkpoints" / "best").is_dir():
        r = _with(recipe, ["grow.trigger=none", _scaled_model(recipe, widest)])
        run_grow(r, "fixed", root / "prune" / "original", device, False, flops_budget=budget)
        source = root / "prune" / "original"
    net, _ = load_checkpoint(source / "checkpoints" / "best")
    pruned_recipe = _with(recipe, ["prune.control=false"])
    folder = root / "prune"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(pruned_recipe),
                                                       sort_keys=False))
    original = Original(net, pruned_recipe, "prune", recipe.train.epochs, foreign=False)
    rows = run_prune(original, splits, device, folder)
    write_outputs(folder, "prune", rows, splits.task)
    source_summary = json.loads((source / "summary.json").read_text())
    original_flops = source_summary["train_flops"]
    finetune = sum(3.0 * r["flops"] * len(splits.x_train) * recipe.prune.finetune_epochs
                   for r in rows if r["variant"] == "pruned+transfer")
    seconds = source_summary["wall_seconds"] + time.perf_counter() - started
    write_json(folder / "compute.json", {"train_flops": original_flops + finetune,
                                         "wall_seconds": seconds,
                                         "note": "the original's training plus fine-tuning"})


def run_all(recipe: Recipe, methods: list[str], seeds: int, out: Path, device: torch.device,
            budget: float | None, progress: Any = None) -> list[Path]:
    folders = []
    task = progress.add_task("runs", total=seeds * len(methods)) if progress else None
    for seed in range(recipe.seed, recipe.seed + seeds):
        seeded = _with(recipe, [f"seed={seed}"])
        splits = load_data(seeded.data, seed)
        for method in methods:
            root = out / "runs" / f"s{seed}"
            run_method(method, seeded, splits, root, device, budget)
            folders.append(root / method)
            if progress:
                progress.advance(task)
    return folders


# --------------------------------------------------------------------------- reading folders
def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _grow_like(folder: Path) -> tuple[str, int, list[dict[str, Any]], float, float]:
    summary = json.loads((folder / "summary.json").read_text())
    grow = summary.get("grow", {})
    trigger = grow.get("trigger", "senn")
    method = {"none": "fixed", "senn": "grow-senn"}.get(trigger, f"grow-{grow.get('init')}")
    seed = int(yaml.safe_load((folder / "recipe.yaml").read_text()).get("seed", 0))
    rows = [{"params": int(r["params"]), "val_metric": float(r["val_metric"]),
             "test_metric": float(r["test_metric"]), "tag": r["tag"],
             "path": str(folder / "checkpoints" / r["tag"])}
            for r in _read_csv(folder / "checkpoints.csv")]
    return method, seed, rows, float(summary.get("train_flops", float("nan"))), \
        float(summary.get("wall_seconds", float("nan")))


def read_folder(folder: Path, label: str | None = None) -> dict[str, Any]:
    """A grow/train run, a prune run, or a method folder holding several runs (fixed sweep)."""
    if (folder / "summary.json").is_file() and (folder / "checkpoints.csv").is_file():
        method, seed, rows, flops, seconds = _grow_like(folder)
    elif (folder / "results.json").is_file():
        method = "prune"
        seed = int(yaml.safe_load((folder / "recipe.yaml").read_text()).get("seed", 0))
        rows = [dict(r, tag=f"eps-{r['epsilon']:g}", path=str(folder / r["path"]))
                for r in json.loads((folder / "results.json").read_text())
                if r["variant"] == "pruned+transfer"]
        compute_file = folder / "compute.json"
        compute = json.loads(compute_file.read_text()) if compute_file.is_file() else {}
        flops = float(compute.get("train_flops", float("nan")))
        seconds = float(compute.get("wall_seconds", float("nan")))
    else:
        subs = sorted(p for p in folder.iterdir() if (p / "summary.json").is_file()) \
            if folder.is_dir() else []
        if not subs:
            raise UserError(f"{folder}: not a netsize run folder (no summary.json with "
                            "checkpoints.csv, nor results.json); pass folders written by "
                            "netsize grow, train, prune or compare.")
        parts = [read_folder(p) for p in subs]
        method, seed = parts[0]["method"], parts[0]["seed"]
        rows = [r for p in parts for r in p["rows"]]
        flops = sum(p["train_flops"] for p in parts)
        seconds = sum(p["wall_seconds"] for p in parts)
    method = label or method
    for row in rows:
        row.update(method=method, seed=seed)
    return {"method": method, "seed": seed, "rows": rows, "train_flops": flops,
            "wall_seconds": seconds}
