"""`loss:` — the training loss, adapted to the task so each works on a classifier's logits.

For classification, mse/huber/l1 compare softmax probabilities with one-hot targets and bce treats
each class as a yes/no output; nll takes log-softmax of the logits. For regression, the targets are
compared with the outputs directly.

Every loss is computed per sample and averaged here, so that `balance: weights` can weigh each
sample by its class (a mixed target by the mix of its classes) whatever the loss. Unweighted, a loss
with a mean of its own (torch's ``reduction="mean"``) uses it: one kernel instead of per-sample
values and a separate mean, forward and backward.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from nbopt.registry import Registry

LOSSES = Registry("loss", "loss")
CLASSIFICATION_ONLY = {"cross_entropy", "nll", "bce"}


class TaskLoss(torch.nn.Module):
    """A loss function applied to (outputs, targets) as the task requires, optionally class-weighted."""

    def __init__(self, name: str, fn, task: str, num_classes: int | None, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.name, self.fn, self.task, self.num_classes = name, fn, task, num_classes
        self.register_buffer("class_weights", class_weights, persistent=False)  # moves to the device with the model
        self.mean_fn = _with_own_mean(fn) if class_weights is None else None

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.mean_fn is not None:
            return self._applied(self.mean_fn, outputs, targets)
        losses = self._applied(self.fn, outputs, targets)
        if losses.dim() > 1:  # several values a sample (outputs with more dimensions): their mean per sample
            losses = losses.reshape(len(losses), -1).mean(dim=1)
        if self.class_weights is None:
            return losses.mean()
        weights = targets @ self.class_weights if targets.dtype.is_floating_point else self.class_weights[targets]
        return (weights * losses).sum() / weights.sum()  # as cross_entropy(weight=...) averages

    def _applied(self, fn, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.task == "regression":
            return fn(outputs.reshape(targets.shape), targets)
        if self.name == "cross_entropy":  # takes class indices or (mixed) class probabilities
            return fn(outputs, targets)
        soft = targets if targets.dtype.is_floating_point else F.one_hot(targets, self.num_classes).to(outputs.dtype)
        if self.name == "nll":
            return fn(F.log_softmax(outputs, dim=1), soft)
        if self.name == "bce":
            return fn(outputs, soft)
        return fn(F.softmax(outputs, dim=1), soft)


def _with_own_mean(fn):
    """The loss averaged over every value by torch itself, for one of torch's losses (per value, reduction
    none); None for a loss written here. Every sample has as many values, so it is the mean of their means."""
    if isinstance(fn, functools.partial) and fn.keywords.get("reduction") == "none":
        return functools.partial(fn.func, *fn.args, **{**fn.keywords, "reduction": "mean"})
    return None


@LOSSES.register("cross_entropy", "softmax cross-entropy (classification); label_smoothing softens the targets")
def cross_entropy(label_smoothing: float = 0.0):
    if not 0.0 <= label_smoothing <= 1.0:  # torch refuses above 1 only when called, and takes below 0 silently
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    return functools.partial(F.cross_entropy, label_smoothing=label_smoothing, reduction="none")


@LOSSES.register("nll", "negative log-likelihood of log-softmax outputs (classification)")
def nll():
    return lambda log_probs, soft_targets: -(soft_targets * log_probs).sum(dim=1)


@LOSSES.register("bce", "binary cross-entropy per class on logits (classification, one-vs-rest)")
def bce():
    return functools.partial(F.binary_cross_entropy_with_logits, reduction="none")


@LOSSES.register("mse", "mean squared error (regression; for classification on softmax vs one-hot)")
def mse():
    return functools.partial(F.mse_loss, reduction="none")


@LOSSES.register("huber", "Huber loss: squared near zero, linear beyond delta; robust to outliers")
def huber(delta: float = 1.0):
    return functools.partial(F.huber_loss, delta=delta, reduction="none")


@LOSSES.register("l1", "mean absolute error")
def l1():
    return functools.partial(F.l1_loss, reduction="none")


def build_loss(component, task: str, num_classes: int | None, key="loss", line=None,
               class_weights: torch.Tensor | None = None) -> TaskLoss:
    from nbopt.errors import RecipeError

    entry, kwargs = LOSSES.resolve(component, key, line)
    if task == "regression" and entry.name in CLASSIFICATION_ONLY:
        raise RecipeError(f"{entry.name} is a classification loss but the task is regression; "
                          "use mse, huber or l1", key=key, line=line)
    return TaskLoss(entry.name, entry.build(**kwargs), task, num_classes, class_weights)


def check_loss(component, task: str, num_classes: int | None, key: str = "loss", line: int | None = None) -> None:
    """Build the loss and try it on two samples, so that torch refusing an argument (`label_smoothing=2`) is a
    RecipeError before training, not a traceback from the first step."""
    from nbopt.errors import RecipeError, shown

    classes = max(num_classes or 2, 2)
    outputs, targets = ((torch.zeros(2, classes), torch.tensor([0, 1])) if task == "classification" else
                        (torch.zeros(2, 1), torch.zeros(2)))
    try:
        build_loss(component, task, num_classes, key, line)(outputs, targets)
    except RecipeError:
        raise
    except (ValueError, TypeError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecipeError(f"{component} cannot be used: torch says {shown(reason, 120)}; give that argument a valid "
                          "value", key=key, line=line) from None


def default_loss(task: str) -> str:
    return "cross_entropy" if task == "classification" else "mse"
