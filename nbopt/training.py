"""``train``: Recipe → LightningModule + Trainer → Run.

This is the one place that wires a plan into Lightning; the magics, the CLI and (later) compare,
sweep and the panel all come through here.
"""
from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import signal
import shutil
import tempfile
import threading
import time
import types
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch.multiprocessing import ProcessRaisedException

from nbopt._perf import threads_for, tune_allocator, use_channels_last
from nbopt._quiet import quiet_lightning
from nbopt import compression
from nbopt.callbacks.best_weights import BestWeights, loadable_state
from nbopt.callbacks.interrupt import InterruptGuard
from nbopt.callbacks.recorder import Listener, Recorder
from nbopt.data.loaders import TensorBatches, unsharded
from nbopt.display.live import LiveOutput, in_notebook
from nbopt.display.plots import draw_lr_find
from nbopt.module import RecipeModule, configure_from_recipe, evaluate, metric_name
from nbopt.parallel import is_distributed_child, lightning_strategy
from nbopt.plan import Plan, check, monitor_mode
from nbopt.recipe import Recipe
from nbopt.run import Run
from nbopt.store import RunFolder, atomic_write_bytes, atomic_write_text, save_weights
from nbopt.techniques.augment import build_augmenter
from nbopt.techniques.losses import build_loss
from nbopt.techniques.lr_find import find_lr
from nbopt.yamltext import dump_yaml


FORKED_STRATEGIES = ("ddp_notebook", "ddp_spawn")
SESSION_RUNS: dict = {}  # run name → Run made in this process, so later recipes can name them (distill)


class _HistoryWriter(Listener):
    """Writes the history after every epoch, so a dead kernel loses at most the epoch in flight."""

    def __init__(self, folder: RunFolder):
        self.folder = folder

    def on_epoch(self, recorder, trainer, row):
        self.folder.write_history(recorder.rows)
        self.folder.write_status(epochs_run=len(recorder.rows))


def recipe_text(recipe: Recipe) -> str:
    """The recipe as YAML; objects that only live in the notebook are written as a readable stand-in."""
    return dump_yaml(_plain(recipe.raw))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, Run):
        return value.name  # a run name is a valid teacher reference
    return f"<{type(value).__name__} object from the notebook>"


def train(recipe: str | dict | Recipe, namespace: dict | None = None, *, name: str | None = None,
          live: bool = True, stop: InterruptGuard | None = None, sink=None) -> Run:
    """Train once from a recipe and return the Run (best weights, history, metrics).

    `namespace` is where recipe names like ``model: net`` are looked up (default: the notebook's
    variables). `live=False` trains silently; `sink` sends the live status and figure somewhere else
    than the cell (the panel's widgets). Interrupting the kernel — or `stop.request_stop()` — stops
    after the current step and still returns the Run, marked interrupted.
    """
    return execute(check(recipe, namespace), name=name, live=live, stop=stop, sink=sink)


def execute(plan: Plan, *, name: str | None = None, live: bool = True, stop: InterruptGuard | None = None,
            listeners: list[Listener] = (), sink=None) -> Run:
    """Train a checked plan. `listeners` hear every step and epoch (compare's shared live figure)."""
    tune_allocator()
    session = _Session(plan, name, live, stop or InterruptGuard(), listeners, sink)
    with quiet_lightning():
        try:
            # Owned for the whole run, not only inside fits: a Ctrl-C that reaches Lightning (between
            # stages, in an LR range test or a final validate) would leave SIGINT ignored for good.
            session.guard.arm()
            session.run_stages()
        except BaseException as exc:
            session.fail(exc)
            raise
        finally:
            session.guard.release()
        return session.finish()


class WorkerError(RuntimeError):
    """A DDP worker process of a notebook run raised; its exception cannot cross the process boundary."""


class _Session:
    """One run's moving parts: the module, its run folder, the history so far and the stages to fit.

    A run is one or more stages — training, then (for pruning) fine-tuning after each pruning step —
    each a Trainer fit of the same module. The history, live output and run folder span them all.
    """

    def __init__(self, plan: Plan, name: str | None, live: bool, guard: InterruptGuard, listeners, sink=None):
        recipe, data = plan.recipe, plan.data
        self.plan, self.recipe, self.data, self.guard = plan, recipe, data, guard
        self.strategy = lightning_strategy(recipe, in_notebook())
        if is_distributed_child():  # an extra DDP process of `nbopt run`: rank 0 keeps the records
            live, listeners = False, ()
            self.folder = RunFolder(Path(tempfile.mkdtemp(prefix="nbopt-rank-")))
            atexit.register(shutil.rmtree, self.folder.path, True)
        else:
            self.folder = RunFolder.create(name or recipe.name)
        self.folder.write_recipe(recipe_text(recipe))
        self.folder.write_status(name=self.folder.name, status="running", started=time.strftime("%Y-%m-%d %H:%M:%S"),
                                 model=plan.model.label, data=data.description.split(":")[0], epochs_run=0)
        self.module, self.target = _lightning_module(plan)
        es = recipe.early_stopping
        self.monitor = es.monitor if es else "val_loss"
        self.mode = monitor_mode(self.monitor, es.mode if es else None)
        self.live = live
        self.live_output = LiveOutput(self.folder.name, compression.total_epochs(recipe), plan.metric_key,
                                      sink=sink) if live else None
        if self.strategy in FORKED_STRATEGIES:
            # Forked workers cannot draw into this kernel's outputs: they write the folder, which we watch.
            self.parent_listeners = list(listeners)  # they hear the workers' epochs from _watch_folder
            listeners = [_HistoryWriter(self.folder)]
        else:
            self.parent_listeners = []
            listeners = [_HistoryWriter(self.folder), *([self.live_output] if self.live_output else []), *listeners]
        self.recorder = Recorder(plan.metric_key, listeners, extra=compression.history_columns(recipe, self.target))
        self.best: BestWeights | None = None
        self.stopped_early = False
        self.lr_found: float | None = None
        self.report_before: dict | None = None
        self.quantized = None
        self.trainer: pl.Trainer | None = None
        self.seconds = 0.0
        own_steps = plan.model.is_lightning
        sample = compression.sample_input(self)
        self.threads = None if own_steps else threads_for(self.target, sample, recipe.batch_size)
        if not own_steps and self.strategy == "auto" and not recipe.prune:  # torch's pruning needs contiguous weights
            self.module.channels_last = use_channels_last(self.target, sample, "mixed" in recipe.precision)

    def fit(self, epochs: int, *, track_best: bool = True, early_stopping: bool = True, callbacks=()) -> None:
        """One Trainer fit of `epochs` epochs; the best weights of this stage are restored at its end."""
        recipe = self.recipe
        self.best = BestWeights(self.target, self.monitor, self.mode, self.folder.weights) if track_best else None
        stage_callbacks = [self.recorder, self.guard, *([self.best] if self.best else []), *callbacks]
        es = recipe.early_stopping
        if es and early_stopping:
            stage_callbacks.append(EarlyStopping(monitor=self.monitor, patience=es.patience, min_delta=es.min_delta,
                                                 mode=self.mode, check_finite=True))
        self.recorder.epoch_offset = len(self.recorder.rows)
        trainer = pl.Trainer(
            max_epochs=epochs, accelerator="auto", devices=recipe.devices, num_nodes=recipe.nodes,
            strategy=self.strategy,
            precision=recipe.precision, gradient_clip_val=recipe.grad_clip, accumulate_grad_batches=recipe.accumulate,
            callbacks=stage_callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=10**9,
        )
        self.module.train()  # a stage may follow pruning or evaluation, which leave the model in eval mode
        threads = torch.get_num_threads()
        if self.threads is not None and self.strategy == "auto":
            torch.set_num_threads(self.threads)
        try:
            if self.strategy in FORKED_STRATEGIES:
                self._fit_in_workers(trainer)
            else:
                trainer.fit(self.module, train_dataloaders=self.data.train, val_dataloaders=self.data.val)
        finally:
            torch.set_num_threads(threads)
        self.trainer = trainer
        self.stopped_early |= bool(es and early_stopping and trainer.should_stop and not self.guard.requested)

    def _fit_in_workers(self, trainer: pl.Trainer) -> None:
        """Fit in forked worker processes; their records come back through the run folder.

        The workers' callbacks write the history and the best weights to disk (rank 0 only); this
        process shows them live by reading the folder, then loads them back when the fit ends.
        """
        done = threading.Event()
        watcher = threading.Thread(target=self._watch_folder, args=(done, trainer), daemon=True)
        watcher.start()
        try:
            trainer.fit(self.module, train_dataloaders=self.data.train, val_dataloaders=self.data.val)
        except ProcessRaisedException as exc:
            raise self._worker_failure(exc) from None
        finally:
            done.set()
            watcher.join()
        history = self.folder.path / "history.csv"
        if history.exists():
            self.recorder.rows = pd.read_csv(history).to_dict("records")
        # The workers' Trainer stopped, not this one: fewer epochs than asked, unasked, is early stopping.
        ran = len(self.recorder.rows) - self.recorder.epoch_offset
        self.stopped_early |= bool(self.recipe.early_stopping and not self.guard.requested
                                   and ran < trainer.max_epochs)
        if self.best is not None and self.folder.weights.exists():
            state = torch.load(self.folder.weights, weights_only=True)
            self.target.load_state_dict(state)
            self.best.best_state = state
            rows = self.recorder.rows[self.recorder.epoch_offset:]
            values = [row.get(self.monitor) for row in rows]
            if values:
                pick = max if self.mode == "max" else min
                self.best.best_epoch = values.index(pick(values)) + 1

    def _worker_failure(self, exc) -> "WorkerError":
        """One line naming the process and its error; the worker's whole traceback goes to the run folder."""
        trace = str(exc).strip()
        (self.folder.path / "error.txt").write_text(trace + "\n")
        last = trace.splitlines()[-1] if trace else type(exc).__name__
        return WorkerError(f"process {exc.error_index} of {self.recipe.devices} failed (its traceback is in "
                           f"{self.folder.path / 'error.txt'}): {last}")

    def _watch_folder(self, done: threading.Event, trainer: pl.Trainer) -> None:
        """Show the workers' epochs as they land, tell this process's listeners, and pass stops on.

        A listener asks to stop the way it would in one process, with ``trainer.should_stop`` (a
        sweep's pruner does); the workers hear it, like the Stop button, as SIGINT, which their
        interrupt guards turn into a stop of all ranks at the same step.
        """
        seen, signalled = 0, False
        while not done.wait(1.0):
            seen = self._deliver_rows(trainer, seen)
            if (self.guard.requested or trainer.should_stop) and not signalled:
                signalled = True
                for process in getattr(trainer.strategy.launcher, "procs", []) or []:
                    with contextlib.suppress(ProcessLookupError, AttributeError):
                        os.kill(process.pid, signal.SIGINT)
        self._deliver_rows(trainer, seen)  # the epochs that landed after the last look

    def _deliver_rows(self, trainer: pl.Trainer, seen: int) -> int:
        history = self.folder.path / "history.csv"
        try:
            rows = pd.read_csv(history).to_dict("records") if history.exists() else []
        except (OSError, ValueError, pd.errors.EmptyDataError):
            return seen
        if len(rows) <= seen:
            return seen
        for row in rows[seen:]:
            for listener in self.parent_listeners:
                listener.on_epoch(self.recorder, trainer, row)
        if self.live_output is not None:
            self.live_output.replay(rows, f"{self.recipe.devices} processes")
        return len(rows)

    def run_stages(self) -> None:
        recipe = self.recipe
        if isinstance(self.data.train, TensorBatches):
            self.data.train.generator.manual_seed(recipe.seed)  # same batches for the same seed, run after run
        pl.seed_everything(recipe.seed, verbose=False)
        if recipe.lr_find:
            self.lr_found = _run_lr_find(self.plan, self.module, self.folder, self.live)
        if self.live_output:
            self.live_output.start()
        started = time.perf_counter()
        compression.run(self)
        self.seconds = time.perf_counter() - started

    def fail(self, exc: BaseException) -> None:
        if self.best is not None:
            self.best.restore()
        self.folder.write_history(self.recorder.rows)
        self.folder.write_status(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])

    def scores(self, net=None) -> dict:
        return _final_scores(self.plan, self.module, self.trainer, net)

    def finish(self) -> Run:
        plan, recipe, folder = self.plan, self.recipe, self.folder
        scores = self.scores()
        metrics = dict(scores)
        if self.quantized is not None:
            quantized_scores = self.scores(self.quantized)
            metrics = {**{f"float_{k}": v for k, v in scores.items()}, **quantized_scores}
            buffer = io.BytesIO()
            torch.save(self.quantized, buffer)  # the whole module: int8 layers have no plain state_dict twin
            atomic_write_bytes(folder.path / "model-int8.pt", buffer.getvalue())
        if self.lr_found is not None:
            metrics["lr_found"] = self.lr_found
        best = self.best
        if best is not None and best.best_state is not None:
            metrics["best_epoch"] = best.best_epoch + self.recorder.epoch_offset
        else:
            metrics["best_epoch"] = len(self.recorder.rows) or None
        metrics.update(epochs_run=len(self.recorder.rows), seconds=self.seconds,
                       parameters=sum(p.numel() for p in self.target.parameters()))
        if self.strategy != "auto":  # starting processes and their process group is not training time
            trained = sum(row.get("seconds", 0.0) for row in self.recorder.rows)
            metrics.update(seconds=trained, startup_seconds=max(self.seconds - trained, 0.0))
        compression.add_metrics(self, metrics)
        status = "interrupted" if self.guard.requested else "stopped early" if self.stopped_early else "finished"
        note = ""
        if status == "interrupted":
            kept = f"best weights from epoch {metrics['best_epoch']}" if best and best.best_state else "the weights so far"
            note = f"Interrupted after {len(self.recorder.rows)} epoch(s): kept {kept} and the history."
        save_weights(loadable_state(self.target.state_dict()), folder.weights)
        folder.write_status(status=status, finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                            best=metrics.get(plan.metric_key), epochs_run=len(self.recorder.rows))
        atomic_write_text(folder.path / "metrics.json", json.dumps(metrics, indent=2, default=float))
        model = self.quantized if self.quantized is not None else \
            (self.target if not plan.model.is_lightning else self.module)
        run = Run(name=folder.name, folder=folder.path, recipe=recipe, model=model,
                  history=pd.DataFrame(self.recorder.rows), metrics=metrics, status=status,
                  metric_key=plan.metric_key, model_label=plan.model.label, data_label=self.data.description,
                  normalization=self.data.normalization.to_dict() if self.data.normalization else None, note=note)
        SESSION_RUNS[run.name] = run
        if self.live_output:
            self.live_output.finish(run)
        return run


def _lightning_module(plan: Plan):
    """Our RecipeModule around a plain model; a user's LightningModule as it is, with the recipe's optimizer."""
    recipe, data = plan.recipe, plan.data
    augmenter = build_augmenter(recipe.augment, data.input_shape, data.task, data.num_classes)
    if not plan.model.is_lightning:
        loss_fn = build_loss(plan.loss, data.task, data.num_classes)
        module = RecipeModule(plan.model.net, loss_fn, recipe, data.task, data.num_classes, data.normalization,
                              augmenter)
        if plan.teacher is not None:
            module.set_teacher(plan.teacher, recipe.distill.temperature, recipe.distill.alpha)
        return module, plan.model.net
    module = plan.model.net
    module.lr_override, module.use_schedule = None, True
    wants_recipe_optimizer = any(k in recipe.raw for k in ("optimizer", "scheduler", "lr_find"))
    if wants_recipe_optimizer or not is_overridden("configure_optimizers", module, pl.LightningModule):
        module.configure_optimizers = types.MethodType(
            lambda self: configure_from_recipe(self, recipe, recipe.epochs, self.lr_override, self.use_schedule),
            module)
    if augmenter is not None or data.normalization is not None:
        _prepare_batches(module, augmenter, data.normalization)
    return module, module


def _prepare_batches(module: pl.LightningModule, augmenter, normalization) -> None:
    """A user's own steps stay as they are; their batches arrive augmented (training only) and normalised."""
    original = module.on_after_batch_transfer

    def on_after_batch_transfer(batch, dataloader_idx):
        batch = original(batch, dataloader_idx)
        x, y = batch[0], batch[1]
        if augmenter is not None and module.trainer is not None and module.trainer.training:
            x, y = augmenter(x, y)
        if normalization is not None:
            x = normalization.apply(x)
        return (x, y, *batch[2:])

    module.on_after_batch_transfer = on_after_batch_transfer


def _run_lr_find(plan: Plan, module, folder: RunFolder, live: bool) -> float:
    """The LR range test; its curve is saved with the run and shown before training starts."""
    result = find_lr(module, plan.data.train, plan.data.val, folder.path, progress=live)
    module.lr_override = result.suggestion
    frame = pd.DataFrame({"lr": result.lrs, "loss": result.losses})
    atomic_write_text(folder.path / "lr_find.csv", frame.to_csv(index=False))
    if live:
        if in_notebook():
            from IPython.display import display
            display(draw_lr_find(result.lrs, result.losses, result.suggestion))
        else:
            print(f"LR range test: training with the suggested lr {result.suggestion:.3g}")
    return result.suggestion


def _final_scores(plan: Plan, module, trainer: pl.Trainer, net=None) -> dict:
    """Scores of the returned (best) weights — what `run.model` really does, not the last epoch."""
    key = metric_name(plan.data.task)
    splits = {"val": plan.data.val, **({"test": plan.data.test} if plan.data.test is not None else {})}
    scores = {}
    for split, loader in splits.items():
        if isinstance(module, RecipeModule):
            with unsharded():
                result = evaluate(module, loader, net)
            scores[f"{split}_loss"], scores[f"{split}_{key}"] = result["loss"], result[key]
        else:
            logged = trainer.validate(module, dataloaders=loader, verbose=False)[0]
            for name, value in logged.items():
                scores[name.replace("val_", f"{split}_", 1) if split == "test" else name] = float(value)
    return scores
