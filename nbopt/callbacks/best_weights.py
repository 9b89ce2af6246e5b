"""Keep the best weights seen so far — in memory and on disk — and put them back at the end.

Lightning's EarlyStopping stops but leaves the last weights in place; a user expects the best.
Snapshots go through ``state_dict`` (never ``deepcopy``), which also works for modules carrying
hooks, and are written atomically so a dying kernel never leaves a half-written file.
"""
from __future__ import annotations

import math
import torch
from torch import nn

from nbopt.lightning_package import OnLightning
from nbopt.store import RunFolder, save_weights


class BestWeights(OnLightning):
    def __init__(self, target: nn.Module, monitor: str = "val_loss", mode: str = "min",
                 folder: RunFolder | None = None):
        if mode not in ("min", "max"):
            raise ValueError(f"`mode` can be min or max, got {mode}")
        self.target = target
        self.monitor = monitor
        self.mode = mode
        self.folder = folder  # where best.pt goes
        self.best_value = math.inf if mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.start_state: dict[str, torch.Tensor] | None = None  # for a run that diverges before any good epoch

    def is_better(self, value: float) -> bool:
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)) or not self.is_better(float(value)):
            return
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None and not math.isfinite(float(loss)):  # NaN weights can still score a finite accuracy
            return
        self.best_value = float(value)
        self.best_epoch = trainer.current_epoch + 1
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.target.state_dict().items()}
        if self.folder is not None and trainer.is_global_zero:
            state, path = self.best_state, self.folder.weights  # a new dict at each improvement, never changed
            self.folder.write_later(path.name, lambda: save_weights(loadable_state(state), path, synced=False))

    def on_fit_start(self, trainer, pl_module):
        self.start_state = {k: v.detach().to("cpu", copy=True) for k, v in self.target.state_dict().items()}

    def restore_start(self) -> None:
        """Put back the weights the fit started from: nothing better was seen (every epoch diverged)."""
        if self.start_state is not None:
            self.target.load_state_dict(self.start_state)

    def restore(self) -> bool:
        """Load the best weights into the model; False when no epoch was validated."""
        if self.best_state is None:
            return False
        self.target.load_state_dict(self.best_state)
        return True

    def on_fit_end(self, trainer, pl_module):
        self.restore()

    def on_exception(self, trainer, pl_module, exception):
        self.restore()

    def state_dict(self) -> dict:
        """With the weights themselves: a resumed run ends on the best epoch even if it came before the stop."""
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "monitor": self.monitor,
                "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.best_state = state.get("best_state")


def loadable_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state_dict with pruning masks folded in (`weight` instead of `weight_orig` + `weight_mask`),
    so the file loads into the model as it is returned, with its pruning made permanent."""
    out = {}
    for key, value in state.items():
        if key.endswith("_orig") and key[:-5] + "_mask" in state:
            out[key[:-5]] = value * state[key[:-5] + "_mask"]
        elif not (key.endswith("_mask") and key[:-5] + "_orig" in state):
            out[key] = value
    return out
