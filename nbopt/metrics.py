"""The one metric table: for every metric name, which direction is better and how to show it.

Early stopping, LR-on-plateau, compare's ranking, a sweep's direction and the runs table all ask
this table, so "is higher better?" is decided once (as Lightning's EarlyStopping decides it with
one ``mode_dict``). A history column is a split prefix plus a metric name: ``val_acc``,
``test_mae``, ``train_loss``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

SPLITS = ("train", "val", "test", "float_val", "float_test")


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    title: str  # how plots and tables name it
    percent: bool = False  # a share in [0, 1], shown as a percentage where a sentence quotes it
    task: str | None = None  # the task whose predictions it scores; None: any task


_C, _R = "classification", "regression"
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("loss", False, "loss"),
    Metric("acc", True, "accuracy", percent=True, task=_C),
    Metric("mae", False, "mean absolute error", task=_R),
    # the extra metrics a recipe's `metrics:` adds (nbopt/techniques/scores.py builds them)
    Metric("f1", True, "F1 score", percent=True, task=_C),
    Metric("precision", True, "precision", percent=True, task=_C),
    Metric("recall", True, "recall", percent=True, task=_C),
    Metric("balanced_accuracy", True, "balanced accuracy", percent=True, task=_C),
    Metric("top_k", True, "top-k accuracy", percent=True, task=_C),
    Metric("auroc", True, "area under the ROC curve", percent=True, task=_C),
    Metric("average_precision", True, "average precision", percent=True, task=_C),
    Metric("mcc", True, "Matthews correlation coefficient", task=_C),
    Metric("kappa", True, "Cohen's kappa", task=_C),
    Metric("r2", True, "coefficient of determination", task=_R),
    Metric("mse", False, "mean squared error", task=_R),
    Metric("rmse", False, "root mean squared error", task=_R),
    Metric("mape", False, "mean absolute percentage error", task=_R),
    Metric("explained_variance", True, "explained variance", task=_R),
)}

AVERAGES = ("macro", "micro", "weighted")  # how per-class scores become one number

TASK_METRIC = {"classification": "acc", "regression": "mae"}

# A user's own LightningModule may log metrics this table does not know; their names still say which
# way is better often enough (val_f1, val_auroc, val_r2), so unknown names are read by these words.
_HIGHER_WORDS = ("acc", "f1", "auc", "r2", "precision", "recall", "iou", "dice", "map", "score")


def task_metric(task: str) -> str:
    """The metric every run of a task reports: ``acc`` for classification, ``mae`` for regression."""
    return TASK_METRIC[task]


def split_of(column: str) -> tuple[str, str]:
    """(split, metric name) of a history column: ``val_acc`` → ("val", "acc"); no prefix → ("", name)."""
    for split in sorted(SPLITS, key=len, reverse=True):
        if column.startswith(split + "_"):
            return split, column[len(split) + 1:]
    return "", column


def score_name(metric: str, average: str | None = None, k: int | None = None) -> str:
    """A metric's name in the history: ``f1``; ``f1_weighted`` for an average other than its default;
    ``top5_acc`` for top_k(k=5). :func:`parse_score` reads it back."""
    if k is not None:
        return f"top{k}_acc"
    return f"{metric}_{average}" if average else metric


def parse_score(name: str) -> tuple[str, str | None, int | None]:
    """(metric, average, k) of a history name: ``f1_weighted`` → ("f1", "weighted", None)."""
    top = re.fullmatch(r"top(\d+)_acc", name)
    if top:
        return "top_k", None, int(top[1])
    base, _, average = name.rpartition("_")
    if average in AVERAGES and base in METRICS:
        return base, average, None
    return name, None, None


def lookup(column: str) -> Metric:
    """The table's entry for a column, or one read from its name for a metric the table lacks."""
    name = split_of(column)[1]
    metric, average, k = parse_score(name)
    if metric in METRICS:
        entry = METRICS[metric]
        if k is not None:
            return replace(entry, name=name, title=f"top-{k} accuracy")
        return replace(entry, name=name, title=f"{entry.title} ({average} average)") if average else entry
    return Metric(name, any(word in name.lower() for word in _HIGHER_WORDS), name.replace("_", " "))


def higher_is_better(column: str) -> bool:
    return lookup(column).higher_is_better


def mode(column: str, given: str | None = None) -> str:
    """Lightning's word for the direction: ``max`` or ``min`` (an explicit `given` wins)."""
    return given or ("max" if higher_is_better(column) else "min")


def direction(column: str, given: str | None = None) -> str:
    """Optuna's word for the direction: ``maximize`` or ``minimize`` (an explicit `given` wins)."""
    return given or ("maximize" if higher_is_better(column) else "minimize")


def best_of(column: str, values) -> float | None:
    """The best finite value of a column's values, or None."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    return max(finite) if higher_is_better(column) else min(finite)


def fmt(value) -> str:
    """A score as tables show it: 4 significant digits, a dash for a missing one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
