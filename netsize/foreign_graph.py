"""timm and torchvision models as graph networks, so that they grow like netsize's own.

The architecture is built by its library (random init from the global RNG, or the weights file
of model.weights), read into the graph vocabulary with torch.fx (netsize.graph.fx_import) and
filled with the model's own tensors: the graph network computes the same function. From there
the one growth core applies: groups from the graph (block inner widths, residual streams with
grow.coupled, depthwise convs and squeeze-excitation gates on their paths), SENN scores, GradMax
fan-outs, the optimizer-state map, checkpoints as spec.json + safetensors and netsize prune.

model.width_multiplier < 1 starts narrow: every group keeps its first round(units x m)
channels (constructors have no width argument), and the convs are drawn again at their new
shapes with the init of these families (Kaiming normal, fan-out, ReLU gain); norms and linear
layers keep the architecture's own init.
"""

from __future__ import annotations

import torch
from torch import nn

from netsize.architecture import ForeignModelConfig
from netsize.errors import UserError
from netsize.graph.build import GraphNet, build_graph
from netsize.graph.fx_import import Unsupported, import_module
from netsize.graph.groups import Group, find_groups, is_producer, resize
from netsize.graph.prune import narrow_all
from netsize.graph.spec import GraphSpec


def foreign_graph(cfg: ForeignModelConfig, input_shape: tuple[int, ...],
                  n_outputs: int) -> GraphNet:
    """The recipe's timm / torchvision model as a graph network (UserError when it is not
    one netsize can read)."""
    from netsize import foreign  # timm, torchvision and Torch-Pruning: only when needed

    if len(input_shape) != 3:
        raise UserError(f"model.kind: a {cfg.kind} model needs image data (C, H, W); set "
                        "data.as_image: true or use image data.")
    shape = (input_shape[0], input_shape[1], input_shape[2])
    model = foreign.create_model(cfg, shape, n_outputs)
    if cfg.weights is not None:
        foreign.load_weights(model, cfg.weights)
    n_classes = cfg.num_classes or n_outputs
    try:
        imported = import_module(model.eval(), shape, n_classes)
    except Unsupported as exc:
        raise UserError(f"model.name: {cfg.kind}'s {cfg.name} holds calls netsize's graph "
                        f"cannot read: {_first(exc.calls)}; choose a CNN built from convs, "
                        "norms, activations, pooling, adds and gates (e.g. resnet18).") from None
    except ValueError as exc:  # shape inference: the images are too small for the model
        raise UserError(f"model.name: {cfg.name} does not fit images of shape {shape} "
                        f"({exc}); use larger images or another model.") from None
    with torch.device("meta"):
        net = build_graph(imported.spec)
    net = net.to_empty(device="cpu")
    net.load_state_dict(imported.state, strict=True)
    if cfg.width_multiplier != 1.0:
        net = narrowed(net, cfg.width_multiplier)
    return net.train()


def _first(calls: list[str], shown: int = 3) -> str:
    more = f" and {len(calls) - shown} more" if len(calls) > shown else ""
    return ", ".join(calls[:shown]) + more


def narrowed(net: GraphNet, factor: float) -> GraphNet:
    """A copy keeping the first round(units x factor) units of every group (whole blocks of
    group norms), its convs drawn again (Kaiming normal, fan-out) from the global RNG."""
    groups = find_groups(net.spec)
    keep = {g.name: max(1, min(g.units // g.step, round(g.units // g.step * factor))) * g.step
            for g in groups}
    if all(site.offset == 0 for g in groups for _, sites in (*g.sites, *g.columns)
           for site in sites):
        small = _leading(net, groups, keep)  # no concat: the first units lead every tensor
    else:
        small = narrow_all(net, {name: torch.arange(k) for name, k in keep.items()})[1]
    with torch.no_grad():
        for module in small.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return small


def _leading(net: GraphNet, groups: list[Group], keep: dict[str, int]) -> GraphNet:
    """narrow_all keeping the first units of groups that all start at entry 0, in one pass:
    every tensor of the narrower network is the leading block of the old one."""
    spec = net.spec
    for group in groups:
        spec = resize(spec, group, keep[group.name])
    with torch.device("meta"):
        small = build_graph(spec)
    small = small.to_empty(device="cpu")
    old = net.state_dict()
    with torch.no_grad():
        for name, tensor in small.state_dict().items():
            tensor.copy_(old[name][tuple(slice(0, n) for n in tensor.shape)])
    return small.train(net.training)


def left_alone(spec: GraphSpec, coupled: bool) -> str:
    """One line: what growth will not widen in this network, and why."""
    groups = find_groups(spec)
    streams = [g for g in groups if g.coupled]
    growing = {p for g in groups if coupled or not g.coupled for p in g.producers}
    fixed = [n.name for n in spec.nodes if is_producer(n) and n.name not in growing
             and not any(n.name in g.producers for g in streams)]
    parts = []
    if streams and not coupled:
        parts.append(f"{len(streams)} residual stream{'s' * (len(streams) > 1)} "
                     f"({', '.join(g.name for g in streams)}; grow.coupled: true grows them)")
    if fixed:
        parts.append(f"{_first(fixed, 4)} (the output layer, or channels no growable group "
                     "reaches)")
    grown = sum(1 for g in groups if coupled or not g.coupled)
    return (f"{spec.describe()}: {grown} growable groups; left alone: "
            f"{'; '.join(parts) if parts else 'nothing'}")


__all__ = ["foreign_graph", "left_alone", "narrowed"]
