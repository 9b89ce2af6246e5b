"""Name → component tables, with the help text and argument checks generated from them.

Every recipe key that takes a component (optimizer, scheduler, loss, model, data, ...) has one
``Registry``. Validation, ``%nbopt help KEY`` and the panel all read the same table, so the help a
user sees cannot drift from what the code accepts.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nbopt.components import Component
from nbopt.errors import RecipeError, closest, shown, unknown_name_message


@dataclass
class Entry:
    name: str
    summary: str
    build: Callable
    params: dict[str, Any] = field(default_factory=dict)  # argument name -> default (inspect.Parameter.empty: required)
    positional: tuple[str, ...] = ()  # argument names that call form may give positionally, in order

    def signature_text(self) -> str:
        parts = []
        for name, default in self.params.items():
            parts.append(name if default is inspect.Parameter.empty else f"{name}={default!r}")
        return f"{self.name}({', '.join(parts)})" if parts else self.name


def params_of(func: Callable, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Keyword arguments a user may set, read from a function's or class's signature."""
    params = {}
    for p in inspect.signature(func).parameters.values():
        if p.name in skip or p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        params[p.name] = p.default
    return params


class Registry:
    """The valid names for one recipe key, each with a builder and its arguments."""

    def __init__(self, key: str, kind: str):
        self.key = key  # recipe key, e.g. "optimizer"
        self.kind = kind  # word used in messages, e.g. "optimizer"
        self.entries: dict[str, Entry] = {}

    def add(self, name: str, build: Callable, summary: str, params: dict[str, Any] | None = None,
            positional: tuple[str, ...] | None = None) -> Entry:
        params = params_of(build) if params is None else params
        entry = Entry(name, summary, build, params, tuple(params)[:1] if positional is None else positional)
        self.entries[name] = entry
        return entry

    def register(self, name: str, summary: str, positional: tuple[str, ...] | None = None,
                 skip: tuple[str, ...] = ()):
        """Decorator form of :meth:`add`; the function's keyword arguments are the component's."""
        def decorate(func):
            self.add(name, func, summary, params_of(func, skip), positional)
            return func
        return decorate

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        return sorted(self.entries)

    def resolve(self, component: Component, key: str | None = None, line: int | None = None
                ) -> tuple[Entry, dict[str, Any]]:
        """The entry and keyword arguments for a component, or a RecipeError naming the mistake."""
        key = key or self.key
        entry = self.entries.get(component.name) or self.entries.get(component.name.lower())
        if entry is None:
            raise RecipeError(unknown_name_message(self.kind, component.name, self.entries), key=key, line=line)
        if len(component.args) > len(entry.positional):
            allowed = ", ".join(entry.positional) or "none"
            raise RecipeError(
                f"{entry.name} takes {len(entry.positional)} positional argument(s) ({allowed}), "
                f"got {len(component.args)}; write them as name=value: {entry.signature_text()}",
                key=key, line=line)
        kwargs = dict(zip(entry.positional, component.args))
        for arg, value in component.kwargs.items():
            if arg in kwargs:
                raise RecipeError(f"{entry.name} got `{arg}` twice", key=key, line=line)
            kwargs[arg] = value
        for arg in kwargs:
            if arg not in entry.params:
                guess = closest(arg, entry.params)
                hint = f" — did you mean '{guess}'?" if guess else f"; it accepts {entry.signature_text()}"
                raise RecipeError(f"{entry.name} has no argument {shown(arg)}{hint}", key=key, line=line)
        missing = [arg for arg, default in entry.params.items() if default is inspect.Parameter.empty
                   and arg not in kwargs]
        if missing:
            raise RecipeError(f"{entry.name} needs {', '.join(missing)}: write {entry.signature_text()}",
                              key=key, line=line)
        return entry, kwargs

    def help_rows(self) -> list[tuple[str, str]]:
        return [(e.signature_text(), e.summary) for _, e in sorted(self.entries.items())]
