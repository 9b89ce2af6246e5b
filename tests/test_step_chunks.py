"""Lightning fetches chunks of in-memory batches and nbopt's module steps through them one by one: the same
batches, a stop heard at the next step, steps counted as steps (history, progress, the Trainer's global step)."""
from __future__ import annotations

import re

import torch
from test_plots import Sink
from torch import nn

import nbopt
from nbopt.callbacks.interrupt import InterruptGuard
from nbopt.data.loaders import TensorBatches
from nbopt.display import board
from nbopt.step_chunks import STEPS_PER_CHUNK, StepChunks

# 25 training batches of 16 (500 samples, 100 for validation): chunks of 16 and 9 steps
RECIPE = "model: mlp(hidden=[32])\ndata: synthetic(n=500, shape=[8], classes=3)\nbatch_size: 16\nepochs: 3\n"


def test_chunks_hold_every_batch_of_a_pass_once_in_the_loaders_order():
    x, y = torch.arange(100.0).unsqueeze(1), torch.arange(100)
    plain = TensorBatches(x, y, batch_size=3, shuffle=True, seed=5)
    chunks = StepChunks(TensorBatches(x, y, batch_size=3, shuffle=True, seed=5), stop=lambda: False, steps=4)
    assert (len(chunks), chunks.steps_per_pass) == (9, 34)
    for _ in range(2):  # reshuffled each pass, as the plain batches are
        steps = [(step, batch) for chunk in chunks for step, batch in chunk]
        assert [step for step, _ in steps] == list(range(34))
        for (_, (cx, cy)), (px, py) in zip(steps, plain, strict=True):
            assert torch.equal(cx, px) and torch.equal(cy, py)


class CallsBackEachStep(nn.Module):
    """Calls `step()` in every training forward pass (nbopt trains a copy: a function is shared by it)."""

    def __init__(self, step):
        super().__init__()
        self.layer, self.step = nn.Linear(8, 3), step

    def forward(self, x):
        if self.training:
            self.step()
        return self.layer(x)


def test_a_stop_asked_for_in_the_middle_of_a_chunk_ends_training_after_that_step():
    guard, steps = InterruptGuard(), []

    def step():  # the Stop button, pressed during the fifth step
        steps.append(1)
        if len(steps) == 5:
            guard.request_stop()

    assert 5 < STEPS_PER_CHUNK
    run = nbopt.train(RECIPE.replace("mlp(hidden=[32])", "net"), {"net": CallsBackEachStep(step)}, live=False,
                      stop=guard)
    assert len(steps) == 5
    assert run.status == "interrupted" and len(run.history) == 1


def test_the_trainer_counts_optimizer_steps_not_chunks(runs_dir):
    run = nbopt.train(RECIPE + "accumulate: 3\ncheckpoint_every: 1\n", live=False)
    checkpoint = torch.load(run.folder / "last.ckpt", weights_only=False, map_location="cpu")
    assert checkpoint["global_step"] == 3 * 9  # 25 batches a epoch: 8 windows of 3 and one of 1


def test_progress_counts_steps_and_samples_not_chunks(monkeypatch):
    monkeypatch.setattr(board, "STATUS_INTERVAL", 0.0)  # every step's status, not four a second
    sink = Sink()
    nbopt.train(RECIPE, live=True, sink=sink)
    progress = [text for kind, text in sink.shown if kind == "status" and " · step " in text]
    assert progress and all(re.search(r"· step (\d+)/25 ·", text) for text in progress), progress
    assert "epoch 3/3 · step 25/25 ·" in progress[-1]
