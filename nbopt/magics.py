"""The ``%nbopt`` / ``%%nbopt`` magics: parse the line, hand the cell to the plain API.

No logic lives here that the Python API (``nbopt.train``, ``nbopt.check``) and the command line lack.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

import nbopt
from nbopt.helptext import SUBCOMMANDS, help_html, help_text


@magic_arguments()
@argument("--name", help="name of the run and of its folder under nbopt-runs/")
@argument("--out", default="run", help="variable that receives the Run (default: run)")
@argument("--dry-run", action="store_true", help="validate and show the plan without training")
def _train_args(line):
    """%%nbopt train: train once from the recipe in the cell."""


@magic_arguments()
@argument("--repeats", type=int, default=1, help="train every variant with this many seeds; report mean ± std")
@argument("--out", default="comparison", help="variable that receives the Comparison (default: comparison)")
def _compare_args(line):
    """%%nbopt compare: train the recipe's `variants:` side by side on the same split, seed and weights."""


@magic_arguments()
@argument("--trials", type=int, help="finished trials the study should hold (default: the grid's size, else 20)")
@argument("--sampler", default="tpe", help="grid, random, tpe (default) or gp")
@argument("--pruner", default="median", help="median (default), hyperband or none")
@argument("--metric", help="val_acc / val_mae (default) or val_loss")
@argument("--direction", help="maximize or minimize (default: from the metric)")
@argument("--storage", help="an Optuna storage URL, or $VARIABLE holding one (default: a local journal file)")
@argument("--study", help="study name (default: derived from the recipe, so the same cell resumes)")
@argument("--jobs", type=int, default=1, help="worker processes on this machine")
@argument("--timeout", type=float, help="stop starting trials after this many seconds")
@argument("--allow-space-change", action="store_true", help="add to a study made with another search space")
@argument("--out", default="sweep", help="variable that receives the Sweep (default: sweep)")
def _sweep_args(line):
    """%%nbopt sweep: search the recipe's `search:` space with Optuna; resumable."""


@magic_arguments()
@argument("name", help="the run's name, as listed by %%nbopt runs")
@argument("--to", help="file to write (default: NAME.yaml)")
def _export_args(line):
    """%nbopt export: write a run's recipe to a YAML file that `nbopt run` accepts."""


@magic_arguments()
@argument("key", nargs="?", help="a recipe key, e.g. optimizer")
def _help_args(line):
    """%nbopt help: list sub-commands and recipe keys, or what one key accepts."""


def _show(text: str, html: str) -> None:
    display({"text/plain": text, "text/html": html}, raw=True)


@magics_class
class NboptMagics(Magics):
    @line_cell_magic
    def nbopt(self, line: str, cell: str | None = None):
        command, _, rest = line.strip().partition(" ")
        if cell is not None:
            if command == "train":
                return self._train(rest, cell)
            if command == "compare":
                return self._compare(rest, cell)
            if command == "show-augment":
                return self._show_augment(cell)
            if command == "sweep":
                return self._sweep(rest, cell)
            raise UsageError(f"unknown cell command '{command}'; use `%%nbopt train` (see `%nbopt help`)")
        if command in ("", "help"):
            args = parse_argstring(_help_args, rest)
            return _show(help_text(args.key), help_html(args.key))
        if command == "runs":
            return self._runs()
        if command == "show-augment":
            return self._show_augment(None, rest.strip())
        if command == "export":
            return self._export(rest)
        if command == "train":
            raise UsageError("%%nbopt train is a cell magic: write the recipe in the lines below `%%nbopt train`")
        if command == "panel":
            return self._panel(rest.strip())
        raise UsageError(f"unknown command '{command}'; see `%nbopt help`")

    def _train(self, rest: str, cell: str):
        args = parse_argstring(_train_args, rest)
        if not args.out.isidentifier():
            raise UsageError(f"--out must be a Python variable name, got '{args.out}'")
        namespace = self.shell.user_ns
        if args.dry_run:
            display(nbopt.check(cell, namespace))
            return None
        run = nbopt.train(cell, namespace, name=args.name)
        namespace[args.out] = run
        return None

    def _compare(self, rest: str, cell: str):
        from nbopt.comparison import compare
        args = parse_argstring(_compare_args, rest)
        if not args.out.isidentifier():
            raise UsageError(f"--out must be a Python variable name, got '{args.out}'")
        self.shell.user_ns[args.out] = compare(cell, self.shell.user_ns, repeats=args.repeats)
        return None

    def _sweep(self, rest: str, cell: str):
        from nbopt.sweeps import sweep
        args = parse_argstring(_sweep_args, rest)
        if not args.out.isidentifier():
            raise UsageError(f"--out must be a Python variable name, got '{args.out}'")
        result = sweep(cell, self.shell.user_ns, trials=args.trials, sampler=args.sampler, pruner=args.pruner,
                       metric=args.metric, direction=args.direction, storage=args.storage, study=args.study,
                       jobs=args.jobs, timeout=args.timeout, allow_space_change=args.allow_space_change)
        self.shell.user_ns[args.out] = result
        if result.best_trial is not None:
            display(result.plot())
        return None

    def _panel(self, variable: str):
        """The panel, empty or opened from a recipe: a Run, a Recipe, a dict or YAML text in a variable."""
        from nbopt.widgets.panel import Panel
        recipe = None
        if variable:
            if variable not in self.shell.user_ns:
                raise UsageError(f"no variable named '{variable}'; give a Run or a recipe, e.g. `%nbopt panel run`")
            recipe = self.shell.user_ns[variable]
        panel = Panel(self.shell.user_ns, recipe)
        self.shell.user_ns["panel"] = panel
        display(panel)
        return None

    def _show_augment(self, cell: str | None, variable: str = ""):
        """The recipe in the cell, or the recipe of a Run (a variable name; default: the last run)."""
        from nbopt.display.augment_grid import show_augment
        if cell is None:
            run = self.shell.user_ns.get(variable) if variable else nbopt.last
            if run is None or not hasattr(run, "recipe"):
                raise UsageError("give a recipe: `%%nbopt show-augment` with the recipe below it, or "
                                 "`%nbopt show-augment RUN` with a Run variable")
            cell = run.recipe
        display(show_augment(cell, self.shell.user_ns))
        return None

    def _runs(self):
        import pandas as pd

        from nbopt.store import list_runs, root_label
        rows = list_runs()
        if not rows:
            print(f"No runs recorded in {root_label()} yet.")
            return None
        display(pd.DataFrame(rows).set_index("name"))
        return None

    def _export(self, rest: str):
        from nbopt.store import find_run
        args = parse_argstring(_export_args, rest)
        folder = find_run(args.name)
        target = Path(args.to or f"{folder.name}.yaml")
        shutil.copyfile(folder.path / "recipe.yaml", target)
        print(f"Wrote {target}; run it from a shell with: nbopt run {target}")
        return None


NboptMagics.nbopt.__doc__ = "nbopt: optimise a model from a recipe.\n\n" + "\n".join(
    f"  {usage}\n      {what}" for usage, what in SUBCOMMANDS.items()) + "\n\n" + "\n\n".join(
    f.__doc__ for f in (_train_args, _compare_args, _sweep_args, _export_args, _help_args))
