"""One `Fit` stage on Lightning: a Trainer with the recipe's settings and the run's callbacks.

The run's history, best weights and interrupt guard span all its stages; each stage is a fresh
Trainer fit of the same module. The Trainer, early stopping and the run's callbacks all come from
the Lightning package of the module (nbopt.lightning_package). In a notebook, DDP runs in forked
worker processes, which cannot draw into the kernel's outputs or return objects: their records come
back through the run folder.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import pandas as pd
import torch
from torch.multiprocessing import ProcessRaisedException

from nbopt import metrics
from nbopt._perf import one_thread_after_fork
from nbopt.callbacks.best_weights import BestWeights
from nbopt.callbacks.bundle import Bundle
from nbopt.callbacks.checkpoint import LastCheckpoint
from nbopt.callbacks.divergence import LOSSES, DivergenceStop, first_nonfinite
from nbopt.callbacks.interrupt import StopOnRequest
from nbopt.data.loaders import TensorBatches
from nbopt.data.placement import BatchesOnDevice
from nbopt.lightning_package import OnLightning, package_of
from nbopt.module import RecipeModule
from nbopt.stages import Fit
from nbopt.step_chunks import StepChunks
from nbopt.store import RunFolder

FORKED_STRATEGIES = ("ddp_notebook",)
WATCH_INTERVAL_S = 0.25  # how often the kernel reads the workers' records: live epochs, quick stops


def steps_by_hand(module, recipe, stage: Fit, strategy: str) -> bool:
    """Whether nbopt's module takes its optimizer steps itself (``RecipeModule._step_by_hand``), which
    spares a small model a fifth of its step time. Lightning's automatic optimisation stays for what
    it does that a plain step would not: LR schedules, loss scaling (16-mixed), several processes."""
    return (isinstance(module, RecipeModule) and not (recipe.scheduler and stage.schedule)
            and recipe.precision in ("32", "32-true", "bf16-mixed") and strategy == "auto"
            and recipe.devices == 1 and recipe.nodes == 1)


class NoProfiler(OnLightning):
    """Lightning wraps every hook call in its profiler's context, even when nothing profiles; this one's
    context is a shared no-op, a tenth of a small model's step cheaper than the default's."""

    lightning_base = "profilers.PassThroughProfiler"

    def profile(self, action_name: str):
        return _NOTHING


_NOTHING = contextlib.nullcontext()


class OneThreadPerForkedWorker(OnLightning):
    """A notebook's DDP workers are forked, and Lightning gives each its share of the cores (two threads a
    worker for two workers on four cores), which forked OpenMP cannot run: the first step waits forever.
    One thread each, as for compare and sweep workers (nbopt._perf.one_thread_after_fork)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        one_thread_after_fork()


class WorkerError(RuntimeError):
    """A DDP worker process of a notebook run raised; its exception cannot cross the process boundary."""


class Fitter:
    """Runs a run's Fit stages and keeps what they leave: the best weights, the last Trainer, early stops.

    `watchers` hear the epochs of forked workers (read back from the run folder); `replay` shows
    them live. In one process the recorder's own listeners hear every step instead.
    """

    def __init__(self, plan, module, target, recorder, guard, folder: RunFolder, strategy: str, threads: int | None,
                 watchers=(), replay=None):
        self.plan, self.module, self.target, self.recorder, self.guard = plan, module, target, recorder, guard
        self.folder, self.strategy, self.threads = folder, strategy, threads
        self.lightning = package_of(module)  # the package whose Trainer fits this module
        self.watchers, self.replay = list(watchers), replay
        es = plan.recipe.early_stopping
        self.monitor = es.monitor if es else "val_loss"
        self.mode = metrics.mode(self.monitor, es.mode if es else None)
        self.best: BestWeights | None = None
        self.trainer = None  # the last fit's Trainer
        self.stopped_early = False
        self.reported = LOSSES if isinstance(module, RecipeModule) else ()  # the losses that are always logged
        self.divergence: tuple[int, str, float] | None = None  # (epoch, loss, value) when the losses went NaN/inf

    @property
    def forked(self) -> bool:
        return self.strategy in FORKED_STRATEGIES

    def fit(self, stage: Fit, callbacks=(), run_state: dict | None = None, checkpoint: Path | None = None) -> None:
        """One Trainer fit, from `checkpoint` when resuming; the best weights of this stage (when tracked)
        are restored at its end. `run_state` is what the run's last.ckpt keeps beside Lightning's state."""
        recipe, train, lightning = self.plan.recipe, self.plan.data.train, self.lightning
        self.best = None
        if stage.track_best:
            self.best = BestWeights.on(lightning)(self.target, self.monitor, self.mode, self.folder)
        early = recipe.early_stopping if stage.early_stopping else None
        last = LastCheckpoint.on(lightning)(self.folder, recipe.checkpoint_every, self.guard,
                                            train if hasattr(train, "load_state_dict") else None, run_state)
        parts = [self.recorder, DivergenceStop.on(lightning)(self.recorder, self.reported),
                 StopOnRequest.on(lightning)(self.guard), *([self.best] if self.best else []), *callbacks]
        parts.append(BatchesOnDevice.on(lightning)(train, self.plan.data.val))  # in-memory splits: on the GPU once
        if self.strategy == "ddp_notebook":
            parts.append(OneThreadPerForkedWorker.on(lightning)())
        stage_callbacks = [Bundle.on(lightning)(parts), last]
        if early:
            stage_callbacks.append(lightning.callbacks.EarlyStopping(
                monitor=self.monitor, patience=early.patience, min_delta=early.min_delta, mode=self.mode,
                check_finite=True))
        self.recorder.epoch_offset = len(self.recorder.rows)
        by_hand = steps_by_hand(self.module, recipe, stage, self.strategy)
        if isinstance(self.module, RecipeModule):
            self.module.automatic_optimization = not by_hand
        trainer = lightning.Trainer(
            max_epochs=stage.epochs, accelerator="auto", devices=recipe.devices, num_nodes=recipe.nodes,
            strategy=self.strategy, precision=recipe.precision, gradient_clip_val=None if by_hand else recipe.grad_clip,
            accumulate_grad_batches=1 if by_hand else recipe.accumulate, callbacks=stage_callbacks, logger=False,
            enable_checkpointing=True, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, log_every_n_steps=10**9, profiler=NoProfiler.on(lightning)(),
        )
        self.module.train()  # a stage may follow pruning or evaluation, which leave the model in eval mode
        threads = torch.get_num_threads()
        if self.threads is not None and self.strategy == "auto":
            torch.set_num_threads(self.threads)
        try:
            if self.forked:
                self._fit_in_workers(trainer, checkpoint)
            else:
                trainer.fit(self.module, train_dataloaders=self._chunked(train, by_hand),
                            val_dataloaders=self.plan.data.val, ckpt_path=checkpoint)
        finally:
            torch.set_num_threads(threads)
        self.trainer = trainer
        self.divergence = first_nonfinite(self.recorder.rows, self.reported)
        if self.divergence and self.best is not None and self.best.best_state is None and not self.forked:
            self.best.restore_start()  # forked workers trained copies: this process still holds the start
        self.stopped_early |= bool(early and trainer.should_stop and not self.guard.requested and not self.divergence)

    def _chunked(self, batches, by_hand: bool):
        """In-memory training batches in chunks of steps, when nbopt's module steps by hand (nbopt.step_chunks);
        a chunk ends at the step in which a stop was asked for."""
        if by_hand and isinstance(batches, TensorBatches) and batches.movable:  # in memory, not streamed
            return StepChunks(batches, stop=lambda: self.guard.requested)
        return batches

    @property
    def best_epoch(self) -> int | None:
        """The best epoch of the run (counting earlier stages), or None when the last stage kept none."""
        if self.best is None or self.best.best_state is None:
            return None
        return self.best.best_epoch + self.recorder.epoch_offset

    # -- forked workers (DDP in a notebook) ----------------------------------------------------
    def _fit_in_workers(self, trainer, checkpoint: Path | None) -> None:
        """Fit in forked worker processes; the workers' callbacks write the history and best weights
        (rank 0 only), a thread here shows them live, and they are loaded back when the fit ends."""
        done = threading.Event()
        watcher = threading.Thread(target=self._watch_folder, args=(done, trainer), daemon=True)
        watcher.start()
        try:
            trainer.fit(self.module, train_dataloaders=self.plan.data.train, val_dataloaders=self.plan.data.val,
                        ckpt_path=checkpoint)
        except ProcessRaisedException as exc:
            raise self._worker_failure(exc) from None
        finally:
            done.set()
            watcher.join()
        self.recorder.rows = self._read_history() or self.recorder.rows
        # The workers' Trainer stopped, not this one: fewer epochs than asked, unasked, is early stopping.
        ran = len(self.recorder.rows) - self.recorder.epoch_offset
        self.stopped_early |= bool(self.plan.recipe.early_stopping and not self.guard.requested
                                   and ran < trainer.max_epochs and not first_nonfinite(self.recorder.rows))
        if self.best is not None and self.folder.weights.exists():
            self._load_workers_best()

    def _load_workers_best(self) -> None:
        state = torch.load(self.folder.weights, weights_only=True)
        self.target.load_state_dict(state)
        self.best.best_state = state
        values = [row.get(self.monitor) for row in self.recorder.rows[self.recorder.epoch_offset:]]
        best = metrics.best_of(self.monitor, values)
        if best is not None:
            self.best.best_epoch = values.index(best) + 1

    def _worker_failure(self, exc) -> WorkerError:
        """One line naming the process and its error; the worker's whole traceback goes to the run folder."""
        trace = str(exc).strip()
        (self.folder.path / "error.txt").write_text(trace + "\n")
        last = trace.splitlines()[-1] if trace else type(exc).__name__
        return WorkerError(f"process {exc.error_index} of {self.plan.recipe.devices} failed (its traceback is in "
                           f"{self.folder.path / 'error.txt'}): {last}")

    def _watch_folder(self, done: threading.Event, trainer) -> None:
        """Show the workers' epochs as they land, tell this process's watchers, and pass stops on.

        A watcher asks to stop the way it would in one process, with ``trainer.should_stop`` (a
        sweep's pruner does); the workers hear it, like the Stop button, as SIGINT, which their
        interrupt guards turn into a stop of all ranks at the same step.
        """
        seen, signalled = 0, False
        while not done.wait(WATCH_INTERVAL_S):
            seen = self._deliver_rows(trainer, seen)
            if (self.guard.requested or trainer.should_stop) and not signalled:
                signalled = True
                for process in getattr(trainer.strategy.launcher, "procs", []) or []:
                    with contextlib.suppress(ProcessLookupError, AttributeError):
                        os.kill(process.pid, signal.SIGINT)
        self._deliver_rows(trainer, seen)  # the epochs that landed after the last look

    def _read_history(self) -> list[dict]:
        history = self.folder.path / "history.csv"
        try:
            return pd.read_csv(history).to_dict("records") if history.exists() else []
        except (OSError, ValueError, pd.errors.EmptyDataError):  # caught mid-replace: read it next time
            return []

    def _deliver_rows(self, trainer, seen: int) -> int:
        rows = self._read_history()
        if len(rows) <= seen:
            return seen
        for row in rows[seen:]:
            for watcher in self.watchers:
                watcher.on_epoch(self.recorder, trainer, row)
        if self.replay is not None:
            self.replay(rows, f"{self.plan.recipe.devices} processes")
        return len(rows)
