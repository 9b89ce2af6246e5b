"""The one way nbopt shows live progress: a ``LiveBoard``.

Train, compare and sweep each show a status line, a figure (and the sweep a table of trials). The
board owns HOW: named slots updated in place (notebook display handles, as tensorboard's notebook
magic does, so there is no ``clear_output`` flicker and the last frame stays in the saved notebook;
or widgets when the panel passes its sink), the status throttle, the figure's share of wall time,
and plain printed lines outside a notebook. Subclasses only say WHAT to show.
"""
from __future__ import annotations

import html
import time
from typing import Callable

from nbopt.display.plots import figure_png

STATUS_INTERVAL = 0.25  # seconds between status-line updates
FIGURE_BUDGET = 0.025  # share of wall time that redrawing the figure may take
MIN_FIGURE_INTERVAL = 1.0  # seconds between live frames, however cheap they are
FIRST_FRAME_AFTER = 2.0  # a run shorter than this shows only its final figure: a frame costs ~0.2 s to draw


class DisplaySink:
    """Notebook display handles, one per slot, created in order where the cell's output is."""

    def __init__(self, slots: tuple[str, ...]):
        from IPython.display import display
        self._handles = {slot: display({"text/plain": ""}, raw=True, display_id=True) for slot in slots}

    def status(self, text: str, html_text: str | None = None) -> None:
        self._update("status", text, html_text)

    def table(self, text: str, html_text: str | None = None) -> None:
        self._update("table", text, html_text)

    def figure(self, png: bytes, label: str) -> None:
        self._handles["figure"].update({"image/png": png, "text/plain": f"<{label}>"}, raw=True)

    def _update(self, slot: str, text: str, html_text: str | None) -> None:
        if html_text is None:  # plain text as HTML, its lines kept
            tag = "pre" if "\n" in text else "code"
            html_text = f"<{tag}>{html.escape(text)}</{tag}>"
        self._handles[slot].update({"text/plain": text, "text/html": html_text}, raw=True)


class LiveBoard:
    """Status, figure and table slots in a notebook (or a widget sink); printed lines elsewhere.

    `figure_info` is the record the figure slot was last drawn from, so tests (and callers) can ask
    what is shown without reading pixels.
    """

    SLOTS: tuple[str, ...] = ("status", "figure")

    def __init__(self, notebook: bool, sink=None, stream=None):
        self.sink = sink  # made by open() in a notebook when not given
        self.notebook = sink is not None or notebook
        self.stream = stream  # where printed lines go outside a notebook (None: sys.stdout at the time)
        self.figure_info = None
        self._last_status = 0.0
        self._next_figure = 0.0

    def open(self, text: str) -> None:
        """Create the slots where the cell's output is now, and show `text` as the first status."""
        if self.notebook and self.sink is None:
            self.sink = DisplaySink(self.SLOTS)
        self.status(text)

    def status(self, text: str, html_text: str | None = None) -> None:
        if self.notebook:
            self._last_status = time.monotonic()
            self.sink.status(text, html_text)

    def tick(self, make_text: Callable[[], str]) -> None:
        """A status update at most every STATUS_INTERVAL: `make_text` runs only when one is due, so a
        caller can tick on every training step for free."""
        if self.notebook and time.monotonic() - self._last_status >= STATUS_INTERVAL:
            self.status(make_text())

    def table(self, text: str, html_text: str) -> None:
        if self.notebook:
            self.sink.table(text, html_text)

    def figure(self, info, draw: Callable, label: str) -> None:
        """Show `draw(info)` in the figure slot now: for the figure that stays."""
        if self.notebook:
            self.figure_info = info
            self.sink.figure(figure_png(draw(info)), label)

    def frame(self, make_info: Callable, draw: Callable, label: str) -> None:
        """A live frame, drawn only when the last one's cost fits FIGURE_BUDGET of the time since."""
        if not self.notebook or time.monotonic() < self._next_figure:
            return
        started = time.monotonic()
        self.figure(make_info(), draw, label)
        cost = time.monotonic() - started
        self._next_figure = time.monotonic() + max(MIN_FIGURE_INTERVAL, cost / FIGURE_BUDGET)

    def defer_frames(self, seconds: float) -> None:
        """No live frame for `seconds`: the status line says how training goes meanwhile."""
        self._next_figure = time.monotonic() + seconds

    def line(self, text: str) -> None:
        """A printed line, outside a notebook only (where the status slot says it instead)."""
        if not self.notebook:
            print(text, file=self.stream, flush=True)

    def report(self, text: str, html_text: str | None = None) -> None:
        """The final word: the status slot in a notebook, printed elsewhere."""
        self.status(text, html_text)
        self.line(text)
