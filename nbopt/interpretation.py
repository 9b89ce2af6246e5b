"""What the model gets wrong: ``run.interpret()`` on the validation split.

Predictions, per-sample losses and targets are collected once; the confusion matrix, per-class
scores, top losses (or, for regression, residuals and the largest errors) are plain DataFrames
computed from them, and ``plot()`` draws those — as fastai's ``ClassificationInterpretation`` does,
with the run's own normalisation and class names.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


@dataclass
class Interpretation:
    """The validation split through the returned model: `.confusion`, `.per_class`, `.top_losses(n)`,
    `.plot()`; for regression `.residuals` and `.largest_errors(n)`."""
    task: str
    classes: list
    outputs: torch.Tensor  # the model's outputs, one row per validation sample
    targets: torch.Tensor
    losses: torch.Tensor  # per sample: cross-entropy for classes, squared error for regression
    batches: object = field(repr=False)  # the validation split's raw (x, y) batches, read again for `inputs`
    input_dims: int = 2  # dimensions of a batch of inputs: 4 for images

    @functools.cached_property
    def inputs(self) -> torch.Tensor:
        """The raw inputs (images as they were stored), read from the batches when first asked for: the
        summary's scores need none, and holding them all would cost a copy of the validation split."""
        return torch.cat([torch.as_tensor(batch[0]).cpu() for batch in self.batches])

    @property
    def predicted(self) -> torch.Tensor:
        return self.outputs.argmax(dim=1) if self.task == "classification" else self.outputs.reshape(self.targets.shape)

    @property
    def is_image(self) -> bool:
        return self.input_dims == 4

    def _names(self, index) -> list:
        return [self.classes[int(i)] for i in index]

    @property
    def confusion(self) -> pd.DataFrame:
        """Counts: one row per true class, one column per predicted class."""
        self._classification_only("confusion")
        k = len(self.classes)
        counts = torch.bincount(self.targets * k + self.predicted, minlength=k * k).reshape(k, k).numpy()
        frame = pd.DataFrame(counts, index=pd.Index(self.classes, name="true"),
                             columns=pd.Index(self.classes, name="predicted"))
        return frame

    @property
    def per_class(self) -> pd.DataFrame:
        """Precision, recall, F1 and support of every class (a class never predicted has precision 0)."""
        counts = self.confusion.to_numpy().astype(float)
        hits = np.diag(counts)
        predicted, support = counts.sum(axis=0), counts.sum(axis=1)
        precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
        recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
        both = precision + recall
        f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
        return pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)},
                            index=pd.Index(self.classes, name="class"))

    def top_losses(self, n: int = 9) -> pd.DataFrame:
        """The `n` validation samples with the highest loss, worst first; `index` is the sample's position
        in the validation split, and image data brings each image (channels last) in `image`."""
        self._classification_only("top_losses (for regression: largest_errors)")
        order = torch.argsort(self.losses, descending=True)[:n]
        frame = pd.DataFrame({"index": order.numpy(), "true": self._names(self.targets[order]),
                              "predicted": self._names(self.predicted[order]),
                              "probability": F.softmax(self.outputs[order], dim=1).max(dim=1).values.numpy(),
                              "loss": self.losses[order].numpy()})
        if self.is_image:
            frame["image"] = [image.permute(1, 2, 0).squeeze(-1).numpy() for image in self.inputs[order]]
        return frame

    @property
    def residuals(self) -> pd.DataFrame:
        """Regression: prediction, target and residual (target − prediction) of every validation sample."""
        self._regression_only("residuals")
        predicted, target = self.predicted.reshape(len(self.targets), -1), self.targets.reshape(len(self.targets), -1)
        return pd.DataFrame({"prediction": predicted[:, 0].numpy(), "target": target[:, 0].numpy(),
                             "residual": (target - predicted)[:, 0].numpy()})

    def largest_errors(self, n: int = 10) -> pd.DataFrame:
        """Regression: the `n` samples with the largest absolute error, worst first."""
        frame = self.residuals
        order = frame["residual"].abs().sort_values(ascending=False).index[:n]
        return frame.loc[order].rename_axis("index").reset_index()

    def plot(self, n: int = 9):
        """Confusion matrix and the top losses (images with true/predicted labels); for regression,
        residuals against predictions and their histogram."""
        from nbopt.display.interpretation import draw_interpretation
        from nbopt.display.plots import register_figure_formatter
        register_figure_formatter()
        return draw_interpretation(self, n)

    def _classification_only(self, what: str) -> None:
        if self.task != "classification":
            raise ValueError(f"{what} is for classification runs; this run is a regression")

    def _regression_only(self, what: str) -> None:
        if self.task != "regression":
            raise ValueError(f"{what} is for regression runs; for classification see confusion and top_losses")

    def _repr_html_(self) -> str:
        if self.task == "classification":
            return f"<div><b>nbopt interpretation</b>{self.per_class.to_html(float_format=lambda v: f'{v:.3f}')}</div>"
        return f"<div><b>nbopt interpretation</b>{self.largest_errors(5).to_html()}</div>"


class _Rows:
    """Rows of every batch in one tensor, allocated once when the number of rows is known.

    Kept as a list of small per-batch tensors, they land between the batches' large temporaries, which
    then cannot be reused: the heap grew by a batch at a time, up to twice the validation split
    (benchmarks/memory.py). Without a known total, the batches' rows are concatenated at the end.
    """

    def __init__(self, total: int | None):
        self.total, self.parts, self.whole, self.filled = total, [], None, 0

    def add(self, rows: torch.Tensor) -> None:
        if self.total is None:
            self.parts.append(rows)
            return
        if self.whole is None:
            self.whole = rows.new_empty((self.total, *rows.shape[1:]))
        self.whole[self.filled:self.filled + len(rows)] = rows
        self.filled += len(rows)

    def gathered(self) -> torch.Tensor:
        if self.total is None:
            return torch.cat(self.parts)
        return self.whole[:self.filled] if self.whole is not None else torch.empty(0)


@torch.no_grad()
def interpret(model, batches, task: str, classes: list | None, prepare) -> Interpretation:
    """Run `batches` of raw (x, y) through `prepare` (normalisation) and `model`, keeping everything
    needed to explain the predictions. `classes` names the outputs (None: their indices)."""
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    total = getattr(batches, "size", None)  # rows of an in-memory split (TensorBatches)
    outputs, targets = _Rows(total), _Rows(total)
    input_dims = 2
    for batch in batches:
        x, y = torch.as_tensor(batch[0]), torch.as_tensor(batch[1])
        input_dims = x.ndim
        outputs.add(model(prepare(x.float()).to(device)).float().cpu())
        targets.add(y.cpu())
    outputs, targets = outputs.gathered(), targets.gathered()
    if task == "classification":
        targets = targets.long()
        losses = F.cross_entropy(outputs, targets, reduction="none")
        names = list(classes) if classes is not None else list(range(outputs.shape[1]))
    else:
        losses = ((outputs.reshape(targets.shape) - targets.float()) ** 2).reshape(len(targets), -1).mean(dim=1)
        names = []
    return Interpretation(task, names, outputs, targets, losses, batches, input_dims)
