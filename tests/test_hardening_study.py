"""Study storages and failing trials: storages that cannot hold a study are refused with the path
named, a failed trial's reason is one line on the trial (never a traceback on the terminal), and
a worker whose every trial fails ends with a UserError after the study recorded them all."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.trial import TrialState
from test_search import _recipe, _result

import netsize.search.storage as storage_module
from netsize.errors import UserError
from netsize.search import TrialResult, make_storage, open_study, run_worker, trial_rows
from netsize.search.study import MAX_REASON, fail_reason

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "tiny" / "search_iris.yaml"


def _refused(url: str, *must: str) -> str:
    with pytest.raises(UserError) as info:
        make_storage(url, 1, 2)
    message = str(info.value)
    assert "\n" not in message
    for part in must:
        assert part in message, (part, message)
    return message


# -------------------------------------------------------------------------------------- storages
@pytest.mark.parametrize("url", ["sqlite:///", "sqlite:///:memory:", ":memory:", "sqlite://",
                                 "sqlite:///file::memory:?cache=shared&uri=true"])
def test_in_memory_storage_is_refused(url: str) -> None:
    _refused(url, "outlives the process", "sqlite:///PATH")


def test_journal_at_a_folder(tmp_path: Path) -> None:
    _refused(f"journal:{tmp_path}", str(tmp_path), "is a folder", "journal:")


def test_journal_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    _refused(f"journal:{tmp_path / 'file' / 'sub' / 'j.log'}", str(tmp_path / "file"),
             "is a file, not a folder")


def test_journal_in_an_unwritable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    real = os.access
    monkeypatch.setattr(storage_module.os, "access",
                        lambda p, mode: False if Path(p) == folder else real(p, mode))
    _refused(f"journal:{folder / 'j.log'}", str(folder), "not writable")


def test_journal_that_is_another_file_is_not_appended_to(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("secret: 1234\n")
    message = _refused(f"journal:{other}", str(other), "not an Optuna journal file")
    assert "secret" not in message.replace(str(tmp_path), "")
    assert other.read_text() == "secret: 1234\n"


def test_journal_empty_path() -> None:
    _refused("journal:", "journal file's path")


def test_journal_in_a_new_folder_works(tmp_path: Path) -> None:
    path = tmp_path / "new" / "j.log"
    storage = make_storage(f"journal:{path}", 1, 2)
    optuna.create_study(storage=storage, study_name="s")
    assert path.is_file()


def test_sqlite_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    _refused(f"sqlite:///{tmp_path / 'file' / 'study.db'}", str(tmp_path / "file"),
             "is a file, not a folder")


def test_sqlite_at_a_folder(tmp_path: Path) -> None:
    _refused(f"sqlite:///{tmp_path}", str(tmp_path), "is a folder")


def test_sqlite_in_a_read_only_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    real = os.access
    monkeypatch.setattr(storage_module.os, "access",
                        lambda p, mode: False if Path(p) == folder else real(p, mode))
    _refused(f"sqlite:///{folder / 'study.db'}", str(folder), "not writable")
    assert not (folder / "study.db").exists()


def test_sqlite_read_only_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "study.db"
    make_storage(f"sqlite:///{db}", 1, 2)
    real = os.access
    monkeypatch.setattr(storage_module.os, "access",
                        lambda p, mode: False if Path(p) == db else real(p, mode))
    _refused(f"sqlite:///{db}", str(db), "not writable")


def test_sqlite_folder_that_cannot_be_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def deny(*_: Any, **__: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", deny)
    _refused(f"sqlite:///{tmp_path / 'missing' / 'study.db'}", str(tmp_path / "missing"),
             "Permission denied")


def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("secret: 1234\n" * 100)
    message = _refused(f"sqlite:///{other}", str(other), "SQLite file")
    assert "secret" not in message.replace(str(tmp_path), "")


def test_sqlite_in_a_missing_folder_is_made(tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "study.db"
    assert isinstance(make_storage(f"sqlite:///{db}", 1, 2), RDBStorage)
    assert db.is_file()


def test_password_is_masked(tmp_path: Path) -> None:
    message = _refused("postgresql://user:hunter2@127.0.0.1:1/db", "***")
    assert "hunter2" not in message


def test_storage_makes_no_deprecation_or_experimental_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}", 1, 2)
    assert not caught, [str(w.message) for w in caught]
    callback = storage.heartbeat_stale_trial_callback
    assert callback is not None
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback)


# ---------------------------------------------------------------------------------- fail reasons
def test_fail_reason_is_one_short_line() -> None:
    assert fail_reason(RuntimeError("boom\n  File x, line 3\nmore")) == "RuntimeError: boom"
    assert fail_reason(ValueError()) == "ValueError"
    assert fail_reason(ValueError("   \n ")) == "ValueError"
    long = fail_reason(RuntimeError("x" * 1000))
    assert len(long) == MAX_REASON and long.startswith("RuntimeError: xxx") and "\n" not in long


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_every_trial_failing_ends_quietly_with_reasons_recorded(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    recipe = _recipe(trials=2)
    study = open_study(optuna.storages.InMemoryStorage(), "allfail", recipe.search)
    handler = _Records()
    logging.getLogger("optuna").addHandler(handler)

    def broken(*_: Any) -> TrialResult:
        raise RuntimeError("this trial breaks\nsecond line of the message")

    try:
        with pytest.raises(UserError) as info:
            run_worker(study, recipe, "test", broken, tmp_path, heartbeat=False)
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    message = str(info.value)
    assert "\n" not in message and "RuntimeError: this trial breaks" in message
    assert type(info.value) is UserError  # nothing special: the caller writes its outputs
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "second line" not in out + err
    assert not [r for r in handler.records if r.levelno >= logging.WARNING]
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING  # restored
    # The study holds every failed trial, with its reason, for trials.csv and report.md.
    rows = trial_rows(study)
    assert len(rows) == 3 and {r["state"] for r in rows} == {"fail"}
    assert {r["fail_reason"] for r in rows} == {"RuntimeError: this trial breaks"}


def test_a_diverged_trial_fails_with_a_reason(tmp_path: Path) -> None:
    recipe = _recipe(trials=1)
    study = open_study(optuna.storages.InMemoryStorage(), "nan", recipe.search)
    calls = 0

    def sometimes_nan(*args: Any) -> TrialResult:
        nonlocal calls
        calls += 1
        result = _result(*args)
        if calls == 1:
            result.points[0]["val_metric"] = float("nan")
        return result

    run_worker(study, recipe, "test", sometimes_nan, tmp_path, heartbeat=False)
    first, second = study.get_trials()
    assert first.state == TrialState.FAIL and "not a finite number" in first.user_attrs[
        "fail_reason"]
    assert second.state == TrialState.COMPLETE
    assert [r["fail_reason"] for r in trial_rows(study)] == [first.user_attrs["fail_reason"], ""]


def test_an_interrupted_trial_is_killed(tmp_path: Path) -> None:
    recipe = _recipe(trials=1)
    study = open_study(optuna.storages.InMemoryStorage(), "killed", recipe.search)

    def interrupted(*_: Any) -> TrialResult:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_worker(study, recipe, "test", interrupted, tmp_path, heartbeat=False)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == "killed"
    assert trial_rows(study)[0]["fail_reason"] == "killed"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_dead_workers_trial_is_stale_and_its_retry_starts_clean(tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    storage = make_storage(f"sqlite:///{db}", 1, 2)
    recipe = _recipe(trials=1)
    study = open_study(storage, "stale", recipe.search)
    dead = study.ask()  # its worker was killed: it beat once, long ago
    study._storage.record_heartbeat(dead._trial_id)
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = "
                                     "'2000-01-01 00:00:00.000000'"))
    engine.dispose()
    run_worker(study, recipe, "test", _result, tmp_path / "trials", heartbeat=True)
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"] == "stale"
    retry = trials[1]
    assert RetryFailedTrialCallback.retried_trial_number(retry) == dead.number
    assert retry.state == TrialState.COMPLETE and "fail_reason" not in retry.user_attrs
    assert [r["fail_reason"] for r in trial_rows(study)] == ["stale", ""]


def test_a_failed_trial_without_a_reason_reads_stale() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    assert trial_rows(study)[0]["fail_reason"] == "stale"
