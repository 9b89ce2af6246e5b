"""Training curves drawn from a history table: loss, the metric, and the learning rate."""
from __future__ import annotations

import base64
import io

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def draw_history(histories: dict[str, pd.DataFrame], metric_key: str, title: str = "", *,
                 quick: bool = False) -> Figure:
    """One figure for one or more runs: train (dashed) and val loss, the val metric, the LR per epoch.

    Built without pyplot, so it never shows up twice in a notebook and never leaks global state.
    `quick` uses fixed margins instead of the constrained layout, which doubles the cost of
    rendering: for the frames of a live figure, not the one that stays.
    """
    extra = next((c for c in ("sparsity", "parameters") if any(c in h for h in histories.values())), None)
    fig = Figure(figsize=(14 if extra else 11, 3.2), layout=None if quick else "constrained")
    if quick:
        fig.subplots_adjust(left=0.06, right=0.99, bottom=0.15, top=0.82 if title else 0.9, wspace=0.25)
    axes = fig.subplots(1, 4 if extra else 3)
    loss_ax, metric_ax, lr_ax = axes[:3]
    for i, (label, history) in enumerate(histories.items()):
        color = f"C{i}"
        if history.empty:
            continue
        epochs = history["epoch"]
        prefix = f"{label} " if len(histories) > 1 else ""
        if "train_loss" in history:
            loss_ax.plot(epochs, history["train_loss"], "--", color=color, label=f"{prefix}train")
        if "val_loss" in history:
            loss_ax.plot(epochs, history["val_loss"], "-", color=color, label=f"{prefix}val")
        if metric_key in history:
            metric_ax.plot(epochs, history[metric_key], "-", marker=".", color=color, label=label)
        if "lr" in history:
            lr_ax.plot(epochs, history["lr"], "-", color=color, label=label)
        if extra and extra in history:
            axes[3].plot(epochs, history[extra], "-", marker=".", color=color, label=label)
    loss_ax.set(title="loss", xlabel="epoch")
    metric_ax.set(title=metric_key, xlabel="epoch")
    lr_ax.set(title="learning rate", xlabel="epoch")
    if any(not h.empty and (h["lr"] > 0).all() and h["lr"].max() / max(h["lr"].min(), 1e-30) > 50
           for h in histories.values() if "lr" in h):
        lr_ax.set_yscale("log")
    else:
        lr_ax.ticklabel_format(axis="y", useOffset=False, style="sci", scilimits=(-3, 3))
        lrs = pd.concat([h["lr"] for h in histories.values() if "lr" in h and not h.empty])
        if len(lrs) and lrs.max() - lrs.min() <= 1e-9 * abs(lrs.max()):  # constant: show it from zero
            lr_ax.set_ylim(0, lrs.max() * 1.5)
    if extra:
        axes[3].set(title="sparsity (share of zero weights)" if extra == "sparsity" else "parameters", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_ax.legend(fontsize=8)
    if len(histories) > 1:
        metric_ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def figure_png(fig: Figure, dpi: int = 72) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def png_img_tag(png: bytes) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


def register_figure_formatter() -> None:
    """Let a notebook show a plain ``matplotlib.figure.Figure`` returned by ``run.plot()``."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    formatter = shell.display_formatter.formatters["image/png"]
    formatter.for_type(Figure, figure_png)


def draw_lr_find(lrs: list[float], losses: list[float], suggestion: float) -> Figure:
    """Loss against LR on a log axis, with the suggested LR marked."""
    fig = Figure(figsize=(5, 3), layout="constrained")
    ax = fig.subplots()
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="C3", linestyle="--", label=f"suggested lr {suggestion:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="LR range test")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
