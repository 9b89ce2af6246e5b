"""``Run``: what a training run leaves behind — the model with its best weights, the history, the
metrics and where everything is saved."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch import nn

from nbopt.display.plots import draw_history, register_figure_formatter
from nbopt.display.summary import summary_html, summary_text


class Run:
    def __init__(self, *, name: str, folder: Path, recipe, model: nn.Module, history: pd.DataFrame, metrics: dict,
                 status: str, metric_key: str, model_label: str, data_label: str, normalization: dict | None,
                 note: str = ""):
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
        register_figure_formatter()
        return draw_history({self.name: self.history}, self.metric_key, f"run '{self.name}'")

    @torch.no_grad()
    def predict(self, x) -> torch.Tensor:
        """Model outputs for raw inputs: the run's normalisation is applied first, as in training."""
        x = torch.as_tensor(x, dtype=torch.float32)
        if self.normalization is not None:
            mean = torch.tensor(self.normalization["mean"])
            std = torch.tensor(self.normalization["std"])
            shape = [1, -1, 1, 1] if x.ndim == 4 else [1, *x.shape[1:]]
            if mean.numel() > 1:
                mean, std = mean.reshape(shape), std.reshape(shape)
            x = (x - mean) / std
        self.model.eval()
        device = next(self.model.parameters(), torch.empty(0)).device
        return self.model(x.to(device))

    def _repr_html_(self) -> str:
        return summary_html(self)

    def __repr__(self) -> str:
        return summary_text(self)


def load_run(name: str, namespace: dict | None = None) -> Run:
    """A Run from its folder: the model is rebuilt from the saved recipe and filled with best.pt.

    Works for runs made by other processes (sweep workers, `nbopt run`). Models whose shape was
    changed by channel pruning cannot be rebuilt from the recipe; their Run has ``model=None``.
    """
    import json

    from nbopt.errors import RecipeError
    from nbopt.plan import check
    from nbopt.store import find_run
    folder = find_run(name)
    plan = check((folder.path / "recipe.yaml").read_text(), namespace)
    model = plan.model.net
    try:
        model.load_state_dict(torch.load(folder.weights, weights_only=True))
    except RuntimeError:
        model = None
    try:
        history = pd.read_csv(folder.path / "history.csv")
        metrics = json.loads((folder.path / "metrics.json").read_text())
    except OSError as exc:
        raise RecipeError(f"run '{name}' has no finished record ({exc.strerror}: {exc.filename})") from None
    status = folder.read_status()
    return Run(name=folder.name, folder=folder.path, recipe=plan.recipe, model=model, history=history,
               metrics=metrics, status=status.get("status", ""), metric_key=plan.metric_key,
               model_label=plan.model.label, data_label=plan.data.description,
               normalization=plan.data.normalization.to_dict() if plan.data.normalization else None)
