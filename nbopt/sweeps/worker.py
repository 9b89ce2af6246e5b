"""Running trials: a trial is one nbopt run of the recipe with the trial's parameters.

The same loop serves a notebook cell, each of `--jobs` worker processes, and `nbopt sweep` on other
machines: take a trial (a queued grid point, or a new sample), train, report each epoch's metric
so the pruner can stop bad trials early, and record the result in the study.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from nbopt.callbacks.interrupt import InterruptGuard
from nbopt.callbacks.recorder import Listener, unheard
from nbopt.errors import RecipeError
from nbopt.loggers import Tracking
from nbopt.sweeps.space import Param, apply
from nbopt.sweeps.study import claim_queued_trial, counts, recover_dead_trials, worker_identity
from nbopt.store import RunGroup

_log = logging.getLogger(__name__)

MAX_FAILURES_IN_A_ROW = 5


class SweepFailed(RuntimeError):
    """Trial after trial fails (a diverging setting, a broken model): more of them would only loop."""


class _TrialReporter(Listener):
    """Reports each epoch's metric to Optuna; asks the Trainer to stop when the pruner says so, or when
    the trial was finished elsewhere (then `finished_elsewhere` is set and nothing more is recorded)."""

    def __init__(self, trial: optuna.Trial, metric: str, epochs: int, board=None):
        self.trial, self.metric, self.epochs, self.board = trial, metric, epochs, board
        self.pruned = self.finished_elsewhere = False
        self.reported: set[int] = set()

    def on_start(self, folder) -> None:
        """Name the trial's run folder at once: if this worker dies, the trial resumes from it."""
        try:
            self.trial.set_user_attr("run", folder.name)
            self.trial.set_user_attr("run_folder", str(folder.path.resolve()))
        except optuna.exceptions.UpdateFinishedTrialError:
            self.finished_elsewhere = True  # the first epoch's end stops the run

    def on_step(self, recorder, trainer) -> None:
        if self.board is not None:
            self.board.progress(self.trial.number, recorder, trainer, self.epochs)

    def on_epoch(self, recorder, trainer, row) -> None:
        try:
            for earlier in unheard(self.reported, recorder, row):
                self._report(earlier)
        except optuna.exceptions.UpdateFinishedTrialError:
            self.finished_elsewhere = True
        if self.pruned or self.finished_elsewhere:
            trainer.should_stop = True

    def _report(self, row) -> None:
        value = row.get(self.metric, math.nan)
        self.trial.set_user_attr("heartbeat", time.time())
        self.trial.set_user_attr("epoch", row["epoch"])
        if value is None or not math.isfinite(value):
            return
        self.trial.report(value, row["epoch"])
        if self.trial.should_prune():
            self.pruned = True


def run_trials(study: optuna.Study, base: dict, params: list[Param], *, trials: int, metric: str,
               namespace: dict | None, grid: bool, guard: InterruptGuard, board=None,
               timeout: float | None = None) -> None:
    """Run trials until the study holds `trials` finished ones (or the grid is done, or time is up).

    Another worker may finish a trial while this one still runs it: dead-trial recovery takes a worker
    that has been silent too long for dead. Writing to that trial raises UpdateFinishedTrialError; the
    trial is dropped, with a warning, and the loop goes on (a final tell that finds it finished is skipped).
    """
    deadline = time.monotonic() + timeout if timeout else None
    failures_in_a_row = 0
    while not guard.requested and (deadline is None or time.monotonic() < deadline):
        recover_dead_trials(study)  # a worker that died mid-sweep: its trial is queued again, here or elsewhere
        state = counts(study)
        if state["finished"] + state["running"] >= trials:
            return
        trial = claim_queued_trial(study) if grid else study.ask()
        if trial is None:  # the grid is done
            return
        try:
            error = _run_trial(study, trial, base, params, metric=metric, namespace=namespace, grid=grid,
                               guard=guard, board=board)
            failures_in_a_row = failures_in_a_row + 1 if error else 0
            if failures_in_a_row >= MAX_FAILURES_IN_A_ROW:  # failed trials never count: without this, a loop
                raise SweepFailed(f"{failures_in_a_row} trials in a row failed, the last with {error}; the sweep "
                                  "stopped: fix the recipe or its search space and run it again (the failed "
                                  "trials stay in the study, marked failed, and do not count)")
        except optuna.exceptions.UpdateFinishedTrialError:
            _log.warning("nbopt sweep: trial %d was finished by another worker (taken for dead?); this "
                         "worker's result for it is dropped and the sweep goes on", trial.number)
        if board is not None:
            board.finished(study)


def _run_trial(study: optuna.Study, trial: optuna.Trial, base: dict, params: list[Param], *, metric: str,
               namespace: dict | None, grid: bool, guard: InterruptGuard, board) -> str | None:
    """Train one trial and record how it ended; what went wrong when it failed, else None."""
    from nbopt.plan import check

    for key, value in worker_identity().items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("heartbeat", time.time())
    recipe = base
    for param in params:
        recipe = apply(recipe, param.key, param.suggest(trial))
    try:
        plan = check(recipe, namespace)
    except RecipeError as exc:  # a combination the space allowed but the data or model cannot take
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        return str(exc)
    reporter = _TrialReporter(trial, metric, plan.recipe.epochs, board)
    if board is not None:
        board.started(trial.number)
    try:
        run = _train_trial(plan, trial, study.study_name, reporter, guard)
    except Exception as exc:  # record the failure in the study so the sweep can go on and show it
        error = f"{type(exc).__name__}: {exc}"[:300]
        trial.set_user_attr("error", error)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        return error
    if reporter.finished_elsewhere:
        raise optuna.exceptions.UpdateFinishedTrialError(f"trial {trial.number} was finished elsewhere")
    trial.set_user_attr("epochs", run.metrics["epochs_run"])
    trial.set_user_attr("seconds", run.metrics["seconds"])
    value, state = run.metrics.get(metric), None
    if run.status == "interrupted":
        value, state = None, TrialState.FAIL  # not finished: re-running the cell retries it
    elif run.status == "failed":  # its folder could not be written (a full disk): the result is not safe
        trial.set_user_attr("error", run.note)
        value, state = None, TrialState.FAIL
    elif run.status == "diverged":  # a bad setting, not a broken sweep: pruned, so the sampler learns to avoid it
        trial.set_user_attr("diverged", True)
        trial.set_user_attr("error", run.note)
        value, state = None, TrialState.PRUNED
    elif reporter.pruned:
        value, state = None, TrialState.PRUNED
    elif value is None:  # a LightningModule of the user's that does not log it
        trial.set_user_attr("error", f"{metric} was never logged: log it in validation_step "
                                     f"(self.log('{metric}', ...)), or sweep --metric one it logs")
        value, state = None, TrialState.FAIL
    elif not math.isfinite(value):
        trial.set_user_attr("error", f"{metric} is {value}: the training diverged")
        value, state = None, TrialState.FAIL
    study.tell(trial, value, state=state, skip_if_finished=True)
    if run.status == "interrupted":  # queued again, to go on from its checkpoint when the sweep goes on
        study.enqueue_trial(trial.params, user_attrs={"resume_run": str(run.folder.resolve())})
    return trial.user_attrs.get("error") if state == TrialState.FAIL and run.status != "interrupted" else None


def _train_trial(plan, trial: optuna.Trial, study_name: str, reporter: _TrialReporter, guard: InterruptGuard):
    """A new run for the trial, or, for a trial queued again after its worker died, that worker's run
    resumed from its last checkpoint (when its folder is reachable from here and may resume)."""
    from nbopt.training import execute
    earlier = trial.user_attrs.get("resume_run")
    tracking = Tracking(experiment=study_name, tags={"study": study_name, "trial": trial.number})
    if earlier and (Path(earlier) / "run.json").exists():
        try:
            return execute(plan, resume=earlier, live=False, stop=guard, listeners=[reporter], tracking=tracking)
        except RecipeError as exc:  # refused before training: it finished after all, or its recipe differs
            _log.warning("nbopt sweep: trial %d starts afresh instead of resuming %s: %s", trial.number, earlier, exc)
    group = RunGroup.shared("sweep", study_name, metric=reporter.metric, direction=trial.study.direction.name.lower())
    return execute(plan, name=f"trial{trial.number}", group=group, live=False, stop=guard, listeners=[reporter],
                   tracking=tracking)
