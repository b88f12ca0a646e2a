"""`compare_runs` and `compare_recipe`: growth, pruning and fixed sizes on one budget.

Every method writes ordinary run folders (as grow, train and prune do); the comparison itself is
always made from folders, so comparing saved runs and comparing fresh ones are the same code.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from netsize.compare import (
    MethodSummary,
    check_requirement,
    check_target,
    join_curves,
    mark_front,
    summarise,
    sweep_coverage,
)
from netsize.data import Splits, load_data
from netsize.errors import UserError
from netsize.files import atomic_write_text, write_csv, write_json
from netsize.io import load_checkpoint
from netsize.preflight import check_data
from netsize.recipe import Recipe, derive
from netsize.report import Point, write_front
from netsize.runs.compare_checks import check_comparable, metric_name
from netsize.runs.compare_report import claims, report
from netsize.runs.grow import run_grow, timing
from netsize.runs.prune import Original, run_prune

METHODS = ("fixed", "grow-senn", "grow-gradmax", "grow-random", "prune")
POINT_COLUMNS = ["method", "seed", "tag", "params", "val_metric", "test_metric", "on_front",
                 "on_method_front", "path"]
# methods.csv: one row per method (numbers; the parameters to reach each target follow)
METHOD_COLUMNS = ["method", "points", "hypervolume", "hypervolume_std", "anytime", "anytime_std",
                  "best_metric", "params_at_best", "train_flops", "wall_seconds"]


@dataclass
class CompareResult:
    folder: Path
    summaries: list[MethodSummary]
    reference: tuple[float, float]  # (parameters, metric) of the hypervolume's reference point
    gates: list[tuple[bool, str]] = field(default_factory=list)  # (holds, what was checked)
    claims: list[str] = field(default_factory=list)  # each grow method against the fixed sweep
    warnings: list[str] = field(default_factory=list)  # runs trained differently, one line each

    @property
    def failed(self) -> list[str]:
        return [text for ok, text in self.gates if not ok]

    def as_dict(self) -> dict[str, Any]:
        return {"reference_point": {"params": self.reference[0],
                                    "val_metric": self.reference[1]},
                "methods": [vars(s) for s in self.summaries],
                "gates": [{"passed": ok, "check": text} for ok, text in self.gates],
                "warnings": self.warnings}


# ---------------------------------------------------------------------------- running methods
def _scaled_model(recipe: Recipe, factor: float) -> dict[str, Any]:
    scaled = getattr(recipe.model, "scaled", None)
    if scaled is None:
        raise UserError(f"model.kind: netsize compare RECIPE needs a network netsize builds "
                        f"(not {recipe.model.kind}); prune timm/torchvision models instead.")
    return scaled(factor)  # type: ignore[no-any-return]


def _schedule(recipe: Recipe, splits: Splits, init: str) -> dict[str, Any]:
    n, bs = len(splits.x_train), recipe.train.batch_size
    total = (n // bs + (1 if n % bs > 1 else 0)) * recipe.train.epochs
    times = recipe.compare.schedule_times
    every = max(1, total // (times + 2))
    return {"grow.trigger": "schedule", "grow.init": init, "grow.schedule.start": every,
            "grow.schedule.every": every, "grow.schedule.times": times,
            "grow.schedule.amount": recipe.compare.schedule_amount}


def run_method(method: str, recipe: Recipe, splits: Splits, root: Path, device: torch.device,
               budget: float | None) -> None:
    """Train one method for one seed, writing its run folders under root/<method>/."""
    folder = root / method
    if method == "fixed":
        for factor in recipe.compare.width_factors:
            r = derive(recipe, {"grow.trigger": "none", **_scaled_model(recipe, factor)})
            run_grow(r, folder / f"x{factor:g}", name="fixed", device=device,
                     flops_budget=budget)
    elif method == "grow-senn":
        r = derive(recipe, {"grow.trigger": "senn", "grow.init": "gradmax"})
        run_grow(r, folder, name=method, device=device, flops_budget=budget)
    elif method in ("grow-gradmax", "grow-random"):
        r = derive(recipe, _schedule(recipe, splits, method.removeprefix("grow-")))
        run_grow(r, folder, name=method, device=device, flops_budget=budget)
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
        r = derive(recipe, {"grow.trigger": "none", **_scaled_model(recipe, widest)})
        source = root / "prune" / "original"
        run_grow(r, source, name="fixed", device=device, flops_budget=budget)
    net, _ = load_checkpoint(source / "checkpoints" / "best")
    pruned_recipe = derive(recipe, {"prune.control": False})
    original = Original(net, pruned_recipe, "prune", recipe.train.epochs, foreign=False)
    folder = root / "prune"
    rows = run_prune(original, splits, folder, device=device).rows
    source_summary = json.loads((source / "summary.json").read_text())
    transfers = [r for r in rows if r["variant"] == "pruned+transfer"]
    finetunes = [3.0 * r["flops"] * len(splits.x_train) * recipe.prune.finetune_epochs
                 for r in transfers]
    seconds = source_summary["wall_seconds"] + time.perf_counter() - started
    write_json(folder / "compute.json", {"train_flops": source_summary["train_flops"]
                                         + sum(finetunes),
                                         "wall_seconds": seconds, "timing": timing(device),
                                         "note": "the original's training plus fine-tuning",
                                         "curve": _prune_curve(source, transfers, finetunes)})


def _prune_curve(source: Path, transfers: list[Any],
                 finetunes: list[float]) -> list[tuple[float, float]]:
    """The original's training curve, then each transfer's fine-tuning (its FLOPs) ending at
    its validation metric: the prune method's compute in the order it is spent."""
    curve = training_curve(source)
    if not curve:
        return []
    spent = curve[-1][0]
    for row, flops in zip(transfers, finetunes, strict=True):
        spent += flops
        curve.append((spent, float(row["val_metric"])))
    return curve


def run_methods(recipe: Recipe, methods: Sequence[str], seeds: int, out: Path,
                device: torch.device, budget: float | None = None,
                advance: Callable[[], None] | None = None) -> list[Path]:
    """Every method for seeds recipe.seed, +1, ...; returns the method folders."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or seeds < 1:
        raise UserError(f"--methods {','.join(methods)!r} / --seeds {seeds}: choose methods from "
                        f"{', '.join(METHODS)} and 1 or more seeds.")
    folders = []
    for seed in range(recipe.seed, recipe.seed + seeds):
        seeded = derive(recipe, {"seed": seed})
        check_data(seeded.data)
        splits = load_data(seeded.data, seed)
        for method in methods:
            root = out / "runs" / f"s{seed}"
            run_method(method, seeded, splits, root, device, budget)
            folders.append(root / method)
            if advance is not None:
                advance()
    return folders


def compare_recipe(recipe: Recipe, methods: Sequence[str], seeds: int, out: Path,
                   device: torch.device, budget: float | None = None,
                   advance: Callable[[], None] | None = None, **gates: Any) -> CompareResult:
    """Run every method on the recipe, then compare the folders (gates as in compare_runs)."""
    folders = run_methods(recipe, methods, seeds, out, device, budget, advance)
    return compare_runs(folders, out, targets=list(recipe.compare.targets), **gates)


# ------------------------------------------------------------------------------- comparing
def compare_runs(run_dirs: Sequence[str | Path], out: str | Path, *,
                 require: Sequence[str] = (), min_metric: float | None = None,
                 max_params: int | None = None,
                 targets: Sequence[float] = (0.7, 0.8)) -> CompareResult:
    """Compare run folders: hypervolumes, parameters to reach targets, compute, gates.

    require: 'METHOD >= METHOD' on mean hypervolumes; min_metric/max_params: some checkpoint
    reaches min_metric with at most max_params parameters. Writes points, summary, the front
    and report.md into out.
    """
    check_run_dirs(run_dirs)
    warnings = check_comparable(run_dirs)  # refuses runs of different data
    parts = [read_folder(Path(d)) for d in run_dirs]
    rows: list[Point] = [r for p in parts for r in p["rows"]]
    if not rows:
        raise UserError("the folders hold no checkpoints to compare.")
    curves = {(p["method"], p["seed"]): p["curve"] for p in parts}
    summaries, ref = summarise(rows, _compute(parts), list(targets), curves)
    checks = [check_requirement(text, summaries) for text in require]
    if min_metric is not None or max_params is not None:
        checks.append(check_target(rows, min_metric, max_params))
    result = CompareResult(Path(out), summaries, ref, checks,
                           claims(summaries) + sweep_coverage(rows), warnings)
    _write(result, rows, metric_name(run_dirs))
    return result


def check_run_dirs(run_dirs: Sequence[str | Path]) -> None:
    missing = [str(Path(d).absolute()) for d in run_dirs if not Path(d).is_dir()]
    if missing:
        raise UserError(f"{missing[0]}: no such run folder; pass one recipe, or folders "
                        "written by netsize grow, train, prune or compare.")


def _write(result: CompareResult, rows: list[Point], metric: str) -> None:
    folder = result.folder
    folder.mkdir(parents=True, exist_ok=True)
    marked = mark_front(rows)
    write_csv(folder / "points.csv", marked, POINT_COLUMNS)
    write_json(folder / "points.json", marked)
    write_json(folder / "summary.json", result.as_dict())
    reach = [f"params@{t}" for t in (result.summaries[0].reach if result.summaries else {})]
    write_csv(folder / "methods.csv",
              [{**vars(s), **{f"params@{t}": v for t, v in s.reach.items()}}
               for s in result.summaries], METHOD_COLUMNS + reach)
    write_front(folder, rows, POINT_COLUMNS, "netsize compare: Pareto fronts (all seeds pooled;"
                " dots: every checkpoint)", metric, group_by="method")
    atomic_write_text(folder / "report.md",
                      report(result.summaries, result.reference, result.gates, result.claims))


def _compute(parts: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean training FLOPs and wall seconds per method over its seeds. Wall seconds are NaN
    (shown as '-') unless every run was timed on one host, device and thread count."""
    comparable = len({json.dumps(p["timing"], sort_keys=True) for p in parts}) == 1 \
        and parts[0]["timing"] is not None
    out: dict[str, dict[str, float]] = {}
    for method in {p["method"] for p in parts}:
        mine = [p for p in parts if p["method"] == method]
        out[method] = {"flops": statistics.fmean(p["train_flops"] for p in mine),
                       "seconds": statistics.fmean(p["wall_seconds"] for p in mine)
                       if comparable else float("nan")}
    return out


# --------------------------------------------------------------------------- reading folders
def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _start_params(folder: Path) -> int:
    return int(json.loads((folder / "summary.json").read_text()).get("start_params", 0))


def _seed_of(folder: Path) -> int:
    return int(yaml.safe_load((folder / "recipe.yaml").read_text()).get("seed", 0))


def training_curve(folder: Path) -> list[tuple[float, float]]:
    """(training FLOPs so far, validation metric) at each epoch end of a grow/train run; empty
    for folders written before metrics.csv had the train_flops column."""
    metrics = folder / "metrics.csv"
    rows = _read_csv(metrics) if metrics.is_file() else []
    if not rows or not rows[0].get("train_flops"):
        return []
    return [(float(r["train_flops"]), float(r["val_metric"])) for r in rows]


def _timing(folder: Path) -> Any:
    """The timing a grow/train run recorded (None for runs written before it was)."""
    return json.loads((folder / "summary.json").read_text()).get("timing")


def _grow_like(folder: Path) -> tuple[str, int, list[dict[str, Any]], float, float]:
    summary = json.loads((folder / "summary.json").read_text())
    grow = summary.get("grow", {})
    trigger = grow.get("trigger", "senn")
    method = {"none": "fixed", "senn": "grow-senn"}.get(trigger, f"grow-{grow.get('init')}")
    rows = [{"params": int(r["params"]), "val_metric": float(r["val_metric"]),
             "test_metric": float(r["test_metric"]), "tag": r["tag"],
             "path": str(folder / "checkpoints" / r["tag"])}
            for r in _read_csv(folder / "checkpoints.csv")]
    return method, _seed_of(folder), rows, float(summary.get("train_flops", float("nan"))), \
        float(summary.get("wall_seconds", float("nan")))


def read_folder(folder: Path, label: str | None = None) -> dict[str, Any]:
    """A grow/train run, a prune run, or a method folder holding several runs (fixed sweep)."""
    if (folder / "summary.json").is_file() and (folder / "checkpoints.csv").is_file():
        method, seed, rows, flops, seconds = _grow_like(folder)
        curve = training_curve(folder)
        when = _timing(folder)
    elif (folder / "results.json").is_file():
        method, seed = "prune", _seed_of(folder)
        rows = [dict(r, tag=f"eps-{r['epsilon']:g}", path=str(folder / r["path"]))
                for r in json.loads((folder / "results.json").read_text())
                if r["variant"] == "pruned+transfer"]
        compute_file = folder / "compute.json"
        compute = json.loads(compute_file.read_text()) if compute_file.is_file() else {}
        flops = float(compute.get("train_flops", float("nan")))
        seconds = float(compute.get("wall_seconds", float("nan")))
        curve = [(float(f), float(m)) for f, m in compute.get("curve", [])]
        when = compute.get("timing")
    else:
        subs = sorted(p for p in folder.iterdir() if (p / "summary.json").is_file()) \
            if folder.is_dir() else []
        if not subs:
            raise UserError(f"{folder}: not a netsize run folder (no summary.json with "
                            "checkpoints.csv, nor results.json); pass folders written by "
                            "netsize grow, train, prune or compare.")
        parts = [read_folder(p) for p in subs]
        method, seed = parts[0]["method"], parts[0]["seed"]
        # a sweep's runs all have a "final": name the run too ("x2/final")
        rows = [dict(r, tag=f"{sub.name}/{r['tag']}") for sub, p in zip(subs, parts, strict=True)
                for r in p["rows"]]
        flops = sum(p["train_flops"] for p in parts)
        seconds = sum(p["wall_seconds"] for p in parts)
        # the runs one after another, smallest first (as a sweep is made)
        ordered = sorted(zip(subs, parts, strict=True), key=lambda sp: _start_params(sp[0]))
        curve = [] if any(not p["curve"] for p in parts) else \
            join_curves([p["curve"] for _, p in ordered])
        timings = {json.dumps(p["timing"], sort_keys=True) for p in parts}
        when = json.loads(timings.pop()) if len(timings) == 1 else None  # when they agree
    method = label or method
    for row in rows:
        row.update(method=method, seed=seed)
    return {"method": method, "seed": seed, "rows": rows, "train_flops": flops,
            "wall_seconds": seconds, "curve": curve, "timing": when}
