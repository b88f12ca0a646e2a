"""Recipes: strict YAML parsed once into frozen, typed config objects.

Every key is declared here; unknown keys, wrong types and out-of-range values are rejected with a
message naming the file and the dotted key. `--set section.key=value` overrides go through the same
validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from netsize.errors import UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------------- data
class AugmentConfig(_Strict):
    crop_padding: int = Field(0, ge=0, le=16)  # pixels of zero padding for the random crop
    flip: bool = False  # random horizontal flip


class _DataCommon(_Strict):
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    augment: AugmentConfig = AugmentConfig()
    standardize: bool = True


SklearnName = Literal["digits", "iris", "wine", "breast_cancer", "diabetes"]


class SklearnData(_DataCommon):
    source: Literal["sklearn"]
    name: SklearnName
    as_image: bool = False  # digits only: 1x8x8 images for a CNN instead of 64 features

    @model_validator(mode="after")
    def _image_only_for_digits(self) -> SklearnData:
        if self.as_image and self.name != "digits":
            raise ValueError("as_image is only available for name: digits")
        return self


class TorchvisionData(_DataCommon):
    source: Literal["torchvision"]
    name: Literal["CIFAR10", "CIFAR100", "MNIST", "FashionMNIST"]
    root: str = "data"
    download: bool = False
    limit: int | None = Field(None, gt=0)  # use only the first N training images (quick runs)


class CsvData(_DataCommon):
    source: Literal["csv"]
    path: str
    target: str
    task: Literal["auto", "classification", "regression"] = "auto"


class SyntheticData(_DataCommon):
    """GradMax's teacher-student task: a random MLP teacher labels Gaussian inputs (MSE)."""

    source: Literal["synthetic"]
    name: Literal["teacher_student"] = "teacher_student"
    n_samples: int = Field(1000, ge=10)
    in_features: int = Field(10, ge=1)
    teacher_hidden: int = Field(10, ge=1)
    out_features: int = Field(10, ge=1)
    noise: float = Field(0.0, ge=0.0)


DataConfig = Annotated[
    SklearnData | TorchvisionData | CsvData | SyntheticData, Field(discriminator="source")
]


# ---------------------------------------------------------------------------------------- model
Activation = Literal["relu", "leaky_relu", "gelu", "tanh"]


class MlpConfig(_Strict):
    kind: Literal["mlp"]
    hidden: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    activation: Activation = "relu"
    norm: Literal["none", "batch"] = "none"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class CnnConfig(_Strict):
    kind: Literal["cnn"]
    # channels of each conv layer, grouped in stages; 2x2 max pooling between stages,
    # global average pooling after the last one, then a linear head.
    stages: list[list[Annotated[int, Field(ge=1)]]] = Field(min_length=1)
    kernel_size: Literal[1, 3, 5] = 3
    activation: Activation = "relu"
    norm: Literal["none", "batch"] = "batch"

    @model_validator(mode="after")
    def _no_empty_stage(self) -> CnnConfig:
        if any(len(stage) == 0 for stage in self.stages):
            raise ValueError("every stage needs at least one conv layer")
        return self


class ForeignModelConfig(_Strict):
    """A timm or torchvision architecture by name, with its weights from a file (prune only)."""

    kind: Literal["timm", "torchvision"]
    name: str  # e.g. resnet18 (timm), mobilenet_v3_small (torchvision)
    weights: str | None = None  # .safetensors, or a state_dict read with weights_only=True
    num_classes: int | None = Field(None, ge=1)  # default: the data's number of outputs
    in_chans: int | None = Field(None, ge=1)  # timm only; default: the data's channels


ModelConfig = Annotated[MlpConfig | CnnConfig | ForeignModelConfig, Field(discriminator="kind")]


# ---------------------------------------------------------------------------------------- train
class TrainConfig(_Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0)
    scheduler: Literal["none", "cosine", "plateau"] = "none"
    plateau_patience: int = Field(3, ge=0)  # epochs without validation improvement
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    eval_batch_size: int = Field(1024, ge=1)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> TrainConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0.0):
            raise ValueError("nesterov needs optimizer: sgd with momentum > 0")
        return self


# ----------------------------------------------------------------------------------------- grow
class ScheduleConfig(_Strict):
    """GradMax's fixed schedule: widen every hidden layer at steps start, start+every, ..."""

    start: int = Field(10_000, ge=0)
    every: int = Field(2_500, ge=1)
    times: int = Field(12, ge=1)
    amount: float = Field(0.25, gt=0.0)  # fraction of each layer's initial width, >= 1 unit


class GrowConfig(_Strict):
    trigger: Literal["none", "senn", "schedule"] = "senn"
    init: Literal["gradmax", "random", "zero_out"] = "gradmax"
    candidates: list[Literal["width", "depth"]] = ["width", "depth"]
    tau: float = Field(2.0, ge=1.0)  # accept if eta_expanded / eta_current > tau
    alpha: float = Field(0.0, ge=0.0)  # absolute gain threshold (SENN), relative to |dL/dy|^2
    lambda_n: float = Field(0.0, ge=0.0)  # size penalty exp(-lambda_n * added_params^2)
    damping: float = Field(1e-3, gt=0.0)  # added to the diagonal Fisher
    check_every: int = Field(50, ge=1)  # steps between checks
    cooldown: int = Field(100, ge=0)  # steps without checks after an expansion
    increment: int = Field(4, ge=1)  # units added by one width expansion
    fanout_scale: float = Field(0.5, gt=0.0)  # new fan-out column norm / mean existing norm
    score_batch: int = Field(256, ge=2)  # training examples used per check
    max_width: int = Field(256, ge=1)
    max_layers: int = Field(8, ge=1)  # hidden layers in total (all stages for a CNN)
    max_params: int = Field(10_000_000, ge=1)
    max_events: int = Field(50, ge=0)
    schedule: ScheduleConfig = ScheduleConfig()


# ---------------------------------------------------------------------------------------- prune
class PruneConfig(_Strict):
    """Prune-and-transfer (ODF2NNA): drop low-scoring units, copy the rest, fine-tune."""

    criterion: Literal["variability", "cv", "magnitude", "taylor"] = "variability"
    # Units scoring below epsilon * (mean score of their layer, or of all units if global)
    # are removed. A list tries each value and gives a front over them. For timm/torchvision
    # models each value is instead the share of channels removed (0 < epsilon < 1).
    epsilon: list[Annotated[float, Field(ge=0.0)]] = Field([0.5], min_length=1)
    scope: Literal["layer", "global"] = "layer"
    min_units: int = Field(0, ge=0)  # keep at least this many units per layer
    fold_mean: bool = True  # fold each removed unit's mean activation into the next bias
    finetune_epochs: int = Field(5, ge=0)
    lr: float | None = Field(None, gt=0.0)  # fine-tuning learning rate (default: train.lr)
    control: bool = True  # also train the pruned architecture from scratch
    stats_examples: int = Field(2048, ge=1)  # training examples used for unit statistics

    @field_validator("epsilon", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) else value


# --------------------------------------------------------------------------------------- search
class ParamSpace(_Strict):
    """One searched recipe key: float/int in [low, high] (log scale optional), or choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> ParamSpace:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs choices: [...]")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError("a float or int parameter needs low < high")
        elif self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        return self


class EarlyStoppingConfig(_Strict):
    """Stop a trial whose validation metric after an epoch is below the median of the completed
    trials at that epoch (the median stopping rule on the metric objective)."""

    enabled: bool = True
    min_epochs: int = Field(3, ge=1)  # never stop before this many epochs
    min_trials: int = Field(3, ge=1)  # completed trials needed before stopping any


class SearchConfig(_Strict):
    trials: int = Field(8, ge=1)  # completed trials wanted in the study (across all workers)
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    sampler_seed: int = 0
    space: dict[str, ParamSpace] = {}  # dotted recipe key -> range
    flops_objective: bool = False  # minimise FLOPs as a third objective
    max_params: int | None = Field(None, ge=1)  # constraint: params <= max_params
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    heartbeat_seconds: int = Field(10, ge=1)  # a worker silent 3x this long has its trial retried
    max_retries: int = Field(2, ge=0)


# -------------------------------------------------------------------------------------- compare
class CompareConfig(_Strict):
    """netsize compare: the fixed sweep, the schedule of the schedule-grown methods, targets."""

    width_factors: list[Annotated[float, Field(gt=0.0)]] = Field([1.0, 2.0, 4.0], min_length=1)
    schedule_times: int = Field(4, ge=1)  # grow-gradmax / grow-random: growth steps
    schedule_amount: float = Field(0.5, gt=0.0)  # each adds this x the start widths
    targets: list[float] = [0.7, 0.8]  # report the parameters needed to first reach these


class Recipe(_Strict):
    seed: int = 0
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = TrainConfig()
    grow: GrowConfig = GrowConfig()
    prune: PruneConfig = PruneConfig()
    search: SearchConfig = SearchConfig()
    compare: CompareConfig = CompareConfig()

    @model_validator(mode="after")
    def _depth_needs_relu(self) -> Recipe:
        uses_depth = self.grow.trigger == "senn" and "depth" in self.grow.candidates
        native = isinstance(self.model, MlpConfig | CnnConfig)
        if native and uses_depth and self.model.activation != "relu":  # type: ignore[union-attr]
            # An identity layer preserves the function only where f(x) = x on its (>= 0) input.
            raise ValueError("depth growth needs model.activation: relu (drop 'depth' from "
                             "grow.candidates otherwise)")
        return self


# -------------------------------------------------------------------------------------- loading
def _dotted(loc: tuple[Any, ...]) -> str:
    # Pydantic puts the discriminator tag (e.g. 'csv') into the location; drop it.
    tags = {"sklearn", "torchvision", "csv", "synthetic", "mlp", "cnn", "timm"}
    parts = [str(p) for p in loc if str(p) not in tags]
    return ".".join(parts) if parts else "(top level)"


def _describe(error: ValidationError, origin: str) -> str:
    first = error.errors()[0]
    key = _dotted(tuple(first["loc"]))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "is not a known key; check its spelling against the recipe reference in README.md"
    elif first["type"] == "missing":
        message = "is required"
    elif first["type"] == "union_tag_invalid" or first["type"] == "union_tag_not_found":
        message = message.replace("Input tag", "value").replace("'source'", "source")
    return f"{origin}: {key}: {message}"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"{origin}: cannot set {dotted}: {part} is not a section.")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=0.01' -> ('train.lr', 0.01); the value is read as YAML (numbers, lists, ...)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {text!r} is not of the form section.key=value, e.g. train.lr=0.01.")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def recipe_from_dict(raw: Any, origin: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    if not isinstance(raw, dict):
        raise UserError(f"{origin}: a recipe must be a mapping with sections data, model, ...")
    tree = dict(raw)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value, f"--set {text}")
    try:
        return Recipe.model_validate(tree)
    except ValidationError as error:
        raise UserError(_describe(error, origin)) from None


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such recipe file; pass a YAML file such as "
                        "recipes/digits.yaml.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}: not valid YAML{where}; fix the syntax and retry.") from None
    return recipe_from_dict(raw, str(path), overrides)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return recipe.model_dump(mode="json")
