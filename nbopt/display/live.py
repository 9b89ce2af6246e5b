"""Live progress while a run trains: the training board.

In a notebook: one status line and one figure, updated in place and throttled (see ``LiveBoard``);
the final figure, drawn from the run's final history, stays in the saved notebook. Inside the panel
the same two things go to widgets. Elsewhere (a terminal, ``nbopt run``): one plain line per epoch.
"""
from __future__ import annotations

import functools
import math

import pandas as pd

from nbopt.callbacks.recorder import Listener
from nbopt.display.board import FIGURE_BUDGET, FIRST_FRAME_AFTER, STATUS_INTERVAL, LiveBoard
from nbopt.display.plots import curves_info, draw_curves
from nbopt.display.summary import summary_html, summary_text
from nbopt.environment import in_notebook

__all__ = ["LiveOutput", "FIGURE_BUDGET", "STATUS_INTERVAL"]

_draw_frame = functools.partial(draw_curves, quick=True)


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


def _fmt(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


class LiveOutput(LiveBoard, Listener):
    """The board of one training run; the Recorder tells it about steps and epochs."""

    def __init__(self, title: str, epochs: int, metric_key: str, notebook: bool | None = None, stream=None,
                 sink=None):
        super().__init__(in_notebook() if notebook is None else notebook, sink=sink, stream=stream)
        self.title = title
        self.epochs = epochs
        self.metric_key = metric_key
        self._rows: list[dict] = []

    def start(self, note: str | None = None) -> None:
        """Open the board; `note` says how this run starts (a resumed run: from where)."""
        self.open(f"{self.title}: {note or 'starting…'}")
        self.defer_frames(FIRST_FRAME_AFTER)  # a short run is not slowed by drawing what finish() draws anyway
        if note:
            self.line(f"{self.title}: {note}")

    def _scores(self, row: dict) -> str:
        return f"val_loss {_fmt(row.get('val_loss'))} · {self.metric_key} {_fmt(row.get(self.metric_key))}"

    def _progress_text(self, recorder, trainer) -> str:
        epoch = recorder.epoch_offset + trainer.current_epoch + 1
        steps = recorder.steps_per_epoch or 0
        done = (epoch - 1) * steps + recorder.step_in_epoch
        total = self.epochs * steps
        elapsed = recorder.elapsed
        speed = recorder.samples / elapsed if elapsed > 0 else 0.0
        eta = elapsed / done * (total - done) if done and total else 0.0
        text = (f"{self.title} · epoch {epoch}/{self.epochs} · step {recorder.step_in_epoch}/{steps} · "
                f"{speed:,.0f} samples/s · {_clock(elapsed)} elapsed, ETA {_clock(eta)}")
        return text + (f" · {self._scores(self._rows[-1])}" if self._rows else "")

    def on_step(self, recorder, trainer) -> None:
        self.tick(lambda: self._progress_text(recorder, trainer))

    def on_epoch(self, recorder, trainer, row: dict) -> None:
        self._rows.append(row)
        self.tick(lambda: self._progress_text(recorder, trainer))  # a short run's epochs come faster than they read
        self._frame()
        self._print_row(row)

    def replay(self, rows: list[dict], note: str) -> None:
        """Show rows recorded by other processes (DDP workers) as if they had arrived one by one."""
        self._rows = list(rows)
        last = rows[-1]
        self.status(f"{self.title} · epoch {last['epoch']}/{self.epochs} · {note} · {self._scores(last)}")
        self._frame()
        self._print_row(last)

    def _info(self, history: pd.DataFrame):
        return curves_info({self.title: history}, self.metric_key, self.title)

    def _frame(self) -> None:
        self.frame(lambda: self._info(pd.DataFrame(self._rows)), _draw_frame, f"curves of {self.title}")

    def _print_row(self, row: dict) -> None:
        parts = [f"epoch {row['epoch']}/{self.epochs}"]
        parts += [f"{key} {_fmt(row.get(key))}" for key in ("train_loss", "val_loss", self.metric_key)]
        parts += [f"lr {row.get('lr', math.nan):.3g}", f"{row.get('seconds', 0):.1f}s"]
        self.line("  ".join(parts))

    def finish(self, run) -> None:
        """The figure that stays is drawn from the run's final history, not from the rows this board saw:
        a DDP worker's last epoch can be written after the last frame."""
        if not run.history.empty:
            self.figure(self._info(run.history), draw_curves, f"curves of {self.title}")
        self.report(summary_text(run), summary_html(run))
