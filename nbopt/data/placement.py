"""In-memory splits on the GPU: moved there once when a fit starts, and batched there.

Batches of in-memory data are gathered on the host, so every training step would copy its batch to
the GPU. When a split fits comfortably — at most a quarter of the GPU's free memory, the model, its
activations and the optimizer need the rest — its rows are moved once instead, each batch is
gathered (and turned into floats) on the GPU, and Lightning finds nothing left to transfer.
Normalisation already runs on the batch's device. On a CPU, or for a split too large, nothing changes.
"""
from __future__ import annotations

import torch

from nbopt.lightning_package import OnLightning

DEVICE_SHARE = 4  # a split moves to the GPU when it takes at most 1/DEVICE_SHARE of the free memory


def placement(nbytes: int, held_on: torch.device, fit_on: torch.device, free: int | None) -> torch.device | None:
    """Where a split of `nbytes`, held on `held_on`, should live for a fit on `fit_on` whose memory has
    `free` bytes free: `fit_on`, or None to leave it where it is (CPU fits, data already on the GPU,
    too large to fit)."""
    if fit_on.type != "cuda" or held_on.type == "cuda" or free is None:
        return None
    return fit_on if nbytes <= free // DEVICE_SHARE else None


def free_memory(device: torch.device) -> int | None:
    """Free bytes of a CUDA device; None for any other."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free


class BatchesOnDevice(OnLightning):
    """Moves a fit's in-memory splits (training first, the larger) to its device when the fit starts,
    each if it fits, and drops the device copies when the fit ends, however it ends: whatever uses the
    splits afterwards (final scores, run.interpret) gets them from host memory as before.

    Made per Lightning package (``BatchesOnDevice.on(package)(train, val)``); anything but a movable
    TensorBatches is left alone.
    """

    def __init__(self, *splits):
        self.splits = [split for split in splits if getattr(split, "movable", False)]

    def on_fit_start(self, trainer, pl_module) -> None:
        device = trainer.strategy.root_device
        for split in self.splits:
            target = placement(split.nbytes(), split.source_x.device, device, free_memory(device))
            if target is not None:
                split.place(target)

    def teardown(self, trainer, pl_module, stage) -> None:
        self._drop()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._drop()

    def _drop(self) -> None:
        for split in self.splits:
            split.unplace()
