"""Optuna storages: SQLite in the run folder by default, PostgreSQL or SQLite URLs, journal files.

RDB storages get a heartbeat: a worker that stops beating (killed, machine gone) has its running
trial marked failed by the next worker that looks, and a copy of it queued again.
"""

from __future__ import annotations

import inspect
import random
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import JournalStorage, RDBStorage, RetryFailedTrialCallback
from optuna.storages.journal import JournalFileBackend

from netsize.errors import UserError


def default_url(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def has_heartbeat(storage: optuna.storages.BaseStorage) -> bool:
    """RDB storages beat; journal files do not (a dead worker's trial is not failed for us)."""
    return isinstance(storage, RDBStorage)


def make_storage(url: str, heartbeat_seconds: int, max_retries: int) -> optuna.storages.BaseStorage:
    """`postgresql://...`, `sqlite:///...`, or `journal:PATH` (an Optuna journal file)."""
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if not url.startswith(("sqlite:", "postgresql:", "postgresql+", "mysql:", "mysql+")):
        raise UserError(f"--storage {url}: use sqlite:///PATH, postgresql://USER@HOST:PORT/DB or "
                        "journal:PATH.")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("postgresql://"):  # SQLAlchemy 2.1 maps a bare URL to psycopg 3
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    # Optuna 4.9 renamed failed_trial_callback to heartbeat_stale_trial_callback.
    params = inspect.signature(RDBStorage).parameters
    retry_key = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params
                 else "failed_trial_callback")
    retry: dict[str, Any] = {retry_key: RetryFailedTrialCallback(max_retry=max_retries)}
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
            raise _unreachable(url, error) from None
    raise AssertionError("unreachable")


def _unreachable(url: str, error: Exception) -> UserError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UserError(f"--storage {url}: cannot open the study storage ({first}); check the "
                     "URL and that the database server is running.")
