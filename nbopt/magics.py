"""The ``%nbopt`` / ``%%nbopt`` magics: parse the line, hand the cell to the public API, show the result.

The options come from ``nbopt.commands``, the work from ``nbopt.train``/``check``/``compare``/
``sweep``/``runs``/``export``, so nothing happens here that the Python API and the command line
lack. A parse mistake is IPython's one-line ``UsageError``.
"""
from __future__ import annotations

from functools import cache

from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser
from IPython.display import display

import nbopt
from nbopt.commands import BY_NAME, NOTEBOOK, Command
from nbopt.helptext import help_html, help_text, magic_doc


@cache
def parser(command: Command) -> MagicArgumentParser:
    """IPython's magic parser for one sub-command, built from its declared notebook options."""
    built = MagicArgumentParser(prog=f"nbopt {command.name}", description=command.summary, add_help=False)
    for option in command.options_for(NOTEBOOK):
        option.add_to(built)
    return built


def _command(name: str, cell: str | None) -> Command:
    """The sub-command a line names, if it can be called the way it was (with or without a cell)."""
    command = BY_NAME.get(name or "help")
    if command is not None and command.magic is None:
        raise UsageError(f"`{name}` is a shell command (nbopt {command.shell}); see `%nbopt help {name}`")
    if command is None:
        if cell is not None:
            raise UsageError(f"unknown cell command '{name}'; use `%%nbopt train` (see `%nbopt help`)")
        raise UsageError(f"unknown command '{name}'; see `%nbopt help`")
    if cell is None and command.magic == "cell":
        raise UsageError(f"%%nbopt {name} is a cell magic: write the recipe in the lines below `%%nbopt {name}`")
    if cell is not None and command.magic == "line":
        raise UsageError(f"%nbopt {name} takes no cell: write it on a line of its own")
    return command


def _variable(name: str) -> str:
    if not name.isidentifier():
        raise UsageError(f"--out must be a Python variable name, got '{name}'")
    return name


def _ask(question: str) -> bool | None:
    """A yes from the notebook's input box; where the front end has none (a headless run): asks no one."""
    try:
        return input(question).strip().lower() in ("y", "yes")
    except StdinNotImplementedError:
        return None


@magics_class
class NboptMagics(Magics):
    @line_cell_magic
    def nbopt(self, line: str, cell: str | None = None):
        name, _, rest = line.strip().partition(" ")
        command = _command(name, cell)
        args = parser(command).parse_argstring(rest)
        return getattr(self, "_" + command.name.replace("-", "_"))(command, args, cell)

    def _train(self, command: Command, args, cell: str) -> None:
        namespace, out = self.shell.user_ns, _variable(args.out)
        if args.dry_run:
            display(nbopt.check(cell, namespace))
        else:
            namespace[out] = nbopt.train(cell, namespace, **command.keywords(args))

    def _compare(self, command: Command, args, cell: str) -> None:
        out = _variable(args.out)
        self.shell.user_ns[out] = nbopt.compare(cell, self.shell.user_ns, **command.keywords(args))

    def _sweep(self, command: Command, args, cell: str) -> None:
        """The live board shows the sweep's figures; nothing more is drawn here."""
        out = _variable(args.out)
        self.shell.user_ns[out] = nbopt.sweep(cell, self.shell.user_ns, **command.keywords(args))

    def _show_augment(self, command: Command, args, cell: str | None) -> None:
        """The recipe in the cell, or the recipe of a Run (a variable; default: the last run)."""
        if cell is None:
            run = self.shell.user_ns.get(args.run) if args.run else nbopt.last
            if run is None or not hasattr(run, "recipe"):
                raise UsageError("give a recipe: `%%nbopt show-augment` with the recipe below it, or "
                                 "`%nbopt show-augment RUN` with a Run variable")
            cell = run.recipe
        display(nbopt.show_augment(cell, self.shell.user_ns))

    def _panel(self, command: Command, args, cell: None) -> None:
        """The panel, empty or opened from a recipe: a Run, a Recipe, a dict or YAML text in a variable."""
        from nbopt.widgets.panel import Panel
        if args.run and args.run not in self.shell.user_ns:
            raise UsageError(f"no variable named '{args.run}'; give a Run or a recipe, e.g. `%nbopt panel run`")
        panel = Panel(self.shell.user_ns, self.shell.user_ns[args.run] if args.run else None)
        self.shell.user_ns["panel"] = panel
        display(panel)

    def _runs(self, command: Command, args, cell: None):
        """The table as a DataFrame (the cell's result, shown whole); deleting asks in the notebook first."""
        from nbopt.catalog import delete_asking
        from nbopt.store import runs_root
        if args.rm or args.keep_last is not None:
            print(delete_asking(args.rm or (), args.keep_last, args.yes, _ask))
            return None
        table = nbopt.runs(**command.keywords(args))
        if table.empty:
            print(f"No runs recorded in {runs_root()} yet.")
            return None
        return table

    def _export(self, command: Command, args, cell: None) -> None:
        written = nbopt.export(**command.keywords(args))
        print(written if args.model else f"Wrote {written}; run it from a shell with: nbopt run {written}")

    def _help(self, command: Command, args, cell: None) -> None:
        display({"text/plain": help_text(args.topic), "text/html": help_html(args.topic)}, raw=True)


NboptMagics.nbopt.__doc__ = magic_doc()
