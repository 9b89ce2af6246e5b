"""What the benchmarks share to measure a framework: silence its output, time its epochs."""
from __future__ import annotations

import contextlib
import os
import sys
import time


@contextlib.contextmanager
def silenced():
    """Send everything the frameworks print (progress bars, epoch lines, warnings) to /dev/null."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            with contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def epoch_timer(pl):
    """A Callback of Lightning package `pl` that times each training epoch, with the hooks nbopt's
    history "seconds" uses: its `.seconds` list."""

    class EpochTimer(pl.Callback):
        def __init__(self):
            self.seconds = []

        def on_train_epoch_start(self, trainer, pl_module):
            self._t = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.seconds.append(time.perf_counter() - self._t)

    return EpochTimer()


def plain_classifier(pl, net, make_optimizer, augmenter=None):
    """Baseline (b): a LightningModule of package `pl` as Lightning's docs write one, `self.log` at every step
    and a validation loss and accuracy. `make_optimizer(parameters)` gives its optimizer; `augmenter`
    (kornia), when given, transforms each training batch once it is on the device."""
    import torch.nn.functional as F

    class Classifier(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net
            self.augmenter = augmenter

        def on_after_batch_transfer(self, batch, dataloader_idx):
            x, y = batch
            if self.augmenter is not None and self.trainer.training:
                x = self.augmenter(x)
            return x, y

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            out = self.net(x)
            self.log("val_loss", F.cross_entropy(out, y))
            self.log("val_acc", (out.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return make_optimizer(self.parameters())

    return Classifier()
