"""timm / torchvision CNNs: build, load foreign weights, prune channels with Torch-Pruning, save.

Torch-Pruning's dependency graph keeps coupled layers (residual adds, grouped and depthwise convs)
consistent; netsize's criteria give the channel importance. A pruned model is saved as spec.json
(architecture + pruned shapes) and weights.safetensors and rebuilt from a fresh model of that
architecture: nothing is ever unpickled. Torchvision models keep their 3-channel stems (other data
-> UserError; timm adapts its stem via in_chans). Shapes: N examples, C channels, M = N * H * W.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
import torch
import torch_pruning as tp
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from netsize.architecture import ForeignModelConfig
from netsize.errors import UserError
from netsize.io import (
    SPEC_FILE,
    WEIGHTS_FILE,
    check_weights,
    read_json_file,
    write_checkpoint_folder,
)
from netsize.losses import per_example_loss
from netsize.spec_check import parse_foreign

Stats = tuple[Tensor, Tensor, str]  # x (N, *input_shape), y (N,) or (N, k), task
CRITERIA = ("variability", "cv", "magnitude", "taylor")
STRUCTURE_FORMAT = "netsize-foreign-structure-1"
_RECORDED = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)
_OUT_FNS = (tp.prune_conv_out_channels, tp.prune_linear_out_channels,
            tp.prune_batchnorm_out_channels)
_BATCH = 64  # examples per forward pass when measuring statistics


# ------------------------------------------------------------------------------------ building
def create_model(cfg: ForeignModelConfig, input_shape: tuple[int, int, int],
                 n_outputs: int) -> nn.Module:
    """A random-init timm / torchvision model for inputs (C, H, W) and n_outputs classes."""
    num_classes = cfg.num_classes or n_outputs
    chans = cfg.in_chans or input_shape[0]
    if cfg.kind == "timm":
        return _create_timm(cfg.name, num_classes, chans)
    return _create_torchvision(cfg.name, num_classes, chans)


def _create_timm(name: str, num_classes: int, in_chans: int) -> nn.Module:
    if not timm.is_model(name):
        raise UserError(f"model.name: {name!r} is not a timm model; pick a name from "
                        "timm.list_models() (e.g. timm.list_models('resnet*')).")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)


def _create_torchvision(name: str, num_classes: int, in_chans: int) -> nn.Module:
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise UserError(f"model.name: {name!r} is not a torchvision classification model; pick "
                        "a name from torchvision.models.list_models(module=torchvision.models).")
    if in_chans != 3:
        raise UserError(f"model.name: torchvision's {name} takes 3-channel images but the data "
                        f"has {in_chans}; use model.kind: timm (it adapts the stem to in_chans) "
                        "or 3-channel data.")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


# ------------------------------------------------------------------------------------- weights
def load_weights(model: nn.Module, path: str | Path) -> None:
    """Fill model from a .safetensors file or a state_dict saved by torch.save (weights only)."""
    path = Path(path)
    fix = "point model.weights at a .safetensors file or a saved model.state_dict()"
    if not path.is_file():
        raise UserError(f"{path}: weights file not found; {fix}.")
    state = (_read_safetensors(path, fix) if path.suffix == ".safetensors"
             else _unwrap_state(_torch_load(path, fix), path, fix))
    _load_strict(model, state, path, "use weights saved from the same architecture with the same "
                 "model.num_classes and model.in_chans")


def _read_safetensors(path: Path, fix: str) -> dict[str, Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError):
        raise UserError(f"{path}: not a readable safetensors file; {fix}.") from None


def _torch_load(path: Path, fix: str) -> Any:
    """torch.load that never runs code: weights_only refuses anything but tensors and containers."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path}: holds Python objects other than tensors (a pickled module or "
                        f"code), which netsize never unpickles; {fix}.") from None
    except Exception:  # torch.load raises many types (zip, EOF, runtime) on a corrupt file
        raise UserError(f"{path}: not a readable weights file (corrupt?); {fix}.") from None


def _unwrap_state(obj: Any, path: Path, fix: str) -> dict[str, Tensor]:
    """A plain state_dict, or the one under "state_dict" / "model"; strips a DataParallel prefix."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise UserError(f"{path}: not a state_dict of tensors; {fix}.")
    if all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def _load_strict(model: nn.Module, state: dict[str, Tensor], path: Path, fix: str) -> None:
    """load_state_dict(strict=True), with any misfit reported as one UserError sentence."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = [f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for what, keys in (("missing", missing), ("unexpected", unexpected),
                                   ("shape file vs model", wrong)) if keys]
    if problems:
        raise UserError(f"{path}: the weights do not fit {type(model).__name__} "
                        f"({'; '.join(problems)}); {fix}.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise UserError(f"{path}: the weights do not fit {type(model).__name__}; {fix}.") from None


# ---------------------------------------------------------------------------------- importance
class RecordedImportance(tp.importance.GroupMagnitudeImportance):
    """Channel scores measured on data, looked up per group member (magnitude where unmeasured).

    scores[module]: (C,) one score per output channel of a conv / linear / batch-norm module.
    A group's score averages its batch-norm members (the normalised output the next layer sees)
    or, without any, its conv / linear members; then divides by the group mean (tp's normaliser).
    """

    def __init__(self, scores: dict[nn.Module, Tensor]):
        super().__init__(p=2)
        self.scores = scores

    @torch.no_grad()
    def __call__(self, group: Any) -> Tensor | None:
        members = [(item.dep.target.module, item.idxs, item.root_idxs) for item in group
                   if item.dep.handler in _OUT_FNS and item.dep.target.module in self.scores]
        norms = [m for m in members if isinstance(m[0], nn.modules.batchnorm._BatchNorm)]
        members = norms or members
        if not members:
            return super().__call__(group)
        imps = [self.scores[module][list(idxs)].float() for module, idxs, _ in members]
        reduced = self._reduce(imps, [root for _, _, root in members])
        return self._normalize(reduced, self.normalizer)


def channel_importance(model: nn.Module, example_inputs: Tensor, criterion: str,
                       stats: Stats | None) -> tp.importance.Importance:
    """Importance for tp: magnitude (L2 of weights) or a data criterion measured on stats.

    variability: std of each channel's output over the M = N * H * W positions of stats x;
    cv: that std / |mean|; taylor: |mean over examples of sum_hw a * dl_n/da| (first-order loss
    change when the channel is removed). Measured in eval mode; the model is left as it was.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}")
    if criterion == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if stats is None:
        raise ValueError(f"criterion {criterion!r} needs stats=(x, y, task)")
    x, y, task = stats
    x, y = x.to(example_inputs.device), y.to(example_inputs.device)
    if criterion == "taylor":
        return RecordedImportance(_taylor(model, x, y, task))
    moments = _moments(model, x)
    if criterion == "variability":
        return RecordedImportance({m: std for m, (_, std) in moments.items()})
    return RecordedImportance({m: std / (mean.abs() + 1e-12) for m, (mean, std) in
                               moments.items()})


def _positions(module: nn.Module, out: Tensor) -> Tensor:
    """(N, C, *spatial) for conv / batch norm, (N, *, C) for linear -> (N, P, C)."""
    if isinstance(module, nn.Linear):
        return out.reshape(out.shape[0], -1, out.shape[-1])
    return out.reshape(out.shape[0], out.shape[1], -1).transpose(1, 2)


def _moments(model: nn.Module, x: Tensor) -> dict[nn.Module, tuple[Tensor, Tensor]]:
    """Per recorded module: (mean (C,), std (C,)) of its output channels over x (float64)."""
    sums: dict[nn.Module, Tensor] = {}

    def hook(module: nn.Module, _inputs: Any, out: Tensor) -> None:
        flat = _positions(module, out.detach()).flatten(0, 1).double()  # (M, C)
        row = torch.stack([torch.full_like(flat[0], len(flat)), flat.sum(0), flat.pow(2).sum(0)])
        sums[module] = sums[module] + row if module in sums else row

    with _hooked(model, hook), torch.no_grad():
        for start in range(0, len(x), _BATCH):
            model(x[start:start + _BATCH])
    return {m: (t / c, (sq / c - (t / c).pow(2)).clamp_min(0).sqrt())
            for m, (c, t, sq) in sums.items()}


def _taylor(model: nn.Module, x: Tensor, y: Tensor, task: str) -> dict[nn.Module, Tensor]:
    """Per recorded module: (C,) |mean_n sum_positions a * dl_n/da|; parameter grads untouched."""
    sums: dict[nn.Module, Tensor] = {}

    def hook(module: nn.Module, _inputs: Any, out: Tensor) -> None:
        act = out.detach().clone()  # a later in-place activation must not change it

        def on_grad(grad: Tensor) -> None:
            term = _positions(module, act * grad).double().sum((0, 1))  # (C,)
            sums[module] = sums[module] + term if module in sums else term

        if out.requires_grad:
            out.register_hook(on_grad)  # fires with the gradient before any in-place change

    with _hooked(model, hook), torch.enable_grad():
        for start in range(0, len(x), _BATCH):
            xb = x[start:start + _BATCH].clone().requires_grad_(True)
            loss = per_example_loss(model(xb), y[start:start + _BATCH], task).sum()
            loss.backward(inputs=[xb])
    return {module: total.abs() / len(x) for module, total in sums.items()}


@contextmanager
def _hooked(model: nn.Module, hook: Any) -> Iterator[None]:
    """Eval mode and a forward hook on every recorded module; both undone on exit."""
    training = model.training
    model.eval()
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, _RECORDED)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)


# ------------------------------------------------------------------------------------- pruning
def prune_channels(model: nn.Module, example_inputs: Tensor, criterion: str, ratio: float,
                   stats: Stats | None = None, *, scope: str = "layer") -> tuple[nn.Module, dict]:
    """A pruned copy of model without `ratio` of its channels, and its JSON structure record.

    example_inputs: (n, C, H, W) for tracing. scope "layer": each coupled group loses `ratio` of
    its channels; "global": the lowest-scoring `ratio` of all channels go. The final classifier
    keeps its outputs. model itself is not changed.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    pruned = copy.deepcopy(model)
    pruned.eval()  # tracing must not update batch-norm running statistics
    head = _classifier(pruned, example_inputs)
    importance = channel_importance(pruned, example_inputs, criterion, stats)
    pruner = tp.pruner.BasePruner(pruned, example_inputs, importance, pruning_ratio=ratio,
                                  global_pruning=scope == "global", ignored_layers=[head])
    pruner.step()
    pruned.train(model.training)
    pruned.zero_grad(set_to_none=True)
    return pruned, structure_of(pruned)


def _classifier(model: nn.Module, example_inputs: Tensor) -> nn.Module:
    """The last linear / conv module with as many outputs as the model: the head to keep."""
    try:
        with torch.no_grad():
            n_outputs = model(example_inputs).shape[-1]
    except RuntimeError as exc:
        raise UserError(f"model.name: {type(model).__name__} cannot run on inputs of shape "
                        f"{tuple(example_inputs.shape[1:])} ({exc}); use larger images or "
                        "another model.") from None
    heads = [m for m in model.modules()
             if (isinstance(m, nn.Linear) and m.out_features == n_outputs)
             or (isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == n_outputs)]
    if not heads:
        raise UserError(f"model.name: cannot find the classifier of {type(model).__name__} (no "
                        f"linear or conv layer with {n_outputs} outputs); choose another model.")
    return heads[-1]


def structure_of(model: nn.Module) -> dict:
    """JSON record of a (pruned) model's shapes: the integer attributes of every module
    (in/out channels, groups, num_features, ...; cf. tp.state_dict's "attributions") and the
    shape of every state_dict tensor."""
    modules = {name: attrs for name, module in model.named_modules()
               if (attrs := _int_attributes(module))}
    tensors = {key: list(value.shape) for key, value in model.state_dict().items()}
    return {"format": STRUCTURE_FORMAT, "modules": modules, "tensors": tensors}


def _int_attributes(module: nn.Module) -> dict[str, int | list[int]]:
    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    return {key: list(value) if isinstance(value, tuple | list) else value
            for key, value in vars(module).items() if not key.startswith("_") and (
                is_int(value) or (isinstance(value, tuple | list) and len(value) > 0
                                  and all(is_int(v) for v in value)))}


def apply_structure(model: nn.Module, structure: dict) -> None:
    """Give a fresh model the recorded shapes: set attributes, swap in empty tensors (on the
    model's device: none are real on the meta device).

    Only integer attributes (or tuples of them) that are not private can be set. Raises
    KeyError / TypeError / ValueError / AttributeError when the record does not fit."""
    if structure.get("format") != STRUCTURE_FORMAT:
        raise ValueError("unknown structure format")
    named = dict(model.named_modules())
    for name, attrs in structure["modules"].items():
        module = named[name]
        for key, value in attrs.items():
            current = vars(module)[key]
            if key.startswith("_") or type(current) not in (int, tuple, list):
                raise ValueError("only integer attributes can be set")
            setattr(module, key, tuple(value) if isinstance(current, tuple) else value)
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    for key, shape in structure["tensors"].items():
        old = params[key] if key in params else buffers[key]
        if list(old.shape) != shape:
            new = torch.empty(shape, dtype=old.dtype, device=old.device)
            parent, _, leaf = key.rpartition(".")
            setattr(model.get_submodule(parent), leaf,
                    nn.Parameter(new, old.requires_grad) if key in params else new)


# ----------------------------------------------------------------------------------- save/load
def save_pruned(folder: Path, cfg: ForeignModelConfig, n_outputs: int, in_chans: int,
                structure: dict, model: nn.Module, meta: dict) -> None:
    """Write folder/spec.json (architecture, structure, meta) and folder/weights.safetensors,
    all or nothing."""
    folder = Path(folder)
    if {"foreign", "structure"} & meta.keys():
        raise ValueError("meta must not hold the keys 'foreign' or 'structure'")
    state = model.state_dict()
    if {k: list(v.shape) for k, v in state.items()} != structure.get("tensors"):
        raise ValueError("structure was not recorded from this model")
    foreign = {"kind": cfg.kind, "name": cfg.name, "num_classes": cfg.num_classes or n_outputs,
               "in_chans": in_chans}
    text = json.dumps({"foreign": foreign, "structure": structure, **meta}, indent=2,
                      default=str)  # Path values in meta
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}  # unshared
    write_checkpoint_folder(folder, tensors, text + "\n")


def load_pruned(folder: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a model written by save_pruned (train mode, CPU) and return it with spec.json.

    The weights file's header is checked against the model built on the meta device (or the
    recorded shapes where it cannot be) before any tensor of the recorded shapes is allocated."""
    folder = Path(folder)
    spec_path, weights = folder / SPEC_FILE, folder / WEIGHTS_FILE
    fix = "re-create it with netsize prune"
    meta, cfg, in_chans = _read_spec(spec_path, fix)
    if not weights.is_file():
        raise UserError(f"{folder}: {WEIGHTS_FILE} is missing; {fix}.")
    try:
        with torch.device("meta"):
            skeleton: nn.Module | None = create_model(cfg, (in_chans, 1, 1), cfg.num_classes or 1)
    except UserError:
        raise
    except Exception:  # some architectures compute with real tensors while they are built
        skeleton = None
    expected = (meta["structure"]["tensors"] if skeleton is None
                else _apply(skeleton, meta["structure"], spec_path, cfg, fix).state_dict())
    check_weights(weights, expected, f"{cfg.kind} {cfg.name}", fix)
    model = create_model(cfg, (in_chans, 1, 1), cfg.num_classes or 1)
    _apply(model, meta["structure"], spec_path, cfg, fix)
    _load_strict(model, _read_safetensors(weights, fix), weights, fix)
    return model, meta


def _apply(model: nn.Module, structure: dict, spec_path: Path, cfg: ForeignModelConfig,
           fix: str) -> nn.Module:
    try:
        apply_structure(model, structure)
        return model
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError):
        raise UserError(f"{spec_path}: structure: the recorded structure does not fit "
                        f"{cfg.kind} {cfg.name}; {fix}.") from None


def _read_spec(spec_path: Path, fix: str) -> tuple[dict, ForeignModelConfig, int]:
    """spec.json's (meta, model config, input channels), every value checked before use."""
    if not spec_path.is_file():
        raise UserError(f"{spec_path.parent}: not a pruned-model folder (no {SPEC_FILE}); "
                        "pass a folder written by netsize prune.")
    meta = read_json_file(spec_path, fix)
    try:
        cfg, in_chans = parse_foreign(meta, STRUCTURE_FORMAT)
    except ValueError as exc:
        raise UserError(f"{spec_path}: {exc}; {fix}.") from None
    return meta, cfg, in_chans
