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
