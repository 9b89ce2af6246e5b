"""The summary shown after a run: a small table of what matters, as HTML and as text."""
from __future__ import annotations

import html
import math

from nbopt.metrics import split_of


def _fmt(value) -> str:
    if value is None:  # not recorded: a diverged run without a good epoch, a null in metrics.json
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _extra_scores(metrics: dict, split: str, metric_key: str) -> list[str]:
    """The other final scores of one split (the recipe's `metrics:`, in the order it lists them), beside
    the split's loss and the task's metric that every summary shows."""
    shown = (f"{split}_loss", metric_key.replace("val_", f"{split}_"))
    return [key for key, value in metrics.items()
            if split_of(key)[0] == split and key not in shown and isinstance(value, float)]


def summary_rows(run) -> list[tuple[str, str]]:
    m = run.metrics
    rows = [("status", run.status), ("model", f"{run.model_label} · {m.get('parameters', 0):,} parameters"),
            ("data", run.data_label), ("epochs run", _fmt(m.get("epochs_run"))),
            ("best epoch", _fmt(m.get("best_epoch")))]
    if "sparsity" in m:
        rows.append(("sparsity", f"{m['sparsity']:.1%} of Linear/Conv weights are zero"))
    test_key = run.metric_key.replace("val_", "test_")
    for key in ("val_loss", run.metric_key, *_extra_scores(m, "val", run.metric_key), test_key,
                *_extra_scores(m, "test", run.metric_key), "test_loss"):
        if key in m:
            rows.append((key, _fmt(m[key])))
    if "per_class_f1" in m:
        rows.append(("per-class F1", " · ".join(f"{name} {f1:.2f}" for name, f1 in m["per_class_f1"].items())))
    time_text = f"{m.get('seconds', 0):.1f} s"
    if "startup_seconds" in m:
        time_text += f" (+ {m['startup_seconds']:.1f} s starting the processes)"
    rows += [("time", time_text), ("saved in", str(run.folder))]
    return rows


_REPORT_ROWS = (("parameters", "parameters"), ("nonzero_parameters", "non-zero parameters"), ("size_kb", "size (KB)"),
                ("macs", "MACs"), ("latency_ms_batch1", "CPU latency, batch 1 (ms)"),
                ("latency_ms_batch64", "CPU latency, batch 64 (ms)"),
                ("onnx_latency_ms_batch1", "ONNX Runtime latency, batch 1 (ms)"),
                ("onnx_latency_ms_batch64", "ONNX Runtime latency, batch 64 (ms)"))


def compression_rows(run) -> list[tuple[str, str, str, str]]:
    """(measure, before, after, after/before) for a compression run's report; empty otherwise."""
    report = run.metrics.get("compression")
    if not report:
        return []
    before, after = report["before"], report["after"]
    rows = [("", before.get("model", "before"), "after", "after/before")]
    for key, label in _REPORT_ROWS + ((run.metric_key, run.metric_key),):
        b, a = before.get(key), after.get(key)
        if b is None and a is None:  # not measured here (ONNX Runtime not installed, say)
            continue
        ratio = f"{a / b:.2f}×" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "–"
        rows.append((label, _fmt(b) if b is not None else "–", _fmt(a) if a is not None else "–", ratio))
    return rows


def summary_html(run) -> str:
    cells = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                    f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in summary_rows(run))
    note = f"<div><i>{html.escape(run.note)}</i></div>" if run.note else ""
    report = compression_rows(run)
    if report:
        head, *body = report
        report_html = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in body) + "</table>"
    else:
        report_html = ""
    return f"<div><b>nbopt run '{html.escape(run.name)}'</b>{note}<table>{cells}</table>{report_html}</div>"


def summary_text(run) -> str:
    width = max(len(k) for k, _ in summary_rows(run))
    lines = [f"nbopt run '{run.name}'"] + ([run.note] if run.note else [])
    lines += [f"  {k.ljust(width)}  {v}" for k, v in summary_rows(run)]
    report = compression_rows(run)
    if report:
        widths = [max(len(row[i]) for row in report) for i in range(4)]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in report]
    return "\n".join(lines)
