"""`logger:`: runs read back from a real MLflow file store and real TensorBoard event files."""
from __future__ import annotations

import importlib.util
import re

import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import nbopt
from nbopt import RecipeError

TINY = "data: synthetic(n=100, shape=[4], classes=2)\nbatch_size: 32\nmodel: mlp(hidden=[8])\n"


@pytest.fixture
def mlruns(tmp_path, monkeypatch) -> str:
    """A tracking URI of a local folder store; MLflow's own settings in the environment do not leak in."""
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(variable, raising=False)
    return (tmp_path / "store").as_uri()


def runs_of(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs([found.experiment_id])


def logged(uri: str, run, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in MlflowClient(uri).get_metric_history(run.info.run_id, key)]


def test_mlflow_gets_each_epoch_across_stages_the_recipe_and_the_results(train, mlruns):
    """Pruning adds a fine-tuning Fit: its epochs go on from the training's, as in run.history."""
    run = train(TINY + "epochs: 2\noptimizer: adam(lr=0.01)\nprune: {amount: 0.5, finetune: 1}\n"
                f"logger: {{name: mlflow, tracking_uri: '{mlruns}'}}\n")
    [tracked] = runs_of(mlruns, "nbopt")
    assert tracked.info.run_name == run.name and tracked.info.status == "FINISHED"
    assert logged(mlruns, tracked, "val_loss") == list(zip(run.history.epoch, run.history.val_loss))
    assert list(run.history.epoch) == [1, 2, 3]
    params = tracked.data.params
    assert params["optimizer"] == "adam(lr=0.01)" and params["prune.amount"] == "0.5" and params["epochs"] == "2"
    final = tracked.data.metrics
    assert final["final/val_acc"] == pytest.approx(run.metrics["val_acc"])
    assert final["final/compression/after/parameters"] == run.metrics["compression"]["after"]["parameters"]
    assert final["final/compression/before/parameters"] == run.metrics["compression"]["before"]["parameters"]


def test_tensorboard_and_mlflow_write_beside_the_runs_folder_by_default(train, runs_dir, mlruns):
    run = train(TINY + "epochs: 3\nlogger: [tensorboard, mlflow]\n")
    events = EventAccumulator(str(runs_dir.parent / "tb-logs" / "nbopt" / run.name))
    events.Reload()
    scalars = events.Scalars("val_loss")
    assert [e.step for e in scalars] == list(run.history.epoch)
    assert [e.value for e in scalars] == pytest.approx(list(run.history.val_loss), rel=1e-6)
    assert events.Scalars("final/val_acc")[0].value == pytest.approx(run.metrics["val_acc"], rel=1e-6)
    [tracked] = runs_of((runs_dir.parent / "mlruns").as_uri(), "nbopt")
    assert tracked.info.run_name == run.name


def test_compare_logs_each_variant_as_a_run_of_one_experiment(mlruns):
    comparison = nbopt.compare(TINY + f"epochs: 1\nlogger: {{name: mlflow, tracking_uri: '{mlruns}'}}\n"
                               "variants:\n  fast: {optimizer: 'adam(lr=0.05)'}\n  slow: {optimizer: 'adam(lr=0.001)'}\n"
                               "  sgd: {optimizer: 'sgd(lr=0.1)'}\n", {}, live=False)
    tracked = runs_of(mlruns, "nbopt")
    assert sorted(run.data.tags["variant"] for run in tracked) == ["fast", "sgd", "slow"]
    assert len({run.data.tags["compare"] for run in tracked}) == 1
    for run in tracked:
        variant = comparison.runs[run.data.tags["variant"]]
        assert run.info.run_name == variant.name
        assert [value for _, value in logged(mlruns, run, "val_loss")] == list(variant.history.val_loss)


def test_sweep_logs_each_trial_as_a_run_tagged_with_study_and_trial(mlruns):
    from nbopt.sweeps import sweep
    sweep(TINY + f"epochs: 1\nlogger: {{name: mlflow, tracking_uri: '{mlruns}'}}\n"
          "search:\n  optimizer.lr: [0.1, 0.03, 0.01, 0.003]\n", {}, trials=4, sampler="grid", study="lr-study",
          live=False)
    tracked = runs_of(mlruns, "lr-study")
    assert sorted(int(run.data.tags["trial"]) for run in tracked) == [0, 1, 2, 3]
    assert {run.data.tags["study"] for run in tracked} == {"lr-study"}
    assert {run.data.params["optimizer"] for run in tracked} == {f"adam(lr={lr})" for lr in (0.1, 0.03, 0.01, 0.003)}


@pytest.mark.parametrize("logger, message", [
    ("mlfow", "logger (line 4): unknown logger 'mlfow' (did you mean 'mlflow'?); choose from: csv, mlflow, "
              "tensorboard, wandb"),
    ("comet", "unknown logger 'comet'; choose from: csv, mlflow, tensorboard, wandb"),
    ("mlflow(experimnt=digits)", "mlflow has no argument 'experimnt' — did you mean 'experiment'?"),
])
def test_a_wrong_logger_is_one_line_before_training(check, runs_dir, logger, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        check(TINY + f"logger: {logger}\n")
    assert not runs_dir.exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_a_logger_without_its_package_says_what_to_install(check):
    with pytest.raises(RecipeError, match=re.escape("logger (line 4): wandb needs the wandb package: pip install "
                                                    "wandb")):
        check(TINY + "logger: wandb\n")
