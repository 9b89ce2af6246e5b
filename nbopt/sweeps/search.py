"""``sweep``: a recipe plus a `search:` space → an Optuna study → a ``Sweep``."""
from __future__ import annotations

import copy
import html
import itertools
import json
import multiprocessing
import os

import optuna
import pandas as pd

from nbopt import metrics
from nbopt._perf import one_thread_after_fork
from nbopt.callbacks.interrupt import InterruptGuard
from nbopt.environment import in_notebook, notebook_namespace
from nbopt.display.plots import register_figure_formatter
from nbopt.errors import RecipeError
from nbopt.store import RunGroup
from nbopt.sweeps.board import SweepBoard, trials_table
from nbopt.sweeps.plots import draw_sweep
from nbopt.sweeps import PRUNERS, SAMPLERS
from nbopt.sweeps.samplers import make_pruner, make_sampler
from nbopt.sweeps.space import parse_space
from nbopt.sweeps.study import (FINISHED, default_study_name, enqueue_grid, masked, open_storage, open_study,
                               recover_dead_trials, resolve_storage_url)
from nbopt.sweeps.validate import check_space
from nbopt.sweeps.worker import run_trials
from nbopt.techniques.scores import not_reported_hint
from nbopt.yamltext import load_yaml


def sweep(recipe: str | dict, namespace: dict | None = None, *, trials: int | None = None, sampler: str = "tpe",
          pruner: str = "median", metric: str | None = None, direction: str | None = None,
          storage: str | None = None, study: str | None = None, jobs: int = 1, timeout: float | None = None,
          allow_space_change: bool = False, live: bool = True, stop: InterruptGuard | None = None) -> "Sweep":
    """Run (or resume) a sweep until its study holds `trials` finished trials; returns a Sweep."""
    namespace = notebook_namespace() if namespace is None else namespace
    if isinstance(recipe, str):
        raw, lines = load_yaml(recipe)
    else:
        raw, lines = copy.deepcopy(recipe), {}
    search = raw.pop("search", None)
    params = parse_space(search, lines)
    if sampler not in SAMPLERS:
        raise RecipeError(f"--sampler can be {', '.join(SAMPLERS)}, got {sampler}")
    if pruner not in PRUNERS:
        raise RecipeError(f"--pruner can be {', '.join(PRUNERS)}, got {pruner}")
    if jobs < 1:
        raise RecipeError(f"--jobs must be at least 1, got {jobs}")
    plan = check_space(raw, params, lines, namespace)  # every value of the space trains; model and data resolve
    metric = metric or plan.metric_key
    if metric not in plan.reported:
        raise RecipeError(f"--metric can be {', '.join(plan.reported)}, got {metric}"
                          + not_reported_hint(metric, plan.reported))
    if direction not in (None, "maximize", "minimize"):
        raise RecipeError(f"--direction can be maximize or minimize, got {direction}")
    direction = metrics.direction(metric, direction)
    grid_points = None
    if sampler == "grid":
        labels = [[p.stored(v) for v in p.grid()] for p in params]
        grid_points = [dict(zip([p.key for p in params], combo)) for combo in itertools.product(*labels)]
        trials = trials or len(grid_points)
    trials = trials or 20
    url = resolve_storage_url(storage)
    store = open_storage(url)
    name = study or default_study_name(raw, search, sampler, pruner)
    space_text = json.dumps({p.key: p.describe() for p in params})
    seed, epochs = plan.recipe.seed, plan.recipe.epochs
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna_study, created = open_study(store, name, direction, make_sampler(sampler, seed),
                                       make_pruner(pruner, epochs), space_text, allow_space_change)
    recover_dead_trials(optuna_study)
    if grid_points is not None:
        enqueue_grid(optuna_study, grid_points, created)
    guard = stop or InterruptGuard()
    board = SweepBoard(optuna_study, trials, metric, direction == "maximize", live and in_notebook()) if live else None
    work = dict(base=raw, params=params, trials=trials, metric=metric, namespace=namespace, grid=sampler == "grid",
                timeout=timeout)
    with RunGroup.shared("sweep", name, metric=metric, direction=direction).running(lambda: guard.requested):
        if jobs == 1:
            run_trials(optuna_study, guard=guard, board=board, **work)
        else:
            _run_workers(url, name, sampler, pruner, epochs, seed, jobs, work, board, guard)
    result = Sweep(optuna_study, metric, masked(url), namespace, interrupted=guard.requested)
    if board is not None:
        board.close(repr(result), result._repr_html_())
    return result


def _worker_main(url, name, sampler, pruner, epochs, seed, work):
    """One worker process. It opens the storage itself: a storage object inherited through fork would
    share the parent's identity (a journal's worker id, a database's connections), and two workers with
    one identity both believe they own the same queued trial."""
    one_thread_after_fork()
    study = optuna.load_study(study_name=name, storage=open_storage(url), sampler=make_sampler(sampler, seed),
                              pruner=make_pruner(pruner, epochs))
    run_trials(study, guard=InterruptGuard(), board=None, **work)


def _run_workers(url, name, sampler, pruner, epochs, seed, jobs, work, board, guard) -> None:
    """`jobs` forked worker processes (they inherit the notebook's objects); the board polls the study."""
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker_main, args=(url, name, sampler, pruner, epochs, seed, work),
                               daemon=True) for _ in range(jobs)]
    for w in workers:
        w.start()
    try:
        while any(w.is_alive() for w in workers):
            for w in workers:
                w.join(timeout=1.0 / jobs)
            if board is not None:
                board.poll()
    except KeyboardInterrupt:
        guard.request_stop()
        for w in workers:
            if w.is_alive():
                os.kill(w.pid, 2)  # SIGINT: each worker stops its trial cleanly and records it
        for w in workers:
            w.join(timeout=30)
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()


class Sweep:
    """A finished (or interrupted) sweep: `.study`, `.trials`, `.best` (a Run), `.plot()`."""

    def __init__(self, study: optuna.Study, metric: str, storage_label: str, namespace: dict | None,
                 interrupted: bool = False):
        self.study = study
        self.metric = metric
        self.storage = storage_label  # password masked
        self.interrupted = interrupted
        self._namespace = namespace
        self._best = None

    @property
    def trials(self) -> pd.DataFrame:
        return trials_table(self.study)

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial | None:
        try:
            return self.study.best_trial
        except ValueError:
            return None

    @property
    def best(self):
        """The best trial's Run, with its saved weights (rebuilt from its folder if another process ran it)."""
        if self._best is None and self.best_trial is not None:
            from nbopt.run import load_run, session_run
            attrs = self.best_trial.user_attrs
            made_here = session_run(attrs.get("run"))
            if made_here is not None and str(made_here.folder.resolve()) == attrs.get("run_folder"):
                self._best = made_here
            else:  # made by another process, or an earlier run of the same name was replaced
                self._best = load_run(attrs.get("run_folder") or attrs.get("run"), self._namespace)
        return self._best

    def plot(self):
        register_figure_formatter()
        return draw_sweep(self.study, self.metric)

    def _counts(self) -> str:
        states = pd.Series([t.state.name.lower() for t in self.study.get_trials(deepcopy=False)])
        return ", ".join(f"{n} {s}" for s, n in states.value_counts().items())

    def _summary(self) -> list[tuple[str, str]]:
        best = self.best_trial
        rows = [("study", f"{self.study.study_name} in {self.storage}"), ("trials", self._counts())]
        if best is not None:
            rows += [("best trial", f"#{best.number}: {self.metric} {best.value:.4g}"),
                     ("best parameters", ", ".join(f"{k}={v}" for k, v in best.params.items())),
                     ("best run", str(best.user_attrs.get("run")))]
        if self.interrupted:
            rows.append(("note", "interrupted: run the same cell again to finish the missing trials"))
        return rows

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in self._summary())
        return f"<div><b>nbopt sweep</b><table>{rows}</table></div>"

    def __repr__(self) -> str:
        return "nbopt sweep\n" + "\n".join(f"  {k}: {v}" for k, v in self._summary())

