"""Prune-and-transfer runs: prune a trained network, fine-tune the transfer, train the control.

No files are written here; the CLI saves what these functions return.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from netsize.data import Splits
from netsize.measure import size_row
from netsize.model import Net, build
from netsize.prune import prune_and_transfer, unit_statistics
from netsize.recipe import Recipe
from netsize.train import Trainer, evaluate


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
    structure: Any  # NetSpec for netsize nets, the channel-pruning record for foreign ones
    transfer_val: float  # validation metric right after the transfer, before fine-tuning


def with_train(recipe: Recipe, **update: Any) -> Recipe:
    return recipe.model_copy(update={"train": recipe.train.model_copy(update=update)})


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
        assert isinstance(net, Net)
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
    recipe = with_train(original.recipe, epochs=cfg.finetune_epochs,
                        lr=cfg.lr or original.recipe.train.lr)
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
        fresh = build(pruned.structure)
    epochs = original.epochs + original.recipe.prune.finetune_epochs
    return train_fixed(with_train(original.recipe, epochs=epochs), splits, device, fresh)


def measure(net: nn.Module, splits: Splits, device: torch.device) -> dict[str, Any]:
    """Validation and test metric, parameters, FLOPs and CPU latency at batch 1 and 64."""
    s = splits.to(device)
    _, val = evaluate(net, s.x_val, s.y_val, s.task)
    _, test = evaluate(net, s.x_test, s.y_test, s.task)
    cpu = copy.deepcopy(net).cpu()
    return {"val_metric": val, "test_metric": test, **size_row(cpu, splits.input_shape)}
