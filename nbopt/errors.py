"""The one error type a user sees for a mistake in a recipe.

It derives from IPython's ``UsageError`` so that a notebook shows it as a single line without a
traceback; outside IPython it is an ordinary exception with the same one-line message.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

from IPython.core.error import UsageError


class RecipeError(UsageError, ValueError):
    """A recipe (or magic option) that cannot work, found before any training starts."""

    def __init__(self, message: str, *, key: str | None = None, line: int | None = None):
        self.key = key
        self.line = line
        self.message = message  # without the "key (line N): " prefix
        where = ""
        if key is not None:  # a key is the user's text: a newline or a pasted blob in it must not break the line
            label = str(key) if str(key).isprintable() and len(str(key)) <= 80 else shown(key, 80)
            where = label + (f" (line {line})" if line is not None else "") + ": "
        super().__init__(where + message)


def shown(value, limit: int = 60) -> str:
    """User text quoted for a one-line message: repr escapes newlines and control characters, and text
    longer than `limit` is cut, so neither a stray newline nor a pasted blob breaks the one line."""
    text = str(value)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The valid name a typo most likely meant, or None when nothing is close.

    Fewest edits wins (a swap of two letters counts as one, so 'adma' means 'adam', not 'adamax');
    difflib's similarity breaks ties and catches longer misspellings.
    """
    typed = str(name)
    name = typed.lower()
    choices = list(choices)
    scored = [(_edit_distance(name, c.lower()), -difflib.SequenceMatcher(None, name, c.lower()).ratio(),
               _edit_distance(typed, c), c) for c in choices]
    scored = [s for s in scored if s[0] <= max(1, len(name) // 3) or -s[1] >= 0.75]
    return min(scored)[3] if scored else None


def _edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps."""
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def unknown_name_message(kind: str, name: str, choices: Iterable[str]) -> str:
    """``unknown optimizer 'adma' — did you mean 'adam'?`` (or the list of valid names)."""
    choices = sorted(choices)
    guess = closest(name, choices)
    if guess is not None:
        return f"unknown {kind} {shown(name)} — did you mean '{guess}'?"
    return f"unknown {kind} {shown(name)} — choose from: {', '.join(choices)}"


def show_recipe_errors_as_one_line(shell) -> None:
    """Make IPython show a RecipeError as one line, like the UsageError it derives from.

    IPython shortens only exact ``UsageError`` instances; subclasses would print a full traceback.
    A handler a user installed before keeps handling its own exception types.
    """
    if RecipeError in shell.custom_exceptions:
        return
    previous_types, previous = shell.custom_exceptions, shell.CustomTB

    def handler(self, etype, value, tb, tb_offset=None):
        if issubclass(etype, RecipeError):
            self._showtraceback(etype, value, [f"RecipeError: {value}"])
            return None
        return previous(etype, value, tb, tb_offset=tb_offset)

    shell.set_custom_exc((RecipeError, *previous_types), handler)
