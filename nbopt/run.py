"""``Run``: what a training run leaves behind — the model with its best weights, the history, the
metrics and where everything is saved — and the runs this session made, by name.

Records know nothing of drawing: ``plot()`` and the notebook summary ask the display layer when
called, so checking a recipe (which may name an earlier run as a teacher) never loads it.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from torch import nn

_SESSION_RUNS: dict[str, "Run"] = {}  # run name → Run made in this process, so later recipes can name them


def remember(run: "Run") -> None:
    """Keep a finished Run under its name for this session (a later recipe may distil from it)."""
    _SESSION_RUNS[run.name] = run


def session_run(name: str) -> "Run | None":
    return _SESSION_RUNS.get(name)


def session_run_names() -> list[str]:
    return sorted(_SESSION_RUNS)


def recipe_text(recipe) -> str:
    """The recipe as YAML; objects that only live in the notebook are written as a readable stand-in."""
    from nbopt.yamltext import dump_yaml
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


class Run:
    def __init__(self, *, name: str, folder: Path, recipe, model: nn.Module, history: pd.DataFrame, metrics: dict,
                 status: str, metric_key: str, model_label: str, data_label: str, normalization: dict | None,
                 note: str = "", classes: list | None = None, inputs=None, validation=None,
                 task: str = "classification", float_model: nn.Module | None = None):
        self.name = name
        self.folder = folder
        self.recipe = recipe
        self.model = model
        self.history = history
        self.metrics = metrics
        self.status = status  # "finished", "stopped early" or "interrupted"
        self.metric_key = metric_key
        self.model_label = model_label
        self.data_label = data_label
        self.normalization = normalization
        self.note = note
        self.classes = classes  # class names in the order of the model's outputs (None: the indices are the names)
        self.inputs = inputs  # how raw inputs become the model's tensors (arrays, data frames, image files)
        self.task = task
        self._validation = validation  # the validation split's raw (x, y) batches, for interpret()
        self.float_model = float_model  # an int8 run's float model before quantisation (ONNX export quantises it)

    @property
    def checkpoint(self) -> Path:
        """The best weights: ``model.load_state_dict(torch.load(run.checkpoint, weights_only=True))``.

        For a quantized run these are the float weights it started from; the int8 model itself
        (``run.model``) is saved whole next to them as ``model-int8.pt``.
        """
        return self.folder / "best.pt"

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"

    def plot(self):
        """The loss, metric and LR curves as a matplotlib Figure."""
        from nbopt.display.plots import draw_history, register_figure_formatter
        register_figure_formatter()
        return draw_history({self.name: self.history}, self.metric_key, f"run '{self.name}'")

    @torch.no_grad()
    def predict(self, x, labels: bool = False):
        """Model outputs for raw inputs, encoded and normalised as in training.

        With `labels=True` a classification run returns the predicted class of each input instead:
        its name when the data named its classes, else its index.
        """
        x = self.inputs.encode(x) if self.inputs is not None else torch.as_tensor(x, dtype=torch.float32)
        self.model.eval()
        device = next(self.model.parameters(), torch.empty(0)).device
        outputs = self.model(self._normalize(x).to(device))
        if not labels:
            return outputs
        index = outputs.argmax(dim=1).tolist()
        return [self.classes[i] for i in index] if self.classes is not None else index

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The run's normalisation, as training applied it to every batch."""
        if self.normalization is None:
            return x
        mean, std = normalization_tensors(self.normalization, x)
        return (x - mean) / std

    def export(self, path):
        """Write the model to `path` — ``.onnx`` (ONNX Runtime) or ``.pt2`` (torch.export) — with the
        normalisation folded in, load it back and check it against ``predict`` (nbopt.deployment says how)."""
        from nbopt.deployment import export_model
        return export_model(self, path)

    def interpret(self):
        """What the model gets wrong on the validation split: an ``Interpretation`` with the confusion
        matrix, per-class precision/recall/F1, the top losses and a plot (residuals for regression)."""
        from nbopt.interpretation import interpret
        if self._validation is None or self.model is None:
            raise ValueError(f"run '{self.name}' has no model or validation data here; "
                             f"load it with nbopt.load('{self.name}') first")
        return interpret(self.model, self._validation, self.task, self.classes, self._normalize)

    def _repr_html_(self) -> str:
        from nbopt.display.summary import summary_html
        return summary_html(self)

    def __repr__(self) -> str:
        from nbopt.display.summary import summary_text
        return summary_text(self)


def normalization_tensors(normalization: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std of a run's normalisation, shaped to broadcast over a batch like `x`."""
    mean, std = torch.tensor(normalization["mean"]), torch.tensor(normalization["std"])
    if mean.numel() > 1:
        shape = [1, -1, 1, 1] if x.ndim == 4 else [1, *x.shape[1:]]
        mean, std = mean.reshape(shape), std.reshape(shape)
    return mean, std


def load_run(name: str, namespace: dict | None = None, plan=None) -> Run:
    """A Run from its folder (a name under the runs folder, or a folder's path): the model is rebuilt
    from the saved recipe and filled with best.pt; the history and metrics are what the folder holds.

    Works for runs made by other processes (sweep workers, `nbopt run`) and for runs that never
    finished: a run whose process died reads ``died``, and a run without metrics.json gets the
    scores of its best weights on the validation split, with a note saying so. A model whose channels
    were removed gets its smaller shape by repeating the removals; one whose channels were ranked
    globally cannot be rebuilt from the recipe, and its Run has ``model=None``. `plan`: the checked plan of
    the folder's recipe, when the caller has it (a comparison's worker trained from it): its data and a
    fresh model are used instead of checking the recipe again.
    """
    from nbopt.liveness import current_status
    from nbopt.plan import check
    from nbopt.catalog import find_run
    folder = find_run(name)
    plan = plan or check((folder.path / "recipe.yaml").read_text(), namespace, interactive=False)
    model, float_model = _model_with_weights(plan, folder.weights), None
    if model is not None and plan.recipe.quantize:  # the same float weights quantise to the same int8 model
        from nbopt.techniques.quantize import quantize_dynamic
        model, float_model = quantize_dynamic(model), model
    history_file, metrics_file = folder.path / "history.csv", folder.path / "metrics.json"
    history = pd.read_csv(history_file) if history_file.exists() else pd.DataFrame()
    recorded = folder.read_status()
    status = current_status(recorded)
    metrics, note = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}, recorded.get("note") or ""
    if not metrics_file.exists() and model is not None:
        metrics, note = _recomputed_metrics(plan, history, status)
    return Run(name=folder.name, folder=folder.path, recipe=plan.recipe, model=model, history=history,
               metrics=metrics, status=status, metric_key=plan.metric_key,
               model_label=plan.model.label, data_label=plan.data.description,
               normalization=plan.data.normalization.to_dict() if plan.data.normalization else None, note=note,
               classes=plan.data.classes, inputs=plan.data.inputs, validation=plan.data.val,
               task=plan.data.task, float_model=float_model)


def _model_with_weights(plan, weights):
    """The recipe's model holding the saved weights, or None when they do not fit it (or are missing).

    A run that removed channels saved a smaller model: the removal steps are repeated on the fresh
    one until its shape is the saved one (which channels go does not matter, the weights come next;
    how many go per step is fixed by the recipe unless they were ranked globally).
    """
    from nbopt.techniques.prune import ChannelPruner
    model, prune = plan.model.net, plan.recipe.prune
    try:
        state = torch.load(weights, weights_only=True)
    except (OSError, RuntimeError):
        return None
    steps = prune.steps if prune is not None and prune.method == "channels" and not prune.global_ else 0
    pruner = ChannelPruner(model, plan.sample_input.unsqueeze(0), prune.amount, steps, "l1", False) if steps else None
    for step in range(steps + 1):
        try:
            model.load_state_dict(state)
            return model
        except RuntimeError:
            if step < steps:
                pruner.step()
    return None


def _recomputed_metrics(plan, history: pd.DataFrame, status: str) -> tuple[dict, str]:
    """An unfinished run's scores: its best weights (already in `plan.model.net`) on the validation split,
    marked ``recomputed`` — the run never scored itself, and its test split stays unseen."""
    from nbopt import metrics as metric_table
    from nbopt.module import build_lightning_module, evaluate
    if plan.model.is_lightning:
        return {}, f"The run {status} before scoring itself."
    module, _ = build_lightning_module(plan)
    scores = {f"val_{name}": value for name, value in evaluate(module, plan.data.val).items()}
    monitor = plan.recipe.early_stopping.monitor if plan.recipe.early_stopping else "val_loss"  # what best.pt kept
    values = history.get(monitor, pd.Series(dtype=float)).tolist()
    best = metric_table.best_of(monitor, values) if values else None
    best_epoch = int(history["epoch"].iloc[values.index(best)]) if best is not None else None
    recorded = {**scores, "best_epoch": best_epoch, "epochs_run": len(history), "recomputed": "val"}
    return recorded, (f"The run {status} after {len(history)} epoch(s): metrics recomputed from its best weights "
                      f"on the validation split.")
