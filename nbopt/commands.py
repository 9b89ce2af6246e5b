"""Every sub-command and option, declared once for every door that offers them.

The magics build their parsers from these declarations, so does the ``nbopt`` command line, and
``%nbopt help`` and the magics' docstring list them from here: an option added here is parsed,
documented and tested everywhere at once, and no door can document an option another door lacks.
An option belongs to the notebook (``%%nbopt``), the shell (``nbopt``) or both. Options that are
keywords of the public API (``nbopt.sweep(trials=...)``) reach it under their own name, so a door
passes them on without naming them again.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from nbopt.sweeps import PRUNERS, SAMPLERS

NOTEBOOK, SHELL = "notebook", "shell"
BOTH = (NOTEBOOK, SHELL)


@dataclass(frozen=True)
class Option:
    """One argument of a sub-command. A `flag` without dashes is positional; one with dashes and
    neither `metavar` nor `choices` is a switch."""
    flag: str
    help: str
    metavar: str | None = None  # how usage lines name the value
    type: type | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    optional: bool = False  # a positional argument that may be left out
    doors: tuple[str, ...] = BOTH
    keyword: bool = True  # passed to the public API function as `dest=value`
    many: bool = False  # takes one or more values: `--rm NAME ...`

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def value(self) -> str | None:
        return "|".join(self.choices) if self.choices else self.metavar

    @property
    def switch(self) -> bool:
        return self.flag.startswith("--") and self.value is None

    def synopsis(self) -> str:
        """``--sampler grid|random|tpe|gp``, ``--dry-run``, ``NAME``: the option as help lists it."""
        if not self.flag.startswith("--"):
            return self.value
        return self.flag if self.switch else f"{self.flag} {self.value}{' ...' if self.many else ''}"

    def usage(self) -> str:
        """``[--sampler grid|random|tpe|gp]``, ``NAME``, ``[KEY]``: the option in a usage line."""
        required = not self.flag.startswith("--") and not self.optional
        return self.synopsis() if required else f"[{self.synopsis()}]"

    def describe(self) -> str:
        """The help text with the default, as every door shows it."""
        shown = self.default is not None and not self.switch
        return self.help + (f" (default: {self.default})" if shown else "")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        help_text = self.describe().replace("%", "%%")  # argparse formats help with %
        if self.switch:
            parser.add_argument(self.flag, action="store_true", help=help_text)
        elif self.flag.startswith("--"):
            parser.add_argument(self.flag, metavar=self.metavar, type=self.type, default=self.default,
                                choices=self.choices, nargs="+" if self.many else None, help=help_text)
        else:
            parser.add_argument(self.dest, metavar=self.metavar, nargs="?" if self.optional else None,
                                help=help_text)


@dataclass(frozen=True)
class Command:
    """A sub-command: how each door calls it (None where a door lacks it) and its options."""
    name: str
    summary: str
    options: tuple[Option, ...] = ()
    magic: str | None = None  # "cell" (the recipe is the cell's body), "line", or "either"
    shell: str | None = None  # the `nbopt` sub-command

    def option(self, flag: str) -> Option:
        return next(option for option in self.options if option.flag == flag)

    def options_for(self, door: str) -> tuple[Option, ...]:
        return tuple(option for option in self.options if door in option.doors)

    def usages(self, door: str) -> list[str]:
        """The command as typed in a door, with every option it takes there (a cell form's recipe is
        its body, so it takes no positional argument)."""
        options = self.options_for(door)
        if door == SHELL:
            forms = [(f"nbopt {self.shell}", options)] if self.shell else []
        else:
            flagged = tuple(o for o in options if o.flag.startswith("--"))
            forms = {"cell": [(f"%%nbopt {self.name}", options)], "line": [(f"%nbopt {self.name}", options)],
                     "either": [(f"%%nbopt {self.name}", flagged), (f"%nbopt {self.name}", options)]
                     }.get(self.magic, [])
        return [" ".join([words, *(o.usage() for o in opts)]) for words, opts in forms]

    def keywords(self, args: argparse.Namespace) -> dict[str, Any]:
        """The parsed options that the public API takes as keywords."""
        return {o.dest: getattr(args, o.dest) for o in self.options if o.keyword and hasattr(args, o.dest)}


def _out(kind: str, variable: str) -> Option:
    return Option("--out", f"the variable that receives the {kind}", "VAR", default=variable, doors=(NOTEBOOK,),
                  keyword=False)


_RECIPE = Option("recipe", "the recipe's YAML file; its folder is importable (`model: mymodels:Net`)", "RECIPE",
                 doors=(SHELL,), keyword=False)
_RUN = Option("run", "a variable holding a Run or a recipe (a Recipe, a dict or YAML text)", "RUN", optional=True,
              doors=(NOTEBOOK,), keyword=False)

COMMANDS: tuple[Command, ...] = (
    Command("train", "train once from the recipe; leaves a Run with the model, its history and scores", (
        _RECIPE,
        Option("--name", "the run's name and its folder under nbopt-runs/", "NAME"),
        _out("Run", "run"),
        Option("--dry-run", "validate the recipe and show the plan, without training", doors=(NOTEBOOK,),
               keyword=False),
        Option("--resume", "go on with a stopped, interrupted or died run from its last checkpoint, in its own "
               "folder and history; the recipe must be the run's, but `epochs` may be raised to train further",
               "NAME"),
    ), magic="cell", shell="run"),
    Command("check", "validate a recipe and show the plan, without training (in a notebook: train --dry-run)",
            (_RECIPE,), shell="check"),
    Command("compare", "train the recipe's `variants:` side by side on the same split, seed and starting "
            "weights (`%nbopt help variants`); leaves a Comparison", (
                Option("--repeats", "train every variant with this many seeds; the table gives mean ± std", "N",
                       int, 1),
                Option("--metric", "the score that ranks the variants, in the direction the metric table gives: "
                       "val_loss, the task's metric or one of the recipe's `metrics:` as val_NAME (default: the "
                       "task's)", "NAME"),
                Option("--name", "the comparison's name and its folder under nbopt-runs/, which holds a folder per "
                       "variant (default: the recipe's `name:`, else compare-DATE-TIME)", "NAME"),
                Option("--jobs", "train this many runs at once, each in a worker process with its share of the "
                       "cores (results as with one)", "N", int, 1),
                Option("--resume", "go on with this comparison's earlier runs (the latest comparison of this --name, "
                       "any without one): variants that finished are loaded, those interrupted or died go on from "
                       "their checkpoints, the rest train"),
                _out("Comparison", "comparison"),
            ), magic="cell"),
    Command("sweep", "search the recipe's `search:` space with Optuna (`%nbopt help search`); an interrupted "
            "sweep resumes when run again; leaves a Sweep", (
                _RECIPE,
                Option("--trials", "finished trials the study should hold (default: the grid's size, else 20)",
                       "N", int),
                Option("--sampler", "how trials are drawn", default="tpe", choices=SAMPLERS),
                Option("--pruner", "how unpromising trials are stopped early", default="median", choices=PRUNERS),
                Option("--metric", "the score to optimise: val_loss, the task's metric or one of the recipe's "
                       "`metrics:` as val_NAME (default: the task's)", "NAME"),
                Option("--direction", "whether higher or lower is better (default: from the metric table)",
                       choices=("maximize", "minimize")),
                Option("--storage", "an Optuna storage URL, or $VARIABLE holding one (default: a journal file "
                       "in the working folder); machines sharing one study run its trials together", "URL"),
                Option("--study", "the study's name (default: derived from the recipe, so the same cell resumes)",
                       "NAME"),
                Option("--jobs", "worker processes on this machine", "N", int, 1),
                Option("--timeout", "stop starting new trials after this many seconds", "SECONDS", float),
                Option("--allow-space-change", "add trials to a study made with another search space"),
                _out("Sweep", "sweep"),
            ), magic="cell", shell="sweep"),
    Command("show-augment", "a grid of augmented training samples for the `augment:` list of the cell's "
            "recipe, or of RUN's (default: the last run)", (_RUN,), magic="either"),
    Command("panel", "the recipe as controls, with Train, Compare with last, Sweep, Stop and As cell; empty, or "
            "opened from RUN", (_RUN,), magic="line"),
    Command("runs", "the runs recorded in nbopt-runs/, newest first: one row per train, compare or sweep, with "
            "its best score and the metric's name", (
                Option("--all", "list every run of each compare and sweep too, under its row"),
                Option("--rm", "delete these runs, compares or sweeps (asks first)", "NAME", many=True,
                       keyword=False),
                Option("--keep-last", "delete all but the newest N trains, compares and sweeps (asks first; "
                       "running ones are kept)", "N", int, keyword=False),
                Option("--yes", "delete without asking", keyword=False),
            ), magic="line", shell="runs"),
    Command("export", "write a run's recipe to a YAML file that `nbopt run` accepts, or its trained model to a file "
            "other runtimes load", (
        Option("name", "the run's name, as `runs` lists it", "NAME"),
        Option("--to", "the recipe file to write (default: NAME.yaml)", "FILE"),
        Option("--model", "write the trained model instead: .onnx (ONNX Runtime; pip install nbopt[onnx]) or .pt2 "
               "(torch.export), normalisation included, checked against the run's predictions", "PATH"),
    ), magic="line", shell="export"),
    Command("help", "this help, or what one recipe key or topic accepts", (
        Option("topic", "a recipe key (optimizer, prune, …), search, variants, metrics, or a sub-command", "KEY",
               optional=True),
    ), magic="line", shell="help"),
)

BY_NAME = {command.name: command for command in COMMANDS}

