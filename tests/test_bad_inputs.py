"""Bad inputs through the command line: each is one line and exit code 2 naming the key, file or
option, never a traceback; where an input is valid, it runs correctly.

Everything uses the tiny recipes, one epoch and tmp_path; stderr is part of `result.output`
(click >= 8.2 mixes the two streams there and keeps `result.stderr` apart).
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from netsize.cli import app
from netsize.data import load_data
from netsize.errors import UserError
from netsize.memory import ENV_VAR
from netsize.recipe import load_recipe
from netsize.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "tiny"
IRIS = TINY / "mlp_iris.yaml"
runner = CliRunner()
ONE_EPOCH = ("--set", "train.epochs=1", "--device", "cpu")


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def refused(result, *needles: str) -> str:
    """Assert exit code 2 with one error line holding every needle; return that line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def iris_recipe(folder: Path, text: str | None = None, **sections: str) -> Path:
    """The tiny iris recipe with sections replaced by flow-style YAML text."""
    tree = yaml.safe_load(IRIS.read_text())
    body = text if text is not None else "".join(
        f"{key}: {value}\n" for key, value in {**_flow(tree), **sections}.items())
    path = folder / "recipe.yaml"
    path.write_text(body)
    return path


def _flow(tree: dict) -> dict[str, str]:
    return {key: json.dumps(value) for key, value in tree.items()}  # JSON is flow-style YAML


# ------------------------------------------------------------------------ the recipe file
def test_latin1_recipe_is_refused(tmp_path: Path):
    path = tmp_path / "latin.yaml"
    path.write_bytes(IRIS.read_bytes() + "# café\n".encode("latin-1"))
    refused(cli("grow", path, "--out", tmp_path / "out"), str(path), "UTF-8")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_pickle_given_as_recipe_is_refused(tmp_path: Path, protocol: int):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"data": {"source": "sklearn"}, "w": [1.0, 2.0]}, protocol))
    refused(cli("grow", path, "--out", tmp_path / "out"), str(path))


def test_deep_nesting_in_the_recipe_file(tmp_path: Path):
    path = iris_recipe(tmp_path, model="{kind: mlp, hidden: " + "[" * 5000 + "]" * 5000 + "}")
    refused(cli("grow", path), str(path), "nested")


def test_deep_nesting_in_set(tmp_path: Path):
    deep = "model.hidden=" + "[" * 5000 + "]" * 5000
    refused(cli("grow", IRIS, "--set", deep, "--out", tmp_path / "out"), "--set model.hidden",
            "nested")


def test_alias_bomb_in_search_choices(tmp_path: Path):
    levels = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path = iris_recipe(tmp_path, search="{space: {x: {type: categorical, choices: ["
                       + ", ".join(levels) + "]}}}")
    refused(cli("grow", path), str(path), "aliases")


def test_self_referencing_alias(tmp_path: Path):
    path = iris_recipe(tmp_path, search="{space: {x: &x {type: categorical, choices: [*x]}}}")
    refused(cli("grow", path), str(path), "alias")


def test_duplicate_keys(tmp_path: Path):
    path = iris_recipe(tmp_path, train="{epochs: 1, epochs: 100000}")
    refused(cli("grow", path), str(path), "duplicate key 'train.epochs'")


@pytest.mark.parametrize("value", ["true", "1.0"])
def test_bool_and_float_are_not_integers(tmp_path: Path, value: str):
    path = iris_recipe(tmp_path, train=f"{{epochs: {value}}}")
    refused(cli("grow", path), str(path), "train.epochs", "integer")
    refused(cli("grow", IRIS, "--set", f"train.epochs={value}"), "train.epochs", "integer")


@pytest.mark.parametrize("grow, steps", [
    ("{check_every: 4, check_every_epochs: 1}", "grow.check_every"),
    ("{cooldown: 0, cooldown_epochs: 0.5}", "grow.cooldown"),
    ("{schedule: {start: 10, start_epochs: 1}}", "grow.schedule.start"),
    ("{schedule: {every: 5, every_epochs: 0.5}}", "grow.schedule.every"),
])
def test_a_cadence_in_steps_and_in_epochs_is_refused(tmp_path: Path, grow: str, steps: str):
    path = iris_recipe(tmp_path, grow=grow)
    refused(cli("grow", path, "--out", tmp_path / "out"), str(path), f"{steps} and "
            f"{steps}_epochs both", "keep one")
    assert not (tmp_path / "out").exists()
    refused(cli("grow", IRIS, "--set", f"{steps}=3", "--set", f"{steps}_epochs=1"),
            f"{steps} and {steps}_epochs")


def test_unknown_data_source_is_named_not_quoted(tmp_path: Path):
    path = iris_recipe(tmp_path, data="{source: [" + ", ".join(["sklearn"] * 5000) + "]}")
    line = refused(cli("grow", path), str(path), "data.source", "'sklearn'")
    assert len(line) < 300


# ---------------------------------------------------------------------------------- sizes
@pytest.fixture
def no_real_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a real (not meta) network is an internal error: refusals come first."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("a network was allocated")

    monkeypatch.setattr("netsize.train.build_network", refuse)


@pytest.mark.usefixtures("no_real_build")
@pytest.mark.parametrize(("setting", "key"), [
    ("model.hidden=[100000000]", "model.hidden"),
    ("grow.schedule.amount=2147483648", "grow.schedule.amount"),
    ("grow.schedule.amount=.inf", "grow.schedule.amount"),
    ("train.epochs=1000000000", "train.epochs"),
])
def test_huge_values_are_refused(tmp_path: Path, setting: str, key: str):
    refused(cli("grow", IRIS, "--set", setting, "--out", tmp_path / "out"), key)
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("no_real_build")
def test_wide_network_within_the_schema_is_refused_before_allocation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_VAR, str(1 << 30))
    result = cli("grow", IRIS, "--set", "model.hidden=[65536, 65536, 65536]", "--out",
                 tmp_path / "out")
    refused(result, "model.hidden", "memory")
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("no_real_build")
def test_huge_synthetic_data_is_refused_before_allocation(tmp_path: Path):
    result = cli("grow", TINY / "teacher_student.yaml", "--set", "data.n_samples=10000000",
                 "--set", "data.in_features=1000000", "--out", tmp_path / "out")
    refused(result, "data.n_samples", "memory")


def test_schedule_growth_stays_within_max_width_and_max_params(tmp_path: Path):
    recipe = load_recipe(TINY / "teacher_student.yaml", [
        "grow.schedule.start=1", "grow.schedule.every=1", "grow.schedule.times=50",
        "grow.schedule.amount=64", "grow.max_width=40", "train.epochs=1"])
    trainer = Trainer(recipe, load_data(recipe.data, recipe.seed), torch.device("cpu"))
    trainer.fit()
    assert trainer.net.spec.widths() == [40]  # the hidden layer stops at grow.max_width
    small = load_recipe(TINY / "teacher_student.yaml", [
        "grow.schedule.start=1", "grow.schedule.every=1", "grow.schedule.amount=64",
        "grow.max_params=1000", "train.epochs=1"])
    trainer = Trainer(small, load_data(small.data, small.seed), torch.device("cpu"))
    trainer.fit()
    assert sum(p.numel() for p in trainer.net.parameters()) <= 1000


def test_growth_stops_at_what_memory_holds(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_VAR, str(64 << 20))  # room for about 2.2 million parameters
    recipe = load_recipe(IRIS, [
        "model.hidden=[1, 1]", "model.norm=none", "grow.candidates=[width]", "grow.tau=1.0",
        "grow.increment=2000", "grow.max_width=65536", "grow.max_params=10000000000",
        "grow.check_every=1", "grow.cooldown=0", "grow.init=random", "train.epochs=1"])
    trainer = Trainer(recipe, load_data(recipe.data, recipe.seed), torch.device("cpu"))
    trainer.fit()
    params = sum(p.numel() for p in trainer.net.parameters())
    assert trainer.summary.events and params <= trainer.grow_cfg.max_params < 3_000_000
    assert trainer.net.spec.widths()[1] == 1  # widening it would have added 4 million


# ------------------------------------------------------------------- model against the data
def test_too_many_stages_for_the_image(tmp_path: Path):
    result = cli("grow", TINY / "cnn_digits.yaml", "--set",
                 "model.stages=[[4], [4], [4], [4], [4], [4]]", "--out", tmp_path / "out")
    refused(result, "model.stages")
    assert not (tmp_path / "out").exists()


def test_cnn_on_tabular_data(tmp_path: Path):
    path = iris_recipe(tmp_path, model="{kind: cnn, stages: [[4]]}")
    refused(cli("grow", path, "--out", tmp_path / "out"), "model.kind")


def test_batch_of_one_with_batch_norm(tmp_path: Path):
    result = cli("grow", IRIS, "--set", "train.batch_size=1", "--out", tmp_path / "out")
    refused(result, "train.batch_size")


def test_refused_at_preflight_leaves_no_folder(tmp_path: Path):
    out = tmp_path / "new" / "deeper" / "run"
    refused(cli("grow", IRIS, "--set", "train.batch_size=1", "--out", out), "train.batch_size")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- options
def test_seed_past_2_to_the_64(tmp_path: Path):
    result = cli("grow", IRIS, "--seed", "18446744073709551616", "--out", tmp_path / "out")
    refused(result, "--seed", "4294967295")


def test_negative_sampler_seed(tmp_path: Path):
    result = cli("grow", IRIS, "--set", "search.sampler_seed=-1", "--out", tmp_path / "out")
    refused(result, "search.sampler_seed")


@pytest.mark.parametrize("device", ["meta", "mps", "xpu", "hpu"])
def test_devices_other_than_cpu_and_cuda(tmp_path: Path, device: str):
    refused(cli("grow", IRIS, "--device", device, "--out", tmp_path / "out"), "--device")
    assert not (tmp_path / "out").exists()


def test_too_many_threads(tmp_path: Path):
    refused(cli("grow", IRIS, "--threads", "100000", "--out", tmp_path / "out"), "--threads")


# -------------------------------------------------------------------------------- run folders
def test_out_is_an_existing_file(tmp_path: Path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    refused(cli("grow", IRIS, *ONE_EPOCH, "--out", target), str(target), "is a file")
    assert target.read_text() == "mine"


def test_out_under_a_file(tmp_path: Path):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    refused(cli("grow", IRIS, *ONE_EPOCH, "--out", target / "run"), "--out", str(target))
    assert target.read_text() == "mine"


def test_rerun_is_refused_and_overwrite_replaces_the_run(tmp_path: Path):
    out = tmp_path / "run"
    first = cli("grow", IRIS, *ONE_EPOCH, "--out", out)
    assert first.exit_code == 0, first.output
    stale = out / "checkpoints" / "event-999"
    stale.mkdir()
    refused(cli("grow", IRIS, *ONE_EPOCH, "--out", out), str(out), "--overwrite")
    assert stale.is_dir()
    again = cli("grow", IRIS, *ONE_EPOCH, "--seed", "7", "--out", out, "--overwrite")
    assert again.exit_code == 0, again.output
    assert not stale.exists()
    assert (out / "checkpoints" / "final" / "weights.safetensors").is_file()
    assert load_recipe(out / "recipe.yaml").seed == 7


def test_overwrite_never_empties_a_folder_of_user_files(tmp_path: Path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    refused(cli("grow", IRIS, *ONE_EPOCH, "--out", out, "--overwrite"), str(out))
    assert (out / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


# ---------------------------------------------------------------------------- internal error
def test_internal_error_goes_to_a_log_in_the_run_folder(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    def broken(self):
        return 1 / 0

    monkeypatch.setattr("netsize.runs.grow.Trainer.fit", broken)
    out = tmp_path / "run"
    result = cli("grow", IRIS, *ONE_EPOCH, "--out", out)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("internal error: ZeroDivisionError"), lines
    log = Path(re.search(r"the details are in (\S+?)\. ", lines[0]).group(1))
    assert log.parent == out.absolute() and log.is_file()
    text = log.read_text()
    assert "Traceback" in text and "ZeroDivisionError" in text and "broken" in text


# ------------------------------------------------------------------------------- data paths
def _csv_recipe(folder: Path, csv_name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["a,b,c,y"] + [f"{i % 7},{(i * 3) % 5},{i / 10},{i % 3}" for i in range(45)]
    (folder / "table.csv").write_text("\n".join(rows) + "\n")
    recipe = folder / "csv.yaml"
    recipe.write_text(f"data: {{source: csv, path: {csv_name}, target: y}}\n"
                      "model: {kind: mlp, hidden: [4]}\ntrain: {epochs: 1, batch_size: 8}\n"
                      "grow: {trigger: none}\n")
    return recipe


def test_relative_csv_path_reads_from_the_recipe_folder(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    recipe = _csv_recipe(tmp_path / "project", "table.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("grow", recipe, "--device", "cpu", "--out", "run")
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((elsewhere / "run" / "recipe.yaml").read_text())
    assert written["data"]["path"] == str(tmp_path / "project" / "table.csv")
    assert Path(written["data"]["path"]).is_absolute()


def test_missing_csv_is_named_by_its_absolute_path(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    recipe = _csv_recipe(tmp_path / "project", "absent.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("grow", recipe, "--device", "cpu", "--out", "run")
    refused(result, str(tmp_path / "project" / "absent.csv"))
    assert not (elsewhere / "run").exists()


# ----------------------------------------------------------------------------------- prune
def test_prune_with_a_recipe_for_other_data(tmp_path: Path):
    run = tmp_path / "iris"
    trained = cli("train", IRIS, *ONE_EPOCH, "--out", run)
    assert trained.exit_code == 0, trained.output
    wine = TINY / "prune_mlp.yaml"
    result = cli("prune", run / "checkpoints" / "best", "--recipe", wine, "--device", "cpu",
                 "--out", tmp_path / "pruned")
    refused(result, "--recipe", str(wine))
    assert not (tmp_path / "pruned").exists()


# ------------------------------------------------------------------------------- divergence
@pytest.mark.parametrize("name", ["mlp_iris", "cnn_digits", "teacher_student"])
def test_divergence_at_a_growth_check(name: str):
    recipe = load_recipe(TINY / f"{name}.yaml", ["train.epochs=1"])
    trainer = Trainer(recipe, load_data(recipe.data, recipe.seed), torch.device("cpu"))
    with torch.no_grad():
        next(trainer.net.parameters()).view(-1)[0] = float("nan")
    grow = recipe.grow
    trainer.step = grow.schedule.start if grow.trigger == "schedule" else 2 * grow.check_every
    with pytest.raises(UserError, match="training diverged"):
        trainer.maybe_grow()
    assert trainer.summary.events == []


# ------------------------------------------------------------------------------- full disk
def test_a_full_disk_is_one_line_and_leaves_no_half_checkpoint(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    import errno

    import netsize.io

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "weights.safetensors")

    monkeypatch.setattr(netsize.io, "save_file", full)
    out = tmp_path / "out"
    refused(cli("grow", IRIS, "--out", out), "No space left on device")
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") and "checkpoints" in str(p)]
    assert leftovers == [] and not (out / "checkpoints" / "best").exists()
