from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from netsize.errors import UserError
from netsize.recipe import Recipe, load_recipe, parse_override, recipe_from_dict

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

ALL_RECIPES = sorted(RECIPES.rglob("*.yaml"))


def test_there_are_recipes():
    names = {p.relative_to(RECIPES).as_posix() for p in ALL_RECIPES}
    assert {"digits.yaml", "cifar10.yaml", "teacher_student.yaml"} <= names
    assert any(name.startswith("tiny/") for name in names)


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda p: p.relative_to(RECIPES).as_posix())
def test_every_recipe_loads(path: Path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    # The resolved form round-trips through the same validation.
    again = recipe_from_dict(recipe.model_dump(mode="json"), "resolved")
    assert again == recipe


BASE = {"data": {"source": "sklearn", "name": "iris"}, "model": {"kind": "mlp", "hidden": [4]}}


def _error(raw, overrides=()) -> str:
    with pytest.raises(UserError) as info:
        recipe_from_dict(raw, "r.yaml", overrides)
    return str(info.value)


def test_unknown_key_is_named():
    message = _error({**BASE, "train": {"lr": 0.1, "epochz": 3}})
    assert message.startswith("r.yaml: train.epochz:") and "not a known key" in message
    assert message.endswith("did you mean train.epochs?")


@pytest.mark.parametrize("raw, suggestion", [
    ({**BASE, "trian": {"epochs": 1}}, "did you mean train?"),
    ({**BASE, "data": {"source": "sklearn", "name": "iris", "as_imag": True}},
     "did you mean data.as_image?"),
    ({**BASE, "data": {"source": "csv", "path": "x.csv", "targte": "y"}},
     "did you mean data.target?"),
    ({**BASE, "model": {"kind": "mlp", "hiden": [4]}}, "did you mean model.hidden?"),
    ({**BASE, "model": {"kind": "cnn", "stgaes": [[4]]}}, "did you mean model.stages?"),
    ({**BASE, "grow": {"schedule": {"everyy": 3}}}, "did you mean grow.schedule.every?"),
])
def test_unknown_key_suggests_the_close_key_of_its_own_section(raw, suggestion):
    # data and model are unions told apart by a tag: the suggestion comes from the tagged model
    assert _error(raw).endswith(suggestion)


def test_unknown_key_far_from_every_key_gets_no_guess():
    message = _error({**BASE, "train": {"zzzzzz": 1}})
    assert "did you mean" not in message and "README.md" in message


@pytest.mark.parametrize("override, key", [
    ("grow.taux=2", "grow.taux"), ("train.lr=abc", "train.lr"), ("model.kind=resnt", "model.kind"),
])
def test_bad_set_is_blamed_on_the_set_not_the_file(override, key):
    message = _error(BASE, [override])
    assert message.startswith(f"--set {override}: {key}")


def test_file_error_is_blamed_on_the_file_even_with_a_set():
    message = _error({**BASE, "train": {"epochz": 3}}, ["train.lr=0.1"])
    assert message.startswith("r.yaml: train.epochz")


def test_wrong_type_is_named():
    message = _error({**BASE, "train": {"epochs": "many"}})
    assert "train.epochs" in message and "integer" in message


def test_out_of_range_is_named():
    message = _error({**BASE, "train": {"lr": -1}})
    assert "train.lr" in message and "greater than 0" in message


def test_bad_choice_lists_allowed_values():
    message = _error({**BASE, "train": {"optimizer": "rmsprop"}})
    assert "train.optimizer" in message and "'sgd'" in message and "'adamw'" in message


def test_missing_section_and_source_specific_key():
    assert "model: is required" in _error({"data": BASE["data"]})
    message = _error({**BASE, "data": {"source": "csv", "target": "y"}})
    assert "data.path" in message and "required" in message


def test_unknown_data_source():
    message = _error({**BASE, "data": {"source": "s3", "name": "x"}})
    assert "data" in message and "sklearn" in message


def test_depth_growth_takes_every_activation():
    # residual branches keep the function whatever the activation (the identity layers of the
    # layer-list networks needed relu)
    for act in ("relu", "leaky_relu", "gelu", "silu", "tanh"):
        raw = {**BASE, "model": {"kind": "mlp", "hidden": [4], "activation": act}}
        assert recipe_from_dict(raw, "r.yaml").model.activation == act


def test_overrides_are_typed_and_validated():
    recipe = recipe_from_dict(BASE, "r.yaml", ["train.lr=0.5", "model.hidden=[3, 2]", "seed=7"])
    assert recipe.train.lr == 0.5 and recipe.model.hidden == [3, 2] and recipe.seed == 7
    assert "train.nope" in _error(BASE, ["train.nope=1"])
    assert parse_override("grow.tau=1.5") == ("grow.tau", 1.5)
    with pytest.raises(UserError, match="section.key=value"):
        parse_override("no-equals-sign")


def test_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(UserError, match="no such recipe file"):
        load_recipe(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(UserError, match="mapping"):
        load_recipe(scalar)


def test_recipes_are_frozen():
    recipe = recipe_from_dict(BASE, "r.yaml")
    with pytest.raises(ValidationError):
        recipe.train.lr = 1.0  # type: ignore[misc]


def test_overrides_leave_the_callers_tree_alone():
    raw = {"data": {"source": "sklearn", "name": "iris"}, "model": {"kind": "mlp", "hidden": [4]}}
    recipe_from_dict(raw, "r.yaml", ["model.hidden=[8]"])
    assert raw["model"]["hidden"] == [4]
