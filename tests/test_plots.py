"""Plots and live boards: the info records they draw from (values, order, labels), not pixels."""
from __future__ import annotations

import io
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from torch import nn

from nbopt.comparison import Comparison
from nbopt.display.compare import CompareBoard, compare_info
from nbopt.display.live import LiveOutput
from nbopt.display.plots import curves_info, draw_curves, draw_lr_find, figure_png
from nbopt.run import Run
from nbopt.sweeps.board import SweepBoard
from nbopt.sweeps.plots import (FIRST_SHADE, ProgressInfo, SweepInfo, draw_sweep, draw_sweep_info, progress_info,
                                sweep_info)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def history(epochs: int, *, lr=0.1, offset: float = 0.0, **extra) -> pd.DataFrame:
    rows = {"epoch": list(range(1, epochs + 1)), "train_loss": [1 / e + offset for e in range(1, epochs + 1)],
            "val_loss": [1.2 / e + offset for e in range(1, epochs + 1)],
            "val_acc": [0.5 + 0.1 * e + offset for e in range(1, epochs + 1)],
            "lr": lr if isinstance(lr, list) else [lr] * epochs, "seconds": [1.0] * epochs}
    return pd.DataFrame({**rows, **extra})


def run_of(name: str, frame: pd.DataFrame) -> Run:
    metrics = {"val_acc": frame["val_acc"].iloc[-1], "val_loss": frame["val_loss"].iloc[-1], "best_epoch": len(frame),
               "epochs_run": len(frame), "seconds": 1.0, "parameters": 10}
    return Run(name=name, folder=Path(name), recipe=None, model=nn.Identity(), history=frame, metrics=metrics,
               status="finished", metric_key="val_acc", model_label="mlp", data_label="digits", normalization=None)


class Sink:
    """Stands where the notebook's display handles or the panel's widgets are: records what each slot got."""

    def __init__(self):
        self.shown: list[tuple[str, str]] = []

    def status(self, text, html_text=None):
        self.shown.append(("status", text))

    def table(self, text, html_text=None):
        self.shown.append(("table", text))

    def figure(self, png, label):
        assert png.startswith(b"\x89PNG")
        self.shown.append(("figure", label))

    def last(self, slot: str) -> str:
        return [text for kind, text in self.shown if kind == slot][-1]


# -- training curves -----------------------------------------------------------------------------------------

def test_a_history_of_three_epochs_gives_three_rows_per_curve():
    info = curves_info({"a": history(3)}, "val_acc", "run 'a'")
    assert info.title == "run 'a'" and info.runs == ["a"]
    assert info.panels == ["loss", "val_acc", "lr"]
    curves = info.curves
    assert curves.groupby("curve").size().to_dict() == {"train_loss": 3, "val_loss": 3, "val_acc": 3, "lr": 3}
    assert curves.loc[curves["curve"] == "val_loss", "panel"].unique().tolist() == ["loss"]
    assert curves.loc[curves["curve"] == "val_acc", "value"].tolist() == pytest.approx([0.6, 0.7, 0.8])
    assert curves.loc[curves["curve"] == "val_acc", "epoch"].tolist() == [1, 2, 3]


def test_runs_keep_their_order_and_an_empty_history_draws_nothing():
    info = curves_info({"b": history(2), "empty": history(0), "a": history(1)}, "val_acc")
    assert info.runs == ["b", "empty", "a"]  # colours follow this order
    assert info.curves["run"].unique().tolist() == ["b", "a"]
    fig = draw_curves(info)
    assert {line.get_label() for line in fig.axes[1].get_lines()} == {"b", "a"}


def test_the_lr_axis_is_logarithmic_for_a_wide_range_and_starts_at_zero_when_constant():
    assert curves_info({"a": history(3, lr=[1e-4, 1e-3, 1e-1])}, "val_acc").lr_log
    constant = curves_info({"a": history(3, lr=0.01)}, "val_acc")
    assert not constant.lr_log and constant.lr_top == pytest.approx(0.015)
    decaying = curves_info({"a": history(3, lr=[0.1, 0.05, 0.01])}, "val_acc")
    assert (decaying.lr_log, decaying.lr_top) == (False, None)


def test_a_loss_ten_times_another_gets_a_log_axis_and_legends_sit_below_the_panels():
    distilled = history(3)
    distilled["train_loss"] = distilled["train_loss"] * 16  # a distillation's loss carries T² = 16
    info = curves_info({"distilled": distilled, "alone": history(3)}, "val_acc")
    assert info.loss_log and not curves_info({"alone": history(3)}, "val_acc").loss_log
    fig = draw_curves(info)
    loss_axis = fig.axes[0]
    assert loss_axis.get_yscale() == "log"
    fig.canvas.draw()
    legend, axis = loss_axis.get_legend().get_window_extent(), loss_axis.get_window_extent()
    assert legend.y1 < axis.y0, "the legend covers no curve"


def test_a_live_frame_of_many_runs_draws_with_its_legend_below():
    info = curves_info({f"run{i}": history(3) for i in range(40)}, "val_acc", "compare")
    fig = draw_curves(info, quick=True)
    figure_png(fig)
    assert fig.axes[0].get_position().height > 0.2


def test_runs_whose_learning_rates_are_ten_times_apart_share_a_log_axis():
    assert curves_info({"adam": history(3, lr=[1e-3] * 3), "sgd": history(3, lr=[0.1] * 3)}, "val_acc").lr_log
    assert not curves_info({"a": history(3, lr=[0.05] * 3), "b": history(3, lr=[0.1] * 3)}, "val_acc").lr_log


def test_a_mean_over_seeds_ends_where_the_first_seed_stopped():
    info = compare_info({"stopping": [history(3), history(5)], "full": [history(5), history(5)]}, "val_acc")
    last = info.curves.groupby("run")["epoch"].max()
    assert last["stopping"] == 3 and last["full"] == 5


def test_the_lr_range_test_plot_leaves_out_the_start_up_points():
    lrs = [10 ** (-6 + i / 10) for i in range(50)]
    losses = [9.0] * 10 + [2.0 - i / 100 for i in range(40)]  # the first ten: the optimizer starting up
    line = draw_lr_find(lrs, losses, 1e-3).axes[0].get_lines()[0]
    assert list(line.get_xdata()) == lrs[10:] and max(line.get_ydata()) == 2.0


def test_a_compression_run_gets_a_sparsity_panel():
    info = curves_info({"a": history(2, sparsity=[0.0, 0.5])}, "val_acc")
    assert info.panels == ["loss", "val_acc", "lr", "sparsity"]
    assert info.curves.loc[info.curves["panel"] == "sparsity", "value"].tolist() == [0.0, 0.5]
    assert len(draw_curves(info, quick=True).axes) == 4


def test_compare_with_two_seeds_draws_each_variants_mean_curve():
    info = compare_info({"adam": [history(3), history(3, offset=0.2)], "sgd": [history(2), history(2)]}, "val_acc")
    assert info.title == "compare (mean of 2 seeds)" and info.runs == ["adam", "sgd"]
    adam = info.curves[(info.curves["run"] == "adam") & (info.curves["curve"] == "val_acc")]
    assert adam["value"].tolist() == pytest.approx([0.7, 0.8, 0.9])  # the mean of 0.6 and 0.8, ...
    assert len(info.curves[info.curves["run"] == "sgd"]) == 4 * 2  # four curves of two epochs
    assert compare_info({"adam": [history(3)]}, "val_acc").title == "compare"


# -- the training board ----------------------------------------------------------------------------------------

def test_the_final_figure_is_drawn_from_the_final_history_not_the_rows_seen():
    sink = Sink()
    board = LiveOutput("ddp", 4, "val_acc", sink=sink)
    board.start()
    board.replay(history(3).to_dict("records"), "2 processes")  # a DDP worker's last epoch lands later
    assert board.figure_info is None, "no live frame in a run's first seconds: only the final figure"
    board.defer_frames(0)
    board.replay(history(3).to_dict("records"), "2 processes")
    assert board.figure_info.curves["epoch"].max() == 3
    assert sink.last("status").startswith("ddp · epoch 3/4 · 2 processes · val_loss 0.4 · val_acc 0.8")
    board.finish(run_of("ddp", history(4)))
    curves = board.figure_info.curves
    assert curves.groupby("curve")["epoch"].apply(list).to_dict() == {c: [1, 2, 3, 4] for c in
                                                                       ("train_loss", "val_loss", "val_acc", "lr")}
    assert sink.last("figure") == "curves of ddp"
    assert sink.last("status").startswith("nbopt run 'ddp'")


def test_outside_a_notebook_the_training_board_prints_a_line_per_epoch_and_the_summary():
    stream = io.StringIO()
    board = LiveOutput("plain", 2, "val_acc", notebook=False, stream=stream)
    board.start()
    board.replay(history(1).to_dict("records"), "2 processes")
    board.finish(run_of("plain", history(2)))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "epoch 1/2  train_loss 1  val_loss 1.2  val_acc 0.6  lr 0.1  1.0s"
    assert lines[1] == "nbopt run 'plain'"
    assert board.figure_info is None  # nothing drawn where nothing can show it


def test_the_compare_board_ends_with_the_mean_curves_and_the_table():
    sink = Sink()
    board = CompareBoard("val_acc", 4, notebook=True, sink=sink)
    runs = {"adam": [run_of("adam", history(3)), run_of("adam-1", history(3, offset=0.2))],
            "sgd": [run_of("sgd", history(3)), run_of("sgd-1", history(3))]}
    comparison = Comparison(runs, "val_acc")
    board.finish(comparison)
    assert board.figure_info.title == "compare (mean of 2 seeds)"
    adam = board.figure_info.curves.query("run == 'adam' and curve == 'val_acc'")
    assert adam["value"].tolist() == pytest.approx([0.7, 0.8, 0.9])
    assert sink.last("status") == f"{comparison.table.to_string()}\n{comparison.verdict}"


# -- sweeps ------------------------------------------------------------------------------------------------------

def study_of(values: list[float], params: list[dict], distributions: dict, direction="maximize") -> optuna.Study:
    study = optuna.create_study(direction=direction)
    for value, chosen in zip(values, params):
        study.add_trial(optuna.trial.create_trial(params=chosen, distributions=distributions, value=value))
    return study


HIDDEN = optuna.distributions.CategoricalDistribution(["[128]", "[32]", "[64]"])
BATCH = optuna.distributions.CategoricalDistribution([128, 32, 64])
LR = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
SPACE = {"model.hidden": HIDDEN, "batch_size": BATCH, "optimizer.lr": LR}
POINTS = [{"model.hidden": "[128]", "batch_size": 64, "optimizer.lr": 1e-3},
          {"model.hidden": "[32]", "batch_size": 128, "optimizer.lr": 1e-2},
          {"model.hidden": "[64]", "batch_size": 32, "optimizer.lr": 1e-4},
          {"model.hidden": "[32]", "batch_size": 64, "optimizer.lr": 1e-1}]


@pytest.mark.parametrize("direction, best", [("maximize", [0.5, 0.7, 0.7, 0.9]), ("minimize", [0.5, 0.5, 0.4, 0.4])])
def test_the_best_so_far_is_monotone_in_the_studys_direction(direction, best):
    info = progress_info(study_of([0.5, 0.7, 0.4, 0.9], POINTS, SPACE, direction), "val_acc")
    assert info.trials["trial"].tolist() == [0, 1, 2, 3]
    assert info.trials["best"].tolist() == best


def test_categorical_axes_are_ordered_by_value_when_the_choices_are_numbers():
    info = sweep_info(study_of([0.5, 0.7, 0.4, 0.9], POINTS, SPACE), "val_acc")
    assert info.ticks["model.hidden"] == [(0.0, "[32]"), (0.5, "[64]"), (1.0, "[128]")]
    assert info.ticks["batch_size"] == [(0.0, "32"), (0.5, "64"), (1.0, "128")]
    assert info.parallel["model.hidden"].tolist() == [1.0, 0.0, 0.5, 0.0]
    slices = {s.name: s for s in info.slices}
    assert slices["batch_size"].labels == ["32", "64", "128"] and slices["batch_size"].x == [1.0, 2.0, 0.0, 1.0]


def test_other_choices_are_ordered_by_their_text():
    space = {"optimizer": optuna.distributions.CategoricalDistribution(["sgd", "adamw", "adam"])}
    points = [{"optimizer": "sgd"}, {"optimizer": "adam"}]
    info = sweep_info(study_of([0.5, 0.6], points, space), "val_acc")
    assert [label for _, label in info.ticks["optimizer"]] == ["adam", "adamw", "sgd"]  # every choice, tried or not
    assert info.parallel["optimizer"].tolist() == [1.0, 0.0]


def test_a_trial_from_an_older_space_has_no_value_on_a_newer_axis():
    schedule = optuna.distributions.CategoricalDistribution([None, "cosine"])
    study = study_of([0.5], [{"optimizer.lr": 1e-3}], {"optimizer.lr": LR})
    study.add_trial(optuna.trial.create_trial(params={"optimizer.lr": 1e-2, "scheduler": None},
                                              distributions={"optimizer.lr": LR, "scheduler": schedule}, value=0.6))
    info = sweep_info(study, "val_acc")
    assert info.ticks["scheduler"] == [(0.0, "None"), (1.0, "cosine")]
    assert math.isnan(info.parallel.loc[0, "scheduler"]) and info.parallel.loc[1, "scheduler"] == 0.0
    assert math.isnan(info.slices[1].x[0]) and info.slices[1].labels == ["None", "cosine"]
    draw_sweep_info(info)


def test_parallel_coordinates_scale_each_axis_and_say_what_its_ends_are():
    info = sweep_info(study_of([0.5, 0.7, 0.4, 0.9], POINTS, SPACE), "val_acc")
    assert list(info.parallel.columns) == ["batch_size", "model.hidden", "optimizer.lr", "val_acc"]
    assert info.parallel.index.tolist() == [0, 1, 2, 3]
    assert info.parallel["optimizer.lr"].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0, 1.0])  # log scale
    assert info.ticks["optimizer.lr"] == [(0.0, "0.0001"), (1.0, "0.1")]
    assert info.parallel["val_acc"].tolist() == pytest.approx([0.2, 0.6, 0.0, 1.0])
    assert info.ticks["val_acc"] == [(0.0, "0.4"), (1.0, "0.9")]


def test_the_first_trials_marker_in_a_slice_is_clearly_visible():
    info = sweep_info(study_of([0.5, 0.7, 0.4, 0.9], POINTS, SPACE), "val_acc")
    for one in info.slices:
        assert one.trial == [0, 1, 2, 3]
        assert one.shade[0] == FIRST_SHADE >= 0.3 and one.shade[-1] == 1.0
        assert one.shade == sorted(one.shade)
    assert {s.name: s.log for s in info.slices} == {"batch_size": False, "model.hidden": False, "optimizer.lr": True}


LONG_NAMES = {f"a.rather_long_parameter_{i}": optuna.distributions.FloatDistribution(0, 1) for i in range(5)}
LONG_POINTS = [{name: (i * 0.37 + j * 0.11) % 1 for j, name in enumerate(LONG_NAMES)} for i in range(6)]


@pytest.mark.parametrize("study", [
    lambda: study_of([0.5, 0.7, 0.4, 0.9], POINTS, SPACE),  # three slices: the parallel plot had one column
    lambda: study_of([0.1, 0.5, 0.3, 0.8, 0.2, 0.6], LONG_POINTS, LONG_NAMES),  # four slices, long names
], ids=["three-parameters", "long-names"])
def test_every_title_of_the_sweep_figure_fits_in_the_figure(study):
    fig = draw_sweep(study(), "val_acc")
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    width = fig.bbox.width
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    assert len(titles) == len(fig.axes)
    for box in titles:
        assert 0 <= box.x0 and box.x1 <= width
    for i, box in enumerate(titles):  # neighbours' titles do not run into each other
        assert not any(box.overlaps(other) for other in titles[i + 1:])


def test_a_sweep_without_a_completed_trial_still_draws():
    info = sweep_info(optuna.create_study(), "val_acc")
    assert info.progress.trials.empty and info.parallel.empty and info.slices == [] and info.importances == {}
    assert len(draw_sweep_info(info).axes) == 3


def test_the_final_sweep_figure_replaces_the_best_so_far_figure():
    sink = Sink()
    study = study_of([0.5, 0.7, 0.4], POINTS[:3], SPACE)
    board = SweepBoard(study, 3, "val_acc", True, notebook=True, sink=sink)
    board.finished(study)
    assert isinstance(board.figure_info, ProgressInfo)
    assert sink.last("figure") == "best so far"
    assert [line.split()[0] for line in sink.last("table").splitlines()[1:]] == ["1", "0", "2"]  # best first
    board.close("nbopt sweep", "<b>nbopt sweep</b>")
    assert isinstance(board.figure_info, SweepInfo)
    assert [kind for kind, _ in sink.shown if kind == "figure"] == ["figure", "figure"]  # one slot, updated
    assert sink.last("figure") == "sweep" and sink.last("status") == "nbopt sweep"


def test_a_sweep_board_without_a_completed_trial_leaves_no_figure():
    sink = Sink()
    board = SweepBoard(optuna.create_study(), 3, "val_acc", True, notebook=True, sink=sink)
    board.close("nbopt sweep", "<b>nbopt sweep</b>")
    assert board.figure_info is None and "figure" not in [kind for kind, _ in sink.shown]


def test_outside_a_notebook_the_sweep_board_prints_a_line_per_trial(capsys):
    study = study_of([0.5], POINTS[:1], SPACE)
    board = SweepBoard(study, 2, "val_acc", True, notebook=False)
    board.finished(study)
    board.close("nbopt sweep", "<b>nbopt sweep</b>")
    assert capsys.readouterr().out == "trial 0: complete val_acc 0.5\nnbopt sweep\n"
    assert board.figure_info is None


# -- in a real kernel ------------------------------------------------------------------------------------------

KERNEL_SWEEP = '''\
import nbopt
board_sweep = nbopt.sweep("""
model: mlp(hidden=[8])
data: synthetic(n=100, shape=[4], classes=2)
epochs: 1
batch_size: 32
search:
  optimizer.lr: loguniform(1e-3, 1e-1)
""", trials=2, sampler="random", study="one-figure")
'''


def test_in_a_notebook_the_final_sweep_figure_takes_the_live_figures_place(kernel):
    reply, outputs = kernel.execute(KERNEL_SWEEP, timeout=300)
    assert reply["status"] == "ok", kernel.errors(outputs)
    shown = [m["content"] for m in outputs if m["msg_type"] == "display_data"]
    assert [content["data"]["text/plain"] for content in shown] == ["", "", ""]  # status, table, figure
    figure_id = shown[2]["transient"]["display_id"]
    figures = [m["content"]["data"] for m in outputs if m["msg_type"] == "update_display_data"
               and m["content"]["transient"]["display_id"] == figure_id]
    assert [data["text/plain"] for data in figures][-1] == "<sweep>" and "image/png" in figures[-1]
    assert "<best so far>" in [data["text/plain"] for data in figures[:-1]]
    elsewhere = [m for m in outputs if m["msg_type"] in ("display_data", "update_display_data", "execute_result")
                 and "image/png" in m["content"]["data"] and m["content"].get("transient", {}).get("display_id")
                 != figure_id]
    assert elsewhere == [], "no second figure"
