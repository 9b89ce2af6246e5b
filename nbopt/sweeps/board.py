"""The live leaderboard of a sweep: one line per running trial, a table of finished trials, and the
best value so far — not one full training display per trial. Records first: the table is built
from the study's trials, the same way for one process, `--jobs N` and many machines."""
from __future__ import annotations

import html
import time

import optuna
import pandas as pd

from nbopt.display.plots import figure_png
from nbopt.sweeps.plots import draw_best_so_far

TOP = 10


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, parameters, value, epochs, state, seconds (and the error of a failed one)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.WAITING:
            continue
        row = {"trial": t.number, **t.params, "value": t.value, "epochs": t.user_attrs.get("epochs"),
               "state": t.state.name.lower(), "seconds": t.user_attrs.get("seconds"),
               "run": t.user_attrs.get("run")}
        if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values:
            row["value"] = t.intermediate_values[max(t.intermediate_values)]
        if t.state == optuna.trial.TrialState.FAIL:
            row["error"] = t.user_attrs.get("error")
        rows.append(row)
    return pd.DataFrame(rows)


class SweepBoard:
    def __init__(self, study: optuna.Study, target: int, metric: str, maximize: bool, notebook: bool):
        self.study, self.target, self.metric, self.maximize, self.notebook = study, target, metric, maximize, notebook
        self._progress: dict[int, str] = {}
        self._last = 0.0
        if notebook:
            from IPython.display import display
            self._status = display({"text/plain": "sweep: starting…"}, raw=True, display_id=True)
            self._table = display({"text/plain": ""}, raw=True, display_id=True)
            self._figure = display({"text/plain": ""}, raw=True, display_id=True)

    def started(self, number: int) -> None:
        self._progress[number] = "starting"

    def progress(self, number: int, recorder, trainer, epochs: int) -> None:
        now = time.monotonic()
        if not self.notebook or now - self._last < 0.25:
            return
        self._last = now
        epoch = recorder.epoch_offset + trainer.current_epoch + 1
        self._progress[number] = f"epoch {epoch}/{epochs}, step {recorder.step_in_epoch}/{recorder.steps_per_epoch}"
        self._show_status()

    def _show_status(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        done = sum(t.state.is_finished() for t in trials)
        lines = [f"sweep '{self.study.study_name}': {done} trial(s) ended, target {self.target} finished"]
        lines += [f"  trial {n}: {p}" for n, p in sorted(self._progress.items())]
        self._status.update({"text/plain": "\n".join(lines),
                             "text/html": "<pre>" + html.escape("\n".join(lines)) + "</pre>"}, raw=True)

    def poll(self) -> None:
        """For worker processes: read running trials' progress from the study instead of callbacks."""
        self._progress = {t.number: f"epoch {t.user_attrs.get('epoch', 0)} done"
                          for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        self.finished(self.study, keep_progress=True)

    def finished(self, study: optuna.Study, keep_progress: bool = False) -> None:
        table = trials_table(study)
        if not keep_progress:
            ended = set(table["trial"]) if not table.empty else set()
            self._progress = {n: p for n, p in self._progress.items() if n not in ended or
                              table.loc[table["trial"] == n, "state"].iloc[0] == "running"}
        if not self.notebook:
            last = table[table["state"] != "running"].tail(1) if not table.empty else table
            for _, row in last.iterrows():
                value = "–" if row["value"] is None or pd.isna(row["value"]) else f"{row['value']:.4g}"
                print(f"trial {row['trial']}: {row['state']} {self.metric} {value}", flush=True)
            return
        self._show_status()
        ended = table[table["state"].isin(["complete", "pruned"])] if not table.empty else table
        shown = ended.sort_values("value", ascending=not self.maximize).head(TOP) if not ended.empty else ended
        self._table.update({"text/plain": shown.to_string(index=False),
                            "text/html": shown.to_html(index=False, float_format=lambda v: f"{v:.4g}")}, raw=True)
        if not ended.empty and any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            fig = draw_best_so_far(study, self.metric)
            self._figure.update({"image/png": figure_png(fig), "text/plain": "<best so far>"}, raw=True)

    def close(self, summary_text: str, summary_html: str) -> None:
        if self.notebook:
            self._status.update({"text/plain": summary_text, "text/html": summary_html}, raw=True)
        else:
            print(summary_text, flush=True)
