"""Stop a run whose losses stopped being numbers: training on from NaN or inf only wastes time.

A loss that is NaN or infinite in an epoch (the training loss averages every step, so one bad step
shows) ends the run after that epoch is recorded; the run then reads ``diverged`` and keeps its
best weights of an epoch whose losses were finite (``BestWeights`` never takes another).
"""
from __future__ import annotations

import math

from nbopt.lightning_package import OnLightning

LOSSES = ("train_loss", "val_loss")


def first_nonfinite(rows: list[dict], reported: tuple[str, ...] = LOSSES) -> tuple[int, str, float] | None:
    """(epoch, column, value) of the first epoch whose training or validation loss is NaN or infinite.

    NaN also stands for "not logged" (a user's own LightningModule may log no val_loss): a NaN counts
    for a loss in `reported` (nbopt's own module logs both), or once the loss had a finite value."""
    seen = set(reported)
    for row in rows:
        for column in LOSSES:
            value = row.get(column)
            if not isinstance(value, (int, float)):
                continue
            if math.isinf(value) or (math.isnan(value) and column in seen):
                return int(row["epoch"]), column, float(value)
            if math.isfinite(value):
                seen.add(column)
    return None


class DivergenceStop(OnLightning):
    """Placed after the Recorder: looks at the epochs it recorded, and stops every process on NaN/inf."""

    def __init__(self, recorder, reported: tuple[str, ...] = LOSSES):
        self.recorder, self.reported = recorder, reported

    def on_train_epoch_end(self, trainer, pl_module):
        bad = first_nonfinite(self.recorder.rows, self.reported) is not None
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            trainer.should_stop = True
