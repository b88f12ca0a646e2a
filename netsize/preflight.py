"""Checks before a run allocates anything: the network is built on the meta device first, so
shape mistakes and absurd sizes are one clear line naming the recipe key, not a crash or an
out-of-memory kill."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from netsize.architecture import spec_from_config
from netsize.data import DataCfg, Splits, SyntheticData
from netsize.errors import UserError
from netsize.graph.spec import GraphSpec
from netsize.memory import (
    FLOAT_BYTES,
    PARAM_COPIES,
    USABLE_FRACTION,
    activation_elements,
    available_bytes,
    check_memory,
    estimate_training_bytes,
    graph_activation_elements,
)
from netsize.model import count_params
from netsize.networks import AnySpec, build_network

if TYPE_CHECKING:
    from netsize.recipe import Recipe


def check_data(cfg: DataCfg) -> None:
    """Refuse a generated data set too big for memory before `load_data` allocates it.

    Only synthetic data can ask for more than its files hold: n_samples x in_features is
    bounded by the schema only per key. Counted: inputs and targets twice (generated, then
    split), the teacher's hidden activations twice, the noise and the teacher's weights.
    """
    if not isinstance(cfg, SyntheticData):
        return
    n, d_in, d_h, d_out = cfg.n_samples, cfg.in_features, cfg.teacher_hidden, cfg.out_features
    values = 2 * n * (d_in + d_out) + 2 * n * d_h + n * d_out + d_h * (d_in + d_out)
    check_memory(values * 4, "data.n_samples", f"generating {n:,} synthetic examples of "
                 f"{d_in:,} features and {d_out:,} targets")


def plan_network(recipe: Recipe, splits: Splits) -> AnySpec:
    """The recipe's start network, checked on the meta device against the data and memory."""
    spec = spec_from_config(recipe.model, splits.input_shape, splits.n_outputs)  # type: ignore
    return check_network(spec, recipe, splits)


def check_network(spec: GraphSpec, recipe: Recipe, splits: Splits) -> GraphSpec:
    """`spec` (a start network, e.g. a timm model read as a graph) checked on the meta device
    against the data, the batch size and memory."""
    with torch.device("meta"):
        net = build_network(spec)
    try:
        activations = graph_activation_elements(net) or activation_elements(
            net, splits.input_shape)
    except RuntimeError as error:  # a shape mismatch inside the network
        first = str(error).splitlines()[0][:200]
        raise UserError(f"model: the network does not fit the data of shape "
                        f"{tuple(splits.input_shape)} ({first}); change the model section.") \
            from None
    params = count_params(net)
    batch = recipe.train.batch_size
    data_bytes = sum(t.numel() * t.element_size() for t in (
        splits.x_train, splits.y_train, splits.x_val, splits.y_val, splits.x_test, splits.y_test))
    growing = recipe.grow.trigger != "none"
    cap = min(recipe.grow.max_params, 10 * params + 10**6) if growing else None
    needed = estimate_training_bytes(params, activations, batch, data_bytes, cap)
    model_key = getattr(recipe.model, "size_key", "model")
    key = "train.batch_size" if activations * batch > params else model_key
    check_memory(needed, key, f"training this {spec.describe()} network ({params:,} "
                              f"parameters, batch {batch})")
    if batch < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        raise UserError("train.batch_size: batch norm needs at least 2 examples per batch; "
                        "raise train.batch_size or set model.norm: none.")
    return spec


def growth_params_limit(max_params: int) -> int:
    """grow.max_params, lowered to the parameters the memory left now can hold.

    The start network's check judges growth by a rough cap; this bound keeps growth itself
    (a large grow.increment, a long schedule) from allocating past the machine's memory: a
    candidate beyond it is never proposed, as if grow.max_params were reached.
    """
    fits = int(USABLE_FRACTION * available_bytes()) // (FLOAT_BYTES * PARAM_COPIES)
    return max(1, min(max_params, fits))
