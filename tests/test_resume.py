"""Resumable runs: a run killed anywhere and resumed equals an uninterrupted one (CPU, same
threads); resuming is refused, with one line and exit code 2, where it would not be that run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from netsize import load_recipe
from netsize.cli import app
from netsize.resume import RESUME_DIR
from netsize.rundir import MARKER_FILE
from netsize.runs.grow import GrowResult, run_grow
from netsize.train import SilentReporter

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "tiny"
runner = CliRunner()
# Growth with tau 1 grows whenever a candidate gains anything; dropout and augmentation make the
# global and augmentation RNGs matter; cosine and plateau schedulers both carry state.
RECIPES = {
    "cnn": (TINY / "cnn_digits.yaml", ["train.epochs=4", "grow.tau=1.0",
                                       "data.augment.crop_padding=1", "data.augment.flip=true"]),
    "mlp": (TINY / "mlp_iris.yaml", ["grow.tau=1.0", "model.dropout=0.2", "train.optimizer=sgd",
                                     "train.scheduler=plateau", "train.plateau_patience=0"]),
}


class Killed(Exception):
    """Stands for the process dying at a given step."""


class KillAt(SilentReporter):
    def __init__(self, step: int) -> None:
        self.at = step

    def step(self, step: int, epoch: int) -> None:
        if step == self.at:
            raise Killed


def _without(rows: list[dict], *keys: str) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in keys} for row in rows]


def _assert_same_run(a: GrowResult, b: GrowResult) -> None:
    assert a.summary.events and a.summary.events == b.summary.events
    assert a.summary.checks == b.summary.checks
    assert _without(a.summary.history, "seconds") == _without(b.summary.history, "seconds")
    assert a.summary.checkpoints == b.summary.checkpoints
    assert a.summary.train_flops == b.summary.train_flops
    for tag in ("final", "best", "event-001"):
        wa = load_file(a.run_dir / "checkpoints" / tag / "weights.safetensors")
        wb = load_file(b.run_dir / "checkpoints" / tag / "weights.safetensors")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert json.loads((a.run_dir / "front.json").read_text()) == \
        json.loads((b.run_dir / "front.json").read_text())


@pytest.fixture(scope="module", params=sorted(RECIPES))
def uninterrupted(request, tmp_path_factory) -> tuple[str, GrowResult]:
    torch.set_num_threads(1)
    path, sets = RECIPES[request.param]
    return request.param, run_grow(load_recipe(path, sets),
                                   tmp_path_factory.mktemp("full") / "run")


@pytest.mark.parametrize("where", [0.3, 0.5, 0.8])  # share of the run's steps before the kill
def test_a_run_killed_anywhere_and_resumed_equals_an_uninterrupted_run(
        uninterrupted, where, tmp_path):
    name, full = uninterrupted
    recipe = load_recipe(*RECIPES[name])
    steps = full.summary.history[-1]["step"]
    per_epoch = full.summary.history[0]["step"]
    kill = max(int(steps * where), per_epoch + 1)  # after the first epoch end at least
    with pytest.raises(Killed):
        run_grow(recipe, tmp_path / "run", observer=KillAt(kill), resumable=True)
    assert (tmp_path / "run" / RESUME_DIR).is_dir()
    assert not (tmp_path / "run" / "summary.json").exists()
    resumed = run_grow(recipe, tmp_path / "run", resume=True)
    _assert_same_run(full, resumed)
    assert not (tmp_path / "run" / RESUME_DIR).exists()  # removed once the run finished


def test_a_cadence_in_epochs_resumes_from_the_recorded_recipe(tmp_path):
    """recipe.yaml keeps check_every_epochs (check_every: null): resuming from it converts to
    the same steps again and continues the same run."""
    recipe = load_recipe(TINY / "mlp_iris.yaml", ["grow.tau=1.0", "grow.check_every_epochs=0.5",
                                                  "grow.cooldown_epochs=1"])
    full = run_grow(recipe, tmp_path / "full")
    with pytest.raises(Killed):
        run_grow(recipe, tmp_path / "run", observer=KillAt(23), resumable=True)
    recorded = load_recipe(tmp_path / "run" / "recipe.yaml")
    assert recorded == recipe and recorded.grow.check_every is None
    resumed = run_grow(recorded, tmp_path / "run", resume=True)
    assert full.summary.checks and resumed.summary.checks == full.summary.checks
    assert resumed.summary.events == full.summary.events


class KillAtFinal(SilentReporter):
    def checkpoint(self, ckpt) -> None:
        if ckpt.tag == "final":
            raise Killed


def test_a_run_killed_while_writing_its_last_checkpoints_resumes_to_finish(
        uninterrupted, tmp_path):
    """The state saved at the last epoch end: resuming trains no further and only finishes."""
    name, full = uninterrupted
    recipe = load_recipe(*RECIPES[name])
    with pytest.raises(Killed):
        run_grow(recipe, tmp_path / "run", observer=KillAtFinal(), resumable=True)
    resumed = run_grow(recipe, tmp_path / "run", resume=True)
    _assert_same_run(full, resumed)


def _netsize(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    return subprocess.Popen([sys.executable, "-m", "netsize", *args, "--threads", "1",
                             "--device", "cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def test_netsize_grow_killed_by_sigkill_resumes_to_the_same_events_and_metrics(tmp_path):
    recipe = str(TINY / "cnn_digits.yaml")
    sets = ["--set", "train.epochs=12", "--set", "grow.tau=1.0"]
    full = _netsize("grow", recipe, *sets, "--out", str(tmp_path / "full"))
    killed = _netsize("grow", recipe, *sets, "--out", str(tmp_path / "killed"))
    deadline = time.monotonic() + 120
    while not any((tmp_path / "killed" / RESUME_DIR).glob("epoch-*")):
        assert killed.poll() is None and time.monotonic() < deadline, "no epoch end in time"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert (tmp_path / "killed" / ".netsize.lock").exists()  # the dead process's lock stays
    assert full.wait() == 0, full.stdout.read() if full.stdout else ""
    resumed = _netsize("grow", recipe, *sets, "--resume", str(tmp_path / "killed"))
    out = resumed.communicate()[0]
    assert resumed.returncode == 0, out
    for name in ("events.json", "checks.json", "checkpoints.csv", "front.json"):
        assert (tmp_path / "full" / name).read_text() == (tmp_path / "killed" / name).read_text()
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text())
               for run in ("full", "killed")]
    assert _without(metrics[0], "seconds") == _without(metrics[1], "seconds")


# --------------------------------------------------------------------------- refusals (exit 2)
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("done") / "run"
    result = runner.invoke(app, ["grow", str(TINY / "mlp_iris.yaml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _refused(args: list[str], *needles: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "Traceback" not in text
    for needle in needles:
        assert needle in text


def test_resuming_a_finished_run_is_refused(finished):
    _refused(["grow", str(TINY / "mlp_iris.yaml"), "--resume", str(finished)],
             "has finished", "nothing to resume")


def test_resuming_with_another_recipe_names_the_key(finished, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Killed):
        run_grow(load_recipe(TINY / "mlp_iris.yaml"), run, observer=KillAt(30), resumable=True)
    (run / ".netsize.lock").unlink(missing_ok=True)
    _refused(["grow", str(TINY / "mlp_iris.yaml"), "--set", "train.lr=0.5", "--resume",
              str(run)], "train.lr differs", "recipe.yaml")


def test_resume_refuses_out_overwrite_trials_and_non_run_folders(finished, tmp_path):
    recipe = str(TINY / "mlp_iris.yaml")
    _refused(["grow", recipe, "--resume", str(finished), "--out", str(tmp_path)], "drop --out")
    _refused(["grow", recipe, "--resume", str(finished), "--trials", "2"], "drop --resume")
    (tmp_path / "mine.txt").write_text("user file")
    _refused(["train", recipe, "--resume", str(tmp_path)], "not a netsize run folder")
    assert (tmp_path / "mine.txt").read_text() == "user file"


def test_a_run_without_a_saved_epoch_end_says_so(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Killed):
        run_grow(load_recipe(TINY / "mlp_iris.yaml"), run, observer=KillAt(2), resumable=True)
    (run / MARKER_FILE).write_text("{}")  # as the command's run folder has
    _refused(["grow", str(TINY / "mlp_iris.yaml"), "--resume", str(run)], "no resume state")
