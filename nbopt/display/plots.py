"""Training curves drawn from history tables: loss, the metric, the learning rate (and sparsity or
parameter counts while compressing).

Records first, drawing second, as Optuna's plots do: ``curves_info`` turns histories into a plain
``CurvesInfo`` (a long-form table of every curve and the few decisions about the axes), and
``draw_curves`` only draws that record. Tests check the record, not pixels; live boards keep the
record of the figure they show.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

EXTRA_COLUMNS = ("sparsity", "parameters")  # a fourth panel when a compression run records one of them
PANEL_TITLES = {"loss": "loss", "lr": "learning rate", "sparsity": "sparsity (share of zero weights)",
                "parameters": "parameters"}
CURVE_COLUMNS = ["run", "panel", "curve", "epoch", "value"]
LOG_LR_RANGE = 50  # an LR that spans more than this factor is drawn on a log axis
LOG_LR_RUNS = 10  # runs whose LRs are this many times apart: a log axis, or the smaller sits on the zero line
LOG_LOSS_RATIO = 10  # a loss curve this many times above another (a distillation's ×T² train loss): log axis
LEGEND_ROWS = 6  # a legend with more lines gets more columns
LR_FIND_SKIP = 10  # the range test's first points: the optimizer's start-up, not the LR (Lightning skips them too)


@dataclass
class CurvesInfo:
    """What a history figure shows: one row per run, curve and epoch in `curves` (columns run, panel,
    curve, epoch, value), the panels left to right, and how the LR axis is scaled."""
    title: str
    runs: list[str]  # colour order: the n-th run is drawn in matplotlib's colour Cn
    panels: list[str]  # "loss", the metric, "lr", then "sparsity" or "parameters" when recorded
    curves: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CURVE_COLUMNS))
    lr_log: bool = False  # the LR spans more than LOG_LR_RANGE×: a log axis
    lr_top: float | None = None  # a constant LR: its axis runs from 0 to this, so the line is not at an edge
    loss_log: bool = False  # one loss curve runs LOG_LOSS_RATIO× above another: a log axis, so neither is flat


def curves_info(histories: dict[str, pd.DataFrame], metric_key: str, title: str = "") -> CurvesInfo:
    """The record behind a history figure, from run name → history (one row per epoch)."""
    extra = next((c for c in EXTRA_COLUMNS if any(c in h for h in histories.values())), None)
    series = [("train_loss", "loss"), ("val_loss", "loss"), (metric_key, metric_key), ("lr", "lr")]
    series += [(extra, extra)] if extra else []
    frames = [pd.DataFrame({"run": run, "panel": panel, "curve": column, "epoch": history["epoch"].to_numpy(),
                            "value": history[column].to_numpy(dtype=float)})
              for run, history in histories.items() if not history.empty
              for column, panel in series if column in history]
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CURVE_COLUMNS)
    lr_log, lr_top = _lr_axis(curves[curves["curve"] == "lr"])
    panels = ["loss", metric_key, "lr", *([extra] if extra else [])]
    return CurvesInfo(title, list(histories), panels, curves, lr_log, lr_top, _loss_log(curves))


def _loss_log(curves: pd.DataFrame) -> bool:
    """Whether some loss curve rises LOG_LOSS_RATIO× above another's highest point (all positive): on a
    linear axis the other would be squashed flat at the bottom."""
    losses = curves[curves["panel"] == "loss"].dropna(subset=["value"])
    if losses.empty or (losses["value"] <= 0).any():
        return False
    peaks = losses.groupby(["run", "curve"])["value"].max()
    return bool(peaks.max() / peaks.min() > LOG_LOSS_RATIO)


def _lr_axis(lr: pd.DataFrame) -> tuple[bool, float | None]:
    """A log axis when some run's LR spans a wide range (warm-up, exponential decay) or the runs' LRs are
    far apart (Adam's 1e-3 beside SGD's 0.1); a constant LR is shown from zero, since matplotlib would
    otherwise zoom into rounding noise."""
    for _, values in lr.groupby("run", sort=False)["value"]:
        if (values > 0).all() and values.max() / max(values.min(), 1e-30) > LOG_LR_RANGE:
            return True, None
    typical = lr.groupby("run", sort=False)["value"].median()
    if len(typical) > 1 and (typical > 0).all() and typical.max() / typical.min() >= LOG_LR_RUNS:
        return True, None
    values = lr["value"].dropna()
    if len(values) and values.max() - values.min() <= 1e-9 * abs(values.max()):
        return False, values.max() * 1.5
    return False, None


def _style(curve: str, panel: str, run: str) -> tuple[str, dict]:
    """Line style and legend label: losses tell train (dashed) from val, other panels tell runs apart."""
    if panel == "loss":
        split = curve.removesuffix("_loss")
        return ("--" if split == "train" else "-"), {"label": split}
    return "-", {"label": run, **({} if panel == "lr" else {"marker": "."})}


def _legends(axes: dict, panels: list[str], several: bool) -> None:
    """Below the panels, where they cover no curve: the loss panel's says which line is train and which val
    (in black: the colours are the runs'), the metric panel's which colour is which run."""
    loss = axes["loss"]
    if several:
        styles = [Line2D([], [], color="black", linestyle=style, label=label) for style, label in
                  (("--", "train"), ("-", "val"))]
        loss.legend(handles=styles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2,
                    frameon=False)
        metric = axes[panels[1]]
        runs = len(metric.get_lines())
        if runs:
            metric.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22),
                          ncols=max(2, -(-runs // LEGEND_ROWS)), frameon=False)
    elif loss.get_lines():
        loss.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2, frameon=False)


def draw_curves(info: CurvesInfo, *, quick: bool = False) -> Figure:
    """Draw a CurvesInfo: one panel per entry of `info.panels`, one colour per run.

    Built without pyplot, so it never shows up twice in a notebook and never leaks global state.
    `quick` uses fixed margins instead of the constrained layout, which doubles the cost of
    rendering: for the frames of a live figure, not the one that stays.
    """
    runs = len(info.runs)
    rows = max(1, -(-runs // max(2, -(-runs // LEGEND_ROWS))))  # the legends' lines below the panels
    height = 3.4 + 0.18 * rows
    fig = Figure(figsize=(14 if len(info.panels) > 3 else 11, height), layout=None if quick else "constrained")
    if quick:  # margins in inches, so that the panels keep their height whatever the legend's
        fig.subplots_adjust(left=0.06, right=0.99, bottom=(0.75 + 0.18 * rows) / height,
                            top=1 - (0.6 if info.title else 0.35) / height, wspace=0.25)
    axes = dict(zip(info.panels, fig.subplots(1, len(info.panels))))
    several = len(info.runs) > 1
    for (run, panel, curve), line in info.curves.groupby(["run", "panel", "curve"], sort=False):
        style, options = _style(curve, panel, run)
        axes[panel].plot(line["epoch"], line["value"], style, color=f"C{info.runs.index(run)}", **options)
    for panel, ax in axes.items():
        ax.set(title=PANEL_TITLES.get(panel, panel), xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if info.loss_log:
        axes["loss"].set_yscale("log")
    lr_ax = axes["lr"]
    if info.lr_log:
        lr_ax.set_yscale("log")
    else:
        lr_ax.ticklabel_format(axis="y", useOffset=False, style="sci", scilimits=(-3, 3))
        if info.lr_top is not None:
            lr_ax.set_ylim(0, info.lr_top)
    _legends(axes, info.panels, several)
    if info.title:
        fig.suptitle(info.title, fontsize=10)
    return fig


def draw_history(histories: dict[str, pd.DataFrame], metric_key: str, title: str = "", *,
                 quick: bool = False) -> Figure:
    """One figure for one or more runs: train (dashed) and val loss, the val metric, the LR per epoch."""
    return draw_curves(curves_info(histories, metric_key, title), quick=quick)


def figure_png(fig: Figure, dpi: int = 72) -> bytes:
    """The figure as PNG bytes: what display handles and widgets show (72 dpi keeps live frames cheap)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


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
    """Loss against LR on a log axis, with the suggested LR marked; without the first LR_FIND_SKIP points,
    whose loss reflects the optimizer starting up rather than the LR, as Lightning's suggestion ignores them."""
    fig = Figure(figsize=(5, 3), layout="constrained")
    ax = fig.subplots()
    skip = LR_FIND_SKIP if len(lrs) > 2 * LR_FIND_SKIP else 0
    ax.plot(lrs[skip:], losses[skip:])
    ax.axvline(suggestion, color="C3", linestyle="--", label=f"suggested lr {suggestion:.2g}")
    ax.set(title="LR range test", xscale="log", xlabel="learning rate", ylabel="training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
