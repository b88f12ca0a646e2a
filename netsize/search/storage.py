"""Optuna storages: SQLite in the run folder by default, PostgreSQL or SQLite URLs, journal files.

RDB storages get a heartbeat: a worker that stops beating (killed, machine gone) has its running
trial marked failed by the next worker that looks, and a copy of it queued again.
"""

from __future__ import annotations

import copy
import inspect
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.engine import make_url

from netsize.errors import UserError

try:  # Optuna >= 4.9 renamed RetryFailedTrialCallback (now a deprecated alias)
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _RetryCallback
except ImportError:  # pragma: no cover - Optuna 4.0 to 4.8
    from optuna.storages import RetryFailedTrialCallback as _RetryCallback

KINDS = "use sqlite:///PATH, postgresql://USER@HOST:PORT/DB or journal:PATH"


class RetryStaleTrial(_RetryCallback):  # type: ignore[misc, valid-type]
    """Queue a copy of a trial whose worker died (heartbeat stale), up to max_retry times.

    The copy does not inherit the dead trial's fail_reason: it has not failed (yet).
    `retried_trial_number(trial)` gives the number of the first trial of a retried series.
    """

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial = copy.copy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != "fail_reason"}
        super().__call__(study, trial)


def default_url(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def has_heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    """RDB storages beat; journal files do not (a dead worker's trial is not failed for us)."""
    return isinstance(storage, RDBStorage)


def make_storage(url: str, heartbeat_seconds: int, max_retries: int) -> optuna.storages.BaseStorage:
    """`postgresql://...`, `sqlite:///...`, or `journal:PATH` (an Optuna journal file)."""
    if url.startswith("journal:"):
        return _journal(url)
    if _in_memory(url):
        raise UserError(f"--storage {url}: a study needs a storage that outlives the process; "
                        f"{KINDS}.")
    if not url.startswith(("sqlite:///", "postgresql:", "postgresql+", "mysql:", "mysql+")):
        raise UserError(f"--storage {url}: {KINDS}.")
    if url.startswith("sqlite:///"):
        _check_sqlite(url)
    shown = _shown(url)
    if url.startswith("postgresql://"):  # SQLAlchemy 2.1 maps a bare URL to psycopg 3
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    # Optuna 4.9 renamed failed_trial_callback to heartbeat_stale_trial_callback.
    params = inspect.signature(RDBStorage).parameters
    retry_key = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params
                 else "failed_trial_callback")
    with warnings.catch_warnings():  # the heartbeat and its retry callback are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry: dict[str, Any] = {retry_key: RetryStaleTrial(max_retry=max_retries)}
        for attempt in range(4):
            try:
                return RDBStorage(
                    url,
                    heartbeat_interval=heartbeat_seconds,
                    grace_period=3 * heartbeat_seconds,
                    engine_kwargs={"pool_pre_ping": True} if url.startswith("postgresql") else None,
                    **retry,
                )
            except sqlalchemy.exc.IntegrityError:
                # Workers starting together on a fresh database race to create the tables.
                if attempt == 3:
                    raise
                time.sleep(random.uniform(0.2, 1.0))
            except Exception as error:  # driver errors: unreachable server, bad URL
                raise _unreachable(shown, error) from None
    raise AssertionError("unreachable")


def _in_memory(url: str) -> bool:
    """`:memory:`, `sqlite://`, `sqlite:///` (no path) and SQLite's in-memory URI forms."""
    if url.strip() == ":memory:":
        return True
    if not url.startswith("sqlite:"):
        return False
    if not url.startswith("sqlite:///"):
        return url.rstrip("/") == "sqlite:"
    try:
        parsed = make_url(url)
    except Exception:  # malformed: SQLAlchemy says why when the storage is opened
        return False
    database = parsed.database or ""
    return (database in ("", ":memory:") or database.startswith("file::memory:")
            or parsed.query.get("mode") == "memory")


def _check_sqlite(url: str) -> None:
    """The SQLite file's folder exists (made if missing) and the file can be written there."""
    try:
        database = make_url(url).database or ""
    except Exception:
        return  # malformed: SQLAlchemy says why when the storage is opened
    if database.startswith("file:"):
        return  # an SQLite URI (uri=true): SQLite reads its options
    _check_writable(url, Path(database), "the SQLite file")


def _journal(url: str) -> JournalStorage:
    raw = url.removeprefix("journal:")
    if not raw.strip():
        raise UserError(f"--storage {url}: give the journal file's path, e.g. "
                        "journal:results/study.log.")
    path = Path(raw)
    _check_writable(url, path, "the journal file")
    if not _looks_like_a_journal(path):
        raise UserError(f"--storage {url}: {path} is not an Optuna journal file; give a new path "
                        "or a journal file that netsize or Optuna wrote.")
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except Exception as error:  # not a journal (JSON lines); say nothing about its contents
        raise UserError(f"--storage {url}: cannot use {path} as an Optuna journal file "
                        f"({type(error).__name__}); give a new path or a journal file that "
                        "netsize or Optuna wrote.") from None


def _looks_like_a_journal(path: Path) -> bool:
    """Missing, empty, or JSON lines (a journal's first byte is `{`): never append to others."""
    try:
        with open(path, "rb") as handle:
            first = handle.read(1)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return first in (b"", b"{")


def _check_writable(url: str, path: Path, what: str) -> None:
    example = ("sqlite:///" if "SQLite" in what else "journal:") + str(
        path / ("study.db" if "SQLite" in what else "study.log"))
    if path.is_dir():
        raise UserError(f"--storage {url}: {path} is a folder; give the path of {what}, e.g. "
                        f"{example}.")
    if path.exists() and not path.is_file():
        raise UserError(f"--storage {url}: {path} is not a regular file; give the path of "
                        f"{what}.")
    folder = path.parent
    in_the_way = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()),
                      None)
    if in_the_way is not None:
        raise UserError(f"--storage {url}: {in_the_way} is a file, not a folder; pick a path "
                        f"in a writable folder for {what}.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # permissions, read-only file system
        reason = error.strerror or type(error).__name__
        raise UserError(f"--storage {url}: cannot create the folder {folder} for {what} "
                        f"({reason}); pick a path in a writable folder.") from None
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists()
                                                    and not os.access(path, os.R_OK | os.W_OK)):
        unwritable = path if path.exists() and not os.access(path, os.W_OK) else folder
        raise UserError(f"--storage {url}: {unwritable} is not writable; pick a path in a "
                        f"writable folder for {what}.")


def _shown(url: str) -> str:
    """The URL for messages: a password in it is masked."""
    try:
        parsed = make_url(url)
    except Exception:
        return url
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def _unreachable(url: str, error: Exception) -> UserError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if url.startswith("sqlite:"):
        return UserError(f"--storage {url}: cannot open the SQLite file ({first[:200]}); give "
                         "the path of a writable SQLite file, or a new path.")
    return UserError(f"--storage {url}: cannot open the study storage ({first[:200]}); check "
                     "the URL and that the database server is running.")
