"""``nbopt`` on the command line: the same recipes outside a notebook, through the same public API.

Notebook variable names do not exist here; use import paths (``model: mypkg.models:Net``). The
recipe's own folder is importable, so ``model: mymodels:Net`` finds ``mymodels.py`` beside it.
The sub-commands and their options are declared once in ``nbopt.commands``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbopt
from nbopt.commands import COMMANDS, SHELL
from nbopt.errors import RecipeError

INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C


def parser() -> argparse.ArgumentParser:
    """The ``nbopt`` parser: one sub-parser per declared command that the shell has."""
    built = argparse.ArgumentParser(prog="nbopt", description="Train and tune PyTorch models from a YAML recipe.")
    sub = built.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        if command.shell:
            command_parser = sub.add_parser(command.shell, help=command.summary.replace("%", "%%"),
                                            description=command.summary)  # argparse %-formats help, not descriptions
            command_parser.set_defaults(declared=command)
            for option in command.options_for(SHELL):
                option.add_to(command_parser)
    return built


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _DOORS[args.declared.name](args)
    except RecipeError as exc:
        print(f"nbopt: {exc}", file=sys.stderr)
        return 2


def _recipe(args) -> str:
    """The recipe file's text; its folder becomes importable for `pkg.module:name` references."""
    path = Path(args.recipe)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        return path.read_text()
    except OSError as exc:
        raise RecipeError(f"cannot read the recipe file: {exc.strerror}: {path}") from None


def _run(args) -> int:
    from nbopt.parallel import is_distributed_child
    run = nbopt.train(_recipe(args), {}, **args.declared.keywords(args))
    if not is_distributed_child():
        print(f"Best weights: {run.checkpoint}")
    return INTERRUPTED if run.status == "interrupted" else 0


def _check(args) -> int:
    print(nbopt.check(_recipe(args), {}))
    return 0


def _sweep(args) -> int:
    result = nbopt.sweep(_recipe(args), {}, **args.declared.keywords(args))
    return INTERRUPTED if result.interrupted else 0


def _runs(args) -> int:
    from nbopt.catalog import delete_asking
    from nbopt.store import runs_root
    if args.rm or args.keep_last is not None:
        print(delete_asking(args.rm or (), args.keep_last, args.yes, _ask if sys.stdin.isatty() else None))
        return 0
    table = nbopt.runs(**args.declared.keywords(args))
    print(table.to_string() if not table.empty else f"No runs recorded in {runs_root()} yet.")
    return 0


def _ask(question: str) -> bool:
    return input(question).strip().lower() in ("y", "yes")


def _export(args) -> int:
    written = nbopt.export(**args.declared.keywords(args))
    print(written if args.model else f"Wrote {written}")
    return 0


def _help(args) -> int:
    from nbopt.helptext import help_text
    print(help_text(args.topic))
    return 0


_DOORS = {"train": _run, "check": _check, "sweep": _sweep, "runs": _runs, "export": _export, "help": _help}

if __name__ == "__main__":
    sys.exit(main())
