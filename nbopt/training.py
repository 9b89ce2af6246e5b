"""``train``: Recipe → LightningModule + Trainer → Run.

This is the one place that wires a plan into Lightning; the magics, the CLI and (later) compare,
sweep and the panel all come through here.
"""
from __future__ import annotations

import json
import math
import time
import types

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.utilities.model_helpers import is_overridden

from nbopt._perf import tune_allocator
from nbopt._quiet import quiet_lightning
from nbopt.callbacks.best_weights import BestWeights
from nbopt.callbacks.interrupt import InterruptGuard
from nbopt.callbacks.recorder import Listener, Recorder
from nbopt.data.loaders import TensorBatches
from nbopt.display.live import LiveOutput, in_notebook
from nbopt.display.plots import draw_lr_find
from nbopt.module import RecipeModule, configure_from_recipe, evaluate, metric_name
from nbopt.plan import Plan, check, monitor_mode
from nbopt.recipe import Recipe
from nbopt.run import Run
from nbopt.store import RunFolder, atomic_write_text
from nbopt.techniques.augment import build_augmenter
from nbopt.techniques.losses import build_loss
from nbopt.techniques.lr_find import find_lr
from nbopt.yamltext import dump_yaml


class _HistoryWriter(Listener):
    """Writes the history after every epoch, so a dead kernel loses at most the epoch in flight."""

    def __init__(self, folder: RunFolder):
        self.folder = folder

    def on_epoch(self, recorder, trainer, row):
        self.folder.write_history(recorder.rows)
        self.folder.write_status(epochs_run=len(recorder.rows))


def recipe_text(recipe: Recipe) -> str:
    raw = {k: (v if isinstance(v, (str, int, float, bool, list, dict, type(None))) else f"<{type(v).__name__}>")
           for k, v in recipe.raw.items()}
    return dump_yaml(raw)


def train(recipe: str | dict | Recipe, namespace: dict | None = None, *, name: str | None = None,
          live: bool = True, stop: InterruptGuard | None = None) -> Run:
    """Train once from a recipe and return the Run (best weights, history, metrics).

    `namespace` is where recipe names like ``model: net`` are looked up (default: the notebook's
    variables). `live=False` trains silently. Interrupting the kernel stops after the current step
    and still returns the Run, marked interrupted.
    """
    return execute(check(recipe, namespace), name=name, live=live, stop=stop)


def execute(plan: Plan, *, name: str | None = None, live: bool = True, stop: InterruptGuard | None = None,
            listeners: list[Listener] = ()) -> Run:
    """Train a checked plan. `listeners` hear every step and epoch (compare's shared live figure)."""
    tune_allocator()
    recipe, data = plan.recipe, plan.data
    folder = RunFolder.create(name or recipe.name)
    folder.write_recipe(recipe_text(recipe))
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    folder.write_status(name=folder.name, status="running", started=started, model=plan.model.label,
                        data=data.description.split(":")[0], epochs_run=0)

    module, target = _lightning_module(plan)
    es = recipe.early_stopping
    monitor = es.monitor if es else "val_loss"
    mode = monitor_mode(monitor, es.mode if es else None)
    best = BestWeights(target, monitor, mode, folder.weights)
    guard = stop or InterruptGuard()
    live_output = LiveOutput(folder.name, recipe.epochs, plan.metric_key) if live else None
    recorder = Recorder(plan.metric_key, [_HistoryWriter(folder), *([live_output] if live_output else []),
                                          *listeners])
    callbacks = [recorder, best, guard]
    if es:
        callbacks.append(EarlyStopping(monitor=monitor, patience=es.patience, min_delta=es.min_delta, mode=mode,
                                       check_finite=True))
    if isinstance(data.train, TensorBatches):
        data.train.generator.manual_seed(recipe.seed)  # same batches for the same seed, run after run

    with quiet_lightning():
        pl.seed_everything(recipe.seed, verbose=False)
        lr_found = _run_lr_find(plan, module, folder, live) if recipe.lr_find else None
        trainer = pl.Trainer(
            max_epochs=recipe.epochs, accelerator="auto", devices=1, precision=recipe.precision,
            gradient_clip_val=recipe.grad_clip, accumulate_grad_batches=recipe.accumulate,
            callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=10**9,
        )
        if live_output:
            live_output.start()
        started_at = time.perf_counter()
        try:
            trainer.fit(module, train_dataloaders=data.train, val_dataloaders=data.val)
        except BaseException as exc:
            best.restore()
            folder.write_history(recorder.rows)
            folder.write_status(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            guard.release()
        seconds = time.perf_counter() - started_at
        scores = _final_scores(plan, module, trainer)

    if guard.requested:
        status = "interrupted"
    elif es and trainer.should_stop:
        status = "stopped early"
    else:
        status = "finished"
    history = pd.DataFrame(recorder.rows)
    if lr_found is not None:
        scores["lr_found"] = lr_found
    metrics = {**scores, "best_epoch": best.best_epoch, "epochs_run": len(recorder.rows), "seconds": seconds,
               "parameters": plan.parameters, f"best_{monitor}": best.best_value if best.best_epoch else math.nan}
    note = ""
    if status == "interrupted":
        kept = f"best weights from epoch {best.best_epoch}" if best.best_epoch else "the weights so far"
        note = f"Interrupted after {len(recorder.rows)} epoch(s): kept {kept} and the history."
    if best.best_state is None:
        from nbopt.store import save_weights
        save_weights(target.state_dict(), folder.weights)
    folder.write_status(status=status, finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                        best=scores.get(plan.metric_key), epochs_run=len(recorder.rows))
    atomic_write_text(folder.path / "metrics.json", json.dumps(metrics, indent=2, default=float))
    run = Run(name=folder.name, folder=folder.path, recipe=recipe, model=target if not plan.model.is_lightning
              else module, history=history, metrics=metrics, status=status, metric_key=plan.metric_key,
              model_label=plan.model.label, data_label=data.description,
              normalization=data.normalization.to_dict() if data.normalization else None,
              note=note)
    if live_output:
        live_output.finish(run)
    return run


def _lightning_module(plan: Plan):
    """Our RecipeModule around a plain model; a user's LightningModule as it is, with the recipe's optimizer."""
    recipe, data = plan.recipe, plan.data
    augmenter = build_augmenter(recipe.augment, data.input_shape, data.task, data.num_classes)
    if not plan.model.is_lightning:
        loss_fn = build_loss(plan.loss, data.task, data.num_classes)
        module = RecipeModule(plan.model.net, loss_fn, recipe, data.task, data.num_classes, data.normalization,
                              augmenter)
        return module, plan.model.net
    module = plan.model.net
    module.lr_override = None
    wants_recipe_optimizer = any(k in recipe.raw for k in ("optimizer", "scheduler", "lr_find"))
    if wants_recipe_optimizer or not is_overridden("configure_optimizers", module, pl.LightningModule):
        module.configure_optimizers = types.MethodType(
            lambda self: configure_from_recipe(self, recipe, recipe.epochs, self.lr_override), module)
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
    result = find_lr(module, plan.data.train, plan.data.val, folder.path)
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


def _final_scores(plan: Plan, module, trainer: pl.Trainer) -> dict:
    """Scores of the returned (best) weights — what `run.model` really does, not the last epoch."""
    key = metric_name(plan.data.task)
    splits = {"val": plan.data.val, **({"test": plan.data.test} if plan.data.test is not None else {})}
    scores = {}
    for split, loader in splits.items():
        if isinstance(module, RecipeModule):
            result = evaluate(module, loader)
            scores[f"{split}_loss"], scores[f"{split}_{key}"] = result["loss"], result[key]
        else:
            logged = trainer.validate(module, dataloaders=loader, verbose=False)[0]
            for name, value in logged.items():
                scores[name.replace("val_", f"{split}_", 1) if split == "test" else name] = float(value)
    return scores
