"""Training for real with Lightning: history, learning-rate schedules, seeds, early stopping, run folders."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from matplotlib.figure import Figure

from nbopt import RecipeError

FAST = "model: mlp(hidden=[8])\ndata: iris\n"  # 120 training samples: 2 steps per epoch


# -- history ------------------------------------------------------------------------------------------

def test_history_columns_for_classification(train):
    run = train(FAST + "epochs: 3\n")
    assert list(run.history.columns) == ["epoch", "train_loss", "val_loss", "val_acc", "lr", "seconds"]
    assert run.history["epoch"].tolist() == [1, 2, 3]
    assert run.history[["train_loss", "val_loss", "val_acc", "lr", "seconds"]].notna().all().all()
    assert run.history["val_acc"].between(0, 1).all() and (run.history["seconds"] > 0).all()
    assert run.metric_key == "val_acc"


def test_history_columns_for_regression(train):
    run = train("model: mlp(hidden=[8])\ndata: synthetic(n=200, classes=0)\nepochs: 2\n")
    assert list(run.history.columns) == ["epoch", "train_loss", "val_loss", "val_mae", "lr", "seconds"]
    assert (run.history["val_mae"] > 0).all()
    assert "val_mae" in run.metrics and "val_acc" not in run.metrics


def test_training_learns(train):
    run = train("model: mlp(hidden=[32])\ndata: digits\nepochs: 3\noptimizer: adam(lr=0.01)\n")
    h = run.history
    assert h["train_loss"].iloc[-1] < h["train_loss"].iloc[0]
    assert run.metrics["val_acc"] > 0.8  # 10 classes: chance is 0.1


# -- learning-rate schedules --------------------------------------------------------------------------

LR = 0.01
EPOCHS = 6
SCHEDULES = {
    "constant": ("", lambda e: LR),
    "step": ("step(step_size=2, gamma=0.5)", lambda e: LR * 0.5 ** ((e - 1) // 2)),
    "exponential": ("exponential(gamma=0.8)", lambda e: LR * 0.8 ** (e - 1)),
    "cosine": ("cosine", lambda e: LR * (1 + math.cos(math.pi * (e - 1) / EPOCHS)) / 2),
    "cosine with eta_min": ("cosine(T_max=3, eta_min=0.001)",
                            lambda e: 0.001 + (LR - 0.001) * (1 + math.cos(math.pi * (e - 1) / 3)) / 2),
    "multistep": ("multistep(milestones=[2, 5], gamma=0.1)", lambda e: LR * 0.1 ** ((e > 2) + (e > 5))),
    "warmup then cosine": (
        "[warmup(epochs=2), cosine]",
        lambda e: LR * (0.1 + 0.9 * (e - 1) / 2) if e <= 2 else LR * (1 + math.cos(math.pi * (e - 3) / 4)) / 2),
}


@pytest.mark.parametrize("scheduler, formula", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_lr_per_epoch_follows_the_schedule(scheduler, formula, train):
    line = f"scheduler: {scheduler}\n" if scheduler else ""
    run = train(FAST + f"epochs: {EPOCHS}\noptimizer: adam(lr={LR})\n" + line)
    expected = [formula(e) for e in range(1, EPOCHS + 1)]
    assert run.history["lr"].tolist() == pytest.approx(expected, rel=1e-6)


def test_step_schedule_example_from_the_docs(train):
    run = train(FAST + "epochs: 5\noptimizer: adam(lr=0.01)\nscheduler: step(step_size=2, gamma=0.5)\n")
    assert run.history["lr"].tolist() == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])


def test_onecycle_rises_then_anneals(train):
    run = train(FAST + f"epochs: {EPOCHS}\noptimizer: sgd(lr=0.01)\nscheduler: onecycle(max_lr=0.1)\n")
    lr = run.history["lr"].tolist()
    peak = int(np.argmax(lr))
    assert 0 < peak < EPOCHS - 1
    assert max(lr) <= 0.1 and lr[0] < max(lr) / 2 and lr[-1] < max(lr) / 10


def test_plateau_lowers_the_lr_when_val_loss_stops_improving(train):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 5)).astype(np.float32), rng.integers(0, 2, 100)  # nothing to learn
    run = train("model: mlp(hidden=[64])\ndata: noise\nepochs: 8\noptimizer: adam(lr=0.01)\n"
                "scheduler: plateau(patience=1, factor=0.5)\n", {"noise": (x, y)})
    lr = run.history["lr"].tolist()
    assert lr[0] == pytest.approx(0.01) and lr[-1] < 0.01
    assert all(later <= earlier for earlier, later in zip(lr, lr[1:]))
    assert all(any(v == pytest.approx(0.01 * 0.5 ** k) for k in range(8)) for v in lr)


# -- seeds --------------------------------------------------------------------------------------------

def test_same_seed_same_history_different_seed_different(train):
    recipe = "model: mlp(hidden=[16])\ndata: wine\nepochs: 3\nbatch_size: 16\nseed: {}\n"
    a, b, c = train(recipe.format(7)), train(recipe.format(7)), train(recipe.format(8))
    for column in ("train_loss", "val_loss", "val_acc"):
        assert a.history[column].tolist() == b.history[column].tolist()
    assert a.history["train_loss"].tolist() != c.history["train_loss"].tolist()
    assert a.history["val_loss"].tolist() != c.history["val_loss"].tolist()


# -- early stopping and best weights ------------------------------------------------------------------

def _plateau_data():
    """A weak signal under 20 % label noise: val loss improves for a few epochs, then the big net overfits."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 20)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    flip = rng.random(200) < 0.2
    y[flip] = 1 - y[flip]
    return x, y


PLATEAU = ("model: mlp(hidden=[256])\ndata: noisy\nepochs: 60\nbatch_size: 32\noptimizer: adam(lr=0.003)\n"
           "val_split: 0.4\nearly_stopping: {monitor: val_loss, patience: 3}\n")


def test_early_stopping_stops_and_keeps_the_best_weights(train):
    run = train(PLATEAU, {"noisy": _plateau_data()})
    h = run.history
    assert run.status == "stopped early"
    assert len(h) < 60
    best = int(h["val_loss"].idxmin())
    assert run.metrics["best_epoch"] == h["epoch"][best]
    assert len(h) == run.metrics["best_epoch"] + 3  # patience 3: three epochs without improvement, then stop
    assert h["val_loss"].iloc[-1] > h["val_loss"].min()  # the last weights are not the best ones
    # the returned model is the best epoch's: its own score is the best val_loss, not the last one
    assert run.metrics["val_loss"] == pytest.approx(h["val_loss"].min(), rel=1e-4)
    assert run.metrics["val_acc"] == pytest.approx(h["val_acc"][best], abs=1e-6)
    saved = torch.load(run.checkpoint, weights_only=True)
    current = run.model.state_dict()
    assert set(saved) == set(current)
    assert all(torch.equal(saved[k], current[k]) for k in saved)


def test_best_weights_are_restored_without_early_stopping(train):
    run = train(PLATEAU.replace("early_stopping: {monitor: val_loss, patience: 3}\n", "").replace(
        "epochs: 60", "epochs: 8"), {"noisy": _plateau_data()})
    h = run.history
    assert run.status == "finished" and len(h) == 8
    assert run.metrics["best_epoch"] == int(h["val_loss"].idxmin()) + 1 < 8
    assert run.metrics["val_loss"] == pytest.approx(h["val_loss"].min(), rel=1e-4)


def test_early_stopping_on_accuracy_maximises(train):
    run = train(PLATEAU.replace("monitor: val_loss", "monitor: val_acc"), {"noisy": _plateau_data()})
    h = run.history
    assert run.metrics["best_epoch"] == int(h["val_acc"].idxmax()) + 1
    assert run.metrics["val_acc"] == pytest.approx(h["val_acc"].max(), abs=1e-6)


def test_early_stopping_on_an_unreported_value(check):
    with pytest.raises(RecipeError, match="^" + re.escape(
            "early_stopping.monitor (line 4): cannot monitor 'val_f1'; this run reports val_loss, val_acc — add f1 to "
            "`metrics:` to compute it") + "$"):
        check(FAST + "early_stopping:\n  monitor: val_f1\n")


# -- metrics and the run folder -----------------------------------------------------------------------

def test_metrics_keys(train):
    run = train(FAST + "epochs: 2\ntest_split: 0.2\n")
    m = run.metrics
    assert {"val_loss", "val_acc", "test_loss", "test_acc", "best_epoch"} <= set(m)
    assert 0 <= m["test_acc"] <= 1 and 0 <= m["val_acc"] <= 1
    assert m["best_epoch"] in (1, 2) and m["epochs_run"] == 2
    assert m["parameters"] == sum(p.numel() for p in run.model.parameters())
    no_test = train(FAST + "epochs: 1\n").metrics
    assert "test_acc" not in no_test and "test_loss" not in no_test


def test_run_folder_holds_everything(train, runs_dir):
    recipe = FAST + "epochs: 3\noptimizer: adam(lr=3e-3)\nscheduler: exponential(gamma=0.5)\n"
    run = train(recipe, name="baseline")
    assert run.name == "baseline" and run.folder == runs_dir / "baseline"
    files = {p.name for p in run.folder.iterdir()}
    assert {"recipe.yaml", "history.csv", "best.pt", "run.json", "metrics.json"} <= files
    assert run.checkpoint == run.folder / "best.pt"

    on_disk = pd.read_csv(run.folder / "history.csv")
    pd.testing.assert_frame_equal(on_disk, run.history, check_dtype=False, rtol=1e-9)

    assert yaml.safe_load((run.folder / "recipe.yaml").read_text()) == yaml.safe_load(recipe) | {
        "optimizer": "adam(lr=3e-3)"}
    status = json.loads((run.folder / "run.json").read_text())
    assert status["status"] == "finished" and status["epochs_run"] == 3 and status["name"] == "baseline"
    metrics = json.loads((run.folder / "metrics.json").read_text())
    assert metrics["val_loss"] == pytest.approx(run.metrics["val_loss"])
    assert metrics["best_epoch"] == run.metrics["best_epoch"]

    second = train(recipe, name="baseline")
    assert second.folder.name == "baseline-2"


def test_recipe_yaml_trains_again_to_the_same_result(train, runs_dir):
    first = train(FAST + "epochs: 2\nseed: 3\n", name="first")
    again = train((first.folder / "recipe.yaml").read_text())
    assert again.history["val_loss"].tolist() == first.history["val_loss"].tolist()


def test_run_summary_and_plot(train):
    run = train(FAST + "epochs: 2\n", name="shown")
    assert "nbopt run 'shown'" in repr(run) and "finished" in repr(run)
    assert "shown" in run._repr_html_()
    fig = run.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 3


def test_predict_applies_the_training_normalisation(train):
    from sklearn.datasets import load_iris
    run = train("model: mlp(hidden=[16])\ndata: iris\nepochs: 20\noptimizer: adam(lr=0.02)\n")
    iris = load_iris()
    predicted = run.predict(iris.data).argmax(1).numpy()
    assert (predicted == iris.target).mean() > 0.8


# -- losses and training options ------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["cross_entropy(label_smoothing=0.1)", "cross_entropy", "mse", "huber", "bce", "nll",
                                  "l1"])
def test_classification_losses_train(loss, train):
    run = train(f"model: mlp(hidden=[16])\ndata: digits\nepochs: 1\nloss: {loss}\n")
    assert run.status == "finished"
    assert np.isfinite(run.history["train_loss"]).all() and np.isfinite(run.metrics["val_loss"])


@pytest.mark.parametrize("loss", ["mse", "huber(delta=0.5)", "l1"])
def test_regression_losses_train(loss, train):
    run = train(f"model: mlp(hidden=[8])\ndata: synthetic(n=200, classes=0)\nepochs: 2\nloss: {loss}\n")
    assert np.isfinite(run.history["train_loss"]).all()


def test_a_classification_loss_for_regression_is_refused(check):
    with pytest.raises(RecipeError, match="^" + re.escape(
            "loss (line 3): cross_entropy is a classification loss but the task is regression; use mse, huber or l1")
                       + "$"):
        check("model: mlp\ndata: synthetic(n=100, classes=0)\nloss: cross_entropy\n")


def test_grad_clip_limits_the_updates(train):
    recipe = FAST + "epochs: 2\noptimizer: sgd(lr=0.5)\n"
    free = train(recipe)
    clipped = train(recipe + "grad_clip: 1e-4\n")
    assert clipped.status == "finished"
    # with a tiny clip the weights barely move: the loss stays near where it started
    assert clipped.history["train_loss"].iloc[-1] > free.history["train_loss"].iloc[-1]
    assert abs(clipped.history["val_loss"].iloc[1] - clipped.history["val_loss"].iloc[0]) < 0.01


def test_accumulate_changes_the_optimizer_steps(train):
    recipe = "model: mlp(hidden=[8])\ndata: digits\nepochs: 2\nbatch_size: 128\noptimizer: sgd(lr=0.1)\n"
    plain, accumulated = train(recipe), train(recipe + "accumulate: 4\n")
    assert accumulated.status == "finished"
    assert np.isfinite(accumulated.history["train_loss"]).all()
    assert accumulated.history["train_loss"].tolist() != plain.history["train_loss"].tolist()
    # a quarter of the optimizer steps: it learns less in the same epochs
    assert accumulated.history["val_loss"].iloc[-1] > plain.history["val_loss"].iloc[-1]


def test_bf16_mixed_precision_on_cpu(train):
    run = train(FAST + "epochs: 2\nprecision: bf16-mixed\n")
    assert run.status == "finished" and np.isfinite(run.history["val_loss"]).all()
    assert all(p.dtype == torch.float32 for p in run.model.parameters())


def test_all_options_together_show_in_the_plan(check):
    plan = check(FAST + "epochs: 2\ngrad_clip: 0.5\naccumulate: 2\nprecision: bf16-mixed\n"
                 "early_stopping: {patience: 2}\nscheduler: cosine\n")
    text = repr(plan)
    for words in ("gradient clipping at 0.5", "gradient accumulation over 2 batches", "precision bf16-mixed",
                  "early stopping on val_loss (patience 2)", "scheduler cosine", "nothing trained"):
        assert words in text
