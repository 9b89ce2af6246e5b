"""``last.ckpt``: everything a run needs to go on exactly where it stopped, written after every N epochs.

Lightning's own checkpoint carries the model, optimizer, LR scheduler, loop position and every
stateful callback (history, best weights, early stopping). What it leaves out — the random state
behind the batch order, augmentation and dropout, and the run's place among its stages — this
callback adds as its own state, and puts back when Lightning restores it, before the first batch.

Lightning writes a checkpoint in place; here it goes to a temporary name and is renamed over the
previous one, so a process killed mid-write leaves the last complete checkpoint.
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from nbopt.callbacks.bundle import part_state
from nbopt.lightning_package import OnLightning

LAST = "last.ckpt"


AUTO_INTERVAL_S = 10.0  # `checkpoint_every: auto`: at most one checkpoint this often (a write costs milliseconds)


class LastCheckpoint(OnLightning):
    """Writes ``last.ckpt`` into the run's folder (a RunFolder) at the end of every `every`-th epoch and at a stage's last epoch;
    ``every="auto"``: at the end of an epoch when AUTO_INTERVAL_S have passed since the last write.

    Writing costs a few milliseconds, an eighth of an epoch of the digits MLP, so short epochs are
    checkpointed by time, not one by one. Made on the ``Checkpoint`` of the run's Lightning package
    (``LastCheckpoint.on(package)``), so that package's Trainer calls it after every other callback's
    epoch end (early stopping included) and the file holds their state as of the finished epoch.
    `batches` is the training batches' own generator (a TensorBatches), `extra` the run's state
    outside this fit.
    """

    lightning_base = "callbacks.Checkpoint"

    def __init__(self, folder, every: int | str, guard, batches=None, extra: dict | None = None):
        self.folder, self.path = folder, folder.path / LAST
        self.every, self.guard, self.batches = every, guard, batches
        self.extra = dict(extra or {})
        self._written = time.monotonic()

    def _due(self, trainer) -> bool:
        done = trainer.current_epoch + 1
        if done >= trainer.max_epochs or trainer.should_stop:
            return True
        if self.every == "auto":
            return time.monotonic() - self._written >= AUTO_INTERVAL_S
        return done % self.every == 0

    def on_train_epoch_end(self, trainer, pl_module):
        # An interrupt ends an epoch after its current step: a cut-short epoch is no place to resume from.
        if self.guard.requested or not _agreed(trainer, self._due(trainer)):
            return
        partial = self.path.with_name(f".{LAST}.{os.getpid()}.tmp")
        self.folder.settle()  # best.pt first: the checkpoint must not find the disk filled by half of it
        with self.folder.mid_run():
            try:
                trainer.save_checkpoint(partial)
                if trainer.is_global_zero:
                    os.replace(partial, self.path)
            except OSError:
                partial.unlink(missing_ok=True)  # a half-written checkpoint would only fill the disk further
                raise
        self._written = time.monotonic()
        if _agreed(trainer, self.folder.write_error is not None):
            trainer.should_stop = True  # a full disk: stop now, not after a step of the next epoch

    def state_dict(self) -> dict:
        state = {"rng": random_state(), "run": self.extra}
        if self.batches is not None:
            state["batches"] = self.batches.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        set_random_state(state["rng"])
        if self.batches is not None and "batches" in state:
            self.batches.load_state_dict(state["batches"])


def _agreed(trainer, decision: bool) -> bool:
    """True when any process decides so: all ranks must save (a collective) or stop together, or wait forever.
    Time-based decisions (`checkpoint_every: auto`) can differ between ranks by a hair."""
    return trainer.strategy.reduce_boolean_decision(decision, all=False) if trainer.world_size > 1 else decision


def random_state() -> dict:
    """Every generator a training step draws from: Python's, NumPy's, torch's (CPU and CUDA)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, keys.tolist(), position, has_gauss, gauss),
             "torch": torch.get_rng_state()}  # plain types and tensors: the file loads with weights_only
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_run_state(folder: Path) -> dict | None:
    """The run's own part of its last checkpoint (stage, report, LR found) and the number of epochs it
    holds (`epochs_done`), or None without one."""
    path = Path(folder) / LAST
    if not path.exists():
        return None
    callbacks = torch.load(path, map_location="cpu", weights_only=True).get("callbacks", {})
    run = next((state["run"] for key, state in callbacks.items() if key.startswith(LastCheckpoint.__qualname__)), None)
    if run is None:
        return None
    return {**run, "epochs_done": len(part_state(callbacks, "Recorder").get("rows", []))}
