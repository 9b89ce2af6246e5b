"""The runs table, finding a run by name, and deleting runs: what ``nbopt runs`` shows and removes.

A plain run is a folder of nbopt-runs/ holding a run.json. A comparison's variants and a sweep's
trials are run folders inside their group's folder (``nbopt-runs/optimizers/adam/``), so the table
shows one row per train, compare or sweep, and unfolds the groups when asked. Folders made by
earlier versions, where every variant and trial was a top-level run, are listed and load as plain runs.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from nbopt.errors import RecipeError, closest
from nbopt.liveness import LIVE, current_status
from nbopt.metrics import fmt, higher_is_better
from nbopt.store import GROUP_FILE, RunFolder, RunGroup, atomic_write_text, runs_root

COLUMNS = ["name", "kind", "started", "status", "runs", "epochs", "score", "model", "data"]
CHILD_KIND = {"compare": "variant", "sweep": "trial"}


def _folders(parent: Path) -> list[Path]:
    """Sub-folders, without the hidden ones (a group being made, a run being deleted)."""
    if not parent.is_dir():
        return []
    return [path for path in parent.iterdir() if path.is_dir() and not path.name.startswith(".")]


def _run_row(folder: RunFolder, kind: str) -> dict | None:
    status = folder.read_status()
    if not status:
        return None
    metric, best = status.get("metric", ""), status.get("best")
    return {"name": folder.name, "kind": kind, "started": status.get("started", ""),
            "status": current_status(status), "runs": 1, "epochs": status.get("epochs_run"),
            "score": _score(metric, best), "model": status.get("model", ""), "data": status.get("data", ""),
            "metric": metric, "best": best, "path": folder.path}


def _score(metric: str, best) -> str:
    """`val_acc 0.9806`: a score always says which metric it is."""
    if best is None:
        return ""
    return f"{metric} {fmt(best)}" if metric else fmt(best)


def _group_row(group: RunGroup, info: dict, children: list[dict]) -> dict:
    """A compare or sweep as one row: its best run's score (in the group's direction), `running` while
    any of its runs runs."""
    metric = info.get("metric") or next((c["metric"] for c in children if c["metric"]), "")
    scored = [c for c in children if c["best"] is not None and c["metric"] == metric]
    best = None
    if scored:
        maximize = info["direction"] == "maximize" if info.get("direction") else higher_is_better(metric)
        best = (max if maximize else min)(scored, key=lambda c: c["best"])
    status = LIVE if any(c["status"] == LIVE for c in children) else current_status(info)
    return {"name": group.name, "kind": info.get("kind", ""), "started": info.get("started", ""),
            "status": status, "runs": len(children), "epochs": None,
            "score": f"{_score(metric, best['best'])} ({Path(best['name']).name})" if best else "",
            "model": _distinct(c["model"] for c in children), "data": _distinct(c["data"] for c in children),
            "metric": metric, "best": best["best"] if best else None, "path": group.path}


def _distinct(values) -> str:
    return ", ".join(dict.fromkeys(v for v in values if v))


def list_runs(unfold: bool = False) -> list[dict]:
    """Every train, compare and sweep, newest first; with `unfold`, each group's runs follow its row."""
    listed = []
    for path in _folders(runs_root()):
        if (path / "run.json").exists():
            row = _run_row(RunFolder(path), "train")
            if row:
                listed.append((row, []))
        elif (info := RunGroup(path).read()):
            kind = CHILD_KIND.get(info.get("kind"), "run")
            children = [row for child in _folders(path) if (row := _run_row(RunFolder(child), kind))]
            listed.append((_group_row(RunGroup(path), info, children), children))
    rows = []
    for row, children in sorted(listed, key=lambda item: item[0]["started"], reverse=True):
        rows.append(row)
        if unfold:
            rows.extend(sorted(children, key=lambda child: (child["started"], _natural(child["name"]))))
    return rows


def _natural(name: str) -> list:
    """`trial2` before `trial10`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def find_run(name: str) -> RunFolder:
    """A run by its name as `runs` lists it (`adam`, `optimizers/adam`), or by its folder's path."""
    path = Path(name) if Path(name).is_absolute() else runs_root() / name
    if not (path / "run.json").exists() and (Path(name) / "run.json").exists():
        path = Path(name)  # a folder's path from the working folder: nbopt-runs/optimizers/adam
    if (path / "run.json").exists():
        return RunFolder(path)
    if (path / GROUP_FILE).exists():
        inside = sorted(row["name"] for row in list_runs(unfold=True) if Path(row["name"]).parent == Path(name))
        raise RecipeError(f"'{name}' is a {RunGroup(path).read().get('kind', 'group')} of {len(inside)} runs; "
                          f"name one of them{': ' + ', '.join(inside[:10]) if inside else ''}")
    names = [row["name"] for row in list_runs(unfold=True)]
    guess = closest(name, names)
    hint = f" — did you mean '{guess}'?" if guess else (f"; recorded runs: {', '.join(names[:10])}" if names else
                                                        "; no runs are recorded in this folder yet")
    raise RecipeError(f"no run named '{name}' in {runs_root()}{hint}")


def export_recipe(name: str, to: str | Path | None = None) -> Path:
    """Copy a run's recipe to a YAML file (default: NAME.yaml here) that `nbopt run` accepts."""
    folder = find_run(name)
    target = Path(to or f"{folder.name.replace('/', '-')}.yaml")
    atomic_write_text(target, (folder.path / "recipe.yaml").read_text())
    return target


def runs_to_delete(names=(), keep_last: int | None = None) -> list[dict]:
    """The rows that deleting `names` and all but the newest `keep_last` would remove, checked before
    anything is: every name is recorded, and nothing named is still running (a running run is kept by
    `keep_last` too)."""
    if keep_last is not None and keep_last < 0:
        raise RecipeError(f"--keep-last must be 0 or more, got {keep_last}")
    rows = {row["name"]: row for row in list_runs(unfold=True)}
    doomed = {}
    for name in names:
        name = name.strip("/")
        if name not in rows:
            find_run(name)  # the one-line error, with a guess
        if rows[name]["status"] == LIVE:
            raise RecipeError(f"'{name}' is still running; stop it (or wait for it) before deleting it")
        doomed[name] = rows[name]
    if keep_last is not None:
        top = [row for row in rows.values() if "/" not in row["name"]]
        doomed.update((row["name"], row) for row in top[keep_last:] if row["status"] != LIVE)
    return [row for name, row in doomed.items() if not any(name.startswith(f"{other}/") for other in doomed)]


def size_of(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def delete(rows: list[dict]) -> None:
    """Each folder is first renamed to a hidden name, then removed: a table read meanwhile, or a crash
    halfway, never shows half a run."""
    for row in rows:
        path = row["path"]
        hidden = path.with_name(f".{path.name}.{os.getpid()}.deleting")
        os.rename(path, hidden)
        shutil.rmtree(hidden)


def delete_runs(*names: str, keep_last: int | None = None) -> list[str]:
    """Delete runs, compares or sweeps by name, and/or all but the newest `keep_last`; returns the names
    deleted. A sweep's study stays in its Optuna storage."""
    rows = runs_to_delete(names, keep_last)
    delete(rows)
    return [row["name"] for row in rows]


def delete_asking(names, keep_last: int | None, yes: bool, ask) -> str:
    """What the doors run for `runs --rm NAME… / --keep-last N`: list what goes, ask (`ask(question)` says
    yes or no, or None where nobody can be asked), delete, and say what was done in one line."""
    rows = runs_to_delete(names, keep_last)
    if not rows:
        return "Nothing to delete."
    megabytes = sum(size_of(row["path"]) for row in rows) / 1e6
    listed = ", ".join(f"{row['name']}" + (f" ({row['runs']} run{'s' * (row['runs'] != 1)})" if row["kind"] in CHILD_KIND else "")
                       for row in rows)
    if not yes:
        answer = ask(f"Delete {listed} ({megabytes:.1f} MB)? [y/N] ") if ask is not None else None
        if answer is None:
            raise RecipeError(f"deleting {listed} needs a yes, and there is no terminal to ask on; "
                              "add --yes to delete without asking")
        if not answer:
            return "Nothing deleted."
    delete(rows)
    return f"Deleted {listed} ({megabytes:.1f} MB)."
