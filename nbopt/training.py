"""``train``: Recipe → Plan → stages executed on Lightning → Run.

Compression says which stages a run has (nbopt.compression); this module executes them in order
— fits through nbopt.fitting, measuring, pruning, quantizing — and then records the result. The
magics, the CLI, compare, sweep and the panel all come through here.
"""
from __future__ import annotations

import atexit
import io
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from nbopt._perf import batches_with_own_pages, threads_for, tune_allocator, use_channels_last
from nbopt._quiet import quiet_lightning
from nbopt.callbacks.best_weights import loadable_state
from nbopt.callbacks.interrupt import InterruptGuard
from nbopt.callbacks.recorder import Listener, Recorder
from nbopt.compression import history_column, plan_stages
from nbopt.data.loaders import TensorBatches, unsharded
from nbopt.display.live import LiveOutput
from nbopt.display.plots import draw_lr_find
from nbopt.environment import in_notebook
from nbopt.errors import RecipeError
from nbopt.fitting import FORKED_STRATEGIES, Fitter
from nbopt.interpretation import interpret
from nbopt.lightning_package import package_of
from nbopt.liveness import LIVE, Heartbeat, stamp
from nbopt.loggers import Tracker, Tracking
from nbopt.module import RecipeModule, build_lightning_module, evaluate
from nbopt.parallel import is_distributed_child, lightning_strategy
from nbopt.plan import Plan, check
from nbopt.recipe import Recipe
from nbopt.resume import Resume, restore_pruning_masks
from nbopt.resume import prepare as prepare_resume
from nbopt.run import Run, recipe_text, remember
from nbopt.stages import FINISHING, Fit, MakePermanent, Measure, PruneWeights, Quantize, RemoveChannels, total_epochs
from nbopt.store import (RunFolder, RunGroup, atomic_write_bytes, atomic_write_text, json_text, runs_folder_errors,
                         runs_root, save_weights)
from nbopt.techniques.lr_find import find_lr
from nbopt.techniques.measure import count_macs, profile
from nbopt.techniques.prune import ChannelPruner, GradualPruning, make_permanent, measured_sparsity, prune_to
from nbopt.techniques.quantize import quantize_dynamic


def train(recipe: str | dict | Recipe, namespace: dict | None = None, *, name: str | None = None,
          resume: str | None = None, live: bool = True, stop: InterruptGuard | None = None, sink=None) -> Run:
    """Train once from a recipe and return the Run (best weights, history, metrics).

    `namespace` is where recipe names like ``model: net`` are looked up (default: the notebook's
    variables). `resume=NAME` goes on with run NAME from its last checkpoint, in its folder and
    history (nbopt.resume says which runs and recipes may). `live=False` trains silently; `sink`
    sends the live status and figure somewhere else than the cell (the panel's widgets).
    Interrupting the kernel — or `stop.request_stop()` — stops after the current step and still
    returns the Run, marked interrupted.
    """
    return execute(check(recipe, namespace, interactive=in_notebook()), name=name, resume=resume, live=live,
                   stop=stop, sink=sink)


def execute(plan: Plan, *, name: str | None = None, resume: str | None = None, live: bool = True,
            stop: InterruptGuard | None = None, listeners: list[Listener] = (), sink=None,
            tracking: Tracking | None = None, group: RunGroup | None = None) -> Run:
    """Train a checked plan. `listeners` hear every step and epoch (compare's board, a sweep's pruner);
    `tracking` names the experiment and tags of the run in the recipe's `logger:`s (compare, sweep);
    `group` is the compare's or sweep's folder that the run's folder goes in."""
    if name and resume:
        raise RecipeError(f"--name {name} and --resume {resume} go separately: a resumed run keeps its own folder "
                          "and name; leave out --name")
    tune_allocator()
    session = _Session(plan, name, live, stop or InterruptGuard(), listeners, sink, resume, tracking, group)
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


class _HistoryWriter(Listener):
    """Writes the history after every epoch from the run folder's writer thread, while the next epoch trains:
    a dead kernel loses the epoch in flight and at most half a second before it (store.WRITE_INTERVAL_S).
    A write that fails stops the run after the step it fails in."""

    def __init__(self, folder: RunFolder):
        self.folder = folder

    def on_epoch(self, recorder, trainer, row):
        rows, folder = list(recorder.rows), self.folder
        folder.write_later("history.csv", lambda: folder.write_history(rows, synced=False))
        folder.write_later("run.json", lambda: folder.write_status(epochs_run=len(rows), heartbeat=time.time(),
                                                                  synced=False))


def _open_folder(plan: Plan, name: str | None, resume: Resume | None, group: RunGroup | None) -> RunFolder:
    """The run's folder (a resumed run's own); an extra DDP process of `nbopt run` writes a throw-away
    one (rank 0 keeps the records)."""
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    if is_distributed_child():
        folder = RunFolder(Path(tempfile.mkdtemp(prefix="nbopt-rank-")))
        atexit.register(shutil.rmtree, folder.path, True)
    elif resume is not None:
        folder = resume.folder
        folder.write_status(resumed=now, finished=None, error=None)
        (folder.path / "metrics.json").unlink(missing_ok=True)  # an earlier finish's; this run scores anew
    else:
        folder = RunFolder.create(name or plan.recipe.name, group)
        folder.write_status(name=folder.name, started=now, epochs_run=0)
    folder.write_recipe(recipe_text(plan.recipe))
    folder.write_status(status=LIVE, **stamp(), model=plan.model.label, data=plan.data.description.split(":")[0],
                        metric=plan.metric_key)
    return folder


class _Session:
    """One run while it executes its stages: the module, its folder, the history, and what happened."""

    def __init__(self, plan: Plan, name: str | None, live: bool, guard: InterruptGuard, listeners, sink=None,
                 resume: str | None = None, tracking: Tracking | None = None, group: RunGroup | None = None):
        recipe = plan.recipe
        self.plan, self.recipe, self.guard = plan, recipe, guard
        self.stages = plan_stages(recipe, plan.teacher is not None)
        strategy = lightning_strategy(recipe, plan.interactive)
        if is_distributed_child():
            live, listeners = False, ()
        self.tracker = Tracker(recipe, tracking) if recipe.logger and not is_distributed_child() else None
        listeners = [*listeners, *([self.tracker] if self.tracker else [])]
        self.resume = prepare_resume(resume, recipe, self.stages, checked=not is_distributed_child()) \
            if resume else None
        with runs_folder_errors(runs_root()):  # unwritable, or a full disk: one line before any training
            self.folder = _open_folder(plan, name, self.resume, group)
        for listener in listeners:
            listener.on_start(self.folder)
        self.folder.on_write_error = lambda exc: guard.request_stop()
        self.heartbeat = Heartbeat(self.folder)
        self.module, self.target = build_lightning_module(plan)
        self.lightning = package_of(self.module)  # the package whose Trainer, callbacks and seeding train it
        self.live = live
        self.live_output = LiveOutput(self.folder.name, total_epochs(self.stages), plan.metric_key,
                                      sink=sink) if live else None
        forked = strategy in FORKED_STRATEGIES
        # Forked workers cannot draw into this kernel's outputs: they write the folder, which the Fitter watches.
        own = [_HistoryWriter(self.folder)] + ([] if forked else [*([self.live_output] if live else []), *listeners])
        self.recorder = Recorder.on(self.lightning)(plan.metric_key, own, extra=self._extra_columns())
        threads = None if plan.model.is_lightning else threads_for(self.target, plan.sample_input, recipe.batch_size)
        self.fitter = Fitter(plan, self.module, self.target, self.recorder, guard, self.folder, strategy, threads,
                             watchers=listeners if forked else (),
                             replay=self.live_output.replay if forked and self.live_output else None)
        if not plan.model.is_lightning and strategy == "auto" and not recipe.prune:  # pruning needs contiguous weights
            self.module.channels_last = use_channels_last(self.target, plan.sample_input, "mixed" in recipe.precision)
        self.lr_found: float | None = None
        self.report_before: dict | None = None
        self.quantized = None
        self.channel_pruner: ChannelPruner | None = None
        self.seconds = 0.0

    def _extra_columns(self):
        column = history_column(self.recipe)
        if column == "parameters":
            return lambda: {"parameters": sum(p.numel() for p in self.target.parameters())}
        if column == "sparsity":
            return lambda: {"sparsity": measured_sparsity(self.target)}
        return None

    # -- executing the stages ------------------------------------------------------------------
    def run_stages(self) -> None:
        self.heartbeat.start()
        if isinstance(self.plan.data.train, TensorBatches):
            self.plan.data.train.generator.manual_seed(self.recipe.seed)  # same batches for the same seed
        self.lightning.seed_everything(self.recipe.seed, verbose=False)
        checkpoint = self.resume.checkpoint if self.resume else None
        first = self.resume.stage if checkpoint else 0
        if checkpoint:  # what the stages before the checkpoint's left behind
            self.lr_found, self.report_before = self.resume.state.get("lr_found"), self.resume.state.get("report")
        elif self.recipe.lr_find:
            self.lr_found = _run_lr_find(self.plan, self.module, self.folder, self.live)
        if self.live_output:
            self.live_output.start(self.resume.describe() if self.resume else None)
        started = time.perf_counter()
        for index, stage in enumerate(self.stages):
            if index < first:
                if isinstance(stage, RemoveChannels):  # replayed on fresh weights: the checkpoint's shapes, then
                    self._remove_channels(stage)       # its weights (the channel counts per step are fixed)
                continue
            stopped = self.guard.requested or self.fitter.divergence
            if stopped and not isinstance(stage, FINISHING):
                continue
            self._execute(index, stage, checkpoint if index == first else None)
        self.seconds = time.perf_counter() - started

    def _execute(self, index: int, stage, checkpoint: Path | None = None) -> None:
        if isinstance(stage, Fit):
            self.module.lr_override = stage.lr or self.lr_found
            self.module.use_schedule = stage.schedule
            gradual = stage.prune_while_training
            callbacks = [GradualPruning.on(self.lightning)(self.target, gradual.method, gradual.amount,
                                                           gradual.epochs, gradual.global_)] if gradual else []
            if checkpoint is not None:
                restore_pruning_masks(self.module, checkpoint)
            state = {"stage": index, "lr_found": self.lr_found, "report": self.report_before}
            self.fitter.fit(stage, callbacks, state, checkpoint)
        elif isinstance(stage, Measure):
            model = self.plan.teacher if stage.model == "teacher" else self.target
            score = {self.plan.metric_key: self.scores(model).get(self.plan.metric_key)} if stage.scored else {}
            self.report_before = {"model": stage.label, **profile(model, self.plan.sample_input, score)}
        elif isinstance(stage, PruneWeights):
            prune_to(self.target, stage.method, stage.amount, stage.global_)
        elif isinstance(stage, RemoveChannels):
            self._remove_channels(stage)
        elif isinstance(stage, MakePermanent):
            make_permanent(self.target)
        elif isinstance(stage, Quantize):
            self.quantized = quantize_dynamic(self.target)

    def _remove_channels(self, stage: RemoveChannels) -> None:
        """One step of Torch-Pruning's iterative pruner, made at the first step and kept for the others."""
        data = self.plan.data
        if self.channel_pruner is None:
            self.channel_pruner = ChannelPruner(self.target, self.plan.sample_input.unsqueeze(0), stage.amount,
                                                stage.steps, stage.importance, stage.global_)
        batches = None
        if self.channel_pruner.needs_gradients:
            batches = [(data.normalization.apply(x) if data.normalization else x, y)
                       for x, y in list(data.train)[:4]]
        self.channel_pruner.step(batches, getattr(self.module, "loss_fn", None))

    def scores(self, net=None) -> dict:
        """Scores of the returned (best) weights, or of `net` fed the same inputs."""
        return final_scores(self.plan, self.module, self.fitter.trainer, None if net is self.target else net)

    # -- recording the result ------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        self.heartbeat.stop()
        self.folder.settle()
        if self.fitter.best is not None:
            self.fitter.best.restore()
        with self.folder.mid_run():  # the exception that ended the run is the one to see
            self.folder.write_history(self.recorder.rows)
            self.folder.write_status(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        if self.tracker is not None:
            self.tracker.finish(None, "failed")

    @property
    def returned_model(self):
        """What run.model is: the int8 model of a quantized run, a user's own LightningModule, else the net."""
        if self.quantized is not None:
            return self.quantized
        return self.module if self.plan.model.is_lightning else self.target

    def _status(self) -> str:
        if self.folder.write_error is not None:
            return "failed"
        if self.guard.requested:
            return "interrupted"
        if self.fitter.divergence:
            return "diverged"
        return "stopped early" if self.fitter.stopped_early else "finished"

    def _note(self, status: str, results: dict) -> str:
        """One line for a run that did not simply finish: what happened, what was kept, what to try."""
        rows, kept = self.recorder.rows, results.get("best_epoch")
        if status == "interrupted":
            best = self.fitter.best
            what = f"best weights from epoch {kept}" if best and best.best_state else "the weights so far"
            return f"Interrupted after {len(rows)} epoch(s): kept {what} and the history."
        if status == "failed":
            error = self.folder.write_error
            what = f"best weights from epoch {kept}" if self.fitter.best and self.fitter.best.best_state else \
                "weights of the last step"
            reason = error.strerror or str(error)
            return (f"Stopped after {len(rows)} epoch(s): the run's folder could not be written ({reason}); the "
                    f"returned Run holds the {what}, and {self.folder.path} what was written before. "
                    "Free some space, or set NBOPT_RUNS_DIR to a folder on another disk.")
        if status == "diverged":
            epoch, column, value = self.fitter.divergence
            what = (f"kept the best weights, from epoch {kept}" if kept else
                    "no epoch had finite losses, so the model holds its starting weights")
            return (f"Diverged: {column} became {value} in epoch {epoch}; stopped there and {what}. Try a lower "
                    "learning rate, `grad_clip: 1.0`, or check the data for NaN or huge values.")
        return ""

    def finish(self) -> Run:
        self.heartbeat.stop()
        self.folder.settle()  # the best weights seen while training, before the final ones
        plan, folder, rows = self.plan, self.folder, self.recorder.rows
        with batches_with_own_pages():  # passes over the validation split: no heap growth from them
            results = self._results()
        status = self._status()
        note = self._note(status, results)
        with folder.mid_run():  # each on its own: after a full disk, the small status file may still fit
            save_weights(loadable_state(self.target.state_dict()), folder.weights)
        with folder.mid_run():
            folder.write_status(status=status, finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                                best=results.get(plan.metric_key), metric=plan.metric_key, epochs_run=len(rows),
                                note=note or None)
        with folder.mid_run():
            atomic_write_text(folder.path / "metrics.json", json_text(results))
        if self.tracker is not None:
            self.tracker.finish(results, status)
        run = Run(name=folder.name, folder=folder.path, recipe=self.recipe, model=self.returned_model,
                  history=pd.DataFrame(rows), metrics=results, status=status, metric_key=plan.metric_key,
                  model_label=plan.model.label, data_label=plan.data.description,
                  normalization=plan.data.normalization.to_dict() if plan.data.normalization else None, note=note,
                  classes=plan.data.classes, inputs=plan.data.inputs, validation=plan.data.val,
                  task=plan.data.task, float_model=self.target if self.quantized is not None else None)
        remember(run)
        if self.live_output:
            self.live_output.finish(run)
        return run

    def _results(self) -> dict:
        """The run's metrics: the returned model's scores, when it was best, how long it took, the report."""
        scores = self.scores()
        results = dict(scores)
        if self.quantized is not None:
            results = {**{f"float_{k}": v for k, v in scores.items()}, **self.scores(self.quantized)}
            buffer = io.BytesIO()
            torch.save(self.quantized, buffer)  # the whole module: int8 layers have no plain state_dict twin
            with self.folder.mid_run():
                atomic_write_bytes(self.folder.path / "model-int8.pt", buffer.getvalue())
        if self.lr_found is not None:
            results["lr_found"] = self.lr_found
        rows = self.recorder.rows
        results["best_epoch"] = self.fitter.best_epoch or (None if self.fitter.divergence else len(rows) or None)
        results.update(epochs_run=len(rows), seconds=self.seconds,
                       parameters=sum(p.numel() for p in self.target.parameters()))
        if self.fitter.strategy != "auto":  # starting processes and their process group is not training time
            trained = sum(row.get("seconds", 0.0) for row in rows)
            results.update(seconds=trained, startup_seconds=max(self.seconds - trained, 0.0))
        if history_column(self.recipe) == "sparsity":
            results["sparsity"] = measured_sparsity(self.target)
        if self.report_before is not None:
            results["compression"] = {"before": self.report_before, "after": self._report_after(results)}
        per_class = self._per_class_f1()
        if per_class is not None:
            results["per_class_f1"] = per_class
        return results

    def _per_class_f1(self) -> dict | None:
        """F1 of every class on the validation split, for the summary (up to 20 classes fit a line)."""
        data = self.plan.data
        if data.task != "classification" or (data.num_classes or 0) > 20 or self.plan.model.is_lightning:
            return None  # a user's own LightningModule may not return class scores from forward()
        with unsharded():
            table = interpret(self.returned_model, data.val, data.task, data.classes,
                              data.normalization.apply if data.normalization else lambda x: x).per_class
        return {str(name): float(f1) for name, f1 in table["f1"].items()}

    def _report_after(self, results: dict) -> dict:
        final = self.quantized if self.quantized is not None else self.target
        key = self.plan.metric_key
        after = {"model": "after", **profile(final, self.plan.sample_input, {key: results.get(key)})}
        if self.quantized is not None:  # int8 layers do the same multiply-accumulates; the counter skips them
            after["macs"] = count_macs(self.target, self.plan.sample_input.unsqueeze(0))
        return after


def _run_lr_find(plan: Plan, module, folder: RunFolder, live: bool) -> float:
    """The LR range test; its curve is saved with the run and shown before training starts."""
    result = find_lr(module, plan.data.train, plan.data.val, folder.path, progress=live)
    frame = pd.DataFrame({"lr": result.lrs, "loss": result.losses})
    atomic_write_text(folder.path / "lr_find.csv", frame.to_csv(index=False))
    if live:
        if in_notebook():
            from IPython.display import display
            display(draw_lr_find(result.lrs, result.losses, result.suggestion))
        else:
            print(f"LR range test: training with the suggested lr {result.suggestion:.3g}")
    return result.suggestion


def final_scores(plan: Plan, module, trainer, net=None) -> dict:
    """Scores of the returned (best) weights — what `run.model` really does, not the last epoch."""
    splits = {"val": plan.data.val, **({"test": plan.data.test} if plan.data.test is not None else {})}
    scores = {}
    for split, loader in splits.items():
        if isinstance(module, RecipeModule):
            with unsharded():
                result = evaluate(module, loader, net)
            scores.update({f"{split}_{name}": value for name, value in result.items()})
        else:
            logged = trainer.validate(module, dataloaders=loader, verbose=False)[0]
            for name, value in logged.items():
                scores[name.replace("val_", f"{split}_", 1) if split == "test" else name] = float(value)
    return scores
