"""Both Lightning packages: a LightningModule from `lightning` (``import lightning as L``, as Lightning's
own docs write it) or from `pytorch_lightning` trains on the Trainer and callbacks of its own package;
built-in models train on `pytorch_lightning`, or on `lightning` where it is the only one installed."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import lightning as L
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from test_resume import StopInEpoch, same_run
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nbopt.callbacks.interrupt import InterruptGuard
from nbopt.callbacks.recorder import Listener
from nbopt.plan import check as check_plan
from nbopt.sweeps import sweep
from nbopt.training import execute


class DigitsSteps:
    """The steps of a digits classifier, the same in both packages' modules below."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class LitModel(DigitsSteps, L.LightningModule):
    """A module of `lightning`, as Lightning's README writes one since 2.0."""


class PlModel(DigitsSteps, pl.LightningModule):
    """The same module against `pytorch_lightning`, as code from before Lightning 2.0 is."""


MODULES = {"lightning": (LitModel, L.pytorch), "pytorch_lightning": (PlModel, pl)}
RECIPE = "model: Model\ndata: digits\nbatch_size: 128\ncheckpoint_every: 1\n"


@pytest.fixture(params=list(MODULES))
def own(request):
    """(namespace with the user's `Model` class, the Lightning package it subclasses)"""
    model, package = MODULES[request.param]
    return {"Model": model}, package


def trained_on(run, package) -> None:
    """The run's Trainer, its callbacks and early stopping all come from `package`."""
    trainer = run.model.trainer
    assert type(trainer) is package.Trainer
    assert trainer.callbacks and all(isinstance(cb, package.Callback) for cb in trainer.callbacks)


def test_a_module_trains_on_the_package_it_subclasses(train, own):
    namespace, package = own
    run = train(RECIPE + "epochs: 2\n", namespace)
    assert run.status == "finished" and run.history["epoch"].tolist() == [1, 2]
    assert np.isfinite(run.history["val_loss"]).all()
    assert run.history["val_loss"].iloc[-1] < 1.0  # it learned: chance on 10 classes is about 2.3
    trained_on(run, package)
    predictions = run.predict(torch.zeros(3, 64))
    assert predictions.shape == (3, 10) and torch.isfinite(predictions).all()


def test_early_stopping_comes_from_the_modules_package(train, own):
    namespace, package = own
    run = train(RECIPE + "epochs: 30\nearly_stopping: {monitor: val_loss, patience: 1}\n", namespace)
    assert run.status == "stopped early" and len(run.history) < 30
    assert any(type(cb) is package.callbacks.EarlyStopping for cb in run.model.trainer.callbacks)
    trained_on(run, package)


def test_an_interrupted_run_resumes_on_the_modules_package(train, own):
    namespace, package = own
    recipe = RECIPE + "epochs: 4\n"
    guard = InterruptGuard()
    stopped = execute(check_plan(recipe, namespace), name="cut", live=False, stop=guard,
                      listeners=[StopInEpoch(guard, 2)])
    assert stopped.status == "interrupted" and len(stopped.history) == 2
    resumed = train(recipe, namespace, resume="cut")
    same_run(resumed, train(recipe, namespace, name="whole"))
    trained_on(resumed, package)


def test_a_sweep_over_a_module_trains_every_trial_on_its_package(own):
    namespace, package = own
    result = sweep(RECIPE + "epochs: 1\nsearch:\n  batch_size: [64, 128]\n", namespace, sampler="grid",
                   pruner="none", metric="val_loss", live=False)
    assert [t.state.name for t in result.study.trials] == ["COMPLETE", "COMPLETE"]
    assert {t.params["batch_size"] for t in result.study.trials} == {64, 128}
    trained_on(result.best, package)


def test_sweeping_a_metric_the_module_never_logs_says_so(runs_dir):
    result = sweep(RECIPE + "epochs: 1\nsearch:\n  batch_size: [64, 128]\n", {"Model": LitModel}, sampler="grid",
                   pruner="none", live=False)
    assert [t.state.name for t in result.study.trials] == ["FAIL", "FAIL"]
    assert result.study.trials[0].user_attrs["error"] == ("val_acc was never logged: log it in validation_step "
                                                          "(self.log('val_acc', ...)), or sweep --metric one it logs")


def test_the_lr_range_test_runs_on_the_modules_package(train):
    run = train(RECIPE + "epochs: 1\nlr_find: true\n", {"Model": LitModel})
    assert run.status == "finished" and 1e-6 < run.metrics["lr_found"] < 1.0
    trained_on(run, L.pytorch)


class Blobs(pl.LightningDataModule):
    """A pytorch_lightning DataModule of digits-shaped samples."""

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        self.train_set = TensorDataset(torch.randn(200, 64, generator=g), torch.randint(0, 10, (200,), generator=g))
        self.val_set = TensorDataset(torch.randn(50, 64, generator=g), torch.randint(0, 10, (50,), generator=g))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=50, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=50)


class LitBlobs(L.LightningDataModule):
    """The same DataModule on `lightning`."""

    setup, train_dataloader, val_dataloader = Blobs.setup, Blobs.train_dataloader, Blobs.val_dataloader


@pytest.mark.parametrize("model, data, package", [(LitModel, Blobs, L.pytorch), (PlModel, LitBlobs, pl)],
                         ids=["lightning module, pytorch_lightning data", "pytorch_lightning module, lightning data"])
def test_a_datamodule_of_the_other_package_feeds_the_module(train, model, data, package):
    """nbopt takes only the DataModule's loaders, so the module's package trains on them."""
    run = train("model: Model\ndata: dm\nepochs: 1\n", {"Model": model, "dm": data()})
    assert run.status == "finished" and np.isfinite(run.history["val_loss"]).all()
    trained_on(run, package)


class TrainerSeen(Listener):
    def __init__(self):
        self.trainers = []

    def on_epoch(self, recorder, trainer, row):
        self.trainers.append(trainer)


def test_a_builtin_model_trains_on_pytorch_lightning_when_both_are_installed():
    seen = TrainerSeen()
    run = execute(check_plan("model: mlp(hidden=[16])\ndata: digits\nepochs: 1\n", {}), live=False,
                  listeners=[seen])
    assert run.status == "finished"
    trainer = seen.trainers[0]
    assert type(trainer) is pl.Trainer and isinstance(trainer.lightning_module, pl.LightningModule)
    assert not isinstance(trainer.lightning_module, L.LightningModule)


def test_a_builtin_model_trains_on_lightning_when_pytorch_lightning_is_missing(runs_dir):
    code = textwrap.dedent("""
        import json, sys
        sys.modules["pytorch_lightning"] = None  # as if only `lightning` were installed
        from nbopt.callbacks.recorder import Listener
        from nbopt.plan import check
        from nbopt.training import execute

        class TrainerSeen(Listener):
            def on_epoch(self, recorder, trainer, row):
                self.trainer = type(trainer).__module__

        seen = TrainerSeen()
        run = execute(check("model: mlp(hidden=[16])\\ndata: digits\\nepochs: 1\\n", {}), live=False,
                      listeners=[seen])
        print(json.dumps({"status": run.status, "trainer": seen.trainer, "rows": len(run.history)}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"status": "finished", "trainer": "lightning.pytorch.trainer.trainer", "rows": 1}

