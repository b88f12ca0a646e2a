"""`netsize prune TARGET`: prune-and-transfer a trained network, against a from-scratch control."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import torch
import typer
import yaml
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn

from netsize.cli.common import (
    DeviceOption,
    SeedOption,
    SetOption,
    StorageOption,
    StudyOption,
    ThreadsOption,
    TrialsOption,
    console,
    new_run_dir,
    resolve_device,
    set_threads,
    user_errors_exit_2,
)
from netsize.data import Splits, load_data
from netsize.errors import UserError
from netsize.io import load_checkpoint, read_checkpoint_meta, save_checkpoint, write_csv, write_json
from netsize.recipe import ForeignModelConfig, Recipe, load_recipe, recipe_from_dict, recipe_to_dict
from netsize.report import markdown_table, pareto_front, plot_front
from netsize.spec import NetSpec
from netsize.transfer import Original, Pruned, finetune, measure, prune_once, scratch_control

ROW_COLUMNS = ["variant", "epsilon", "params", "flops", "latency_b1_ms", "latency_b64_ms",
               "val_metric", "test_metric", "transfer_val_metric", "path"]
REPORT_COLUMNS = [("variant", "variant"), ("epsilon", "epsilon"), ("params", "parameters"),
                  ("flops", "FLOPs/example"), ("latency_b1_ms", "CPU ms, batch 1"),
                  ("latency_b64_ms", "CPU ms, batch 64"), ("val_metric", "validation"),
                  ("test_metric", "test")]


def _overrides(epsilons: list[str] | None, sets: list[str] | None, seed: int | None) -> list[str]:
    out = list(sets or [])
    if epsilons:
        values = [v.strip() for item in epsilons for v in item.split(",") if v.strip()]
        out.append(f"prune.epsilon=[{', '.join(values)}]")
    if seed is not None:
        out.append(f"seed={seed}")
    return out


def resolve_recipe(target: Path, recipe_path: Path | None,
                   overrides: list[str]) -> tuple[Recipe, int, str]:
    """(recipe, epochs the original trained for, a name for the results folder)."""
    if target.is_dir():
        meta = read_checkpoint_meta(target)
        carried = meta.get("recipe")
        if recipe_path is not None:
            recipe = load_recipe(recipe_path, overrides)
        elif isinstance(carried, dict):
            recipe = recipe_from_dict(carried, f"{target}/spec.json", overrides)
        else:
            raise UserError(f"{target}: the checkpoint carries no recipe; pass --recipe RECIPE.")
        epochs = carried["train"]["epochs"] if isinstance(carried, dict) else recipe.train.epochs
        run = target.parent.parent if target.parent.name == "checkpoints" else target
        name = run.parent.name if run.parent.name not in ("", ".") else run.name
        return recipe, int(epochs), name
    if target.is_file():
        recipe = load_recipe(target, overrides)
        if not isinstance(recipe.model, ForeignModelConfig):
            raise UserError(f"{target}: model.kind {recipe.model.kind} is netsize's own; train "
                            "it with netsize train and prune its checkpoint folder instead.")
        return recipe, recipe.train.epochs, target.stem
    raise UserError(f"{target}: no such checkpoint folder or recipe; pass a folder such as "
                    "results/train/<recipe>/<run>/checkpoints/best, or a recipe file.")


def load_original(target: Path, recipe: Recipe, splits: Splits) -> tuple[nn.Module, bool]:
    if target.is_dir():
        return load_checkpoint(target)[0], False
    from netsize import foreign

    cfg = recipe.model
    assert isinstance(cfg, ForeignModelConfig)
    if cfg.weights is None:
        raise UserError(f"{target}: model.weights is required: the trained weights "
                        "(.safetensors, or a state_dict file).")
    if any(not 0.0 < e < 1.0 for e in recipe.prune.epsilon):
        raise UserError(f"{target}: prune.epsilon is the share of channels removed for "
                        f"{cfg.kind} models and must lie strictly between 0 and 1.")
    if len(splits.input_shape) != 3:
        raise UserError(f"{target}: a {cfg.kind} model needs image data; set data.as_image: "
                        "true or use a torchvision data set.")
    shape = (splits.input_shape[0], splits.input_shape[1], splits.input_shape[2])
    model = foreign.create_model(cfg, shape, splits.n_outputs)
    foreign.load_weights(model, cfg.weights)
    return model, True


def _save(run_dir: Path, tag: str, original: Original, net: nn.Module, structure: Any,
          meta: dict[str, Any]) -> str:
    folder = run_dir / "checkpoints" / tag
    meta = {**meta, "tag": tag, "recipe": recipe_to_dict(original.recipe)}
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    if original.foreign:
        from netsize import foreign

        cfg = original.recipe.model
        assert isinstance(cfg, ForeignModelConfig)
        n_out, channels = meta["n_outputs"], meta["in_chans"]
        foreign.save_pruned(folder, cfg, n_out, channels, structure, net.cpu(), meta)
    else:
        assert isinstance(structure, NetSpec)
        save_checkpoint(folder, structure, state, meta)
    return f"checkpoints/{tag}"


def run_prune(original: Original, splits: Splits, device: torch.device, run_dir: Path,
              progress: Progress | None = None) -> list[dict[str, Any]]:
    """Every epsilon: prune + transfer + fine-tune, and the from-scratch control. Rows out."""
    facts = {"task": splits.task, "n_outputs": splits.n_outputs,
             "in_chans": splits.input_shape[0]}
    rows = [{"variant": "original", "epsilon": "", "path": "",
             **measure(original.net, splits, device)}]
    steps = len(original.recipe.prune.epsilon) * 2

    def advance() -> None:
        if progress is not None:
            progress.advance(task_id)

    task_id = progress.add_task("pruning", total=steps) if progress is not None else TaskID(0)
    for eps in original.recipe.prune.epsilon:
        pruned: Pruned = prune_once(original, splits, eps, device)
        net = finetune(original, splits, device, pruned)
        row = {"variant": "pruned+transfer", "epsilon": eps,
               "transfer_val_metric": pruned.transfer_val, **measure(net, splits, device)}
        row["path"] = _save(run_dir, f"eps-{eps:g}", original, net, pruned.structure,
                            {**facts, **row})
        rows.append(row)
        advance()
        if original.recipe.prune.control:
            control = scratch_control(original, splits, device, pruned)
            ctrl = {"variant": "from-scratch", "epsilon": eps, **measure(control, splits, device)}
            ctrl["path"] = _save(run_dir, f"eps-{eps:g}-scratch", original, control,
                                 pruned.structure, {**facts, **ctrl})
            rows.append(ctrl)
        advance()
    return rows


def write_outputs(run_dir: Path, name: str, rows: list[dict[str, Any]], task: str) -> None:
    metric = "accuracy" if task == "classification" else "R^2"
    write_csv(run_dir / "results.csv", rows, ROW_COLUMNS)
    write_json(run_dir / "results.json", rows)
    points = [r for r in rows if r["variant"] in ("original", "pruned+transfer")]
    front = pareto_front(points)
    write_csv(run_dir / "front.csv", front, ROW_COLUMNS)
    write_json(run_dir / "front.json", {"metric": metric, "objectives": {
        "val_metric": "maximize", "params": "minimize"}, "points": front})
    plot_front(run_dir / "front.png", points, front, f"netsize prune: {name}", metric)
    report = [f"# netsize prune: {name}", "", f"Metric: {metric}. Latency: median CPU forward "
              "time in this process.", "", markdown_table(rows, REPORT_COLUMNS), "",
              "## Front over the epsilons (validation metric against parameters)", "",
              markdown_table(front, REPORT_COLUMNS), "", "![front](front.png)", ""]
    (run_dir / "report.md").write_text("\n".join(report))


def _table(rows: list[dict[str, Any]], run_dir: Path) -> Table:
    table = Table(title="original / pruned+transfer / from-scratch",
                  caption=f"outputs in {run_dir}")
    table.add_column("variant", no_wrap=True)
    for header in ("eps", "params", "FLOPs", "ms b1", "ms b64", "val", "test"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(r["variant"], str(r["epsilon"]), f"{r['params']:,}", f"{r['flops']:,}",
                      f"{r['latency_b1_ms']:.3f}", f"{r['latency_b64_ms']:.3f}",
                      f"{r['val_metric']:.4f}", f"{r['test_metric']:.4f}")
    return table


def _prune_study(original: Original, splits: Splits, device: torch.device, trials: int,
                 storage: str | None, study: str | None, out: Path | None, origin: str) -> None:
    """--trials: each trial prunes the same original with sampled prune/train keys."""
    from netsize.cli.search import run_study, study_dir_for
    from netsize.search import TrialResult

    if trials < 1:
        raise UserError(f"--trials {trials}: give 1 or more.")

    def run_trial(recipe: Recipe, trial_dir: Path, stopper: Any) -> TrialResult:
        trial_dir.mkdir(parents=True, exist_ok=True)
        trial_original = Original(original.net, recipe, original.name, original.epochs,
                                  original.foreign)
        rows = run_prune(trial_original, splits, device, trial_dir)
        points = [dict(r, tag=f"eps-{r['epsilon']:g}", step=0, epoch=0,
                       path=str(trial_dir / r["path"]))
                  for r in rows if r["variant"] == "pruned+transfer"]
        return TrialResult(points)

    run_study("prune", original.name, original.recipe, origin, trials, storage, study,
              study_dir_for("prune", original.name, out), run_trial)


@user_errors_exit_2
def prune(
    target: Annotated[Path, typer.Argument(
        help="A netsize checkpoint folder, or a recipe naming a timm/torchvision model.")],
    recipe: Annotated[Path | None, typer.Option(
        help="Recipe for data and fine-tuning (default: the one the checkpoint carries).")] = None,
    epsilon: Annotated[list[str] | None, typer.Option(
        help="Pruning parameter; repeat it or give a list: --epsilon 0.5,0.8.")] = None,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option(
        help="Run folder (default: results/prune/<name>/<timestamp>-s<seed>).")] = None,
    device: DeviceOption = "auto",
    seed: SeedOption = None,
    threads: ThreadsOption = None,
    trials: TrialsOption = None,
    storage: StorageOption = None,
    study: StudyOption = None,
) -> None:
    """Remove low-variability units, transfer the rest into a smaller dense network, fine-tune.

    Reports the original, the pruned-and-transferred network and the same small architecture
    trained from scratch: parameters, FLOPs, CPU latency and accuracy (or R^2).

    Example:  netsize prune results/train/digits_mlp/<run>/checkpoints/best --epsilon 0.5,1.0
    """
    parsed, epochs, name = resolve_recipe(target, recipe, _overrides(epsilon, set_, seed))
    torch_device = resolve_device(device)
    set_threads(threads)
    splits = load_data(parsed.data, parsed.seed)
    net, foreign = load_original(target, parsed, splits)
    original = Original(net, parsed, name, epochs, foreign)
    if trials is not None:
        _prune_study(original, splits, torch_device, trials, storage, study, out, str(target))
        return
    run_dir = out or new_run_dir(Path("results") / "prune" / name, parsed.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe_to_dict(parsed), sort_keys=False))
    console.print(f"netsize prune [bold]{target}[/] on {torch_device} -> {run_dir}")
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                  TextColumn("{task.completed}/{task.total}"), console=console) as progress:
        rows = run_prune(original, splits, torch_device, run_dir, progress)
    write_outputs(run_dir, name, rows, splits.task)
    console.print(_table(rows, run_dir))
