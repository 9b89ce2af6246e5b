"""What ``compare`` shows: every variant's curves in one figure (the mean over seeds with `repeats`),
live while the variants train and once more at the end, with the table as the last status."""
from __future__ import annotations

import functools

import pandas as pd

from nbopt.callbacks.recorder import Listener
from nbopt.display.board import LiveBoard
from nbopt.display.plots import CurvesInfo, curves_info, draw_curves

LABEL = "compare curves"


def compare_info(histories: dict[str, list[pd.DataFrame]], metric_key: str) -> CurvesInfo:
    """The record behind compare's figure, from variant → its runs' histories (one per seed): each
    variant's mean curve per epoch, so a variant with several seeds is one line, not a tangle."""
    means = {name: _mean_while_all_run(frames)
             for name, runs in histories.items() if (frames := [h for h in runs if not h.empty])}
    seeds = max((len(runs) for runs in histories.values()), default=1)
    return curves_info(means, metric_key, "compare" + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))


def _mean_while_all_run(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The mean per epoch up to the shortest run's last epoch: past it (a seed stopped early) the mean
    would be over fewer runs, and its curve would jump for that reason alone."""
    last = min(int(frame["epoch"].max()) for frame in frames)
    mean = pd.concat(frames).groupby("epoch", as_index=False).mean(numeric_only=True)
    return mean[mean["epoch"] <= last]


class CompareBoard(LiveBoard, Listener):
    """Hears every run of a comparison: the status says which run of how many, the figure overlays
    the variants trained so far; outside a notebook it prints which variant starts and the table."""

    def __init__(self, metric_key: str, total_runs: int, notebook: bool, sink=None):
        super().__init__(notebook, sink=sink)
        self.metric_key = metric_key
        self.total_runs = total_runs
        self.histories: dict[str, list[dict]] = {}
        self.current = ""
        self.open("compare: starting…")

    def begin(self, label: str) -> None:
        """A new run starts: its rows are collected under `label`."""
        self.current = label
        self.histories[label] = []
        self.line(f"— {label}")

    def add(self, history: pd.DataFrame) -> None:
        """The run begun last was loaded, not trained (a resumed comparison): draw its whole history."""
        self.histories[self.current] = history.to_dict("records")
        self.frame(self._live_info, functools.partial(draw_curves, quick=True), LABEL)

    def on_step(self, recorder, trainer) -> None:
        self.tick(lambda: f"compare · run {len(self.histories)}/{self.total_runs} ({self.current}) · epoch "
                          f"{recorder.epoch_offset + trainer.current_epoch + 1} · step "
                          f"{recorder.step_in_epoch}/{recorder.steps_per_epoch}")

    def on_epoch(self, recorder, trainer, row) -> None:
        self.histories[self.current].append(row)
        self.frame(self._live_info, functools.partial(draw_curves, quick=True), LABEL)

    def follow(self, running: dict[str, list[dict]], done: int, total: int) -> None:
        """Runs that train in worker processes (`--jobs`): their rows so far, read from their folders."""
        self.histories.update(running)
        self.tick(lambda: f"compare · {done}/{total} runs done · training {', '.join(running) or '…'}")
        if any(running.values()):
            self.frame(self._live_info, functools.partial(draw_curves, quick=True), LABEL)

    def _live_info(self) -> CurvesInfo:
        return curves_info({label: pd.DataFrame(rows) for label, rows in self.histories.items() if rows},
                           self.metric_key, "compare")

    def finish(self, comparison) -> None:
        """The figure that stays is the comparison's own (mean curves); the status becomes its table."""
        histories = {name: [run.history for run in runs] for name, runs in comparison.all_runs.items()}
        if histories:
            self.figure(compare_info(histories, self.metric_key), draw_curves, LABEL)
        self.report(f"{comparison.table.to_string()}\n{comparison.verdict}", comparison._repr_html_())
