"""Multi-objective studies over whole runs: one trial is one grow (or prune) run, and every
checkpoint of every trial is a point of the study's front.

Workers are processes running the same command against one storage. The study stops at exactly
`search.trials` completed trials: a trial that finds that many already complete or running
before it (by trial number) ends at once as surplus, and a worker waits while others finish.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from netsize.errors import UserError
from netsize.recipe import Recipe
from netsize.report import OBJECTIVES
from netsize.search.config import EarlyStoppingConfig, SearchConfig
from netsize.search.space import apply, suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

MAX_REASON = 200  # characters of a failed trial's fail_reason
KILLED, STALE = "killed", "stale"  # reasons of trials whose worker was stopped or died


@dataclass
class TrialResult:
    points: list[dict[str, Any]]  # every checkpoint: tag, params, flops, val/test metric, path
    curve: list[float] = field(default_factory=list)  # validation metric after each epoch
    early_stopped: bool = False


RunTrial = Callable[[Recipe, Path, Callable[[dict[str, Any]], bool]], TrialResult]


def objectives(cfg: SearchConfig) -> dict[str, str]:
    """The front's objectives (netsize.report.OBJECTIVES), and FLOPs when the recipe asks."""
    fewer = OBJECTIVES["params"]  # FLOPs, like parameters, are minimised
    return {**OBJECTIVES, **({"flops": fewer} if cfg.flops_objective else {})}


def objective_names(cfg: SearchConfig) -> list[str]:
    return list(objectives(cfg))


def _constraints(trial: FrozenTrial) -> list[float]:
    return list(trial.user_attrs.get("constraints", [0.0]))


def make_sampler(cfg: SearchConfig, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The recipe's sampler; `offset` shifts its seed so a resumed study samples anew."""
    seed = cfg.sampler_seed + offset
    constraints = _constraints if cfg.max_params is not None else None
    if cfg.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)


def open_study(storage: optuna.storages.BaseStorage, name: str, cfg: SearchConfig,
               worker_salt: int = 0) -> optuna.Study:
    """Create the study, or join it when it exists (resuming, or another worker).

    The sampler's seed is sampler_seed + the number of trials already stored (+ worker_salt,
    for workers sharing a storage), so resuming does not replay the first trials' values.
    """
    names = objective_names(cfg)
    up = OBJECTIVES["val_metric"]
    directions = [StudyDirection.MAXIMIZE if way == up else StudyDirection.MINIMIZE
                  for way in objectives(cfg).values()]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                sampler=make_sampler(cfg), load_if_exists=True)
    if list(study.directions) != directions:
        raise UserError(f"study {name} exists with other objectives; pick another --study name.")
    existing = len(study.get_trials(deepcopy=False))
    if existing or worker_salt:
        study.sampler = make_sampler(cfg, existing + worker_salt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)
    study.set_user_attr("sampler", {"name": cfg.sampler, "seed": cfg.sampler_seed})
    return study


def count(study: optuna.Study, *states: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


class MedianStopper:
    """Early stopping: stop after an epoch whose validation metric is below the median of the
    completed trials' metric at the same epoch."""

    def __init__(self, study: optuna.Study, cfg: EarlyStoppingConfig):
        self.study, self.cfg = study, cfg

    def __call__(self, record: dict[str, Any]) -> bool:
        epoch = int(record["epoch"])
        if not self.cfg.enabled or epoch < self.cfg.min_epochs:
            return False
        curves = [t.user_attrs.get("curve", []) for t in
                  self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        at_epoch = [c[epoch - 1] for c in curves if len(c) >= epoch]
        if len(at_epoch) < self.cfg.min_trials:
            return False
        return float(record["val_metric"]) < statistics.median(at_epoch)


def _objective(study: optuna.Study, base: Recipe, origin: str, run_trial: RunTrial,
               trials_root: Path) -> Callable[[optuna.Trial], tuple[float, ...]]:
    cfg = base.search

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        live = (TrialState.COMPLETE, TrialState.RUNNING)
        ahead = [t for t in study.get_trials(deepcopy=False, states=live)
                 if t.number < trial.number]
        if len(ahead) >= cfg.trials:  # another worker got there first
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned(f"{cfg.trials} trials already complete or running")
        try:
            values = suggest(trial, cfg.space)
            recipe = apply(base, values, f"{origin} (trial {trial.number})")
            result = run_trial(recipe, trials_root / f"{trial.number:04d}",
                               MedianStopper(study, cfg.early_stopping))
            return _record(trial, cfg, result)
        except optuna.TrialPruned:
            raise
        except Exception as error:  # recorded on the trial; the study goes on
            _note_failure(trial, fail_reason(error))
            raise
        except BaseException:  # Ctrl-C, SystemExit: the trial fails, the worker stops
            _note_failure(trial, KILLED)
            raise

    return objective


def _note_failure(trial: optuna.Trial, reason: str) -> None:
    try:
        trial.set_user_attr("fail_reason", reason)
    except Exception:  # the storage is gone too: the trial's own error is the one to raise
        pass


def fail_reason(error: BaseException) -> str:
    """One line for a failed trial: the exception's class and the first line of its message."""
    lines = str(error).strip().splitlines()
    reason = f"{type(error).__name__}: {lines[0].strip()}" if lines else type(error).__name__
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."


def _record(trial: optuna.Trial, cfg: SearchConfig, result: TrialResult) -> tuple[float, ...]:
    if not result.points:
        raise ValueError("the run saved no checkpoint to score")
    if any(not math.isfinite(float(p["val_metric"])) for p in result.points):
        raise ValueError("the validation metric is not a finite number (the run diverged?)")
    best = max(result.points, key=lambda p: (p["val_metric"], -p["params"]))
    trial.set_user_attr("points", result.points)
    trial.set_user_attr("curve", result.curve)
    trial.set_user_attr("early_stopped", result.early_stopped)
    trial.set_user_attr("best_checkpoint", best["path"])
    if cfg.max_params is not None:
        trial.set_user_attr("constraints", [float(best["params"] - cfg.max_params)])
    values = [float(best["val_metric"]), float(best["params"])]
    if cfg.flops_objective:
        values.append(float(best["flops"]))
    return tuple(values)


def run_worker(study: optuna.Study, base: Recipe, origin: str, run_trial: RunTrial,
               trials_root: Path, heartbeat: bool,
               on_trial: Callable[[], None] | None = None) -> None:
    """Run trials until the study holds search.trials completed ones.

    heartbeat: the storage beats (RDB), so stale trials of dead workers can be failed here.
    Gives up (UserError) after max(3, trials) failures in a row, and, without a heartbeat,
    when others' running trials stay unfinished far longer than any trial took so far. The
    study holds every trial so far either way: its outputs can be written after a UserError.

    A failed trial's one-line reason is its user attr fail_reason; Optuna's own log of it (the
    traceback) is silenced while trials run.
    """
    cfg = base.search
    objective = _objective(study, base, origin, run_trial, trials_root)
    failures: list[FrozenTrial] = []
    waiting_since: float | None = None
    while True:
        if heartbeat:
            _fail_stale_trials(study)  # a dead worker's trial -> failed, requeued
        done = count(study, TrialState.COMPLETE)
        if done >= cfg.trials:
            return
        busy = count(study, TrialState.RUNNING)
        if done + busy >= cfg.trials and count(study, TrialState.WAITING) == 0:
            waiting_since = waiting_since if waiting_since is not None else time.monotonic()
            if not heartbeat:
                _give_up_on_stale(study, time.monotonic() - waiting_since)
            time.sleep(min(2.0, float(cfg.heartbeat_seconds)))  # others are finishing
            continue
        waiting_since = None
        with _quiet_optuna():
            study.optimize(objective, n_trials=1, catch=(Exception,),
                           callbacks=[lambda _, t: _count_failure(failures, t)])
        if len(failures) >= max(3, cfg.trials):
            reason = failures[-1].user_attrs.get("fail_reason") or STALE
            raise UserError(f"{len(failures)} trials failed in a row (the last: {reason}); fix "
                            "the recipe or search.space and run the command again.")
        if on_trial is not None:
            on_trial()


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs a failed trial with its whole traceback: only errors get through here."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.ERROR))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _fail_stale_trials(study: optuna.Study) -> None:
    """Fail (and requeue) the running trials whose worker stopped beating, with reason stale."""
    storage = study._storage
    try:  # private in Optuna: best effort, trial_rows reports a reasonless failure as stale
        stale = storage._get_stale_trial_ids(study._study_id)  # type: ignore[attr-defined]
    except Exception:
        stale = []
    for trial_id in stale:
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", STALE)
        except Exception:  # another worker failed it first, or its heartbeat came back
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _count_failure(failures: list[FrozenTrial], trial: FrozenTrial) -> None:
    if trial.state == TrialState.FAIL:
        failures.append(trial)
    elif trial.state == TrialState.COMPLETE:
        failures.clear()


def _give_up_on_stale(study: optuna.Study, waited: float) -> None:
    """Without a heartbeat a dead worker's trial stays RUNNING for ever: stop waiting once it
    ran three times longer than the longest completed trial (and at least 3 minutes)."""
    durations = [t.duration.total_seconds() for t in
                 study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.duration]
    if waited <= 3 * max([60.0, *durations]):
        return
    running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    raise UserError(f"trials {running} of study {study.study_name} have run for {waited:.0f} s "
                    "and this storage has no heartbeat; if their worker died, mark them failed "
                    "(optuna's study.tell(n, state=FAIL)) or use an SQLite or PostgreSQL storage.")


def _reason(trial: FrozenTrial) -> str:
    """A failed trial's one-line reason; one failed with none recorded lost its worker."""
    if trial.state != TrialState.FAIL:
        return ""
    return str(trial.user_attrs.get("fail_reason") or STALE)


def all_points(study: optuna.Study) -> list[dict[str, Any]]:
    """Every checkpoint of every completed trial, tagged with its trial number."""
    rows = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        for point in trial.user_attrs.get("points", []):
            rows.append({"trial": trial.number, **point, **{f"param:{k}": v
                                                            for k, v in trial.params.items()}})
    return rows


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": t.state.name.lower(),
                     "val_metric": t.values[0] if t.values else None,
                     "params": int(t.values[1]) if t.values else None,
                     # the best checkpoint's forward FLOPs per example (search.flops_objective)
                     "flops": int(t.values[2]) if t.values and len(t.values) > 2 else None,
                     "early_stopped": t.user_attrs.get("early_stopped", False),
                     "fail_reason": _reason(t),
                     **{f"param:{k}": v for k, v in t.params.items()}})
    return rows
