"""``compare``: train variants of one recipe on the same split, seed and starting weights.

With ``repeats=N`` every variant trains with N seeds, and the table says whether the winner's lead
is larger than the seed-to-seed spread — on small data a single run often ranks techniques wrongly.
"""
from __future__ import annotations

import copy
import html
import math
import re
import time

import pandas as pd

from nbopt import metrics
from nbopt.callbacks.interrupt import InterruptGuard
from nbopt.callbacks.recorder import Listener
from nbopt.comparison_jobs import train_in_workers
from nbopt.display.compare import CompareBoard, compare_info
from nbopt.environment import in_notebook
from nbopt.display.plots import draw_curves, register_figure_formatter
from nbopt.errors import RecipeError
from nbopt.liveness import current_status
from nbopt.loggers import Tracking
from nbopt.plan import Plan, check
from nbopt.resume import changed_keys
from nbopt.run import Run, load_run
from nbopt.store import RunFolder, RunGroup, runs_root
from nbopt.techniques.scores import not_reported_hint
from nbopt.yamltext import load_yaml

_MERGED_KEYS = ("early_stopping", "normalize", "prune", "distill")  # mappings whose settings a variant adjusts one by one


def variant_recipes(source: str | dict) -> dict[str, tuple[dict, dict]]:
    """Variant name → (recipe mapping, line index), from a recipe with a `variants:` mapping."""
    if isinstance(source, str):
        raw, lines = load_yaml(source)
    elif isinstance(source, dict):
        raw, lines = copy.deepcopy(source), {}
    else:
        raise RecipeError(f"a recipe is YAML text or a dict, got {type(source).__name__}")
    variants = raw.pop("variants", None)
    if not isinstance(variants, dict) or not variants:
        raise RecipeError("compare needs a `variants:` mapping of name → changes, e.g.\n"
                          "variants: {adam: {optimizer: adam}, sgd: {optimizer: 'sgd(lr=0.1)'}}",
                          key="variants", line=lines.get("variants"))
    recipes = {}
    for name, changes in variants.items():
        changes = changes or {}
        if not isinstance(changes, dict):
            raise RecipeError(f"variant '{name}' must be a mapping of recipe keys to new values, got {changes!r}",
                              key=f"variants.{name}", line=lines.get(f"variants.{name}"))
        merged = copy.deepcopy(raw)
        for key, value in changes.items():
            if key in _MERGED_KEYS and isinstance(merged.get(key), dict) and isinstance(value, dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        variant_lines = {k: v for k, v in lines.items() if not k.startswith("variants.")}
        prefix = f"variants.{name}."
        variant_lines.update({k[len(prefix):]: v for k, v in lines.items() if k.startswith(prefix)})
        recipes[str(name)] = (merged, variant_lines)
    return recipes


def _plan(name: str, recipe: dict, lines: dict, namespace: dict | None, seed: int | None = None) -> Plan:
    from nbopt.recipe import parse_recipe
    if seed is not None:
        recipe = {**recipe, "seed": seed}
    try:
        parsed = parse_recipe(recipe, lines)
        return check(parsed, namespace)
    except RecipeError as exc:
        raise RecipeError(f"variant '{name}': {exc}") from None


def _teacher_variant(recipe: dict, names) -> str | None:
    distill = recipe.get("distill")
    teacher = distill.get("teacher") if isinstance(distill, dict) else distill
    return teacher if isinstance(teacher, str) and teacher in names else None


def _with_teacher(recipe: dict, teacher) -> dict:
    distill = recipe["distill"]
    return {**recipe, "distill": {**distill, "teacher": teacher} if isinstance(distill, dict) else {"teacher": teacher}}


def _plans(recipes: dict, namespace) -> tuple[dict[str, Plan], dict[str, str]]:
    """Check every variant before anything trains. A variant may distil from an earlier variant: it is
    checked against that variant's (untrained) model now and gets the trained one when its turn comes."""
    plans, teachers = {}, {}
    order = list(recipes)
    for name, (variant, lines) in recipes.items():
        teacher = _teacher_variant(variant, recipes)
        if teacher is not None:
            if order.index(teacher) >= order.index(name):
                raise RecipeError(f"variant '{name}' distils from variant '{teacher}', which must come before it",
                                  key=f"variants.{name}.distill", line=lines.get("distill"))
            teachers[name] = teacher
            variant = _with_teacher(variant, plans[teacher].model.net)
        plans[name] = _plan(name, variant, lines, namespace)
    return plans, teachers


def _ranking_metric(plans: dict[str, Plan], metric: str | None, jobs: int) -> str:
    """The column that ranks the variants, once every variant is known to report it (and to train in one
    process, when `jobs` share the machine out)."""
    metric_keys = {plan.metric_key for plan in plans.values()}
    if len(metric_keys) > 1:
        raise RecipeError(f"the variants report different metrics ({', '.join(sorted(metric_keys))}); "
                          "compare variants of the same task")
    if jobs > 1 and (several := [v for v, plan in plans.items() if plan.recipe.devices != 1]):
        raise RecipeError(f"variant '{several[0]}' trains on several devices, which --jobs {jobs} would share out "
                          "as well; use --jobs 1 with devices")
    metric = metric or metric_keys.pop()
    for name, plan in plans.items():
        if metric not in plan.reported:
            where = f"variant '{name}': " if len(plans) > 1 else ""
            raise RecipeError(f"{where}--metric can be {', '.join(plan.reported)}, got {metric}"
                              + not_reported_hint(metric, plan.reported))
    return metric


def compare(recipe: str | dict, namespace: dict | None = None, *, repeats: int = 1, metric: str | None = None,
            name: str | None = None, resume: bool = False, jobs: int = 1, live: bool = True,
            stop: InterruptGuard | None = None, listeners: list[Listener] = ()) -> "Comparison":
    """Train every variant (× `repeats` seeds) and return a Comparison. All recipes are checked first.

    `metric` ranks the variants (default: the task's metric), in the direction the metric table gives;
    every variant must report it. The variants' runs go in one folder, `name` (default: the recipe's
    `name:`, else compare-DATE-TIME). `resume=True` goes on with the latest comparison of the same name
    (any name, when none is given) that holds a run of these variants: each variant's latest run of the
    same recipe is loaded if it finished, resumed from its checkpoint if it was interrupted or died, and
    trained only if there is none. `jobs=N` trains N runs at once in worker processes (same results as one
    job). `listeners` hear every run's steps and epochs with one job (the panel shows progress with one).
    """
    if repeats < 1:
        raise RecipeError(f"--repeats must be at least 1, got {repeats}")
    if jobs < 1:
        raise RecipeError(f"--jobs must be at least 1, got {jobs}")
    recipes = variant_recipes(recipe)
    plans, teachers = _plans(recipes, namespace)
    metric_key = _ranking_metric(plans, metric, jobs)
    name = name or next(iter(plans.values())).recipe.name
    earlier = _earlier_comparison(name, plans, repeats) if resume else None
    group = earlier or RunGroup.create("compare", name or time.strftime("compare-%Y%m%d-%H%M%S"), metric=metric_key)
    guard = stop or InterruptGuard()
    board = CompareBoard(metric_key, len(plans) * repeats, in_notebook()) if live else None
    tasks = [(repeat, variant) for repeat in range(repeats) for variant in plans]  # the order one job trains in
    runs: dict[tuple[int, str], Run] = {}

    def plan_of(task, ended: dict | None = None) -> Plan:
        """The task's plan; `ended` (task → folder) holds the teacher's run when a worker process asks."""
        repeat, variant = task
        if not repeat and variant not in teachers:
            return plans[variant]
        mapping, lines = recipes[variant]
        if variant in teachers:  # distil from the teacher variant's run of this seed
            teacher = (repeat, teachers[variant])
            mapping = _with_teacher(mapping, runs[teacher] if teacher in runs else load_run(ended[teacher], namespace))
        return _plan(variant, mapping, lines, namespace, plans[variant].recipe.seed + repeat)

    def label(task) -> str:
        return task[1] if repeats == 1 else f"{task[1]} (seed {plans[task[1]].recipe.seed + task[0]})"

    def start(task, ended: dict | None = None):
        return _start(plan_of(task, ended), task[1], repeats, group, resume, namespace)

    def teacher_done(task, ended) -> bool:
        return task[1] not in teachers or (task[0], teachers[task[1]]) in ended

    def load(task, folder: str) -> Run:  # a plan this process already holds spares checking the recipe again
        repeat, variant = task
        return load_run(folder, namespace, plan=plans[variant] if not repeat and variant not in teachers else None)

    with group.running(lambda: guard.requested):
        if jobs == 1:
            _train_in_order(tasks, start, label, runs, guard, board, live, listeners)
        else:
            train_in_workers(tasks, start, teacher_done, load, runs, jobs, guard, board, label)
    all_runs = {variant: [runs[task] for task in tasks if task[1] == variant and task in runs] for variant in plans}
    comparison = Comparison({k: v for k, v in all_runs.items() if v}, metric_key, interrupted=guard.requested)
    if board:
        board.finish(comparison)
    return comparison


def _train_in_order(tasks, start, label, runs: dict, guard, board, live: bool, listeners) -> None:
    """One run after the other in this process (`--jobs 1`), each heard by the board and `listeners`."""
    for task in tasks:
        if guard.requested:
            break
        if board:
            board.begin(label(task))
        started = start(task)
        if isinstance(started, Run):  # loaded: it finished before (a resumed comparison)
            runs[task] = started
            if board:
                board.add(started.history)
        else:
            runs[task] = started([*([board] if board else []), *listeners], stop=guard,
                                 live=live and not (board and board.notebook))


def _run_name(variant: str, plan: Plan, repeats: int) -> str:
    return f"{variant}-seed{plan.recipe.seed}" if repeats > 1 else variant


def _start(plan: Plan, variant: str, repeats: int, group: RunGroup, resume: bool, namespace):
    """The variant's run in the comparison's folder: its finished earlier run (`resume`) as a Run, else a
    `train(listeners, live=False, stop=None)` that resumes its earlier run or makes a new one."""
    from nbopt.training import execute
    run_name = _run_name(variant, plan, repeats)
    earlier = _earlier_run(run_name, plan.recipe, group) if resume else None
    if earlier is not None and _done(earlier, plan.recipe):
        return load_run(str(earlier.path), namespace)
    tracking = Tracking(tags={"compare": group.name, "variant": variant, "seed": plan.recipe.seed})

    def train(listeners, live: bool = False, stop: InterruptGuard | None = None) -> Run:
        return execute(plan, name=None if earlier else run_name, resume=str(earlier.path) if earlier else None,
                       group=group, live=live, stop=stop, listeners=listeners, tracking=tracking)
    return train


def _earlier_comparison(name: str | None, plans: dict[str, Plan], repeats: int) -> RunGroup | None:
    """The latest comparison called `name` (`name`, `name-2`, …; any, when None) holding a run of one of
    these variants with the same recipe: what `resume` goes on with."""
    root = runs_root()
    pattern = re.compile(rf"{re.escape(RunFolder.slug(name))}(-\d+)?" if name else ".*")
    groups = [group for path in (root.iterdir() if root.is_dir() else ()) if pattern.fullmatch(path.name)
              and (group := RunGroup(path)).read().get("kind") == "compare"]
    for group in sorted(groups, key=lambda g: g.read().get("created", 0), reverse=True):
        if any(_earlier_run(_run_name(variant, plan, repeats), plan.recipe, group) for variant, plan in plans.items()):
            return group
    return None


def _earlier_run(run_name: str, recipe, group: RunGroup) -> RunFolder | None:
    """The latest run of this variant in the comparison's folder (`adam`, or `adam-2`, … when its recipe
    changed) whose recipe means the same (`epochs` aside)."""
    base = RunFolder.slug(run_name)
    pattern = re.compile(rf"{re.escape(base)}(-(\d+))?")
    found = [(folder.read_status().get("started", ""), int(match.group(2) or 1), folder)
             for path in (group.path.iterdir() if group.path.is_dir() else ())
             if (match := pattern.fullmatch(path.name)) and (folder := RunFolder(path)).read_status()]
    for _, _, folder in sorted(found, key=lambda item: item[:2], reverse=True):
        if not changed_keys(folder, recipe):
            return folder
    return None


def _done(folder: RunFolder, recipe) -> bool:
    """Nothing left to train: it stopped early, or finished at least the epochs the recipe asks for."""
    status = folder.read_status()
    state = current_status(status)
    return state == "stopped early" or (state == "finished" and int(status.get("epochs_run") or 0) >= recipe.epochs)


class Comparison:
    """Variants side by side: `.runs` (name → Run, first seed), `.table`, `.verdict`, `.plot()`."""

    def __init__(self, all_runs: dict[str, list[Run]], metric_key: str, interrupted: bool = False):
        self.all_runs = all_runs
        self.runs = {name: runs[0] for name, runs in all_runs.items()}
        self.metric_key = metric_key
        self.interrupted = interrupted
        self.higher_is_better = metrics.higher_is_better(metric_key)
        self.table = self._table()
        self.verdict = self._verdict()

    @property
    def repeats(self) -> int:
        return max(len(runs) for runs in self.all_runs.values())

    @property
    def _test_key(self) -> str:
        """test_acc for val_acc: the same score on the held-out test split (`test_split:`)."""
        return "test_" + self.metric_key.removeprefix("val_")

    def _scores(self, name: str) -> list[float]:
        return [run.metrics.get(self.metric_key, math.nan) for run in self.all_runs[name]]

    def _table(self) -> pd.DataFrame:
        rows = []
        for name, runs in self.all_runs.items():
            row = {"variant": name}
            for key in (self.metric_key, self._test_key):  # the held-out test score too, when there is one
                scores = pd.Series([run.metrics.get(key, math.nan) for run in runs], dtype=float)
                if key == self.metric_key or scores.notna().any():
                    row[key] = scores.mean()
                    if self.repeats > 1:
                        row[f"{key} std"] = scores.std(ddof=1) if len(scores) > 1 else math.nan
            if self.repeats > 1:
                row["seeds"] = len(runs)
            row.update({
                "best epoch": pd.Series([r.metrics.get("best_epoch") for r in runs], dtype=float).mean(),
                "epochs run": pd.Series([r.metrics["epochs_run"] for r in runs], dtype=float).mean(),
                "time (s)": pd.Series([r.metrics["seconds"] for r in runs]).mean(),
                "parameters": runs[0].metrics["parameters"],
            })
            row["status"] = ", ".join(f"{n} {status}" if len(runs) > 1 else status for status, n in
                                      pd.Series([r.status for r in runs]).value_counts().items())
            rows.append(row)
        table = pd.DataFrame(rows).set_index("variant")
        if all(run.status in ("finished", "stopped early") for runs in self.all_runs.values() for run in runs):
            table = table.drop(columns="status")  # only a run that diverged or was cut short needs saying
        for column in ("best epoch", "epochs run"):  # whole numbers unless averaged over seeds
            values = table[column].dropna()
            if (values == values.round()).all():
                table[column] = table[column].astype("Int64")
        return table.sort_values(self.metric_key, ascending=not self.higher_is_better)

    def _verdict(self) -> str:
        if len(self.table) < 2:
            return ""
        first, second = self.table.index[0], self.table.index[1]
        lead = abs(self.table.loc[first, self.metric_key] - self.table.loc[second, self.metric_key])
        if self.repeats < 2:
            if lead == 0:
                return (f"'{first}' and '{second}' tie on {self.metric_key} in a single run; use --repeats 3 or "
                        "more to compare them over several seeds.")
            return (f"'{first}' leads '{second}' by {lead:.4g} {self.metric_key} in a single run; "
                    "use --repeats 3 or more to see whether that is more than seed-to-seed noise.")
        spread = max(self.table.loc[first, f"{self.metric_key} std"], self.table.loc[second, f"{self.metric_key} std"])
        if lead > spread:
            return (f"'{first}' leads '{second}' by {lead:.4g} {self.metric_key}, more than the seed-to-seed "
                    f"spread (std up to {spread:.4g}) over {self.repeats} seeds.")
        ranking = f"'{first}' and '{second}' tie on {self.metric_key}" if lead == 0 else \
            f"'{first}' leads '{second}' by only {lead:.4g} {self.metric_key}"
        return (f"{ranking}, within the seed-to-seed spread (std up to {spread:.4g}) over {self.repeats} seeds: "
                "the ranking may be noise.")

    def plot(self):
        """Overlaid curves; with several seeds, each variant's mean curve."""
        register_figure_formatter()
        histories = {name: [run.history for run in runs] for name, runs in self.all_runs.items()}
        return draw_curves(compare_info(histories, self.metric_key))

    def _repr_html_(self) -> str:
        note = "<div><i>Interrupted: the table holds the runs that finished.</i></div>" if self.interrupted else ""
        return (f"<div><b>nbopt compare</b>{note}{self.table.to_html(float_format=lambda v: f'{v:.4g}')}"
                f"<div>{html.escape(self.verdict)}</div></div>")

    def __repr__(self) -> str:
        return f"nbopt compare\n{self.table.to_string()}\n{self.verdict}"
