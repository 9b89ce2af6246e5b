"""Sweep plots: optimisation history, parameter importances, parallel coordinates and one slice per
parameter. Matplotlib without pyplot, like every nbopt plot.

Records first, drawing second (Optuna's ``_get_..._info``): ``progress_info`` and ``sweep_info``
read the study's completed trials into plain records, ``draw_progress`` and ``draw_sweep_info``
only draw them, so tests check values, order and labels instead of pixels.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

import matplotlib
import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure

COMPLETE = optuna.trial.TrialState.COMPLETE
SLICES = 4  # at most this many slice plots, one per parameter
FIRST_SHADE = 0.35  # where the first trial sits on the slices' colour map: a clearly visible blue, not white


@dataclass
class ProgressInfo:
    """The optimisation history: one row per completed trial (columns trial, value, best so far)."""
    metric: str
    trials: pd.DataFrame


@dataclass
class SliceInfo:
    """One slice plot: the metric against one parameter, a point per completed trial."""
    name: str
    x: list[float]  # the value, or a category's position in `labels`
    y: list[float]
    trial: list[int]
    shade: list[float]  # position on the colour map: later trials are darker, the first still visible
    labels: list[str] | None = None  # a categorical parameter's choices, in axis order
    log: bool = False


@dataclass
class SweepInfo:
    """Everything the final sweep figure shows."""
    progress: ProgressInfo
    importances: dict[str, float]
    parallel: pd.DataFrame  # one row per trial (index), a column per parameter and the metric, scaled to [0, 1]
    ticks: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # column → (position, label)
    slices: list[SliceInfo] = field(default_factory=list)


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(COMPLETE,)) if t.value is not None]


def progress_info(study: optuna.Study, metric: str) -> ProgressInfo:
    """Completed trials in order with the best value so far (the study's direction decides "best")."""
    trials = _complete(study)
    values = pd.Series([t.value for t in trials], dtype=float)
    best = values.cummax() if study.direction == optuna.study.StudyDirection.MAXIMIZE else values.cummin()
    return ProgressInfo(metric, pd.DataFrame({"trial": [t.number for t in trials], "value": values, "best": best}))


def _importance_evaluator():
    """Optuna's default evaluator since Optuna 5, PED-ANOVA (fANOVA where it is missing), and its name for
    the panel's title."""
    ped_anova = getattr(optuna.importance, "PedAnovaImportanceEvaluator", None)
    return (ped_anova(), "PED-ANOVA") if ped_anova else (optuna.importance.FanovaImportanceEvaluator(), "fANOVA")


IMPORTANCE_NAME = _importance_evaluator()[1]


def importances(study: optuna.Study) -> dict[str, float]:
    """Parameter importances by IMPORTANCE_NAME; empty when too few trials differ to tell."""
    if len(_complete(study)) < 3:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study, evaluator=_importance_evaluator()[0])
    except (RuntimeError, ValueError):
        return {}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _choice_key(choice) -> tuple:
    """Choices in value order when they are numbers (32 < 64 < 128) or lists of numbers, stored as JSON
    text ([32] < [64, 32] < [128]); anything else by its text, after them."""
    value = choice
    if isinstance(choice, str):
        try:
            value = json.loads(choice)
        except ValueError:
            pass
    if _is_number(value):
        return 0, (value,), str(choice)
    if isinstance(value, list) and value and all(_is_number(v) for v in value):
        return 0, tuple(value), str(choice)
    return 1, (), str(choice)


def _choices(trials, name: str) -> list | None:
    """A categorical parameter's choices in axis order (the last space's, plus any older trial's); None
    when the parameter is a number range."""
    distributions = [t.distributions[name] for t in trials if name in t.distributions]
    if not distributions or not isinstance(distributions[-1], optuna.distributions.CategoricalDistribution):
        return None
    seen = list(distributions[-1].choices) + [t.params[name] for t in trials if name in t.params]
    return sorted(dict.fromkeys(seen), key=_choice_key)


def _is_log(trials, name: str) -> bool:
    return any(getattr(t.distributions.get(name), "log", False) for t in trials)


def _positions(trials, name: str) -> tuple[np.ndarray, list | None]:
    """Each trial's value of `name` as a number, and a categorical parameter's choices: a choice is its
    index in value order. NaN where a trial's space (an older one) had no such parameter."""
    choices = _choices(trials, name)
    where = (lambda v: v) if choices is None else choices.index
    return np.asarray([where(t.params[name]) if name in t.params else np.nan for t in trials], dtype=float), choices


def _scaled(position: np.ndarray, shown: np.ndarray, fmt: str) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """`position` scaled to [0, 1], and ticks at 0 and 1 that say which `shown` values those are."""
    low, high = np.nanmin(position), np.nanmax(position)
    lowest, highest = format(np.nanmin(shown), fmt), format(np.nanmax(shown), fmt)
    if high == low:
        return np.where(np.isnan(position), np.nan, 0.5), [(0.5, lowest)]
    return (position - low) / (high - low), [(0.0, lowest), (1.0, highest)]


def _axis(trials, name: str) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """One parallel-coordinates axis: log ranges scaled on a log axis, categories evenly spaced in
    value order with a tick for each choice."""
    numbers, choices = _positions(trials, name)
    if choices is not None:
        step = 1 / max(len(choices) - 1, 1)
        return numbers * step, [(i * step, str(c)) for i, c in enumerate(choices)]
    return _scaled(np.log10(numbers) if _is_log(trials, name) else numbers, numbers, ".3g")


def _slice(trials, name: str, shades: list[float]) -> SliceInfo:
    numbers, choices = _positions(trials, name)
    return SliceInfo(name, x=numbers.tolist(), y=[t.value for t in trials], trial=[t.number for t in trials],
                     shade=shades, labels=[str(c) for c in choices] if choices is not None else None,
                     log=choices is None and _is_log(trials, name))


def _shades(numbers: list[int]) -> list[float]:
    """Trial numbers onto [FIRST_SHADE, 1] of the colour map: the order shows, the first stays visible."""
    low = min(numbers, default=0)
    span = (max(numbers, default=0) - low) or 1
    return [FIRST_SHADE + (1 - FIRST_SHADE) * (n - low) / span for n in numbers]


def sweep_info(study: optuna.Study, metric: str) -> SweepInfo:
    """The record behind the final sweep figure, from the study's completed trials."""
    trials = _complete(study)
    names = sorted({k for t in trials for k in t.params})
    parallel = pd.DataFrame(index=pd.Index([t.number for t in trials], name="trial"))
    ticks = {}
    if trials and names:
        for name in names:
            parallel[name], ticks[name] = _axis(trials, name)
        values = np.asarray([t.value for t in trials], dtype=float)
        parallel[metric], ticks[metric] = _scaled(values, values, ".4g")
    shades = _shades([t.number for t in trials])
    return SweepInfo(progress_info(study, metric), importances(study), parallel, ticks,
                     [_slice(trials, name, shades) for name in names[:SLICES]])


def _draw_progress(ax, info: ProgressInfo) -> None:
    ax.scatter(info.trials["trial"], info.trials["value"], s=14, color="C0", label="trial")
    ax.step(info.trials["trial"], info.trials["best"], where="post", color="C3", label="best so far")
    ax.set(title="optimisation history", xlabel="trial", ylabel=info.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def draw_progress(info: ProgressInfo) -> Figure:
    """The optimisation history on its own, small: the live figure while a sweep runs."""
    fig = Figure(figsize=(5, 3), layout="constrained")
    _draw_progress(fig.subplots(), info)
    return fig


def draw_best_so_far(study: optuna.Study, metric: str) -> Figure:
    """The optimisation history of `study` as a figure of its own."""
    return draw_progress(progress_info(study, metric))


def _draw_importances(ax, scores: dict[str, float]) -> None:
    if scores:
        ax.barh(list(scores)[::-1], list(scores.values())[::-1], color="C2")
    else:
        ax.text(0.5, 0.5, "needs ≥ 3 finished trials", ha="center", va="center", transform=ax.transAxes)
    ax.set(title=f"importance ({IMPORTANCE_NAME})")


def _draw_parallel(ax, info: SweepInfo) -> None:
    """A line per trial across the axes, coloured by the metric (its own last axis); each axis is
    labelled with what its ends (or its choices) stand for, since each is scaled to its own range."""
    table = info.parallel
    columns = list(table.columns)
    colors = matplotlib.colormaps["viridis"](table[columns[-1]].to_numpy()) if columns else []
    for row, color in zip(table.to_numpy(), colors):
        ax.plot(range(len(columns)), row, color=color, alpha=0.7)
    for x, column in enumerate(columns):
        ax.axvline(x, color="0.6", linewidth=0.8)
        for y, label in info.ticks[column]:
            ax.text(x, y, f" {label}", fontsize=7, ha="left", va="center",
                    bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 0.5})
    ax.set_xticks(range(len(columns)), columns, rotation=20, fontsize=8)
    ax.set(yticks=[], ylim=(-0.05, 1.05), title="parallel coordinates")


def _draw_slice(ax, info: SliceInfo, ylabel: str | None) -> None:
    ax.scatter(info.x, info.y, s=14, c=matplotlib.colormaps["Blues"](info.shade))
    if info.labels is not None:
        ax.set_xticks(range(len(info.labels)), info.labels, rotation=20, fontsize=7)
        ax.set_xlim(-0.5, len(info.labels) - 0.5)
    elif info.log:
        ax.set_xscale("log")
    ax.set(title=f"slice: {info.name}", ylabel=ylabel)
    ax.grid(alpha=0.3)


def draw_sweep_info(info: SweepInfo) -> Figure:
    """History, importances and parallel coordinates on top (the last twice as wide: it has an axis per
    parameter); a slice per parameter below."""
    fig = Figure(figsize=(13, 6.4), layout="constrained")
    top, bottom = fig.add_gridspec(2, 1)
    top = top.subgridspec(1, 3, width_ratios=[1, 1, 2])
    bottom = bottom.subgridspec(1, max(3, len(info.slices)))
    _draw_progress(fig.add_subplot(top[0]), info.progress)
    _draw_importances(fig.add_subplot(top[1]), info.importances)
    _draw_parallel(fig.add_subplot(top[2]), info)
    for i, one in enumerate(info.slices):
        _draw_slice(fig.add_subplot(bottom[i]), one, info.progress.metric if i == 0 else None)
    return fig


def draw_sweep(study: optuna.Study, metric: str) -> Figure:
    """The final sweep figure: what ``Sweep.plot()`` returns and the board leaves in the cell."""
    return draw_sweep_info(sweep_info(study, metric))
