"""Stop cleanly on the kernel's interrupt (or a Stop button) instead of killing the session.

On Ctrl-C / the notebook's stop button, Lightning ends with ``sys.exit(1)`` and leaves SIGINT
ignored, which in a notebook loses the run. While training, the guard owns SIGINT and remembers
the request; its callback asks the Trainer to stop after the current step, so the best weights and
history survive. The guard spans a run (or a comparison, a sweep), whichever Lightning package
trains it; the callback spans one fit, on that fit's package.
"""
from __future__ import annotations

import signal
import threading

from nbopt.lightning_package import OnLightning


class InterruptGuard:
    """Owns SIGINT while armed and remembers that a stop was asked for; `StopOnRequest` acts on it."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def request_stop(self) -> None:
        """Ask for a clean stop after the current step (safe to call from any thread)."""
        self.requested = True

    def _on_sigint(self, signum, frame) -> None:
        self.requested = True

    def arm(self) -> None:
        """Own SIGINT from now on, until release() (nbopt arms it for a whole run, fork-based DDP included)."""
        if self._previous is None and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def release(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class StopOnRequest(OnLightning):
    """Stops the Trainer after the step in which `guard` was asked to stop."""

    def __init__(self, guard: InterruptGuard):
        self.guard = guard

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        requested = self.guard.requested
        if trainer.world_size > 1:  # every rank must stop at the same step, or the others wait forever
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            self.guard.requested = True
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer, pl_module):
        """A stop asked for during an epoch's end (a write that failed) stops before the next epoch."""
        self.on_train_batch_end(trainer, pl_module, None, None, None)
