"""Training whose losses become NaN or infinite is a named outcome: `diverged`, never a false `finished`.

The reproduction from the field: SGD with lr=1000 on a small regression blows up in the first epoch.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import nbopt

X = np.random.default_rng(0).normal(size=(200, 8)).astype("float32")
REGRESSION = {"xy": (X, (X[:, 0] * 2 + X[:, 1]).astype("float32"))}
BLOWS_UP = "model: mlp\ndata: xy\nepochs: 4\noptimizer: sgd(lr=1000)\n"
# Fine for an epoch, then the LR grows a thousandfold each epoch until the losses overflow.
LATER = "model: mlp\ndata: xy\nepochs: 6\noptimizer: sgd(lr=0.01)\nscheduler: step(step_size=1, gamma=1000)\n"
HINT = "Try a lower learning rate, `grad_clip: 1.0`, or check the data for NaN or huge values."


def strict_json(path):
    """The file as JSON that other tools accept: NaN and Infinity literals are refused."""
    def refuse(literal):
        raise ValueError(f"{path.name} holds {literal}")
    return json.loads(path.read_text(), parse_constant=refuse)


def finite(model) -> bool:
    return all(torch.isfinite(t).all() for t in model.state_dict().values())


def test_a_run_that_blows_up_reads_diverged_and_keeps_usable_weights(train):
    run = train(BLOWS_UP, REGRESSION)
    assert run.status == "diverged"
    assert run.note == ("Diverged: train_loss became nan in epoch 1; stopped there and no epoch had finite losses, so "
                        f"the model holds its starting weights. {HINT}")
    assert len(run.history) == 1, "the run stopped after the epoch that went NaN"
    assert run.metrics["best_epoch"] is None
    assert finite(run.model) and np.isfinite(np.asarray(run.predict(X[:20]))).all()
    assert finite_file(run.folder / "best.pt")
    status = strict_json(run.folder / "run.json")
    assert status["status"] == "diverged" and status["best"] is not None and math.isfinite(status["best"])
    metrics = strict_json(run.folder / "metrics.json")
    assert metrics["best_epoch"] is None and math.isfinite(metrics["val_mae"])
    assert nbopt.runs().loc[run.name, "status"] == "diverged"


def finite_file(path) -> bool:
    return all(torch.isfinite(t).all() for t in torch.load(path, weights_only=True).values())


def test_a_run_that_diverges_later_keeps_the_best_finite_epoch(train):
    run = train(LATER, REGRESSION)
    epoch, = run.history.index[~np.isfinite(run.history["train_loss"]) | ~np.isfinite(run.history["val_loss"])][:1] + 1
    assert run.status == "diverged" and len(run.history) == epoch < 6
    best = run.metrics["best_epoch"]
    assert best is not None and best < epoch
    assert run.note.startswith(f"Diverged: ") and f"in epoch {epoch}; stopped there and kept the best weights, " \
        f"from epoch {best}. {HINT}" in run.note
    assert run.metrics["val_loss"] == pytest.approx(run.history["val_loss"].iloc[best - 1], rel=1e-5)
    assert finite(run.model)


def test_early_stopping_does_not_hide_a_divergence(train):
    run = train(BLOWS_UP + "early_stopping: {monitor: val_loss, patience: 2}\n", REGRESSION)
    assert run.status == "diverged" and run.note.startswith("Diverged: train_loss became nan in epoch 1")


def test_a_diverged_run_loads_with_its_note_and_cannot_resume(train):
    run = train(BLOWS_UP, REGRESSION, name="boom")
    loaded = nbopt.load_run("boom", REGRESSION)
    assert loaded.status == "diverged" and loaded.note == run.note
    with pytest.raises(nbopt.RecipeError, match=r"^run 'boom' diverged \(its losses became NaN or infinite\); going "
                                                r"on from there would diverge again"):
        train(BLOWS_UP, REGRESSION, resume="boom")


def test_a_comparison_shows_the_diverged_variant(runs_dir):
    comparison = nbopt.compare("model: mlp\ndata: xy\nepochs: 3\nvariants:\n  calm: {optimizer: 'sgd(lr=0.01)'}\n"
                               "  wild: {optimizer: 'sgd(lr=1000)'}\n", REGRESSION, live=False)
    assert comparison.table.loc["wild", "status"] == "diverged"
    assert comparison.table.loc["calm", "status"] == "finished"
    assert comparison.table.index[0] == "calm"


def test_a_sweep_prunes_a_diverged_trial_and_goes_on(runs_dir):
    from optuna.trial import TrialState
    result = nbopt.sweep("model: mlp\ndata: xy\nepochs: 2\noptimizer: sgd(lr=0.01)\nsearch:\n"
                         "  optimizer.lr: [1000.0, 0.01]\n", REGRESSION, sampler="grid", pruner="none", live=False)
    trials = {t.params["optimizer.lr"]: t for t in result.study.trials}
    assert trials[1000.0].state == TrialState.PRUNED and trials[1000.0].value is None
    assert trials[0.01].state == TrialState.COMPLETE and result.best_trial.number == trials[0.01].number
    table = result.trials.set_index("optimizer.lr")
    assert table.loc[1000.0, "state"] == "diverged" and table.loc[1000.0, "error"].startswith("Diverged: ")


def test_in_a_kernel_a_divergence_is_one_line_and_no_traceback(kernel):
    kernel.execute("import numpy as np\nX = np.random.default_rng(0).normal(size=(200, 8)).astype('float32')\n"
                   "xy = (X, (X[:, 0] * 2 + X[:, 1]).astype('float32'))")
    reply, outputs = kernel.execute("%%nbopt train --out boom\n" + BLOWS_UP, timeout=300)
    assert reply["status"] == "ok", kernel.errors(outputs)
    shown = kernel.text(outputs)
    assert "Traceback" not in shown and shown.count("Diverged: train_loss became nan in epoch 1") == 1, shown
    reply, outputs = kernel.execute("print(boom.status)")
    assert kernel.text(outputs).strip() == "diverged"
