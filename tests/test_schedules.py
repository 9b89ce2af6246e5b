"""`scheduler:`, `lr_find:`, `grad_clip:`, `accumulate:` and `precision:` — checked by what they do to a run.

The `lr` column of the history is the mean learning rate of an epoch's steps, so every schedule can
be checked against its formula, epoch by epoch.
"""
from __future__ import annotations

import math
import re

import pandas as pd
import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

import nbopt
from nbopt import RecipeError


def train(recipe, namespace=None):
    return nbopt.train(recipe, {} if namespace is None else namespace, live=False)


# 160 samples: 128 train (8 batches of 16), 32 val
BASE = "model: mlp(hidden=[8])\ndata: synthetic(n=160, shape=[4], classes=2)\nbatch_size: 16\n"
BATCHES = 8
LR = 0.1


def test_base_recipe_has_eight_batches_per_epoch():
    assert nbopt.check(BASE, {}).data.steps_per_epoch == BATCHES


def cosine(e, lr, t_max, eta_min=0.0):
    """CosineAnnealingLR's closed form at epoch index e (0-based)."""
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * e / t_max)) / 2


SCHEDULES = {
    "step": ("step(step_size=2, gamma=0.5)", 5, lambda e: LR * 0.5 ** (e // 2)),
    "exponential": ("exponential(gamma=0.7)", 4, lambda e: LR * 0.7 ** e),
    "cosine": ("cosine", 4, lambda e: cosine(e, LR, t_max=4)),
    "cosine eta_min": ("cosine(eta_min=0.02)", 5, lambda e: cosine(e, LR, t_max=5, eta_min=0.02)),
    "warmup": ("warmup(epochs=2)", 4, lambda e: LR * min(0.1 + 0.9 * e / 2, 1.0)),
    # LinearLR(start_factor=0.1, total_iters=2) for 2 epochs, then cosine with T_max = the 3 epochs left
    "warmup then cosine": ("[warmup(epochs=2), cosine]", 5,
                           lambda e: LR * (0.1 + 0.9 * e / 2) if e < 2 else cosine(e - 2, LR, t_max=3)),
    "warmup(start_factor) then cosine(eta_min)": (
        "[warmup(epochs=1, start_factor=0.5), cosine(eta_min=0.01)]", 4,
        lambda e: LR * 0.5 if e < 1 else cosine(e - 1, LR, t_max=3, eta_min=0.01)),
}


@pytest.mark.parametrize("scheduler, epochs, formula", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_lr_column_follows_the_schedule_formula(scheduler, epochs, formula):
    run = train(BASE + f"epochs: {epochs}\noptimizer: sgd(lr={LR})\nscheduler: {scheduler}\n")
    expected = [formula(e) for e in range(epochs)]
    assert run.history["lr"].tolist() == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_warmup_then_cosine_matches_torchs_own_sequential_schedule():
    """The same schedule built by hand from torch's classes gives the same per-epoch LRs."""
    run = train(BASE + f"epochs: 6\noptimizer: sgd(lr={LR})\nscheduler: [warmup(epochs=2), cosine]\n")
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    warm = lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=2)
    cos = lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    schedule = lr_scheduler.SequentialLR(optimizer, [warm, cos], milestones=[2])
    expected = []
    for _ in range(6):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert run.history["lr"].tolist() == pytest.approx(expected, rel=1e-6)
    assert run.history["lr"].iloc[2] == pytest.approx(LR)  # the peak right after the warmup


def onecycle_epoch_means(max_lr, epochs, batches, accumulate=1, **options):
    """Per-epoch mean of the LR each batch trains with, stepping OneCycleLR once per optimizer step."""
    steps_per_epoch = math.ceil(batches / accumulate)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=max_lr)
    schedule = lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=epochs * steps_per_epoch, **options)
    means = []
    for _ in range(epochs):
        lrs = []
        for batch in range(batches):
            lrs.append(optimizer.param_groups[0]["lr"])
            if (batch + 1) % accumulate == 0 or batch == batches - 1:
                optimizer.step()
                schedule.step()
        means.append(sum(lrs) / len(lrs))
    return means


def test_onecycle_per_epoch_lr_is_the_mean_of_its_steps():
    run = train(BASE + "epochs: 4\noptimizer: sgd(lr=0.01)\nscheduler: onecycle(max_lr=0.2)\n")
    lrs = run.history["lr"].tolist()
    expected = onecycle_epoch_means(0.2, 4, BATCHES)
    assert lrs == pytest.approx(expected, rel=1e-6)
    assert max(range(4), key=lambda e: lrs[e]) == 1  # pct_start 0.3 of 32 steps: the peak is in epoch 2
    assert lrs[0] < lrs[1] and lrs[1] > lrs[2] > lrs[3]
    assert lrs[-1] < 0.2 / 10  # ends far below max_lr


def test_onecycle_max_lr_defaults_to_the_optimizers_lr():
    run = train(BASE + "epochs: 2\noptimizer: sgd(lr=0.05)\nscheduler: onecycle\n")
    assert run.history["lr"].tolist() == pytest.approx(onecycle_epoch_means(0.05, 2, BATCHES), rel=1e-6)


def test_accumulate_makes_fewer_optimizer_steps():
    """With accumulate: 2 the optimizer steps every 2 batches, so one-cycle spans half as many steps,
    each LR used for 2 batches, and the cycle still completes by the last epoch."""
    run = train(BASE + "epochs: 3\noptimizer: sgd(lr=0.01)\nscheduler: onecycle(max_lr=0.2)\naccumulate: 2\n")
    lrs = run.history["lr"].tolist()
    assert lrs == pytest.approx(onecycle_epoch_means(0.2, 3, BATCHES, accumulate=2), rel=1e-6)
    assert lrs != pytest.approx(onecycle_epoch_means(0.2, 3, BATCHES, accumulate=1), rel=1e-3)
    assert lrs[-1] < 0.2 / 5


class Stuck(nn.Module):
    """A model whose only trainable parameter does not affect the output: val_loss never improves."""

    def __init__(self):
        super().__init__()
        self.fixed = nn.Linear(4, 2)
        self.fixed.requires_grad_(False)
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.fixed(x) + 0 * self.unused


def test_plateau_lowers_the_lr_after_patience_epochs_without_improvement():
    run = train("model: net\ndata: synthetic(n=160, shape=[4], classes=2)\nbatch_size: 16\nepochs: 6\n"
                "optimizer: sgd(lr=0.1)\nscheduler: plateau(patience=1, factor=0.5)\n", {"net": Stuck()})
    assert run.history["val_loss"].nunique() == 1  # no epoch improves on the first
    # epoch 1 sets the best; epochs 2 and 3 are bad (2 > patience) → halved for epoch 4; again after 5
    assert run.history["lr"].tolist() == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025])


def test_plateau_keeps_the_lr_while_val_loss_improves():
    run = train(BASE + "epochs: 4\noptimizer: sgd(lr=0.05)\nscheduler: plateau(patience=1, factor=0.5)\n")
    assert run.history["val_loss"].is_monotonic_decreasing
    assert run.history["lr"].tolist() == pytest.approx([0.05] * 4)


# -- invalid schedules: before any training -----------------------------------------------------------------

INVALID = {
    "not warmup first": ("[cosine, warmup(epochs=2)]", 5,
                         "scheduler (line 5): in a sequence every schedule but the last must be warmup(epochs=N), "
                         "got cosine"),
    "three with a step": ("[warmup(epochs=1), step, cosine]", 5,
                          "scheduler (line 5): in a sequence every schedule but the last must be "
                          "warmup(epochs=N), got step"),
    "onecycle in a sequence": ("[warmup(epochs=2), onecycle]", 5,
                               "scheduler (line 5): onecycle cannot be part of a scheduler sequence; use it alone"),
    "plateau in a sequence": ("[warmup, plateau]", 5,
                              "scheduler (line 5): plateau cannot be part of a scheduler sequence; use it alone"),
    "warmup as long as the run": ("[warmup(epochs=3), cosine]", 3,
                                  "scheduler (line 5): warmup takes 3 epochs but the run has only 3; shorten the "
                                  "warmup or raise epochs"),
    "unknown name": ("cosin", 5, "scheduler (line 5): unknown scheduler 'cosin' — did you mean 'cosine'?"),
    "unknown argument": ("step(step_sise=2)", 5,
                         "scheduler (line 5): step has no argument 'step_sise' — did you mean 'step_size'?"),
}


@pytest.mark.parametrize("scheduler, epochs, message", INVALID.values(), ids=INVALID.keys())
def test_invalid_schedules_are_recipe_errors_before_training(scheduler, epochs, message, runs_dir):
    with pytest.raises(RecipeError, match=re.escape(message)):
        train(BASE + f"epochs: {epochs}\nscheduler: {scheduler}\n")
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


# -- lr_find -------------------------------------------------------------------------------------------------

def test_lr_find_runs_the_range_test_saves_it_and_trains_with_the_suggestion():
    run = train(BASE + "epochs: 2\nlr_find: true\n")
    found = run.metrics["lr_found"]
    assert run.history["lr"].tolist() == pytest.approx([found, found], rel=1e-9)
    assert found != pytest.approx(1e-3)  # not adam's default: the test's suggestion is used
    curve = pd.read_csv(run.folder / "lr_find.csv")
    assert list(curve.columns) == ["lr", "loss"]
    assert 10 <= len(curve) <= 100
    assert curve["lr"].is_monotonic_increasing
    assert curve["lr"].iloc[0] == pytest.approx(1e-6, rel=0.5) and curve["lr"].iloc[-1] <= 1.0
    assert curve["lr"].min() <= found <= curve["lr"].max()
    assert curve["loss"].notna().all()
    leftovers = [p.name for p in run.folder.rglob("*")  # the run's own resumable checkpoint aside
                 if (p.suffix == ".ckpt" and p.name != "last.ckpt") or "lightning_logs" in p.parts]
    assert leftovers == [], "the range test left files in the run folder"


def test_lr_find_with_a_schedule_starts_the_schedule_from_the_suggestion():
    run = train(BASE + "epochs: 3\nlr_find: true\noptimizer: sgd\nscheduler: exponential(gamma=0.5)\n")
    found = run.metrics["lr_found"]
    assert run.history["lr"].tolist() == pytest.approx([found, found / 2, found / 4], rel=1e-6)


def test_lr_find_with_live_false_prints_nothing(capfd):
    """`live=False` trains silently: the range test must not draw a progress bar either."""
    train(BASE + "epochs: 1\nlr_find: true\n")
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# -- grad_clip, accumulate, precision --------------------------------------------------------------------------

def _distance(a: nn.Module, b: nn.Module) -> float:
    with torch.no_grad():
        return math.sqrt(sum(float(((p - q) ** 2).sum()) for p, q in zip(a.parameters(), b.parameters())))


def test_grad_clip_bounds_every_update():
    """SGD without momentum moves the weights by lr × gradient; clipped at norm c, 8 steps move at most 8·lr·c."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    recipe = ("model: net\ndata: synthetic(n=160, shape=[4], classes=2)\nbatch_size: 16\nepochs: 1\n"
              "optimizer: sgd(lr=1.0)\n")
    clipped = train(recipe + "grad_clip: 0.0001\n", {"net": net})
    free = train(recipe, {"net": net})
    moved = _distance(clipped.model, net)
    assert 0 < moved <= BATCHES * 1.0 * 1e-4 * 1.001
    assert _distance(free.model, net) > 100 * moved


def test_bf16_mixed_precision_on_cpu_computes_in_bfloat16():
    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.dtypes = set()

        def forward(self, x):
            out = self.fc(x)
            if self.training:
                self.dtypes.add(out.dtype)
            return out

    recipe = "model: net\ndata: synthetic(n=160, shape=[4], classes=2)\nbatch_size: 16\nepochs: 2\n"
    run = train(recipe + "precision: bf16-mixed\n", {"net": Probe()})
    assert run.model.dtypes == {torch.bfloat16}
    assert run.model.fc.weight.dtype == torch.float32  # mixed: the weights stay in float32
    assert all(math.isfinite(v) for v in run.history[["train_loss", "val_loss"]].to_numpy().ravel())
    full = train(recipe, {"net": Probe()})
    assert full.model.dtypes == {torch.float32}


def test_unknown_precision_suggests():
    with pytest.raises(RecipeError, match=re.escape("precision (line 4): unknown precision 'bf16-mix' — did you "
                                                    "mean 'bf16-mixed'?")):
        nbopt.check(BASE + "precision: bf16-mix\n", {})
