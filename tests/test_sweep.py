"""`sweep` / `%%nbopt sweep` / `nbopt sweep`: real Optuna studies over tiny digits recipes.

Every study here is real and stored where a user's would be (the default journal file in the working
folder, which the autouse fixture makes a fresh temporary folder); trials train for real, 1–3
epochs of a small MLP on scikit-learn's digits (one trial is longer, to be killed mid-training).
Nothing here depends on timing: the tests wait for states of the study, not for seconds.
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from cli_command import nbopt_command
from conftest import run_folders
import yaml
from matplotlib.figure import Figure
from optuna.trial import TrialState
from torch import nn

from nbopt import RecipeError
from nbopt.sweeps import Sweep, sweep
from nbopt.sweeps.study import DEFAULT_STORAGE_FILE, masked

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
model: mlp(hidden=[32])
data: digits
epochs: 1
batch_size: 128
optimizer: adam(lr=1e-2)
"""


def recipe(search: str, epochs: int = 1, **changes: str) -> str:
    """BASE with `epochs` and other top-level lines replaced, then the `search:` block (YAML text)."""
    lines = dict(line.split(": ", 1) for line in BASE.splitlines())
    lines["epochs"] = str(epochs)
    lines.update(changes)
    return "".join(f"{k}: {v}\n" for k, v in lines.items()) + "search:\n" + search


def run_sweep(text, **options) -> Sweep:
    options.setdefault("live", False)
    return sweep(text, {}, **options)


def journal_study(name: str, path: Path | str = DEFAULT_STORAGE_FILE) -> optuna.Study:
    """The study as another process sees it: loaded afresh from the journal file."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def points(study: optuna.Study, state=TrialState.COMPLETE) -> list[tuple]:
    """The parameters of the trials in `state`, as sorted (key, value) tuples."""
    return [tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False, states=(state,))]


def grid_of(space: dict) -> set[tuple]:
    keys = list(space)
    return {tuple(sorted(zip(keys, combo))) for combo in itertools.product(*space.values())}


def nothing_written(tmp_path: Path, runs_dir: Path) -> bool:
    """No run folder and no study file: the error came before any trial (or storage) was touched."""
    return (not runs_dir.exists() or not any(runs_dir.iterdir())) and not (tmp_path / DEFAULT_STORAGE_FILE).exists()


def cli_env(runs: Path) -> dict:
    return dict(os.environ, NBOPT_RUNS_DIR=str(runs), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


# -- a wrong search space stops before any trial, with a message that says what to write ----------------------

SPACE_ERRORS = {
    "unknown key": (
        "  optimiser.lr: loguniform(1e-4, 1e-1)\n", {},
        "search.optimiser.lr (line 7): 'optimiser.lr' is not a recipe key — did you mean 'optimizer'?"),
    "misspelt distribution": (
        "  optimizer.lr: logunifrom(1e-4, 1e-1)\n", {},
        "search.optimizer.lr (line 7): expected loguniform(lo, hi), uniform(lo, hi), int(lo, hi) or a list of "
        "choices, got 'logunifrom(1e-4, 1e-1)'"),
    "distribution without its high bound": (
        "  optimizer.lr: loguniform(1e-4)\n", {},
        "search.optimizer.lr (line 7): write loguniform(low, high)"),
    "loguniform from zero": (
        "  optimizer.lr: loguniform(0, 1e-1)\n", {},
        "search.optimizer.lr (line 7): loguniform needs 0 < low < high"),
    "loguniform from below zero": (
        "  optimizer.lr: loguniform(-1e-3, 1e-1)\n", {},
        "search.optimizer.lr (line 7): loguniform needs 0 < low < high"),
    "uniform upside down": (
        "  dropout: uniform(0.5, 0.1)\n", {},
        "search.dropout (line 7): uniform needs low < high, got (0.5, 0.1)"),
    "an argument the optimizer does not have": (
        "  optimizer.lrr: loguniform(1e-4, 1e-1)\n", {},
        "search.optimizer.lrr (line 7): the bound 0.0001 makes an invalid recipe: optimizer (line 5): adam has no "
        "argument 'lrr' — did you mean 'lr'?"),
    "a choice that is no optimizer": (
        "  optimizer: [adam, adma]\n", {},
        "search.optimizer (line 7): the choice adma makes an invalid recipe: optimizer (line 5): unknown optimizer "
        "'adma' — did you mean 'adam'?"),
    "a choice out of the setting's range": (
        "  epochs: [1, 0]\n", {},
        "search.epochs (line 7): the choice 0 makes an invalid recipe: epochs (line 3): must be greater than or "
        "equal to 1, got 0"),
    "a choice of model the notebook does not have": (
        "  model: [mlp, nosuch]\n", {},
        "search.model (line 7): the choice nosuch makes an invalid recipe: model (line 1): 'nosuch' is neither a "
        "notebook variable nor a built-in model (cnn, mlp, resnet)"),
    "a grid over a continuous space": (
        "  optimizer.lr: loguniform(1e-4, 1e-1)\n", {"sampler": "grid"},
        "search.optimizer.lr (line 7): a grid needs a finite list of values, but optimizer.lr is "
        "loguniform(0.0001, 0.1); "
        "give a list of values, or int(lo, hi) / uniform(lo, hi, step=…)"),
    "empty choices": (
        "  batch_size: []\n", {},
        "search.batch_size (line 7): an empty list of choices"),
    "an argument of a component the recipe lacks": (
        "  scheduler.gamma: uniform(0.1, 0.9)\n", {},
        "search.scheduler.gamma (line 7): the search sets `scheduler.gamma`, but the recipe has no `scheduler:` to "
        "set it on; add one, e.g. `scheduler: cosine`"),
    # values of the wrong kind for the setting or the component argument they go to
    "int(...) for a model argument that takes a list": (
        "  model.hidden: int(16, 64)\n", {},
        "search.model.hidden (line 7): the bound 16 makes an invalid recipe: model (line 1): cannot build mlp from "
        "these arguments (\"'int' object is not iterable\"); write it like mlp(hidden=(128, 64), activation='relu'); "
        "model.hidden takes values like [32]: search a list of such values"),
    "choices of the wrong kind for a model argument": (
        "  model.hidden: [32, 64]\n", {},
        "search.model.hidden (line 7): the choice 32 makes an invalid recipe: model (line 1): cannot build mlp from "
        "these arguments (\"'int' object is not iterable\"); write it like mlp(hidden=(128, 64), activation='relu'); "
        "model.hidden takes values like [32]: make each choice such a value"),
    "optimizer arguments of the wrong kind": (
        "  optimizer.betas: uniform(0.8, 0.99)\n", {},
        "search.optimizer.betas (line 7): the bound 0.8 makes an invalid recipe: optimizer (line 5): adam(lr=0.01, "
        "betas=0.8) cannot be built: torch says \"'float' object is not subscriptable\"; give that argument a valid "
        "value (see torch.optim.Adam); optimizer.betas takes values like [0.9, 0.999]: search a list of such values"),
    "fractions for a whole-number setting": (
        "  batch_size: uniform(16, 64)\n", {},
        "search.batch_size (line 7): a fraction such as 40.5 makes an invalid recipe: batch_size (line 4): must be "
        "a valid integer, got a number with a fractional part, got 40.5; for whole numbers write int(16, 64)"),
    # malformed distributions
    "int(...) with names for bounds": (
        "  batch_size: int(lo, hi)\n", {},
        "search.batch_size (line 7): write int(low, high, step=…) with numbers, got int(lo, hi)"),
    "int(...) with a fraction": (
        "  batch_size: int(16.5, 64)\n", {},
        "search.batch_size (line 7): int takes whole numbers, got int(16.5, 64); for fractions write "
        "uniform(low, high)"),
    "a step of zero": (
        "  batch_size: int(16, 64, step=0)\n", {},
        "search.batch_size (line 7): int needs a step above 0, got step=0"),
    "int(...) without its high bound": (
        "  model.hidden: int(16)\n", {},
        "search.model.hidden (line 7): write int(low, high, step=…)"),
}


@pytest.mark.parametrize("case", list(SPACE_ERRORS))
def test_a_wrong_search_space_stops_before_any_trial(case, tmp_path, runs_dir):
    search, options, message = SPACE_ERRORS[case]
    with pytest.raises(RecipeError) as caught:
        run_sweep(recipe(search), trials=2, **options)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value), "a RecipeError is one line"
    assert nothing_written(tmp_path, runs_dir)


def test_a_recipe_without_search_says_how_to_write_one(tmp_path, runs_dir):
    with pytest.raises(RecipeError) as caught:
        run_sweep(BASE, trials=2)
    assert str(caught.value) == ("search: a sweep needs a `search:` mapping of recipe keys to spaces, e.g.\n"
                                 "search: {optimizer.lr: loguniform(1e-4, 1e-1), batch_size: [32, 64, 128]}")
    with pytest.raises(RecipeError, match=r"^search \(line 6\): a sweep needs a `search:` mapping"):
        run_sweep(BASE + "search: {}\n", trials=2)
    assert nothing_written(tmp_path, runs_dir)


def test_a_misspelt_model_argument_in_the_space_is_caught_before_training(tmp_path, runs_dir):
    with pytest.raises(RecipeError, match=r"mlp has no argument 'hiddn' — did you mean 'hidden'\?"):
        run_sweep(recipe("  model.hiddn: [[32], [64]]\n"), trials=2)
    assert nothing_written(tmp_path, runs_dir)


@pytest.mark.parametrize("option, value, message", [
    ("sampler", "bayes", "--sampler can be grid, random, tpe, gp, got bayes"),
    ("pruner", "asha", "--pruner can be median, hyperband, none, got asha"),
    ("metric", "val_f1", "--metric can be val_loss, val_acc, got val_f1 — add f1 to `metrics:` to compute it"),
    ("direction", "up", "--direction can be maximize or minimize, got up"),
    ("jobs", 0, "--jobs must be at least 1, got 0"),
])
def test_wrong_options_are_refused_before_any_trial(option, value, message, tmp_path, runs_dir):
    with pytest.raises(RecipeError) as caught:
        run_sweep(recipe("  optimizer.lr: [0.01, 0.003]\n"), trials=2, **{option: value})
    assert str(caught.value) == message
    assert nothing_written(tmp_path, runs_dir)


def test_the_storage_password_is_masked():
    assert masked("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert masked("postgresql+psycopg2://sweeper:p4ss-w0rd@10.0.0.7/optuna") == \
        "postgresql+psycopg2://sweeper:***@10.0.0.7/optuna"
    assert masked("mysql+pymysql://root:pw@localhost/optuna?charset=utf8") == \
        "mysql+pymysql://root:***@localhost/optuna?charset=utf8"
    assert masked("postgresql://u@h/db") == "postgresql://u@h/db"  # no password, nothing to hide
    assert masked("sqlite:///studies.db") == "sqlite:///studies.db"
    assert masked(None) == DEFAULT_STORAGE_FILE


def test_a_storage_variable_that_is_not_set_is_a_recipe_error(tmp_path, runs_dir, monkeypatch):
    monkeypatch.delenv("NBOPT_TEST_NO_SUCH_STORAGE", raising=False)
    with pytest.raises(RecipeError, match=r"^--storage \$NBOPT_TEST_NO_SUCH_STORAGE: the environment variable "
                                          r"NBOPT_TEST_NO_SUCH_STORAGE is not set$"):
        run_sweep(recipe("  optimizer.lr: [0.01, 0.003]\n"), trials=2, storage="$NBOPT_TEST_NO_SUCH_STORAGE")
    assert nothing_written(tmp_path, runs_dir)


# -- grid: every point exactly once -----------------------------------------------------------------------------

def test_a_grid_runs_every_point_exactly_once_lists_and_components_included(tmp_path, runs_dir):
    text = recipe("  model.hidden: [[32], [64, 32]]\n"
                  "  optimizer: [adam, 'sgd(lr=0.1, momentum=0.9)']\n"
                  "  batch_size: [64, 128]\n")
    result = run_sweep(text, sampler="grid", pruner="none")
    study = result.study
    expected = grid_of({"model.hidden": ["[32]", "[64, 32]"],
                        "optimizer": ["adam", "sgd(lr=0.1, momentum=0.9)"], "batch_size": [64, 128]})
    assert len(study.trials) == len(expected) == 8
    assert set(states(study)) == {"COMPLETE"}
    assert sorted(points(study)) == sorted(expected), "every grid point, each exactly once"
    # what the study says a trial was is what the trial trained
    for trial in study.trials:
        saved = yaml.safe_load((runs_dir / trial.user_attrs["run"] / "recipe.yaml").read_text())
        assert saved["model"] == f"mlp(hidden={trial.params['model.hidden']})"
        assert saved["optimizer"] == trial.params["optimizer"]  # a plain key replaces the whole value
        assert saved["batch_size"] == trial.params["batch_size"]
    # the stored study says the same as the returned one, to another process
    assert sorted(points(journal_study(study.study_name))) == sorted(expected)
    table = result.trials
    assert len(table) == 8 and set(table["state"]) == {"complete"}
    assert {"trial", "model.hidden", "optimizer", "batch_size", "value", "epochs", "state", "run"} <= set(table)


def test_grid_over_int_and_stepped_uniform(tmp_path, runs_dir):
    result = run_sweep(recipe("  batch_size: int(64, 192, step=64)\n  dropout: uniform(0.0, 0.5, step=0.25)\n"),
                       sampler="grid", pruner="none")
    assert len(result.study.trials) == 9 and set(states(result.study)) == {"COMPLETE"}
    got = {(t.params["batch_size"], round(t.params["dropout"], 6)) for t in result.study.trials}
    assert got == set(itertools.product([64, 128, 192], [0.0, 0.25, 0.5]))


def test_trials_limits_a_grid_too_and_the_rest_runs_later(tmp_path, runs_dir):
    text = recipe("  optimizer.lr: [0.03, 0.01, 0.003, 0.001]\n")
    first = run_sweep(text, trials=2, sampler="grid", pruner="none")
    assert states(journal_study(first.study.study_name)).count("COMPLETE") == 2, \
        "--trials is the number of finished trials the study should hold, for a grid as well"
    second = run_sweep(text, sampler="grid", pruner="none")  # the whole grid
    study = journal_study(second.study.study_name)
    assert states(study) == ["COMPLETE"] * 4
    assert sorted(points(study)) == sorted(grid_of({"optimizer.lr": [0.03, 0.01, 0.003, 0.001]}))


def test_running_a_finished_grid_again_runs_nothing(tmp_path, runs_dir):
    text = recipe("  optimizer.lr: [0.01, 0.003]\n")
    first = run_sweep(text, sampler="grid", pruner="none")
    folders = run_folders(runs_dir)
    again = run_sweep(text, sampler="grid", pruner="none")
    assert again.study.study_name == first.study.study_name
    assert len(again.study.trials) == 2 and set(states(again.study)) == {"COMPLETE"}
    assert run_folders(runs_dir) == folders, "no trial ran twice"


# -- --trials N: the number of finished trials the study holds --------------------------------------------------

def test_trials_is_the_number_of_finished_trials_the_study_should_hold(tmp_path, runs_dir):
    text = recipe("  optimizer.lr: loguniform(1e-3, 1e-1)\n  batch_size: [64, 128]\n")
    first = run_sweep(text, trials=3, sampler="random", pruner="none")
    assert states(first.study) == ["COMPLETE"] * 3
    second = run_sweep(text, trials=5, sampler="random", pruner="none")
    assert second.study.study_name == first.study.study_name, "the same cell resumes the same study"
    assert states(journal_study(first.study.study_name)) == ["COMPLETE"] * 5, "the second run added 2, not 5"
    assert len(run_folders(runs_dir)) == 5
    third = run_sweep(text, trials=4, sampler="random", pruner="none")
    assert len(third.study.trials) == 5, "a study that holds enough trials runs no more"


def test_another_sampler_or_pruner_starts_its_own_study(tmp_path, runs_dir):
    text = recipe("  optimizer.lr: loguniform(1e-3, 1e-1)\n")
    runs = [run_sweep(text, trials=2, sampler=sampler, pruner=pruner)
            for sampler, pruner in [("random", "none"), ("tpe", "none"), ("tpe", "median")]]
    names = [result.study.study_name for result in runs]
    assert [name.rsplit("-", 1)[0] for name in names] == ["sweep-random-none", "sweep-tpe-none", "sweep-tpe-median"]
    for name in names:
        assert states(journal_study(name)) == ["COMPLETE"] * 2, "each ran its own 2 trials, none mixed in"
    assert len(run_folders(runs_dir)) == 6
    again = run_sweep(text, trials=2, sampler="random", pruner="none")
    assert again.study.study_name == names[0] and len(again.study.trials) == 2, "the same settings resume"


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_resumed_sweep_samples_new_points_not_the_first_runs_again(sampler, tmp_path, runs_dir):
    text = recipe("  optimizer.lr: loguniform(1e-3, 1e-1)\n")
    run_sweep(text, trials=2, sampler=sampler, pruner="none")
    result = run_sweep(text, trials=4, sampler=sampler, pruner="none")
    lrs = [t.params["optimizer.lr"] for t in result.study.trials]
    assert len(lrs) == 4
    assert len(set(lrs)) == 4, f"the second run drew the first run's learning rates again: {lrs}"


# -- resume after the worker was killed -------------------------------------------------------------------------

def test_a_killed_grid_sweep_resumes_with_exactly_the_missing_trials(tmp_path, runs_dir):
    space = {"optimizer.lr": [0.01, 0.003, 0.001]}
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe("  optimizer.lr: [0.01, 0.003, 0.001]\n", epochs=40))
    command = nbopt_command() + ["sweep", str(path), "--sampler", "grid", "--pruner", "none", "--study", "S"]
    worker = subprocess.Popen(command, cwd=tmp_path, env=cli_env(runs_dir), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 240
        while killed is None:
            assert worker.poll() is None, f"the worker ended before it was killed:\n{worker.stdout.read()}"
            assert time.monotonic() < deadline, "no trial got to training in time"
            time.sleep(0.2)
            if not (tmp_path / DEFAULT_STORAGE_FILE).exists():
                continue
            try:
                study = journal_study("S")
            except KeyError:  # the study is not created yet
                continue
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if running and "epoch" in running[0].user_attrs:  # mid-training: at least one epoch reported
                killed = running[0]
                os.kill(worker.pid, signal.SIGKILL)
    finally:
        if worker.poll() is None and killed is None:
            worker.kill()
        worker.wait(timeout=60)
        worker.stdout.close()
    assert worker.returncode == -signal.SIGKILL
    assert killed.user_attrs["pid"] == worker.pid
    assert states(journal_study("S"))[killed.number] == "RUNNING", "the killed trial is left RUNNING"

    # the same sweep again, in this process: the dead trial is failed, its grid point run again
    result = run_sweep(path.read_text(), sampler="grid", pruner="none", study="S")
    study = journal_study("S")
    complete = points(study)
    assert len(complete) == 3 and sorted(complete) == sorted(grid_of(space)), "every grid point exactly once"
    assert study.trials[killed.number].state == TrialState.FAIL
    assert states(study).count("FAIL") == 1 and len(study.trials) == 4
    rerun = [t for t in study.trials if t.state == TrialState.COMPLETE and t.params == killed.params]
    assert len(rerun) == 1 and rerun[0].number > killed.number
    assert rerun[0].user_attrs["pid"] == os.getpid()
    assert len(result.trials.query("state == 'complete'")) == 3


def test_recovery_leaves_a_trial_alone_whose_worker_is_still_writing_who_it_is(tmp_path):
    """A worker claims a trial, then records host, pid and heartbeat, one write each. Another worker
    that starts in between must not take the trial for dead (seen with three workers on PostgreSQL:
    the trial was failed under its running worker, which then crashed)."""
    import socket

    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from nbopt.sweeps.study import claim_queued_trial, recover_dead_trials

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "study.journal")))
    study = optuna.create_study(study_name="S", storage=storage, direction="maximize")
    study.enqueue_trial({"x": 1.0})
    trial = claim_queued_trial(study)
    assert trial is not None
    assert recover_dead_trials(study) == 0, "a trial just claimed is not dead"
    trial.set_user_attr("host", socket.gethostname())  # … and now, before its pid is written:
    assert recover_dead_trials(study) == 0, "the trial's worker is alive; it has only not written its pid yet"
    assert study.trials[trial.number].state == TrialState.RUNNING
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("heartbeat", time.time())
    assert recover_dead_trials(study) == 0
    assert [t.state for t in study.trials] == [TrialState.RUNNING]


def test_a_trial_that_another_worker_finished_is_skipped_and_the_sweep_goes_on(tmp_path, runs_dir, monkeypatch,
                                                                               caplog):
    """Another worker's dead-trial recovery fails a trial this worker is still training (its worker looked
    silent for too long) and queues its parameters again. This worker's next write to the trial gets
    Optuna's UpdateFinishedTrialError: it stops that trial, says so, and goes on with the next."""
    from nbopt.callbacks.interrupt import InterruptGuard
    from nbopt.sweeps import study as study_module
    from nbopt.sweeps.space import parse_space
    from nbopt.sweeps.study import open_storage, recover_dead_trials
    from nbopt.sweeps.worker import run_trials

    class AnotherWorker:
        """Stands where the live board does; when this worker starts its first trial, another worker (its
        own view of the study, loaded afresh) takes every running trial for dead, as after a long silence."""
        recovered = None

        def started(self, number):
            if self.recovered is None:
                with monkeypatch.context() as patch:
                    patch.setattr(study_module, "STALE_AFTER_S", -1)
                    self.recovered = recover_dead_trials(journal_study("S"))

        def progress(self, *args):
            pass

        def finished(self, study):
            pass

    study = optuna.create_study(study_name="S", storage=open_storage(None), direction="maximize")
    base = yaml.safe_load(recipe("  optimizer.lr: loguniform(1e-3, 1e-1)\n", epochs=3))
    params = parse_space(base.pop("search"), {})
    board = AnotherWorker()
    with caplog.at_level("WARNING", logger="nbopt.sweeps"):
        run_trials(study, base, params, trials=2, metric="val_acc", namespace={}, grid=False,
                   guard=InterruptGuard(), board=board)
    assert board.recovered == 1
    study = journal_study("S")
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE"], "the taken trial is skipped; 2 trials finish"
    taken, rerun = study.trials[0], study.trials[1]
    assert rerun.params == taken.params, "the recovered trial's parameters ran again"
    assert "run" not in taken.user_attrs, "this worker recorded nothing more on the trial it lost"
    history = (runs_dir / "S" / "trial0" / "history.csv").read_text().splitlines()
    assert len(history) == 2, "the lost trial stopped training after the epoch that found it finished"
    assert [r.getMessage() for r in caplog.records if r.name.startswith("nbopt")] == [
        "nbopt sweep: trial 0 was finished by another worker (taken for dead?); this worker's result for it is "
        "dropped and the sweep goes on"]


# -- a study remembers its space ---------------------------------------------------------------------------------

def test_changing_the_space_of_an_existing_study_is_refused_unless_allowed(tmp_path, runs_dir):
    first = run_sweep(recipe("  optimizer.lr: [0.01, 0.003]\n"), sampler="grid", pruner="none", study="S")
    assert len(first.study.trials) == 2
    changed = recipe("  optimizer.lr: [0.01, 0.003]\n  batch_size: [64, 128]\n")
    with pytest.raises(RecipeError) as caught:
        run_sweep(changed, trials=3, sampler="random", pruner="none", study="S")
    assert str(caught.value) == ("study 'S' was created with another search space (optimizer.lr: [0.01, 0.003]); "
                                 "use a new --study name, or --allow-space-change to add to it anyway")
    assert len(journal_study("S").trials) == 2, "nothing was added to the refused study"
    assert len(run_folders(runs_dir)) == 2

    allowed = run_sweep(changed, trials=3, sampler="random", pruner="none", study="S", allow_space_change=True)
    study = journal_study("S")
    assert states(study) == ["COMPLETE"] * 3
    assert set(study.trials[-1].params) == {"optimizer.lr", "batch_size"}
    assert allowed.study.study_name == "S"


def test_a_study_with_the_other_direction_is_refused(tmp_path, runs_dir):
    text = recipe("  optimizer.lr: [0.01, 0.003]\n")
    run_sweep(text, sampler="grid", pruner="none", study="S")
    with pytest.raises(RecipeError, match=r"^study 'S' maximizes its metric, not minimizes it; use a new --study"):
        run_sweep(text, sampler="grid", pruner="none", study="S", metric="val_loss")


# -- samplers and pruners ------------------------------------------------------------------------------------------

SPACE = "  optimizer.lr: loguniform(1e-3, 1e-1)\n  model.hidden: [[16], [32], [64]]\n  dropout: uniform(0.0, 0.3)\n"


@pytest.mark.parametrize("sampler", ["random", "tpe", "gp"])
def test_each_sampler_runs_its_trials(sampler, tmp_path, runs_dir):
    result = run_sweep(recipe(SPACE, epochs=2), trials=4, sampler=sampler, pruner="none")
    assert states(result.study) == ["COMPLETE"] * 4
    for trial in result.study.trials:
        assert 1e-3 <= trial.params["optimizer.lr"] <= 1e-1
        assert trial.params["model.hidden"] in ("[16]", "[32]", "[64]")
        assert 0.0 <= trial.params["dropout"] <= 0.3
        assert 0.0 < trial.value <= 1.0 and trial.user_attrs["epochs"] == 2
    assert len({t.params["optimizer.lr"] for t in result.study.trials}) == 4, "sampled, not repeated"
    best = result.best
    assert best.metrics["val_acc"] == pytest.approx(max(t.value for t in result.study.trials))


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_the_recipes_seed_seeds_the_sampler(sampler, tmp_path, runs_dir):
    def first_params(seed: int, study: str) -> list[dict]:
        result = run_sweep(recipe(SPACE, seed=str(seed)), trials=2, sampler=sampler, pruner="none", study=study)
        return [t.params for t in result.study.trials]

    a, b, c = first_params(0, "a"), first_params(0, "b"), first_params(1, "c")
    assert a == b, "same seed, same trials"
    assert a[0] != c[0], "another seed samples other values"


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_machines_that_start_the_same_sweep_together_draw_different_trials(sampler, tmp_path):
    """Two machines run the same cell at the same moment: the same recipe seed, and neither has seen a
    trial of the other yet. Each opens the study and asks for a trial; they must not draw alike."""
    from nbopt.sweeps.samplers import make_sampler
    from nbopt.sweeps.study import open_storage

    optuna.create_study(study_name="S", storage=open_storage(None), direction="maximize")
    machines = [optuna.load_study(study_name="S", storage=open_storage(None), sampler=make_sampler(sampler, 0))
                for _ in range(2)]
    trials = [machine.ask() for machine in machines]
    lrs = [trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True) for trial in trials]
    assert [t.number for t in trials] == [0, 1]
    assert lrs[0] != lrs[1], f"both machines drew the learning rate {lrs[0]}"


def test_the_same_seed_draws_the_same_trials_however_many_workers_run_them(tmp_path, runs_dir):
    text = recipe(SPACE, seed="5")
    one = run_sweep(text, trials=4, sampler="random", pruner="none", study="one")
    two = run_sweep(text, trials=4, sampler="random", pruner="none", study="two", jobs=2)
    alone = {t.number: t.params for t in one.study.trials}
    shared = {t.number: t.params for t in journal_study(two.study.study_name).trials}
    assert len({t.user_attrs["pid"] for t in journal_study("two").trials}) == 2, "two workers shared the trials"
    assert {n: shared[n] for n in alone} == alone, "trial n has the same parameters, whichever worker drew it"
    assert len({p["optimizer.lr"] for p in alone.values()}) == 4


def test_median_pruning_stops_trials_that_lag_behind(tmp_path, runs_dir):
    # the grid's order is the order of its points: three good learning rates first (the pruner's startup
    # trials), then rates far too small to learn anything in a few epochs
    lrs = [0.03, 0.02, 0.01, 1e-6, 1e-7]
    result = run_sweep(recipe(f"  optimizer.lr: {lrs}\n", epochs=3), sampler="grid", pruner="median")
    by_lr = {t.params["optimizer.lr"]: t for t in result.study.trials}
    assert [by_lr[lr].state for lr in lrs[:3]] == [TrialState.COMPLETE] * 3
    assert [by_lr[lr].state for lr in lrs[3:]] == [TrialState.PRUNED] * 2
    for lr in lrs[3:]:
        pruned = by_lr[lr]
        assert pruned.user_attrs["epochs"] < 3, "a pruned trial stops early"
        assert pruned.last_step == pruned.user_attrs["epochs"]
    table = result.trials.set_index("trial")
    assert (table["state"] == "pruned").sum() == 2
    assert table.loc[by_lr[1e-7].number, "value"] < 0.5, "a pruned trial shows its last reported value"
    assert "2 pruned" in repr(result) and "3 complete" in repr(result)


def test_random_sampling_with_median_pruning_prunes_the_hopeless(tmp_path, runs_dir):
    result = run_sweep(recipe("  optimizer.lr: loguniform(1e-7, 1e-1)\n", epochs=3), trials=12,
                       sampler="random", pruner="median")
    study = result.study
    assert len(study.trials) == 12 and set(states(study)) <= {"COMPLETE", "PRUNED"}
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    assert pruned, "no trial was pruned in a space that is mostly far too small learning rates"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert max(t.params["optimizer.lr"] for t in pruned) < max(t.params["optimizer.lr"] for t in complete)


def test_hyperband_pruning_runs(tmp_path, runs_dir):
    result = run_sweep(recipe(SPACE, epochs=3), trials=4, sampler="tpe", pruner="hyperband")
    study = result.study
    assert len(study.trials) == 4 and set(states(study)) <= {"COMPLETE", "PRUNED"}
    assert TrialState.COMPLETE in {t.state for t in study.trials}
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == list(range(1, trial.user_attrs["epochs"] + 1))


# -- worker processes ------------------------------------------------------------------------------------------------

def test_two_jobs_run_trials_in_two_processes(tmp_path, runs_dir):
    result = run_sweep(recipe(SPACE, epochs=2, seed="7"), trials=6, sampler="random", pruner="none", jobs=2)
    study = journal_study(result.study.study_name)
    assert states(study) == ["COMPLETE"] * 6, "exactly the asked number of finished trials"
    pids = {t.user_attrs["pid"] for t in study.trials}
    assert len(pids) == 2 and os.getpid() not in pids
    assert result.best is not None and Path(result.best.checkpoint).exists()
    assert result.best.metrics["val_acc"] == pytest.approx(study.best_value)


def test_best_is_this_sweeps_run_even_when_an_earlier_sweep_made_runs_of_the_same_names(
        tmp_path, runs_dir, monkeypatch):
    text = recipe("  optimizer.lr: loguniform(1e-3, 1e-1)\n", seed="3")
    first = run_sweep(text, trials=2, sampler="random", pruner="none", study="S")  # its runs: S/trial0, S/trial1
    assert Path(first.best.checkpoint).parent.parent == runs_dir / "S"
    # start over in another folder (a new study file, a new runs folder): the same run names come again,
    # this time from worker processes
    again = tmp_path / "again"
    again.mkdir()
    monkeypatch.chdir(again)
    monkeypatch.setenv("NBOPT_RUNS_DIR", str(again / "runs"))
    second = run_sweep(text, trials=2, sampler="random", pruner="none", study="S", jobs=2)
    name = second.best_trial.user_attrs["run"]
    assert name in {t.user_attrs["run"] for t in first.study.trials}, "the same run names as before"
    best = second.best
    assert Path(best.checkpoint) == again / "runs" / name / "best.pt", "the Run of this sweep's best trial"
    assert best.metrics["val_acc"] == pytest.approx(second.study.best_value)


def test_two_jobs_share_a_grid_without_repeating_a_point(tmp_path, runs_dir):
    space = {"optimizer.lr": [0.03, 0.01, 0.003], "batch_size": [64, 128]}
    result = run_sweep(recipe("  optimizer.lr: [0.03, 0.01, 0.003]\n  batch_size: [64, 128]\n", epochs=2),
                       sampler="grid", pruner="none", jobs=2)
    study = journal_study(result.study.study_name)
    assert len(study.trials) == 6 and set(states(study)) == {"COMPLETE"}
    assert sorted(points(study)) == sorted(grid_of(space))
    assert os.getpid() not in {t.user_attrs["pid"] for t in study.trials}


# -- the cell magic --------------------------------------------------------------------------------------------------

MAGIC_CELL = """\
model: mlp(hidden=[32])
data: digits
epochs: 2
batch_size: 128
search:
  optimizer.lr: loguniform(1e-3, 1e-1)
  model.hidden: [[32], [64, 32]]
"""


def test_the_sweep_magic_leaves_a_sweep_with_the_best_run(ip, tmp_path, runs_dir, capsys):
    ip.run_cell_magic("nbopt", "sweep --trials 2 --sampler random", MAGIC_CELL)
    result = ip.user_ns["sweep"]
    assert isinstance(result, Sweep)
    assert states(result.study) == ["COMPLETE"] * 2
    best = result.best
    assert best.metrics["val_acc"] == pytest.approx(result.study.best_value)
    assert Path(best.checkpoint).exists() and Path(best.checkpoint).parents[2] == runs_dir
    assert best.name == result.study.best_trial.user_attrs["run"]
    assert isinstance(result.plot(), Figure)
    assert isinstance(result.trials, pd.DataFrame) and len(result.trials) == 2
    text, page = repr(result), result._repr_html_()
    assert f"{result.study.study_name} in {DEFAULT_STORAGE_FILE}" in text
    assert "best trial" in text and "best run" in text and "best run" in page
    assert not result.interrupted
    assert (tmp_path / DEFAULT_STORAGE_FILE).exists(), "the study is stored in the working folder"

    # the same cell again resumes the same study: nothing to add
    ip.run_cell_magic("nbopt", "sweep --trials 2 --sampler random --out again", MAGIC_CELL)
    assert ip.user_ns["again"].study.study_name == result.study.study_name
    assert len(ip.user_ns["again"].study.trials) == 2


def test_the_magic_shows_a_recipe_error_as_one_line(ip, tmp_path, runs_dir, capsys):
    result = ip.run_cell("%%nbopt sweep --trials 2\n" + MAGIC_CELL.replace("optimizer.lr", "optimiser.lr"))
    assert isinstance(result.error_in_exec, RecipeError)
    captured = capsys.readouterr()
    assert (captured.out + captured.err).strip() == (
        "RecipeError: search.optimiser.lr (line 6): 'optimiser.lr' is not a recipe key — did you mean 'optimizer'?")
    assert not isinstance(ip.user_ns.get("sweep"), Sweep)
    assert nothing_written(tmp_path, runs_dir)


def test_the_sweep_shows_a_sqlite_storage_as_given(tmp_path, runs_dir):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    result = run_sweep(recipe("  optimizer.lr: [0.01, 0.003]\n"), sampler="grid", pruner="none", storage=url)
    assert result.storage == url and url in repr(result)
    assert (tmp_path / "studies.db").exists() and not (tmp_path / DEFAULT_STORAGE_FILE).exists()
    assert len(optuna.load_study(study_name=result.study.study_name, storage=url).trials) == 2


# -- the command line ----------------------------------------------------------------------------------------------

def test_the_sweep_command_prints_one_line_per_trial_and_a_summary(tmp_path, runs_dir):
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe("  optimizer.lr: [0.01, 0.003]\n"))
    result = subprocess.run(nbopt_command() + ["sweep", str(path), "--sampler", "grid", "--study", "S"],
                            cwd=tmp_path, env=cli_env(runs_dir), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("trial ")] == ["trial 0", "trial 1"]
    assert "nbopt sweep" in lines and f"  study: S in {DEFAULT_STORAGE_FILE}" in lines
    assert "Traceback" not in result.stderr
    assert len(journal_study("S").trials) == 2


def test_the_sweep_command_reports_a_recipe_error_in_one_line(tmp_path, runs_dir):
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe("  optimizer.lr: loguniform(0, 1)\n"))
    result = subprocess.run(nbopt_command() + ["sweep", str(path)], cwd=tmp_path, env=cli_env(runs_dir),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == "nbopt: search.optimizer.lr (line 7): loguniform needs 0 < low < high"
    assert nothing_written(tmp_path, runs_dir)


class BreaksWhileTraining(nn.Module):
    """Passes nbopt's checks (they run in eval mode) and fails in every training step."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        if self.training:
            raise RuntimeError("broken on purpose")
        return self.layer(x)


def test_a_sweep_whose_trials_all_fail_stops_after_five_in_a_row(tmp_path, runs_dir):
    from nbopt.sweeps.worker import SweepFailed

    text = recipe("  optimizer.lr: loguniform(1e-3, 1e-1)\n", model="broken")
    with pytest.raises(SweepFailed) as info:
        sweep(text, {"broken": BreaksWhileTraining}, trials=20, sampler="random", study="all-fail", live=False)
    assert str(info.value).startswith("5 trials in a row failed, the last with RuntimeError: broken on purpose; "
                                      "the sweep stopped: fix the recipe or its search space and run it again")
    assert states(journal_study("all-fail")) == ["FAIL"] * 5
    from nbopt.sweeps.board import trials_table
    assert trials_table(journal_study("all-fail"))["error"].tolist() == ["RuntimeError: broken on purpose"] * 5
