"""Recipes: strict YAML parsed once into frozen, typed config objects.

Each section's config class lives beside the code that reads it; this module composes them into a
`Recipe` and is the one way in: files (`load_recipe`), dictionaries (`recipe_from_dict`, with
`--set section.key=value` overrides) and derived recipes (`derive`) all go through the same
validation. Unknown keys, wrong types and out-of-range values are refused with a message naming
the file and the dotted key.
"""

from __future__ import annotations

import copy
import difflib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from netsize.architecture import (
    MODEL_KINDS,
    CnnConfig,
    ForeignModelConfig,
    MlpConfig,
    ModelConfig,
)
from netsize.compare import CompareConfig
from netsize.config import MAX_SEED, Strict
from netsize.data import (
    AugmentConfig,
    CsvData,
    DataConfig,
    SklearnData,
    SyntheticData,
    TorchvisionData,
)
from netsize.errors import UserError
from netsize.growth import TWINS, GrowConfig, ScheduleConfig
from netsize.prune import PruneConfig
from netsize.search.config import EarlyStoppingConfig, ParamSpace, SearchConfig
from netsize.train import TrainConfig
from netsize.yaml_strict import StrictYamlError, load_yaml_file, load_yaml_text

__all__ = [
    "AugmentConfig", "CnnConfig", "CompareConfig", "CsvData", "EarlyStoppingConfig",
    "ForeignModelConfig", "GrowConfig", "MlpConfig", "ParamSpace", "PruneConfig", "Recipe",
    "ScheduleConfig", "SearchConfig", "SklearnData", "SyntheticData", "TorchvisionData",
    "TrainConfig", "derive", "load_recipe", "parse_override", "recipe_from_dict",
    "recipe_to_dict",
]


class Recipe(Strict):
    seed: int = Field(0, ge=0, le=MAX_SEED)
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = TrainConfig()
    grow: GrowConfig = GrowConfig()
    prune: PruneConfig = PruneConfig()
    search: SearchConfig = SearchConfig()
    compare: CompareConfig = CompareConfig()


# -------------------------------------------------------------------------------------- loading
_TAGS = {"data": {"sklearn", "torchvision", "csv", "synthetic"},
         "model": set(MODEL_KINDS)}
_TAG_KEYS = {"data": ("source", "'sklearn', 'torchvision', 'csv' or 'synthetic'"),
             "model": ("kind", "'mlp', 'cnn', 'timm' or 'torchvision'")}


def one_line(text: str, limit: int = 80) -> str:
    """`text` for a one-line message: whitespace and control characters collapsed, shortened."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dotted(loc: tuple[Any, ...]) -> str:
    # Pydantic puts the discriminator's tag (e.g. 'csv') after the section; drop it there only.
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[1] in _TAGS.get(parts[0], ()):
        del parts[1]
    return one_line(".".join(parts)) if parts else "(top level)"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, lists, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _tag_of(model: type[BaseModel]) -> set[Any]:
    """The literal values of a model's Literal fields (a discriminated union's tag among them)."""
    return {value for field in model.model_fields.values()
            if typing.get_origin(field.annotation) is typing.Literal
            for value in typing.get_args(field.annotation)}


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose field list holds loc's last part (loc as pydantic reports it)."""
    model: type[BaseModel] = Recipe
    parts = list(loc[:-1])
    while parts:
        part = parts.pop(0)
        if isinstance(part, int):  # a list item: the model stays the list's element model
            continue
        field = model.model_fields.get(str(part))
        candidates = _models_in(field.annotation) if field else []
        if len(candidates) > 1 and parts:  # a discriminated union: pydantic puts the tag next
            tag = parts.pop(0)
            candidates = [m for m in candidates if tag in _tag_of(m)]
        if len(candidates) != 1:
            return None
        model = candidates[0]
    return model


def did_you_mean(loc: tuple[Any, ...]) -> str:
    """' did you mean grow.tau?' for a misspelt key, or '' when no known key is close."""
    model = _section_model(loc)
    if model is None or not loc:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    if not close:
        return ""
    dotted = _dotted((*loc[:-1], close[0]))
    return f" did you mean {dotted}?"


def _describe(error: ValidationError, origin: str, blame: dict[str, str] | None = None) -> str:
    """One line: the origin, the dotted key and the rule it breaks (never the value itself).

    `blame` maps dotted keys set by --set to their --set text: an error at or under such a key
    is reported against that --set, not against the recipe file."""
    errors = error.errors()
    # a misspelt key is also a missing one: the spelling is the cause, so name it first
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(first["loc"])
    key = _dotted(loc)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        hint = did_you_mean(loc) or " check its spelling against the recipe reference in README.md"
        message = "is not a known key;" + hint
    elif first["type"] == "missing":
        message = "is required"
    elif first["type"] in ("union_tag_invalid", "union_tag_not_found") and key in _TAG_KEYS:
        # pydantic's message quotes the value, which may be anything the file holds
        tag, choices = _TAG_KEYS[key]
        key, message = f"{key}.{tag}", f"should be {choices}"
    for dotted, text in (blame or {}).items():
        if key == dotted or key.startswith(dotted + ".") or dotted.startswith(key + "."):
            origin = text
    return f"{one_line(origin, 300)}: {key}: {one_line(message, 300)}"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"{origin}: cannot set {one_line(dotted)}: {one_line(part)} is not a "
                        "section.")
        node = child
    node[parts[-1]] = value


def _drop_twins(tree: dict[str, Any], keys: list[str]) -> None:
    """A cadence key set by --set (or derive) replaces its twin in the other unit from the
    recipe: `--set grow.check_every_epochs=1` on a recipe giving grow.check_every runs on
    epochs. Both twins set by the same changes stay, for validation to refuse."""
    for key in keys:
        twin = TWINS.get(key)
        if twin is None or twin in keys:
            continue
        *parents, last = twin.split(".")
        node: Any = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=0.01' -> ('train.lr', 0.01); the value is read as YAML (numbers, lists, ...)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {one_line(text)!r} is not of the form section.key=value, e.g. "
                        "train.lr=0.01.")
    try:
        value = load_yaml_text(raw, f"--set {one_line(key)}")
    except StrictYamlError:
        raise  # YAML, only too deep, too big or repeating a key: not a plain string
    except UserError:
        value = raw  # not YAML: the text itself (validation says if a string is wrong here)
    return key.strip(), value


def recipe_from_dict(raw: Any, origin: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    if not isinstance(raw, dict):
        raise UserError(f"{origin}: a recipe must be a mapping with sections data, model, ...")
    tree = copy.deepcopy(raw)  # --set writes into nested sections: never into the caller's
    blame: dict[str, str] = {}  # dotted key -> the --set that gave it, for error messages
    for text in overrides:
        key, value = parse_override(text)
        if tuple(key.split(".")) in PATH_KEYS and isinstance(value, str) and value:
            value = str(Path(value).expanduser().absolute())
        blame[key] = f"--set {one_line(text)}"
        _set_dotted(tree, key, value, blame[key])
    _drop_twins(tree, list(blame))
    try:
        return Recipe.model_validate(tree)
    except ValidationError as error:
        raise UserError(_describe(error, origin, blame)) from None


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe file (strict, bounded YAML) and validate it with the overrides applied."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path.absolute()}: no such recipe file; pass a YAML file such as "
                        "recipes/digits.yaml.")
    raw = load_yaml_file(path)
    if isinstance(raw, dict):
        raw = resolve_paths(raw, path.absolute().parent)
    return recipe_from_dict(raw, str(path), overrides)


# Keys naming files or folders. Relative values in a recipe file are read from the recipe's own
# folder (so a recipe works from any working directory); the recipe written beside results and
# into checkpoints records absolute paths. --set values are relative to the working directory.
PATH_KEYS = (("data", "path"), ("data", "root"), ("model", "weights"))


def resolve_paths(tree: dict[str, Any], base: Path) -> dict[str, Any]:
    """A copy of a raw recipe tree with its relative PATH_KEYS made absolute against `base`."""
    out = dict(tree)
    for section, key in PATH_KEYS:
        node = out.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str) and node[key]:
            value = Path(node[key]).expanduser()
            out[section] = {**node, key: str(value if value.is_absolute() else base / value)}
    return out


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return recipe.model_dump(mode="json")


def derive(recipe: Recipe, changes: dict[str, Any], origin: str = "derived recipe") -> Recipe:
    """`recipe` with dotted keys changed ({"train.lr": 0.01}), validated like any recipe."""
    tree = recipe_to_dict(recipe)
    for key, value in changes.items():
        _set_dotted(tree, key, value, origin)
    _drop_twins(tree, list(changes))
    try:
        return Recipe.model_validate(tree)
    except ValidationError as error:
        raise UserError(_describe(error, origin)) from None
