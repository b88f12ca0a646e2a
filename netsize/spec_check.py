"""Strict validation of what a checkpoint's spec.json describes: a NetSpec, or the structure record
of a pruned timm / torchvision model.

Everything in a file is untrusted: each value is checked for type and range before anything is
built, and the parameter count is computed from the numbers alone. Failures raise ValueError with
the dotted key and the rule ("spec.layers[2].width: must be an integer from 1 to 65536"); the
message never repeats a value read from the file, only keys and bounds netsize itself defines.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from netsize.architecture import ForeignModelConfig
from netsize.config import MAX_FEATURES, MAX_LAYERS, MAX_PARAMS, MAX_WIDTH
from netsize.model import ACTIVATIONS
from netsize.spec import LayerSpec, NetSpec

MAX_SIDE = 4096  # pixels per image side
KINDS = ("mlp", "cnn")
KERNEL_SIZES = (1, 3, 5)
SPEC_KEYS = ("kind", "input_shape", "n_outputs", "layers", "activation", "dropout", "kernel_size")
SPEC_REQUIRED = ("kind", "input_shape", "n_outputs", "layers")
LAYER_KEYS = ("width", "norm", "stage", "dropout")
LAYER_REQUIRED = ("width", "norm")


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON true is not 1 here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any, key: str, low: int, high: int) -> int:
    if not is_int(value) or not low <= value <= high:
        raise ValueError(f"{key}: must be an integer from {low} to {high}")
    return int(value)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key}: must be true or false")
    return value


def _choice(value: Any, key: str, allowed: tuple[Any, ...]) -> Any:
    # type-exact membership: True == 1 and 1.0 == 1 must not pass for 1
    if not any(type(value) is type(a) and value == a for a in allowed):
        raise ValueError(f"{key}: must be one of {', '.join(str(a) for a in allowed)}")
    return value


def _object(raw: Any, key: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
    if not isinstance(raw, dict):
        raise ValueError(f"{key}: must be an object with the keys {', '.join(allowed)}")
    if any(k not in allowed for k in raw):  # the unknown key itself is not repeated
        raise ValueError(f"{key}: has an unknown key; the allowed keys are {', '.join(allowed)}")
    for k in required:
        if k not in raw:
            raise ValueError(f"{key}.{k}: missing")
    return raw


def parse_spec(raw: Any, key: str = "spec") -> NetSpec:
    """A NetSpec from its to_dict() form, checked strictly; ValueError names the bad key."""
    raw = _object(raw, key, SPEC_KEYS, SPEC_REQUIRED)
    kind = _choice(raw["kind"], f"{key}.kind", KINDS)
    input_shape = _input_shape(raw["input_shape"], f"{key}.input_shape", kind)
    n_outputs = _int(raw["n_outputs"], f"{key}.n_outputs", 1, MAX_WIDTH)
    activation = _choice(raw.get("activation", "relu"), f"{key}.activation",
                         tuple(sorted(ACTIVATIONS)))
    dropout = raw.get("dropout", 0.0)
    if not (isinstance(dropout, float) or is_int(dropout)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"{key}.dropout: must be a number from 0 up to (not including) 1")
    kernel_size = _choice(raw.get("kernel_size", 3), f"{key}.kernel_size", KERNEL_SIZES)
    layers = _layers(raw["layers"], f"{key}.layers")
    spec = NetSpec(kind, input_shape, n_outputs, layers, activation, float(dropout), kernel_size)
    if kind == "cnn":
        _check_pooling(spec, f"{key}.layers")
    n_params = param_count(spec)
    if n_params > MAX_PARAMS:
        raise ValueError(f"{key}.layers: the network would have {n_params:.3g} parameters, more "
                         f"than the limit of {MAX_PARAMS:.0e}")
    return spec


def _input_shape(raw: Any, key: str, kind: str) -> tuple[int, ...]:
    if kind == "mlp":
        if not isinstance(raw, list) or len(raw) != 1:
            raise ValueError(f"{key}: must be a list of 1 integer (the features) for an mlp")
        return (_int(raw[0], f"{key}[0]", 1, MAX_FEATURES),)
    if not isinstance(raw, list) or len(raw) != 3:
        raise ValueError(f"{key}: must be a list of 3 integers (C, H, W) for a cnn")
    return (_int(raw[0], f"{key}[0]", 1, MAX_WIDTH), _int(raw[1], f"{key}[1]", 1, MAX_SIDE),
            _int(raw[2], f"{key}[2]", 1, MAX_SIDE))


def _layers(raw: Any, key: str) -> tuple[LayerSpec, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LAYERS:
        raise ValueError(f"{key}: must be a list of 1 to {MAX_LAYERS} layers")
    layers: list[LayerSpec] = []
    for i, item in enumerate(raw):
        at = f"{key}[{i}]"
        item = _object(item, at, LAYER_KEYS, LAYER_REQUIRED)
        stage = _int(item.get("stage", 0), f"{at}.stage", 0, MAX_LAYERS)
        if layers and stage < layers[-1].stage:
            raise ValueError(f"{at}.stage: must not be lower than the stage of the layer before")
        layers.append(LayerSpec(width=_int(item["width"], f"{at}.width", 1, MAX_WIDTH),
                                norm=_bool(item["norm"], f"{at}.norm"), stage=stage,
                                dropout=_bool(item.get("dropout", True), f"{at}.dropout")))
    return tuple(layers)


def _check_pooling(spec: NetSpec, key: str) -> None:
    """Each stage change halves H and W (2x2 max pooling); they must stay at least 1."""
    side = min(spec.input_shape[1:])
    for i in range(len(spec.layers) - 1):
        if spec.route_after(i) == "maxpool":
            side //= 2
            if side < 1:
                raise ValueError(f"{key}[{i + 1}].stage: too many stages for the "
                                 f"{spec.input_shape[1]}x{spec.input_shape[2]} input (each new "
                                 "stage halves the image)")


def param_count(spec: NetSpec) -> int:
    """Trainable parameters of build(spec), from the numbers alone (nothing is allocated)."""
    per_weight = spec.kernel_size ** 2 if spec.kind == "cnn" else 1
    total = 0
    for i, layer in enumerate(spec.layers):
        total += spec.in_width(i) * layer.width * per_weight + layer.width
        total += 2 * layer.width if layer.norm else 0
    return total + spec.layers[-1].width * spec.n_outputs + spec.n_outputs


# ------------------------------------------------------------- foreign (timm / torchvision) record
MAX_ENTRIES = 100_000  # modules or tensors in one pruned-model record
MAX_ATTRIBUTES = 64  # integer attributes of one module
MAX_DIMS = 8  # dimensions of one tensor, entries of one tuple attribute
MAX_INT = 2**31 - 1


def parse_foreign(meta: Any, structure_format: str) -> tuple[ForeignModelConfig, int]:
    """(model config, input channels) of a pruned-model spec.json, its structure record checked;
    ValueError names the bad key."""
    if not isinstance(meta, dict) or not isinstance(meta.get("foreign"), dict):
        raise ValueError("foreign: missing or not an object; the file must hold a JSON object "
                         'whose "foreign" key names the architecture')
    try:
        cfg = ForeignModelConfig.model_validate(meta["foreign"])
    except ValidationError:  # its message would repeat the file's values
        raise ValueError(f"foreign: must hold kind (timm or torchvision), name, num_classes and "
                         f"in_chans (integers from 1 to {MAX_WIDTH})") from None
    in_chans = _int(meta["foreign"].get("in_chans"), "foreign.in_chans", 1, MAX_WIDTH)
    import timm  # heavy, and only needed here
    import torchvision

    if not (timm.is_model(cfg.name) if cfg.kind == "timm" else
            cfg.name in torchvision.models.list_models(module=torchvision.models)):
        raise ValueError(f"foreign.name: not a model this version of {cfg.kind} knows")
    if cfg.kind == "torchvision" and in_chans != 3:
        raise ValueError("foreign.in_chans: torchvision models take 3 channels")
    check_structure(meta.get("structure"), structure_format)
    return cfg, in_chans


def check_structure(raw: Any, structure_format: str, key: str = "structure") -> None:
    """foreign.structure_of's record, types and bounds only: modules {name: {attribute: int or
    list of ints}}, tensors {name: shape}. Whether it fits the architecture (and the weights
    file) is checked when it is applied."""
    if not isinstance(raw, dict) or set(raw) != {"format", "modules", "tensors"}:
        raise ValueError(f"{key}: must be an object with the keys format, modules and tensors")
    if raw["format"] != structure_format:
        raise ValueError(f"{key}.format: must be {structure_format}")
    modules, tensors = raw["modules"], raw["tensors"]
    if not isinstance(modules, dict) or len(modules) > MAX_ENTRIES:
        raise ValueError(f"{key}.modules: must be an object of at most {MAX_ENTRIES} modules")
    for i, attrs in enumerate(modules.values()):
        at = f"{key}.modules (entry {i + 1})"
        if not isinstance(attrs, dict) or len(attrs) > MAX_ATTRIBUTES or any(
                not isinstance(k, str) or k.startswith("_") for k in attrs):
            raise ValueError(f"{at}: must map at most {MAX_ATTRIBUTES} public attribute names "
                             "to integers")
        for value in attrs.values():
            values = value if isinstance(value, list) and 1 <= len(value) <= MAX_DIMS else [value]
            if not all(is_int(v) and -MAX_INT <= v <= MAX_INT for v in values):
                raise ValueError(f"{at}: each attribute must be an integer from {-MAX_INT} to "
                                 f"{MAX_INT} or a list of 1 to {MAX_DIMS} of them")
    if not isinstance(tensors, dict) or not 1 <= len(tensors) <= MAX_ENTRIES:
        raise ValueError(f"{key}.tensors: must be an object of 1 to {MAX_ENTRIES} tensor shapes")
    for i, shape in enumerate(tensors.values()):
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
                is_int(n) and 0 <= n <= MAX_INT for n in shape):
            raise ValueError(f"{key}.tensors (entry {i + 1}): must be a shape, a list of at most "
                             f"{MAX_DIMS} integers from 0 to {MAX_INT}")
