"""The live leaderboard of a sweep: one line per running trial, a table of finished trials, and the
best value so far — not one full training display per trial. Records first: the table is built
from the study's trials, the same way for one process, `--jobs N` and many machines. When the
sweep ends, the final sweep figure replaces the live one in the same place."""
from __future__ import annotations

import optuna
import pandas as pd

from nbopt.display.board import LiveBoard
from nbopt.sweeps.plots import COMPLETE, draw_progress, draw_sweep_info, progress_info, sweep_info

TOP = 10


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, parameters, value, epochs, state, seconds (and the error of a failed one).
    A diverged trial is pruned in the study (the sampler learns to avoid it) and reads `diverged` here."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.WAITING:
            continue
        row = {"trial": t.number, **t.params, "value": t.value, "epochs": t.user_attrs.get("epochs"),
               "state": "diverged" if t.user_attrs.get("diverged") else t.state.name.lower(),
               "seconds": t.user_attrs.get("seconds"),
               "run": t.user_attrs.get("run")}
        if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values:
            row["value"] = t.intermediate_values[max(t.intermediate_values)]
        if t.state == optuna.trial.TrialState.FAIL or t.user_attrs.get("diverged"):
            row["error"] = t.user_attrs.get("error")
        rows.append(row)
    return pd.DataFrame(rows)


def _value(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.4g}"


class SweepBoard(LiveBoard):
    """Status (running trials), the top trials so far, and a figure: the best value so far while the
    sweep runs, the whole sweep figure once it ends. Outside a notebook: a line per ended trial."""

    SLOTS = ("status", "table", "figure")

    def __init__(self, study: optuna.Study, target: int, metric: str, maximize: bool, notebook: bool, sink=None):
        super().__init__(notebook, sink=sink)
        self.study, self.target, self.metric, self.maximize = study, target, metric, maximize
        self._progress: dict[int, str] = {}
        self.open("sweep: starting…")

    def started(self, number: int) -> None:
        self._progress[number] = "starting"

    def progress(self, number: int, recorder, trainer, epochs: int) -> None:
        def status() -> str:
            epoch = recorder.epoch_offset + trainer.current_epoch + 1
            self._progress[number] = (f"epoch {epoch}/{epochs}, step {recorder.step_in_epoch}/"
                                      f"{recorder.steps_per_epoch}")
            return self._status_text()
        self.tick(status)

    def _status_text(self) -> str:
        done = sum(t.state.is_finished() for t in self.study.get_trials(deepcopy=False))
        lines = [f"sweep '{self.study.study_name}': {done} trial(s) ended, target {self.target} finished"]
        return "\n".join(lines + [f"  trial {n}: {p}" for n, p in sorted(self._progress.items())])

    def poll(self) -> None:
        """For worker processes: read running trials' progress from the study instead of callbacks."""
        self._progress = {t.number: f"epoch {t.user_attrs.get('epoch', 0)} done"
                          for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        self.finished(self.study, keep_progress=True)

    def finished(self, study: optuna.Study, keep_progress: bool = False) -> None:
        """A trial ended (or, from poll, maybe one did): refresh the status, the table and the figure."""
        table = trials_table(study)
        ended = table[table["state"] != "running"] if not table.empty else table
        if not keep_progress:
            gone = set(ended.get("trial", ()))
            self._progress = {n: p for n, p in self._progress.items() if n not in gone}
        if not self.notebook:
            for _, row in ended.tail(1).iterrows():
                self.line(f"trial {row['trial']}: {row['state']} {self.metric} {_value(row['value'])}")
            return
        self.status(self._status_text())
        scored = ended[ended["state"].isin(["complete", "pruned"])] if not ended.empty else ended
        shown = scored.sort_values("value", ascending=not self.maximize).head(TOP) if not scored.empty else scored
        self.table(shown.to_string(index=False), shown.to_html(index=False, float_format=lambda v: f"{v:.4g}"))
        if study.get_trials(deepcopy=False, states=(COMPLETE,)):
            self.frame(lambda: progress_info(study, self.metric), draw_progress, "best so far")

    def close(self, summary_text: str, summary_html: str) -> None:
        """The sweep ended: the final sweep figure takes the live figure's place (when a trial completed),
        and the summary becomes the status, so the cell shows each once."""
        if self.notebook and self.study.get_trials(deepcopy=False, states=(COMPLETE,)):
            self.figure(sweep_info(self.study, self.metric), draw_sweep_info, "sweep")
        self.report(summary_text, summary_html)
