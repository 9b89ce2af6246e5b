"""Sweep plots drawn from the study's trials: optimisation history, parameter importances,
parallel coordinates and one slice per parameter. Matplotlib without pyplot, like every nbopt plot."""
from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import optuna
from matplotlib.figure import Figure

COMPLETE = optuna.trial.TrialState.COMPLETE


def _complete(study: optuna.Study):
    return [t for t in study.get_trials(deepcopy=False, states=(COMPLETE,)) if t.value is not None]


def _history(ax, study: optuna.Study, metric: str) -> None:
    trials = _complete(study)
    numbers = [t.number for t in trials]
    values = [t.value for t in trials]
    best = np.maximum.accumulate(values) if study.direction.name == "MAXIMIZE" else np.minimum.accumulate(values)
    ax.scatter(numbers, values, s=14, color="C0", label="trial")
    ax.step(numbers, best, where="post", color="C3", label="best so far")
    ax.set(title="optimisation history", xlabel="trial", ylabel=metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def draw_best_so_far(study: optuna.Study, metric: str) -> Figure:
    fig = Figure(figsize=(5, 3), layout="constrained")
    _history(fig.subplots(), study, metric)
    return fig


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances (Optuna's default); empty when too few trials differ to tell."""
    if len(_complete(study)) < 3:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):
        return {}


def _numeric(values: list) -> tuple[np.ndarray, list | None]:
    """Values as numbers for plotting; categories become their index (and the labels are returned)."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=float), None
    labels = sorted({str(v) for v in values})
    return np.asarray([labels.index(str(v)) for v in values], dtype=float), labels


def draw_sweep(study: optuna.Study, metric: str) -> Figure:
    trials = _complete(study)
    names = sorted({k for t in trials for k in t.params})
    slices = names[:4]
    fig = Figure(figsize=(13, 6.4), layout="constrained")
    grid = fig.add_gridspec(2, max(3, len(slices)))
    _history(fig.add_subplot(grid[0, 0]), study, metric)

    ax = fig.add_subplot(grid[0, 1])
    scores = importances(study)
    if scores:
        ax.barh(list(scores)[::-1], list(scores.values())[::-1], color="C2")
    else:
        ax.text(0.5, 0.5, "needs ≥ 3 finished trials", ha="center", va="center", transform=ax.transAxes)
    ax.set(title="parameter importance (fANOVA)")

    ax = fig.add_subplot(grid[0, 2:])
    if trials and names:
        values = np.asarray([t.value for t in trials])
        span = np.ptp(values) or 1.0
        columns = []
        for name in names:
            raw = [t.params.get(name) for t in trials]
            numbers, _ = _numeric(raw)
            if name in trials[0].distributions and getattr(trials[0].distributions[name], "log", False):
                numbers = np.log10(numbers)
            low, high = numbers.min(), numbers.max()
            columns.append((numbers - low) / (high - low) if high > low else np.full_like(numbers, 0.5))
        columns.append((values - values.min()) / span)
        colors = matplotlib.colormaps["viridis"]((values - values.min()) / span)
        for i in range(len(trials)):
            ax.plot(range(len(columns)), [c[i] for c in columns], color=colors[i], alpha=0.7)
        ax.set_xticks(range(len(columns)), names + [metric], rotation=20, fontsize=8)
        ax.set_yticks([])
    ax.set(title="parallel coordinates (each axis scaled to its range)")

    for i, name in enumerate(slices):
        ax = fig.add_subplot(grid[1, i])
        raw = [t.params.get(name) for t in trials]
        numbers, labels = _numeric(raw)
        ax.scatter(numbers, [t.value for t in trials], s=14, c=[t.number for t in trials], cmap="Blues")
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
        elif trials and getattr(trials[0].distributions.get(name), "log", False):
            ax.set_xscale("log")
        ax.set(title=f"slice: {name}", ylabel=metric if i == 0 else None)
        ax.grid(alpha=0.3)
    return fig
