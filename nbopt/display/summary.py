"""The summary shown after a run: a small table of what matters, as HTML and as text."""
from __future__ import annotations

import html
import math


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def summary_rows(run) -> list[tuple[str, str]]:
    m = run.metrics
    rows = [("status", run.status), ("model", f"{run.model_label} · {m.get('parameters', 0):,} parameters"),
            ("data", run.data_label), ("epochs run", _fmt(m.get("epochs_run"))),
            ("best epoch", _fmt(m.get("best_epoch")))]
    for key in ("val_loss", run.metric_key, run.metric_key.replace("val_", "test_"), "test_loss"):
        if key in m:
            rows.append((key, _fmt(m[key])))
    rows += [("time", f"{m.get('seconds', 0):.1f} s"), ("saved in", str(run.folder))]
    return rows


def summary_html(run) -> str:
    cells = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                    f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in summary_rows(run))
    note = f"<div><i>{html.escape(run.note)}</i></div>" if run.note else ""
    return f"<div><b>nbopt run '{html.escape(run.name)}'</b>{note}<table>{cells}</table></div>"


def summary_text(run) -> str:
    width = max(len(k) for k, _ in summary_rows(run))
    lines = [f"nbopt run '{run.name}'"] + ([run.note] if run.note else [])
    lines += [f"  {k.ljust(width)}  {v}" for k, v in summary_rows(run)]
    return "\n".join(lines)
