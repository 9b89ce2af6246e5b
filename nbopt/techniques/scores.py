"""`metrics:` — extra validation metrics from torchmetrics, computed with the run's own metric.

Every entry builds one torchmetrics metric; ``Scores`` holds them all, with the run's metric (acc or
mae) first, as one ``MetricCollection`` that the module feeds once per batch. torchmetrics keeps
per-class counts (or whole predictions, for AUROC) as metric state and, with ``sync_on_compute``,
gathers them from every DDP process before computing, so a score is the whole validation split's,
not one process's average. Directions and titles live in the metric table (nbopt.metrics); the
history name of each metric (``f1_weighted``, ``top5_acc``) comes from ``metrics.score_name``.
"""
from __future__ import annotations

import torch
from torchmetrics import MetricCollection, classification as tmc, regression as tmr

from nbopt import metrics
from nbopt.components import Component
from nbopt.errors import RecipeError, closest, unknown_name_message
from nbopt.registry import Entry, Registry

SCORES = Registry("metrics", "metric")
AVERAGES: dict[str, tuple[str, ...]] = {}  # metric name -> the averages it accepts (the first is its default)
_SKIP = ("num_classes", "num_outputs", "sync")


def _averaged(name: str, summary: str, averages: tuple[str, ...] = metrics.AVERAGES):
    AVERAGES[name] = averages
    return SCORES.register(name, summary, ("average",), _SKIP)


def _plain(name: str, summary: str, positional: tuple[str, ...] = ()):
    return SCORES.register(name, summary, positional, _SKIP)


@_averaged("f1", "F1 score, the harmonic mean of precision and recall of each class")
def f1(num_classes, num_outputs, sync, average: str = "macro"):
    return tmc.MulticlassF1Score(num_classes, average=average, sync_on_compute=sync)


@_averaged("precision", "the share of each class's predictions that are right")
def precision(num_classes, num_outputs, sync, average: str = "macro"):
    return tmc.MulticlassPrecision(num_classes, average=average, sync_on_compute=sync)


@_averaged("recall", "the share of each class's samples that are found")
def recall(num_classes, num_outputs, sync, average: str = "macro"):
    return tmc.MulticlassRecall(num_classes, average=average, sync_on_compute=sync)


@_averaged("auroc", "area under the one-vs-rest ROC curve of each class, from class probabilities",
           ("macro", "weighted"))
def auroc(num_classes, num_outputs, sync, average: str = "macro"):
    return tmc.MulticlassAUROC(num_classes, average=average, sync_on_compute=sync)


@_averaged("average_precision", "area under the one-vs-rest precision-recall curve of each class",
           ("macro", "weighted"))
def average_precision(num_classes, num_outputs, sync, average: str = "macro"):
    return tmc.MulticlassAveragePrecision(num_classes, average=average, sync_on_compute=sync)


@_plain("top_k", "the share of samples whose class is among the model's k highest outputs", ("k",))
def top_k(num_classes, num_outputs, sync, k: int = 5):
    return tmc.MulticlassAccuracy(num_classes, top_k=k, average="micro", sync_on_compute=sync)


class BalancedAccuracy(tmc.MulticlassStatScores):
    """Mean recall of the classes present in the targets, as sklearn's balanced_accuracy_score:
    torchmetrics' macro recall also averages in a class that is only ever predicted, as a zero."""
    higher_is_better = True

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(num_classes, average="none", **kwargs)

    def compute(self) -> torch.Tensor:
        tp, _, _, fn = self._final_state()
        present = (tp + fn) > 0
        return (tp[present] / (tp + fn)[present]).float().mean()


@_plain("balanced_accuracy", "the mean recall of the classes present: accuracy that every class counts in equally")
def balanced_accuracy(num_classes, num_outputs, sync):
    return BalancedAccuracy(num_classes, sync_on_compute=sync)


@_plain("mcc", "Matthews correlation coefficient, from -1 to 1: 0 is chance, even with unbalanced classes")
def mcc(num_classes, num_outputs, sync):
    return tmc.MulticlassMatthewsCorrCoef(num_classes, sync_on_compute=sync)


@_plain("kappa", "Cohen's kappa: agreement with the labels beyond chance")
def kappa(num_classes, num_outputs, sync):
    return tmc.MulticlassCohenKappa(num_classes, sync_on_compute=sync)


@_plain("r2", "coefficient of determination: 1 − residual variance / target variance (averaged over targets)")
def r2(num_classes, num_outputs, sync):
    return tmr.R2Score(sync_on_compute=sync)


@_plain("mse", "mean squared error (averaged over targets)")
def mse(num_classes, num_outputs, sync):
    return tmr.MeanSquaredError(num_outputs=num_outputs, sync_on_compute=sync)


@_plain("rmse", "root mean squared error, in the targets' unit (of each target, then averaged)")
def rmse(num_classes, num_outputs, sync):
    return tmr.MeanSquaredError(squared=False, num_outputs=num_outputs, sync_on_compute=sync)


@_plain("mape", "mean absolute percentage error, as a fraction (0.1 is 10%); targets near 0 inflate it")
def mape(num_classes, num_outputs, sync):
    return tmr.MeanAbsolutePercentageError(sync_on_compute=sync)


@_plain("explained_variance", "explained variance: like r2, but a constant bias is not counted as error")
def explained_variance(num_classes, num_outputs, sync):
    return tmr.ExplainedVariance(sync_on_compute=sync)


def _run_metric(task: str, num_classes: int, sync: bool):
    """The metric every run reports: accuracy for classification, mean absolute error for regression."""
    if task == "classification":
        return tmc.MulticlassAccuracy(num_classes, average="micro", sync_on_compute=sync)
    return tmr.MeanAbsoluteError(sync_on_compute=sync)


def score_key(entry: Entry, kwargs: dict) -> str:
    """The history name of a resolved component: the name, with an average that is not the default."""
    if entry.name == "top_k":
        return metrics.score_name("top_k", k=int(kwargs.get("k", entry.params["k"])))
    average = kwargs.get("average", entry.params.get("average"))
    return metrics.score_name(entry.name, average if average != entry.params.get("average") else None)


def score_keys(components: list[Component]) -> list[str]:
    return [score_key(*SCORES.resolve(component)) for component in components]


class Scores(MetricCollection):
    """The run's metric and the recipe's `metrics:` for one split, fed once per batch.

    Classification metrics get class probabilities (AUROC ranks them, the others take their argmax)
    and class labels; regression metrics get the outputs in the targets' shape. `sync=False` scores
    this process's batches alone (final scoring, where every process sees the whole split).
    """

    def __init__(self, components: list[Component], task: str, num_classes: int | None, num_outputs: int | None,
                 sync: bool = True):
        classes = max(num_classes or 2, 2)
        built = {metrics.task_metric(task): _run_metric(task, classes, sync)}
        for component in components:
            entry, kwargs = SCORES.resolve(component)
            built[score_key(entry, kwargs)] = entry.build(classes, num_outputs or 1, sync, **kwargs)
        super().__init__(built, compute_groups=False)
        self.names = list(built)  # the collection sorts its metrics by name; the history keeps this order
        self.task = task
        self.spec = (list(components), task, num_classes, num_outputs)

    def unsynced(self) -> "Scores":
        """A fresh, empty copy that computes without gathering from other processes."""
        return Scores(*self.spec, sync=False)

    def update(self, outputs: torch.Tensor, y: torch.Tensor) -> None:
        if self.task == "classification":
            super().update(outputs.float().softmax(dim=1), y if y.ndim == 1 else y.argmax(dim=1))
        else:
            super().update(outputs.reshape(y.shape).float(), y.float())

    def scalars(self) -> dict[str, torch.Tensor]:
        """Name → one number, the task's metric first; a score of several regression targets is their mean,
        as sklearn averages them."""
        computed = self.compute()
        return {name: computed[name].float().mean() for name in self.names}


# -- checks ---------------------------------------------------------------------------------------

def check_metrics(components: list[Component], line: int | None = None) -> None:
    """Names, arguments and duplicates, before the data is known."""
    seen = set()
    for component in components:
        if component.name in metrics.TASK_METRIC.values() or component.name == "loss":
            raise RecipeError(f"val_{component.name} is always reported; `metrics:` lists the extra ones "
                              "(`%nbopt help metrics`)", key="metrics", line=line)
        entry, kwargs = SCORES.resolve(component, "metrics", line)
        if "average" in kwargs and kwargs["average"] not in AVERAGES[entry.name]:  # only averaged metrics take one
            raise RecipeError(f"{component}: " + unknown_name_message("average", str(kwargs["average"]),
                                                                      AVERAGES[entry.name]), key="metrics", line=line)
        k = kwargs.get("k")
        if "k" in kwargs and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise RecipeError(f"{component}: k must be a whole number of at least 1, got {k!r}", key="metrics",
                              line=line)
        key = score_key(entry, kwargs)
        if key in seen:
            raise RecipeError(f"{component} is listed twice (both are val_{key})", key="metrics", line=line)
        seen.add(key)


def check_task(components: list[Component], task: str, num_classes: int | None, line: int | None = None) -> None:
    """Metrics that fit the data: classification metrics need classes, top_k at least k of them."""
    for component in components:
        entry, kwargs = SCORES.resolve(component, "metrics", line)
        needs = metrics.METRICS[entry.name].task
        if needs != task:
            fitting = sorted(name for name in SCORES.names() if metrics.METRICS[name].task == task)
            raise RecipeError(f"{entry.name} scores {needs} but this run's task is {task}; {task} metrics: "
                              f"{', '.join(fitting)}", key="metrics", line=line)
        k = kwargs.get("k", entry.params.get("k"))
        if entry.name == "top_k" and k > (num_classes or 0):
            raise RecipeError(f"{component} needs at least {k} classes but the data has {num_classes}",
                              key="metrics", line=line)


def not_reported_hint(column: str, reported: list[str]) -> str:
    """What to say about a column a run does not report: that `metrics:` would add it, or the
    reported column it most likely meant (empty when neither)."""
    split, name = metrics.split_of(column)
    metric, average, k = metrics.parse_score(name)
    if split == "val" and metric in SCORES:
        written = Component(metric, (), {"average": average} if average else {"k": k} if k else {}).to_text()
        return f" — add {written} to `metrics:` to compute it"
    guess = closest(column, reported)
    return f" — did you mean '{guess}'?" if guess else ""
