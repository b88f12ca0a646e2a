"""`netsize grow RECIPE --trials N`: Optuna studies of whole runs, through the CLI.

Resuming adds only the missing trials, the study front is the Pareto front over every checkpoint
of every completed trial, failing trials are recorded and the study goes on, bad space keys exit
2 before any trial, journal storages work, and the median early-stopping rule. Two xfails: a
worker never ends when every trial fails, or when a trial was left RUNNING in a journal file.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from typer.testing import CliRunner

import netsize.search.study as study_module
from netsize.cli import app
from netsize.errors import UserError
from netsize.recipe import EarlyStoppingConfig, Recipe, derive, load_recipe
from netsize.search import TrialResult, make_storage, open_study, run_worker
from netsize.search.study import MedianStopper

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "tiny" / "search_iris.yaml"
STUDY = "grow-search_iris"
runner = CliRunner()


@contextmanager
def _one_thread() -> Iterator[None]:
    """Module fixtures run before conftest's per-test fixture: keep torch on one thread here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _grow(*args: str | Path):
    with _one_thread():
        return runner.invoke(app, ["grow", str(RECIPE), "--device", "cpu",
                                   *(str(a) for a in args)])


def _load(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{folder / 'study.db'}")


def _states(study: optuna.Study) -> dict[TrialState, int]:
    out: dict[TrialState, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state] = out.get(t.state, 0) + 1
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def resumed(tmp_path_factory) -> dict[str, Any]:
    """`--trials 2`, then the same command with `--trials 3`."""
    out = tmp_path_factory.mktemp("search") / "study"
    first = _grow("--trials", "2", "--out", out)
    assert first.exit_code == 0, first.output
    before = {t.number: t for t in _load(out).get_trials()}
    mtimes = {n: (out / "trials" / f"{n:04d}" / "summary.json").stat().st_mtime_ns
              for n in before}
    second = _grow("--trials", "3", "--out", out)
    assert second.exit_code == 0, second.output
    return {"out": out, "before": before, "mtimes": mtimes, "study": _load(out)}


def test_resume_adds_only_the_missing_trial(resumed):
    before: dict[int, optuna.trial.FrozenTrial] = resumed["before"]
    assert sorted(before) == [0, 1]
    assert all(t.state == TrialState.COMPLETE for t in before.values())
    trials = resumed["study"].get_trials()
    assert [t.number for t in trials] == [0, 1, 2]  # one new trial, nothing else
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for number in (0, 1):  # not redone
        assert trials[number].datetime_start == before[number].datetime_start
        assert trials[number].datetime_complete == before[number].datetime_complete
        assert trials[number].params == before[number].params
        run = resumed["out"] / "trials" / f"{number:04d}" / "summary.json"
        assert run.stat().st_mtime_ns == resumed["mtimes"][number]
    new = trials[2]
    assert new.params != trials[0].params and new.params != trials[1].params
    for key in new.params:  # sampled anew, not a replay of trial 0's or 1's values
        assert new.params[key] not in (trials[0].params[key], trials[1].params[key])
    assert (resumed["out"] / "trials" / "0002" / "summary.json").is_file()


def _hand_front(points: list[dict[str, Any]]) -> set[tuple[float, float]]:
    """(params, val_metric) pairs no other point dominates: max val_metric, min params."""
    pairs = {(float(p["params"]), float(p["val_metric"])) for p in points}
    return {(n, v) for n, v in pairs
            if not any(m <= n and w >= v and (m < n or w > v) for m, w in pairs)}


def test_study_front_is_the_pareto_front_over_every_checkpoint(resumed):
    out: Path = resumed["out"]
    complete = resumed["study"].get_trials(states=(TrialState.COMPLETE,))
    points = [dict(p, trial=t.number) for t in complete for p in t.user_attrs["points"]]
    assert points and all(t.user_attrs["points"] for t in complete)

    front = json.loads((out / "front.json").read_text())
    assert front["study"] == STUDY
    assert front["objectives"] == {"val_metric": "maximize", "params": "minimize"}
    got = [(float(p["params"]), float(p["val_metric"])) for p in front["points"]]
    assert set(got) == _hand_front(points)
    assert len(got) == len(set(got))  # each front value once
    by_key = {(p["trial"], p["tag"]): p for p in points}
    for p in front["points"]:  # every front point is a real checkpoint of that trial
        source = by_key[(p["trial"], p["tag"])]
        assert (p["params"], p["val_metric"], p["path"]) == (
            source["params"], source["val_metric"], source["path"])
        assert Path(p["path"]).is_dir()
    assert len(_read_csv(out / "front.csv")) == len(front["points"])

    rows = _read_csv(out / "points.csv")
    assert len(rows) == len(points)  # one row per checkpoint of every completed trial
    assert {(int(r["trial"]), r["tag"]) for r in rows} == set(by_key)
    on_disk = {(int(run.name), ckpt.name) for run in (out / "trials").iterdir()
               for ckpt in (run / "checkpoints").iterdir()}
    assert on_disk == set(by_key)
    for name in ("trials.csv", "front.png", "report.md", "recipe.yaml"):
        assert (out / name).is_file(), name


def test_study_records_sampler_and_metric_names(resumed):
    study = resumed["study"]
    assert study.user_attrs["sampler"] == {"name": "random", "seed": 0}
    assert study.metric_names == ["val_metric", "params"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]


def test_failing_trials_are_recorded_and_the_study_goes_on(tmp_path):
    # grow.increment 0 or -1 fails recipe validation (ge=1) inside the trial; 2 is fine. The
    # first choice is valid so the up-front space check (which probes choices[0]) passes.
    space = ("search.space={train.lr: {type: float, low: 0.01, high: 0.05}, "
             "grow.increment: {type: categorical, choices: [2, 0, -1]}}")
    out = tmp_path / "study"
    result = _grow("--trials", "2", "--out", out, "--set", space)
    assert result.exit_code == 0, result.output
    trials = _load(out).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == 2
    assert failed, "the seeded sampler should draw an invalid grow.increment at least once"
    assert len(complete) + len(failed) == len(trials)
    for t in failed:
        assert t.params["grow.increment"] in (0, -1)
        assert "grow.increment" in t.user_attrs["fail_reason"]
        assert t.user_attrs["fail_reason"].startswith("UserError")
    assert all(t.params["grow.increment"] == 2 for t in complete)
    rows = {int(r["trial"]): r for r in _read_csv(out / "trials.csv")}
    for t in failed:
        assert rows[t.number]["state"] == "fail"
        assert "grow.increment" in rows[t.number]["fail_reason"]


def test_bad_space_key_exits_2_before_any_trial(tmp_path):
    out = tmp_path / "study"
    result = _grow("--trials", "2", "--out", out,
                   "--set", "search.space={train.nope: {type: float, low: 0.1, high: 0.2}}")
    assert result.exit_code == 2, result.output
    assert "train.nope" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # no study, no trial folder


def test_journal_storage(tmp_path):
    out, journal = tmp_path / "study", tmp_path / "journal" / "study.log"
    result = _grow("--trials", "2", "--out", out, "--storage", f"journal:{journal}")
    assert result.exit_code == 0, result.output
    assert journal.is_file()
    assert not (out / "study.db").exists()
    study = optuna.load_study(study_name=STUDY,
                              storage=JournalStorage(JournalFileBackend(str(journal))))
    assert _states(study) == {TrialState.COMPLETE: 2}
    assert sorted(int(p.name) for p in (out / "trials").iterdir()) == [0, 1]
    assert len(json.loads((out / "front.json").read_text())["points"]) >= 1


# Early stopping: the median rule on a study in memory.


def _study_with(curves: list[list[float]], failed: list[list[float]] = ()) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for curve in curves:
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, values=[max(curve), 10.0], user_attrs={"curve": curve}))
    for curve in failed:
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL,
                                                  user_attrs={"curve": curve}))
    return study


def _stops(study: optuna.Study, epoch: int, metric: float, **cfg: Any) -> bool:
    config = EarlyStoppingConfig(**{"enabled": True, "min_epochs": 2, "min_trials": 3, **cfg})
    return MedianStopper(study, config)({"epoch": epoch, "val_metric": metric})


CURVES = [[0.5, 0.6, 0.7], [0.4, 0.5, 0.6], [0.6, 0.7, 0.8]]  # medians 0.5, 0.6, 0.7


def test_median_stopper_stops_below_the_median_at_that_epoch():
    study = _study_with(CURVES)
    assert _stops(study, 2, 0.55)
    assert not _stops(study, 2, 0.65)
    assert not _stops(study, 2, 0.6)  # at the median is not below it
    assert _stops(study, 3, 0.65)  # the median of epoch 3 (0.7), not of epoch 2
    assert not _stops(study, 3, 0.75)


def test_median_stopper_waits_for_min_epochs():
    study = _study_with(CURVES)
    assert not _stops(study, 1, 0.0)  # before min_epochs=2
    assert _stops(study, 2, 0.0)  # at min_epochs
    assert not _stops(study, 2, 0.0, min_epochs=3)
    assert _stops(study, 1, 0.0, min_epochs=1)


def test_median_stopper_needs_min_trials_completed():
    assert not _stops(_study_with(CURVES[:2]), 2, 0.0)
    # a failed trial's curve does not count toward min_trials nor the median
    assert not _stops(_study_with(CURVES[:2], failed=[[0.9, 0.9, 0.9]]), 2, 0.0)
    assert _stops(_study_with(CURVES[:2]), 2, 0.0, min_trials=2)
    assert not _stops(_study_with(CURVES), 2, 0.0, min_trials=4)


def test_median_stopper_counts_only_trials_that_reached_the_epoch():
    study = _study_with([*CURVES, [0.95], [0.99, 0.99]])  # two stopped early
    assert not _stops(study, 3, 0.71)  # epoch-3 median over the three full curves is 0.7
    assert _stops(study, 3, 0.69)
    assert not _stops(_study_with([[0.9], [0.9], [0.9]]), 2, 0.0)  # none reached epoch 2


def test_median_stopper_disabled():
    assert not _stops(_study_with(CURVES), 3, 0.0, enabled=False)


# Workers that never end (run_worker called in-process with a fake trial runner).


class _Runaway(BaseException):
    """Raised by the fakes to break out of a worker that would run or wait forever."""


def _recipe(trials: int) -> Recipe:
    return derive(load_recipe(RECIPE), {"search.trials": trials})


def _result(*_: Any) -> TrialResult:
    point = {"tag": "final", "step": 1, "epoch": 1, "params": 35, "flops": 56,
             "val_metric": 0.5, "test_metric": 0.5, "path": "final"}
    return TrialResult([point], [0.5])


class _FakeTime:
    """time for netsize.search.study: sleep() advances a clock instead of waiting."""

    def __init__(self, limit: int):
        self.offset, self.sleeps, self.limit = 0.0, 0, limit

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.offset += seconds
        if self.sleeps > self.limit:
            raise _Runaway

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time() + self.offset

    def perf_counter(self) -> float:
        return time.perf_counter() + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_a_worker_whose_every_trial_fails_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(study_module, "time", _FakeTime(limit=1000))
    recipe = _recipe(trials=2)
    study = open_study(optuna.storages.InMemoryStorage(), "allfail", recipe.search)
    calls = 0

    def broken(*_: Any) -> TrialResult:
        nonlocal calls
        calls += 1
        if calls > 100:
            raise _Runaway
        raise RuntimeError("this trial always breaks")

    try:
        run_worker(study, recipe, "test", broken, tmp_path, heartbeat=False)
    except UserError:
        pass  # giving up with an error (exit 2) is an acceptable end
    except _Runaway:
        pytest.fail(f"run_worker ran {calls - 1} failing trials and goes on")
    assert _states(study).get(TrialState.COMPLETE, 0) == 0


def test_a_trial_left_running_in_a_journal_does_not_block_forever(tmp_path, monkeypatch):
    fake_time = _FakeTime(limit=1000)  # 1000 waits: over half an hour of simulated waiting
    monkeypatch.setattr(study_module, "time", fake_time)
    recipe = _recipe(trials=1)
    storage = make_storage(f"journal:{tmp_path / 'study.log'}", 1, 2)
    study = open_study(storage, "stale", recipe.search)
    study.ask()  # a worker killed with SIGKILL in the middle of this trial: RUNNING for ever
    try:
        run_worker(study, recipe, "test", _result, tmp_path / "trials", heartbeat=False)
    except UserError:
        return  # refusing with advice about the stale trial is an acceptable end
    except _Runaway:
        pytest.fail(f"run_worker waited {fake_time.sleeps - 1} times for a dead worker")
    assert _states(study).get(TrialState.COMPLETE, 0) == 1


def test_a_flops_objective_is_a_column_of_trials_csv_and_the_report(tmp_path):
    """With search.flops_objective each trial's third objective (the best checkpoint's forward
    FLOPs per example) is in trials.csv and the report's trials table; parameters are whole."""
    out = tmp_path / "study"
    result = _grow("--trials", "2", "--out", out, "--set", "search.flops_objective=true")
    assert result.exit_code == 0, result.output
    complete = [t for t in _load(out).get_trials() if t.state == TrialState.COMPLETE]
    rows = {int(r["trial"]): r for r in _read_csv(out / "trials.csv")}
    for t in complete:
        assert int(rows[t.number]["flops"]) == int(t.values[2]) > 0
        assert rows[t.number]["params"] == str(int(t.values[1]))
    assert "FLOPs/example" in (out / "report.md").read_text().split("## Trials")[1]
