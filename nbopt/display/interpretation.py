"""Drawing an ``Interpretation``: its DataFrames are the record, this only draws them."""
from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure


def draw_interpretation(interpretation, n: int = 9) -> Figure:
    if interpretation.task == "classification":
        return _draw_classification(interpretation, n)
    return _draw_regression(interpretation)


def _draw_classification(interpretation, n: int) -> Figure:
    confusion = interpretation.confusion
    top = interpretation.top_losses(n)
    images = "image" in top
    columns = 3 if images else 0
    rows = max(1, math.ceil(len(top) / columns)) if images else 1
    fig = Figure(figsize=(5 + 2.2 * columns, max(4.2, 2.0 * rows)), layout="constrained")
    grid = fig.add_gridspec(rows, 1 + columns, width_ratios=[2.4] + [1] * columns)
    _draw_confusion(fig.add_subplot(grid[:, 0]), confusion)
    if images:
        for i, (_, row) in enumerate(top.iterrows()):
            ax = fig.add_subplot(grid[i // columns, 1 + i % columns])
            ax.imshow(_viewable(row["image"]), cmap="gray")
            ax.set_title(f"true {row['true']}\npredicted {row['predicted']}\nloss {row['loss']:.2f}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("what the model gets wrong (validation split)", fontsize=10)
    return fig


def _viewable(image: np.ndarray) -> np.ndarray:
    """Colour images scaled to [0, 1] as imshow needs them; grey ones are scaled by imshow itself."""
    if image.ndim == 2:
        return image
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def _draw_confusion(ax, confusion) -> None:
    counts = confusion.to_numpy()
    ax.imshow(counts, cmap="Blues")
    labels = [str(c) for c in confusion.columns]
    ax.set_xticks(range(len(labels)), labels, rotation=45 if max(map(len, labels)) > 3 else 0, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    if len(labels) <= 20:
        threshold = counts.max() / 2 if counts.size else 0
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                    color="white" if value > threshold else "black")


def _draw_regression(interpretation) -> Figure:
    frame = interpretation.residuals
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    scatter, histogram = fig.subplots(1, 2)
    scatter.scatter(frame["prediction"], frame["residual"], s=10, alpha=0.6)
    scatter.axhline(0, color="C3", linewidth=1)
    scatter.set(xlabel="prediction", ylabel="residual (target − prediction)", title="residuals")
    histogram.hist(frame["residual"], bins=30, color="C0")
    histogram.set(xlabel="residual", ylabel="samples", title="distribution of residuals")
    for ax in (scatter, histogram):
        ax.grid(alpha=0.3)
    return fig
