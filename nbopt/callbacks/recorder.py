"""One history row per epoch — losses, metrics, the LR actually used, time — for display and disk."""
from __future__ import annotations

import math
import time

from nbopt.lightning_package import OnLightning
from nbopt.module import RecipeModule
from nbopt.step_chunks import steps_per_epoch, trained_in


class Recorder(OnLightning):
    """Collects the history and tells its listeners (live output, run folder) about progress."""

    def __init__(self, metric_key: str, listeners: list | None = None, extra=None):
        self.metric_key = metric_key
        self.listeners = listeners or []
        self.extra = extra  # () -> dict of more columns per epoch (sparsity while pruning, say)
        self.epoch_offset = 0  # epochs of earlier stages of the same run
        self.rows: list[dict] = []
        self.step_in_epoch = 0
        self.steps_per_epoch = 0
        self.samples = 0
        self.fit_started = time.perf_counter()
        self._epoch_started = self.fit_started
        self._lr_sum = 0.0
        self._lr_count = 0
        self._lr = math.nan

    def on_fit_start(self, trainer, pl_module):
        self.fit_started = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        # Lightning knows the number of batches only once the loaders are set up, after on_fit_start.
        batches = steps_per_epoch(trainer)
        self.steps_per_epoch = int(batches) if math.isfinite(batches) else 0
        self._epoch_started = time.perf_counter()
        self.step_in_epoch = 0
        self._lr_sum, self._lr_count = 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]  # the LR this batch trains with

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        steps, samples = trained_in(batch)
        for _ in range(steps):  # added step by step, so the mean is the same to the last bit
            self._lr_sum += self._lr
        self._lr_count += steps
        self.step_in_epoch += steps
        self.samples += samples
        if not trainer.is_global_zero:
            return
        for listener in self.listeners:
            listener.on_step(self, trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        ours = isinstance(pl_module, RecipeModule)
        train_loss = pl_module.pop_train_loss() if ours else None
        scores = pl_module.metric_keys if ours else [self.metric_key]  # the task's metric, then `metrics:`
        row = {
            "epoch": self.epoch_offset + trainer.current_epoch + 1,
            "train_loss": train_loss if train_loss is not None else metrics.pop("train_loss", math.nan),
            "val_loss": metrics.pop("val_loss", math.nan),
            **{key: metrics.pop(key, math.nan) for key in scores},
            "lr": self._lr_sum / self._lr_count if self._lr_count else math.nan,
            "seconds": time.perf_counter() - self._epoch_started,
        }
        if self.extra is not None:
            row.update(self.extra())
        for key, value in metrics.items():  # whatever else a user's own LightningModule logs
            if not key.endswith("_step"):
                row.setdefault(key.removesuffix("_epoch"), value)
        self.rows.append(row)
        if not trainer.is_global_zero:
            return
        for listener in self.listeners:
            listener.on_epoch(self, trainer, row)

    def state_dict(self) -> dict:
        """The history so far, so a resumed run goes on with it (a checkpoint is the authority on which
        epochs are done: history.csv may hold one more, finished after the checkpoint was written)."""
        return {"rows": [dict(row) for row in self.rows], "epoch_offset": self.epoch_offset}

    def load_state_dict(self, state: dict) -> None:
        self.rows, self.epoch_offset = [dict(row) for row in state["rows"]], state["epoch_offset"]

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.fit_started


def unheard(heard: set[int], recorder: Recorder, row: dict) -> list[dict]:
    """The rows up to `row` whose epochs a listener has not heard yet, marked heard now. A resumed run's first
    epoch brings those before the crash along; forked DDP workers' rows arrive one by one, beside a recorder
    that only fills up when the fit ends."""
    fresh = []
    for candidate in [*recorder.rows, row]:
        epoch = int(candidate["epoch"])
        if epoch not in heard:
            heard.add(epoch)
            fresh.append(candidate)
    return fresh


class Listener:
    """What the Recorder calls; live output and the run folder implement the parts they need."""

    def on_start(self, folder) -> None:
        """The run's folder (a RunFolder) is claimed; called once, before anything trains."""

    def on_step(self, recorder: Recorder, trainer) -> None:
        pass

    def on_epoch(self, recorder: Recorder, trainer, row: dict) -> None:
        pass
