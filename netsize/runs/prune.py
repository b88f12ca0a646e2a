"""`run_prune`: prune-and-transfer a trained network (ODF2NNA) against a from-scratch control.

For every epsilon: measure each unit's variability, keep the units above the threshold, copy
them into a smaller dense network, fine-tune it briefly, and train the same small architecture
from fresh weights with the same hyper-parameters (the control). The run folder holds
results.csv/json, a checkpoint per variant, the front (CSV, JSON, PNG) and report.md.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from netsize.architecture import ForeignModelConfig
from netsize.data import Splits, load_data
from netsize.errors import UserError
from netsize.files import atomic_write_text, write_csv, write_json
from netsize.graph.build import GraphNet
from netsize.graph.prune import prune_and_transfer, unit_statistics
from netsize.io import load_checkpoint, read_checkpoint_meta, save_checkpoint
from netsize.measure import NOISY, latency_columns, measure
from netsize.networks import AnySpec, build_network
from netsize.preflight import check_data
from netsize.recipe import Recipe, derive, load_recipe, recipe_from_dict, recipe_to_dict
from netsize.report import Point, markdown_table, task_metric, write_front
from netsize.train import Trainer, evaluate

ROW_COLUMNS = ["variant", "epsilon", "params", "flops", "latency_b1_ms", "latency_b64_ms",
               "latency_spread", "val_metric", "test_metric", "transfer_val_metric", "path"]
REPORT_COLUMNS = [("variant", "variant"), ("epsilon", "epsilon"), ("params", "parameters"),
                  ("flops", "FLOPs/example"), ("latency_b1_ms", "CPU ms, batch 1"),
                  ("latency_b64_ms", "CPU ms, batch 64"), ("latency_spread", "spread"),
                  ("val_metric", "validation"),
                  ("test_metric", "test")]


@dataclass
class Original:
    """The trained network to prune, with the recipe that gives its data and fine-tuning."""

    net: nn.Module
    recipe: Recipe
    name: str
    epochs: int  # epochs the original was trained for; the control trains these + fine-tuning
    foreign: bool  # a timm/torchvision module rather than a netsize Net


@dataclass
class Pruned:
    net: nn.Module  # pruned and transferred (fine-tuned once `finetune` ran)
    structure: Any  # GraphSpec for netsize nets, the channel-pruning record for foreign ones
    transfer_val: float  # validation metric right after the transfer, before fine-tuning


@dataclass
class PruneResult:
    run_dir: Path
    rows: list[Point]  # the original, then per epsilon: pruned+transfer and from-scratch
    front: list[Point]  # over the original and the pruned+transfer rows


# ------------------------------------------------------------------------------ the original
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
        epochs = (recipe_from_dict(carried, f"{target}/spec.json").train.epochs
                  if isinstance(carried, dict) else recipe.train.epochs)
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


def load_original(target: str | Path, recipe_path: str | Path | None = None,
                  overrides: list[str] | tuple[str, ...] = ()) -> tuple[Original, Splits]:
    """The network to prune (a checkpoint folder, or a recipe naming a timm/torchvision model
    with its weights) and the data of its recipe."""
    target = Path(target)
    recipe, epochs, name = resolve_recipe(target, Path(recipe_path) if recipe_path else None,
                                          list(overrides))
    check_data(recipe.data)
    splits = load_data(recipe.data, recipe.seed)
    if target.is_dir():
        net = load_checkpoint(target)[0]
        _check_fits(getattr(net, "spec"), splits, recipe_path)  # noqa: B009
        return Original(net, recipe, name, epochs, False), splits
    from netsize import foreign

    cfg = recipe.model
    assert isinstance(cfg, ForeignModelConfig)
    if cfg.weights is None:
        raise UserError(f"{target}: model.weights is required: the trained weights "
                        "(.safetensors, or a state_dict file).")
    if any(not 0.0 < e < 1.0 for e in recipe.prune.epsilons(foreign=True)):
        raise UserError(f"{target}: prune.epsilon is the share of channels removed for "
                        f"{cfg.kind} models and must lie strictly between 0 and 1.")
    if len(splits.input_shape) != 3:
        raise UserError(f"{target}: a {cfg.kind} model needs image data; set data.as_image: "
                        "true or use a torchvision data set.")
    shape = (splits.input_shape[0], splits.input_shape[1], splits.input_shape[2])
    model = foreign.create_model(cfg, shape, splits.n_outputs)
    foreign.load_weights(model, cfg.weights)
    return Original(model, recipe, name, epochs, True), splits


def _check_fits(spec: AnySpec, splits: Splits, recipe_path: str | Path | None) -> None:
    """The checkpoint's network must read the recipe's data (shape and number of outputs)."""
    flat = 1
    for dim in splits.input_shape:
        flat *= dim
    inputs_fit = spec.input_shape in (tuple(splits.input_shape), (flat,))
    if not inputs_fit or spec.n_outputs != splits.n_outputs:
        source = f"--recipe {recipe_path}" if recipe_path else "the checkpoint's recipe"
        raise UserError(f"{source}: its data (inputs {tuple(splits.input_shape)}, "
                        f"{splits.n_outputs} outputs) do not fit the checkpoint's network "
                        f"(inputs {spec.input_shape}, {spec.n_outputs} outputs); pass the "
                        "recipe the network was trained with.")


# ------------------------------------------------------------------------------------- steps
def prune_once(original: Original, splits: Splits, epsilon: float,
               device: torch.device) -> Pruned:
    """Remove low-scoring units (channels for foreign models) and copy the rest."""
    cfg = original.recipe.prune
    s = splits.to(device)
    net = copy.deepcopy(original.net).to(device)
    n = min(cfg.stats_examples, len(s.x_train))
    structure: Any
    if original.foreign:
        from netsize import foreign

        # epsilon is the share of channels removed, ranked by the criterion
        small, structure = foreign.prune_channels(net, s.x_train[:2], cfg.criterion, epsilon,
                                                  (s.x_train[:n], s.y_train[:n], s.task),
                                                  scope=cfg.scope)
    else:
        assert isinstance(net, GraphNet)
        stats = unit_statistics(net, s.x_train[:n], s.y_train[:n], s.task)
        structure, small = prune_and_transfer(net, stats, cfg.criterion, epsilon, cfg.scope,
                                              cfg.min_units, cfg.fold_mean)
    _, transfer_val = evaluate(small, s.x_val, s.y_val, s.task)
    return Pruned(small, structure, transfer_val)


def train_fixed(recipe: Recipe, splits: Splits, device: torch.device,
                net: nn.Module) -> nn.Module:
    """Train `net` at a fixed size; return it holding its best-validation weights."""
    trainer = Trainer(recipe, splits, device, net=net, grow=False)
    trainer.fit()
    assert trainer.best is not None
    trainer.net.load_state_dict(trainer.best[1].state)
    return trainer.net


def finetune(original: Original, splits: Splits, device: torch.device,
             pruned: Pruned) -> nn.Module:
    cfg = original.recipe.prune
    if cfg.finetune_epochs == 0:
        return pruned.net
    recipe = derive(original.recipe, {"train.epochs": cfg.finetune_epochs,
                                      "train.lr": cfg.lr or original.recipe.train.lr})
    return train_fixed(recipe, splits, device, pruned.net)


def scratch_control(original: Original, splits: Splits, device: torch.device,
                    pruned: Pruned) -> nn.Module:
    """The pruned architecture from fresh random weights, trained with the same
    hyper-parameters for the original's epochs plus the fine-tuning epochs."""
    torch.manual_seed(original.recipe.seed)
    if original.foreign:
        fresh = copy.deepcopy(pruned.net)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    else:
        fresh = build_network(pruned.structure)
    epochs = original.epochs + original.recipe.prune.finetune_epochs
    return train_fixed(derive(original.recipe, {"train.epochs": epochs}), splits, device, fresh)


# ------------------------------------------------------------------------------ the pipeline
def run_prune(original: Original, splits: Splits, run_dir: str | Path, *,
              device: str | torch.device = "cpu",
              advance: Callable[[], None] | None = None) -> PruneResult:
    """Every epsilon: prune + transfer + fine-tune, and the from-scratch control; every
    output written into run_dir. advance() is called after each of the 2 x epsilons steps."""
    run_dir, device = Path(run_dir), torch.device(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "recipe.yaml",
                      yaml.safe_dump(recipe_to_dict(original.recipe), sort_keys=False))
    rows = prune_rows(original, splits, device, run_dir, advance or (lambda: None))
    front = write_prune_outputs(run_dir, original.name, rows, splits.task)
    return PruneResult(run_dir, rows, front)


def prune_rows(original: Original, splits: Splits, device: torch.device, run_dir: Path,
               advance: Callable[[], None]) -> list[Point]:
    facts = {"task": splits.task, "n_outputs": splits.n_outputs,
             "in_chans": splits.input_shape[0], "input_shape": list(splits.input_shape)}
    rows: list[Any] = [{"variant": "original", "epsilon": "", "path": "",
                        **measure(original.net, splits, device)}]
    nets = [original.net]
    for eps in original.recipe.prune.epsilons(original.foreign):
        pruned = prune_once(original, splits, eps, device)
        net = finetune(original, splits, device, pruned)
        row = {"variant": "pruned+transfer", "epsilon": eps,
               "transfer_val_metric": pruned.transfer_val, **measure(net, splits, device)}
        row["path"] = _save(run_dir, f"eps-{eps:g}", original, net, pruned.structure,
                            {**facts, **row})
        rows.append(row)
        nets.append(net)
        advance()
        if original.recipe.prune.control:
            control = scratch_control(original, splits, device, pruned)
            ctrl = {"variant": "from-scratch", "epsilon": eps, **measure(control, splits, device)}
            ctrl["path"] = _save(run_dir, f"eps-{eps:g}-scratch", original, control,
                                 pruned.structure, {**facts, **ctrl})
            rows.append(ctrl)
            nets.append(control)
        advance()
    _add_latency(rows, nets, splits.input_shape, original.recipe.prune.latency)
    return rows


def _add_latency(rows: list[Any], nets: list[nn.Module], input_shape: tuple[int, ...],
                 wanted: bool) -> None:
    """CPU latency of every variant, timed together at the end (alternating models, repeated
    rounds, median and spread); None everywhere with prune.latency false."""
    columns = latency_columns(nets, input_shape) if wanted else [
        dict.fromkeys(("latency_b1_ms", "latency_b64_ms", "latency_spread")) for _ in nets]
    for row, values in zip(rows, columns, strict=True):
        row.update(values)


def _save(run_dir: Path, tag: str, original: Original, net: nn.Module, structure: Any,
          meta: dict[str, Any]) -> str:
    folder = run_dir / "checkpoints" / tag
    meta = {**meta, "tag": tag, "recipe": recipe_to_dict(original.recipe)}
    if original.foreign:
        from netsize import foreign

        cfg = original.recipe.model
        assert isinstance(cfg, ForeignModelConfig)
        foreign.save_pruned(folder, cfg, meta["n_outputs"], meta["in_chans"], structure,
                            net.cpu(), meta)
    else:
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        save_checkpoint(folder, structure, state, meta)
    return f"checkpoints/{tag}"


def write_prune_outputs(run_dir: Path, name: str, rows: list[Point], task: str) -> list[Point]:
    metric = task_metric(task)
    write_csv(run_dir / "results.csv", rows, ROW_COLUMNS)
    write_json(run_dir / "results.json", rows)
    points = [r for r in rows if r["variant"] in ("original", "pruned+transfer")]
    controls = [r for r in rows if r["variant"] == "from-scratch"]
    front = write_front(run_dir, points, ROW_COLUMNS, f"netsize prune: {name}", metric,
                        group_by="variant", also_plot=controls)
    timed = rows[0]["latency_b1_ms"] is not None
    latency = (f"Latency: CPU forward time in this process, the median of alternating rounds; "
               f"spread: max / min of the rounds (above {NOISY:g}: noisy)." if timed else
               "Latency left out (prune.latency: false).")
    report = [f"# netsize prune: {name}", "", f"Metric: {metric}. {latency}", "",
              markdown_table(rows, REPORT_COLUMNS), "",
              "## Front over the epsilons (validation metric against parameters)", "",
              markdown_table(front, REPORT_COLUMNS), "", "![front](front.png)", ""]
    atomic_write_text(run_dir / "report.md", "\n".join(report))
    return front
