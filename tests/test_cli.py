"""End to end through the CLI: outputs, checkpoint reloads, and bad input giving exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from netsize.cli import app
from netsize.data import load_data
from netsize.io import load_checkpoint
from netsize.recipe import load_recipe
from netsize.train import evaluate

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "tiny"
runner = CliRunner()


def _csv_recipe(folder: Path, csv: Path) -> str:
    path = folder / "csv.yaml"
    path.write_text(f"data: {{source: csv, path: '{csv}', target: y}}\n"
                    "model: {kind: mlp, hidden: [4]}\ntrain: {epochs: 1}\n")
    return str(path)


def _grow(*args: str):
    return runner.invoke(app, ["grow", *args])


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "cnn"
    result = _grow(str(TINY / "cnn_digits.yaml"), "--out", str(out), "--device", "cpu")
    assert result.exit_code == 0, result.output
    return out


def test_run_writes_every_output(cnn_run: Path):
    for name in ("recipe.yaml", "metrics.csv", "metrics.json", "events.json", "front.csv",
                 "front.json", "front.png", "report.md", "summary.json", "checkpoints.csv"):
        assert (cnn_run / name).is_file(), name
    events = json.loads((cnn_run / "events.json").read_text())
    assert len(events) >= 1
    for key in ("step", "epoch", "kind", "layer", "units", "eta", "ratio", "threshold"):
        assert key in events[0]
    tags = {p.name for p in (cnn_run / "checkpoints").iterdir()}
    assert {"final", "best", "event-001"} <= tags
    assert not any(name.startswith(".") for name in tags)  # no half-written temp folders
    assert (cnn_run / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoints_reload_and_reproduce_their_metric(cnn_run: Path):
    recipe = load_recipe(cnn_run / "recipe.yaml")
    splits = load_data(recipe.data, recipe.seed)
    for folder in sorted((cnn_run / "checkpoints").iterdir()):
        net, meta = load_checkpoint(folder)
        assert meta["params"] == sum(p.numel() for p in net.parameters())
        _, val = evaluate(net, splits.x_val, splits.y_val, splits.task)
        assert val == pytest.approx(meta["val_metric"], abs=1e-6), folder.name


def test_front_is_over_all_checkpoints(cnn_run: Path):
    front = json.loads((cnn_run / "front.json").read_text())["points"]
    points = (cnn_run / "checkpoints.csv").read_text().splitlines()[1:]
    assert 1 <= len(front) <= len(points)
    sizes = [p["params"] for p in front]
    metrics = [p["val_metric"] for p in front]
    assert sizes == sorted(sizes) and metrics == sorted(metrics)


def test_resolved_recipe_is_written(cnn_run: Path):
    resolved = load_recipe(cnn_run / "recipe.yaml")
    assert resolved == load_recipe(TINY / "cnn_digits.yaml")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["missing.yaml"], "no such recipe file"),
        (["{tiny}", "--set", "train.epochz=1"], "train.epochz"),
        (["{tiny}", "--set", "train.lr=fast"], "train.lr"),
        (["{tiny}", "--set", "train.batch_size=0"], "train.batch_size"),
        (["{tiny}", "--set", "nonsense"], "section.key=value"),
        (["{tiny}", "--device", "tpu"], "--device"),
        (["{csv}", "--set", "data.path=/no/such.csv"], "/no/such.csv"),
        (["{tiny}", "--set", "data.source=torchvision", "--set", "data.name=CIFAR10",
          "--set", "data.root={tmp}"], "download"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, needle, tmp_path: Path):
    csv_recipe = _csv_recipe(tmp_path, tmp_path / "table.csv")
    args = [a.format(tiny=TINY / "mlp_iris.yaml", tmp=tmp_path, csv=csv_recipe) for a in args]
    result = _grow(*args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_bad_data_file_names_the_file(tmp_path: Path):
    csv = tmp_path / "table.csv"
    csv.write_text("a,b,y\n1,2,0\n3,x,1\n")
    result = _grow(_csv_recipe(tmp_path, csv), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "table.csv" in result.output


def test_python_dash_m_entry_point_and_help():
    done = subprocess.run([sys.executable, "-m", "netsize", "grow", "--help"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert "Example:" in done.stdout and "netsize grow recipes/digits.yaml" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "netsize", "grow", "absent.yaml"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "absent.yaml" in bad.stderr and "Traceback" not in bad.stderr


def test_default_device_is_cpu_without_cuda(tmp_path: Path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: auto picks it")
    result = _grow(str(TINY / "mlp_iris.yaml"), "--out", str(tmp_path / "r"), "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "on cpu" in result.output
    assert load_recipe(tmp_path / "r" / "recipe.yaml").seed == 3


def test_version_and_short_help():
    from netsize import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"netsize {__version__}"
    for command in ("grow", "train", "prune", "compare"):
        short = runner.invoke(app, [command, "-h"])
        assert short.exit_code == 0 and "Example:" in short.output, command


@pytest.mark.parametrize(("threads", "cores", "load", "hinted"), [
    (2, 2, 0.1, False),  # an idle machine: torch's default is fine
    (2, 2, 1.2, True),  # one core busy elsewhere: 2 threads oversubscribe
    (1, 2, 3.0, False),  # one thread never oversubscribes
    (8, 16, 4.0, False),  # cores to spare
    (16, 16, 12.0, True),
])
def test_thread_hint_when_other_processes_keep_cores_busy(threads, cores, load, hinted):
    from netsize.cli.common import thread_hint

    hint = thread_hint(threads, cores, load)
    assert (hint is not None) == hinted
    if hint:
        assert "\n" not in hint and "--threads" in hint


def test_the_hint_is_printed_only_without_threads(tmp_path: Path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the hint is about CPU threads")
    from netsize.cli import common

    monkeypatch.setattr(common, "_load", lambda: 64.0)
    monkeypatch.setattr(common.torch, "get_num_threads", lambda: 2)
    for extra, hinted in (((), True), (("--threads", "1"), False)):
        result = _grow(str(TINY / "mlp_iris.yaml"), "--out", str(tmp_path / f"r{len(extra)}"),
                       "--set", "train.epochs=1", *extra)
        assert result.exit_code == 0, result.output
        assert ("hint: other processes keep" in result.output) == hinted
