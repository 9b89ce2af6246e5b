"""A component is a named, configurable piece of a recipe: an optimizer, a scheduler, a loss, ...

Users may write one in three equivalent forms, and all of them become the same ``Component``:

- a bare name: ``adam``
- call form: ``adam(lr=1e-3, betas=[0.9, 0.99])`` (positional arguments too: ``rotate(15)``)
- a mapping: ``{name: adam, lr: 1e-3}``
"""
from __future__ import annotations

import ast
import re
import reprlib
import warnings
from dataclasses import dataclass, field
from typing import Any

from nbopt.errors import shown

# Unquoted words with slashes, dots and hyphens (a folder or file name) are text, as YAML would read them.
_BARE_PATH = re.compile(r"[A-Za-z_~][\w.~/\\-]*")
_WORD_CONSTANTS = {"true": True, "false": False, "yes": True, "no": False, "null": None, "none": None}


@dataclass(frozen=True)
class Component:
    name: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_text(self) -> str:
        """The call form, as a user would write it in a recipe."""
        parts = [_literal_text(a) for a in self.args]
        parts += [f"{k}={_literal_text(v)}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})" if parts else self.name

    def __str__(self) -> str:
        return self.to_text()


def _literal_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal_text(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) and not value.isidentifier() else str(value)


LARGEST_INTEGER = 2**63 - 1  # torch holds sizes, seeds and counts in 64 bits


def too_large(written: str) -> str:
    """The message for a whole number beyond 64 bits, in a call form or anywhere in a recipe."""
    return f"the number {shown(written, 24)} is too large; whole numbers in a recipe are at most 2**63 - 1"


class ComponentSyntaxError(ValueError):
    """The text looked like a component but could not be read; the message says why."""


def parse_component(value: Any) -> Component:
    """Turn any of the three written forms into a Component."""
    if isinstance(value, Component):
        return value
    if isinstance(value, dict):
        if "name" not in value:
            raise ComponentSyntaxError("a mapping component needs a `name:` entry, e.g. {name: adam, lr: 1e-3}")
        kwargs = {k: v for k, v in value.items() if k != "name"}
        return Component(str(value["name"]), (), kwargs)
    if isinstance(value, str):
        return _parse_call(value.strip())
    raise ComponentSyntaxError(f"expected a name like `adam` or `adam(lr=1e-3)`, got {reprlib.repr(value)}")


def _parse_call(text: str) -> Component:
    try:
        with warnings.catch_warnings():  # Python's hints for code (`1e` "invalid decimal literal"), not for recipes
            warnings.simplefilter("ignore", SyntaxWarning)
            node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):  # the last two: Python's parser on deep nesting
        raise ComponentSyntaxError(f"cannot read {shown(text)}; write `name` or `name(arg=value, ...)`") from None
    if isinstance(node, ast.Name):
        return Component(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = tuple(_literal(a, text) for a in node.args)
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ComponentSyntaxError(f"cannot read {shown(text)}; `**` is not allowed in a recipe")
            if kw.arg in kwargs:
                raise ComponentSyntaxError(f"`{kw.arg}` is given twice in {shown(text)}; keep one")
            kwargs[kw.arg] = _literal(kw.value, text)
        return Component(node.func.id, args, kwargs)
    raise ComponentSyntaxError(f"cannot read {shown(text)}; write `name` or `name(arg=value, ...)`")


def _literal(node: ast.AST, text: str) -> Any:
    """A literal argument; bare words are YAML-style constants (true, null) or plain strings."""
    if isinstance(node, ast.Name):
        return _WORD_CONSTANTS.get(node.id.lower(), node.id)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, text) for e in node.elts]
    try:
        if isinstance(node, ast.Dict):  # a key of `**` is None; a key that is a list is unhashable
            return {_literal(k, text): _literal(v, text) for k, v in zip(node.keys, node.values)}
        value = ast.literal_eval(node)
        if isinstance(value, int) and abs(value) > LARGEST_INTEGER:
            raise ComponentSyntaxError(too_large(ast.unparse(node)) + f", in {shown(text)}")
        return value
    except ComponentSyntaxError:
        raise
    except (ValueError, TypeError):
        written = ast.get_source_segment(text, node) or ""
        if _BARE_PATH.fullmatch(written):  # `path=data/pets` or `digit-images`: a path, read as Python arithmetic
            return written
        raise ComponentSyntaxError(f"cannot read the argument {shown(ast.unparse(node))} in {shown(text)}; use "
                                   "numbers, quoted text ('data/train.csv'), true/false and [lists]") from None
