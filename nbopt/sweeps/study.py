"""Where a sweep's study lives, and how a sweep resumes.

The default storage is an Optuna journal file in the working folder, which several processes of
one machine share safely (file locks); any Optuna storage URL works too, PostgreSQL for many
machines. A study remembers its search space, so a changed space is refused rather than mixed in.
A trial left RUNNING by a process that died (kernel restart, kill) is marked failed and its
parameters are queued again, with its run folder, so the trial resumes from its last checkpoint and
re-running the same cell (or any live worker) completes exactly the missing trials.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import time

import optuna
from optuna.trial import TrialState

from nbopt.errors import RecipeError

DEFAULT_STORAGE_FILE = "nbopt-sweeps.journal"
STALE_AFTER_S = 600  # a trial whose worker has not reported for this long counts as dead
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def default_study_name(recipe: dict, search: dict, sampler: str, pruner: str) -> str:
    """Same cell, same study: a name from the sampler, the pruner and a fingerprint of the recipe and its
    space. Another sampler or pruner starts its own study, as their trials would not mix honestly."""
    text = json.dumps({"recipe": recipe, "search": search}, sort_keys=True, default=str)
    return f"sweep-{sampler}-{pruner}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def resolve_storage_url(url: str | None) -> str | None:
    """`$NAME` reads the URL from an environment variable, which keeps passwords out of notebooks."""
    url = url or os.environ.get("NBOPT_STORAGE")
    if url and url.startswith("$"):
        value = os.environ.get(url[1:])
        if not value:
            raise RecipeError(f"--storage {url}: the environment variable {url[1:]} is not set")
        return value
    return url


def masked(url: str | None) -> str:
    """The storage URL with any password replaced by ***, for every message and display."""
    if not url:
        return DEFAULT_STORAGE_FILE
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(url: str | None):
    """The journal file in the working folder by default, else the database at `url`."""
    if not url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        return JournalStorage(JournalFileBackend(DEFAULT_STORAGE_FILE))
    if url.startswith("postgresql"):
        _require("psycopg2", "psycopg2-binary", "a PostgreSQL storage")
    try:
        return _rdb_storage(url)
    except Exception as exc:  # connection refused, bad URL, missing database: say where, never the password
        raise RecipeError(f"cannot open the sweep storage {masked(url)}: {str(exc).splitlines()[0]}"
                          .replace(url, masked(url))) from None


def _rdb_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Open a database storage, creating Optuna's tables if they are missing.

    Workers that start together on an empty database all create the tables at once; all but one fail
    with a duplicate table or key. That only means another worker made them, so wait a moment and open
    again. Any other error (refused connection, wrong password) is final.
    """
    from sqlalchemy.exc import IntegrityError, ProgrammingError
    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except (IntegrityError, ProgrammingError):
            if attempt == attempts:
                raise
            time.sleep(0.5 + random.random())


def _require(module: str, package: str, purpose: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise RecipeError(f"{purpose} needs the {module} driver: pip install {package}") from None


def open_study(storage, name: str, direction: str, sampler, pruner, space_text: str, allow_space_change: bool
               ) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists; returns (study, created_here)."""
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                    pruner=pruner)
        study.set_user_attr("nbopt_space", space_text)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    stored = study.user_attrs.get("nbopt_space")
    if stored is not None and stored != space_text and not allow_space_change:
        raise RecipeError(f"study '{name}' was created with another search space ({_brief(stored)}); "
                          "use a new --study name, or --allow-space-change to add to it anyway")
    if study.direction.name.lower() != direction:
        raise RecipeError(f"study '{name}' {study.direction.name.lower()}s its metric, not {direction}s it; "
                          "use a new --study name")
    return study, False


def _brief(space_text: str) -> str:
    try:
        return ", ".join(f"{k}: {v}" for k, v in json.loads(space_text).items())
    except ValueError:
        return space_text


def enqueue_grid(study: optuna.Study, points: list[dict], created_here: bool, wait_s: float = 60.0) -> None:
    """Queue every grid point once. Only the worker that created the study queues them (no duplicates
    when several start together); the others wait until the queue is complete."""
    if created_here:
        for point in points:
            study.enqueue_trial(point)
        study.set_user_attr("nbopt_grid_size", len(points))
        return
    deadline = time.monotonic() + wait_s
    while study.user_attrs.get("nbopt_grid_size") is None:
        if time.monotonic() > deadline:
            raise RecipeError(f"study '{study.study_name}' exists but its grid was never queued (its first "
                              "worker stopped early); start again with a new --study name")
        time.sleep(0.5)


def worker_identity() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def recover_dead_trials(study: optuna.Study) -> int:
    """Fail RUNNING trials whose worker is gone and queue their parameters again; returns how many."""
    recovered = 0
    here = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        beat = attrs.get("heartbeat", trial.datetime_start.timestamp() if trial.datetime_start else time.time())
        # A worker writes host, pid and heartbeat one by one: without a pid yet, go by staleness only.
        dead_here = attrs.get("host") == here and "pid" in attrs and not _alive(attrs.get("pid"))
        if dead_here or time.time() - beat > STALE_AFTER_S:
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (RuntimeError, ValueError):  # another worker recovered it first
                continue
            resume = {"resume_run": attrs["run_folder"]} if "run_folder" in attrs else None
            study.enqueue_trial(trial.system_attrs.get("fixed_params", trial.params), user_attrs=resume)
            recovered += 1
    return recovered


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_queued_trial(study: optuna.Study) -> optuna.Trial | None:
    """Take one queued trial, atomically: another worker that takes it first makes this one move on.

    This is what ``study.ask()`` does first, but ask() falls back to sampling a new trial when the
    queue is empty, which in a grid shared by several workers would repeat a grid point.
    """
    storage = study._storage
    for trial in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, trial._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {"finished": sum(t.state in FINISHED for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
            "waiting": sum(t.state == TrialState.WAITING for t in trials)}
