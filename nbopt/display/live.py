"""Live progress while a run trains.

In a notebook: one status line and one figure, updated in place (display handles, no
``clear_output`` flicker), throttled so that drawing never costs more than a few percent of the
run; the final figure stays in the saved notebook. Inside the panel the same two things go to
widgets. Elsewhere (a terminal, ``nbopt run``): one plain line per epoch.
"""
from __future__ import annotations

import html
import math
import time

import pandas as pd

from nbopt.callbacks.recorder import Listener
from nbopt.environment import in_notebook
from nbopt.display.plots import draw_history, figure_png
from nbopt.display.summary import summary_html, summary_text

STATUS_INTERVAL = 0.25  # seconds between status-line updates
FIGURE_BUDGET = 0.025  # share of wall time that redrawing the figure may take


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


def _fmt(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


class DisplaySink:
    """Two notebook display handles, created where the cell's output is."""

    def __init__(self):
        from IPython.display import display
        self._status = display({"text/plain": ""}, raw=True, display_id=True)
        self._figure = display({"text/plain": ""}, raw=True, display_id=True)

    def status(self, text: str, html_text: str | None = None) -> None:
        self._status.update({"text/plain": text, "text/html": html_text or f"<code>{html.escape(text)}</code>"},
                            raw=True)

    def figure(self, png: bytes, label: str) -> None:
        self._figure.update({"image/png": png, "text/plain": f"<{label}>"}, raw=True)


class LiveOutput(Listener):
    def __init__(self, title: str, epochs: int, metric_key: str, notebook: bool | None = None, stream=None,
                 sink=None):
        self.title = title
        self.epochs = epochs
        self.metric_key = metric_key
        self.sink = sink  # where the status and figure go; made at start() in a notebook when not given
        self.notebook = sink is not None or (in_notebook() if notebook is None else notebook)
        self.stream = stream
        self._last_status = 0.0
        self._next_figure = 0.0
        self._rows: list[dict] = []

    def start(self) -> None:
        if self.notebook:
            if self.sink is None:
                self.sink = DisplaySink()
            self.sink.status(f"{self.title}: starting…")

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
        if self._rows:
            last = self._rows[-1]
            text += f" · val_loss {_fmt(last.get('val_loss'))} · {self.metric_key} {_fmt(last.get(self.metric_key))}"
        return text

    def on_step(self, recorder, trainer) -> None:
        if not self.notebook:
            return
        now = time.monotonic()
        if now - self._last_status >= STATUS_INTERVAL:
            self._last_status = now
            self.sink.status(self._progress_text(recorder, trainer))

    def on_epoch(self, recorder, trainer, row: dict) -> None:
        self._rows.append(row)
        if not self.notebook:
            self._print_row(row)
            return
        self.sink.status(self._progress_text(recorder, trainer))
        if time.monotonic() >= self._next_figure:
            drawn = time.monotonic()
            self._show_figure(quick=True)
            cost = time.monotonic() - drawn
            self._next_figure = time.monotonic() + max(1.0, cost / FIGURE_BUDGET)

    def replay(self, rows: list[dict], note: str) -> None:
        """Show rows recorded by other processes (DDP workers) as if they had arrived one by one."""
        self._rows = list(rows)
        last = rows[-1]
        text = (f"{self.title} · epoch {last['epoch']}/{self.epochs} · {note} · val_loss "
                f"{_fmt(last.get('val_loss'))} · {self.metric_key} {_fmt(last.get(self.metric_key))}")
        if self.notebook:
            self.sink.status(text)
            self._show_figure(quick=True)
        else:
            self._print_row(last)

    def _show_figure(self, quick: bool = False) -> None:
        fig = draw_history({self.title: pd.DataFrame(self._rows)}, self.metric_key, self.title, quick=quick)
        self.sink.figure(figure_png(fig), f"curves of {self.title}")

    def _print_row(self, row: dict) -> None:
        parts = [f"epoch {row['epoch']}/{self.epochs}"]
        for key in ("train_loss", "val_loss", self.metric_key):
            parts.append(f"{key} {_fmt(row.get(key))}")
        parts.append(f"lr {row.get('lr', math.nan):.3g}")
        parts.append(f"{row.get('seconds', 0):.1f}s")
        print("  ".join(parts), file=self.stream, flush=True)

    def finish(self, run) -> None:
        if self.notebook:
            if self._rows:
                self._show_figure()
            self.sink.status(summary_text(run), summary_html(run))
        else:
            print(summary_text(run), file=self.stream, flush=True)
