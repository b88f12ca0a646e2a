"""The model section of a recipe, and how it becomes a frozen `NetSpec`.

This is the one module that reads model configs; the spec, the model builder and surgery know
nothing of recipes.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from netsize.config import MAX_LAYERS, MAX_WIDTH, Strict
from netsize.errors import UserError
from netsize.graph import presets
from netsize.graph.config import (
    GRAPH_CONFIGS,
    GraphConfig,
    ResnetConfig,
    SecnnConfig,
    VggConfig,
    WrnConfig,
)
from netsize.graph.spec import GraphSpec

Activation = Literal["relu", "leaky_relu", "gelu", "silu", "tanh"]
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]


class MlpConfig(Strict):
    kind: Literal["mlp"]
    hidden: list[Width] = Field(min_length=1, max_length=MAX_LAYERS)
    activation: Activation = "relu"
    norm: Literal["none", "batch"] = "none"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bias: bool = True  # false: no biases anywhere (GradMax's teacher-student student)
    size_key: ClassVar[str] = "model.hidden"  # the key that sets the network's size (for messages)

    def scaled(self, factor: float) -> dict[str, Any]:
        """Recipe changes for the same network with widths times factor."""
        return {self.size_key: [_times(w, factor) for w in self.hidden]}


class CnnConfig(Strict):
    kind: Literal["cnn"]
    # channels of each conv layer, grouped in stages; 2x2 pooling between stages; head gap:
    # global average pooling after the last stage; head flatten: pooling after every stage and
    # flatten; then the hidden linear layers (norm, activation, dropout) and a linear output.
    stages: list[list[Width]] = Field(min_length=1, max_length=MAX_LAYERS)
    kernel_size: Literal[1, 3, 5] = 3
    activation: Activation = "relu"
    norm: Literal["none", "batch", "group"] = "batch"
    groups: int = Field(2, ge=1, le=MAX_WIDTH)  # norm group: groups per norm
    head: Literal["gap", "flatten"] = "gap"
    hidden: list[Width] = Field([], max_length=16)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # after each hidden linear layer
    pool: Literal["max", "avg"] = "max"
    size_key: ClassVar[str] = "model.stages"

    def scaled(self, factor: float) -> dict[str, Any]:
        return {self.size_key: [[_times(w, factor) for w in s] for s in self.stages],
                "model.hidden": [_times(w, factor) for w in self.hidden]}


    @model_validator(mode="after")
    def _no_empty_stage(self) -> CnnConfig:
        if any(len(stage) == 0 for stage in self.stages):
            raise ValueError("every stage needs at least one conv layer")
        if sum(len(stage) for stage in self.stages) > MAX_LAYERS:
            raise ValueError(f"at most {MAX_LAYERS} conv layers in all")
        return self


class ForeignModelConfig(Strict):
    """A timm or torchvision architecture by name: grown and trained as a graph network
    (netsize.foreign_graph), or pruned by channel with its weights from a file."""

    kind: Literal["timm", "torchvision"]
    name: str = Field(max_length=200)  # e.g. resnet18 (timm), mobilenet_v3_small (torchvision)
    weights: str | None = None  # .safetensors, or a state_dict read with weights_only=True
    num_classes: int | None = Field(None, ge=1, le=MAX_WIDTH)  # default: the data's outputs
    in_chans: int | None = Field(None, ge=1, le=MAX_WIDTH)  # timm only; default: data channels
    # start narrow: every growable group keeps this share of its channels (grow and train)
    width_multiplier: float = Field(1.0, gt=0.0, le=1.0)
    size_key: ClassVar[str] = "model.width_multiplier"

    @model_validator(mode="after")
    def _weights_at_full_width(self) -> ForeignModelConfig:
        if self.weights is not None and self.width_multiplier != 1.0:
            raise ValueError("width_multiplier narrows a fresh model; trained weights are read "
                             "at full width (drop one of model.weights and "
                             "model.width_multiplier)")
        return self


ModelConfig = Annotated[
    MlpConfig | CnnConfig | SecnnConfig | WrnConfig | ResnetConfig | VggConfig | GraphConfig
    | ForeignModelConfig, Field(discriminator="kind")]
# architectures netsize builds, trains and grows itself
NATIVE = (MlpConfig, CnnConfig, *GRAPH_CONFIGS)
MODEL_KINDS = ("mlp", "cnn", "secnn", "wrn", "resnet", "vgg", "graph", "timm", "torchvision")


def _times(width: int, factor: float) -> int:
    return max(1, round(width * factor))


def spec_from_config(model: Any, input_shape: tuple[int, ...], n_outputs: int) -> GraphSpec:
    """The start network of a native model section for data of this shape (UserError naming
    the model key when they do not fit)."""
    if isinstance(model, CnnConfig):
        _check_cnn(model, input_shape)
    try:
        if isinstance(model, CnnConfig):
            return presets.cnn(input_shape, n_outputs, model.stages, model.kernel_size,
                               model.activation, model.norm, model.head, model.hidden,
                               model.dropout, model.pool, model.groups)
        if isinstance(model, MlpConfig):
            return presets.mlp(input_shape, n_outputs, model.hidden, model.activation,
                               model.norm, model.dropout, model.bias)
        return model.graph(input_shape, n_outputs)  # type: ignore[no-any-return]
    except ValueError as error:  # shape inference: an op that does not fit the data
        raise UserError(f"model: {error}; change the model section.") from None


def _check_cnn(model: CnnConfig, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3:
        raise UserError("model.kind: cnn needs image data (C, H, W) but the data are "
                        f"{input_shape[0]} features; use kind: mlp, or image data (e.g. "
                        "data.as_image: true for digits).")
    side = min(input_shape[1:])
    pools = len(model.stages) - (1 if model.head == "gap" else 0)  # 2x2 pooling halves the side
    if side >> pools < 1:
        most = side.bit_length() - (0 if model.head == "gap" else 1)
        raise UserError(f"model.stages: {len(model.stages)} stages pool a {side}-pixel image "
                        f"below 1 pixel; use at most {most} stages.")
