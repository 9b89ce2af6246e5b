"""A component is a named, configurable piece of a recipe: an optimizer, a scheduler, a loss, ...

Users may write one in three equivalent forms, and all of them become the same ``Component``:

- a bare name: ``adam``
- call form: ``adam(lr=1e-3, betas=[0.9, 0.99])`` (positional arguments too: ``rotate(15)``)
- a mapping: ``{name: adam, lr: 1e-3}``
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

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
    raise ComponentSyntaxError(f"expected a name like `adam` or `adam(lr=1e-3)`, got {value!r}")


def _parse_call(text: str) -> Component:
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ComponentSyntaxError(f"cannot read {text!r}; write `name` or `name(arg=value, ...)`") from None
    if isinstance(node, ast.Name):
        return Component(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = tuple(_literal(a, text) for a in node.args)
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ComponentSyntaxError(f"cannot read {text!r}; `**` is not allowed in a recipe")
            kwargs[kw.arg] = _literal(kw.value, text)
        return Component(node.func.id, args, kwargs)
    raise ComponentSyntaxError(f"cannot read {text!r}; write `name` or `name(arg=value, ...)`")


def _literal(node: ast.AST, text: str) -> Any:
    """A literal argument; bare words are YAML-style constants (true, null) or plain strings."""
    if isinstance(node, ast.Name):
        return _WORD_CONSTANTS.get(node.id.lower(), node.id)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, text) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k, text): _literal(v, text) for k, v in zip(node.keys, node.values)}
    try:
        return ast.literal_eval(node)
    except ValueError:
        written = ast.get_source_segment(text, node) or ""
        if _BARE_PATH.fullmatch(written):  # `path=data/pets` or `digit-images`: a path, read as Python arithmetic
            return written
        raise ComponentSyntaxError(f"cannot read the argument {ast.unparse(node)!r} in {text!r}; use numbers, "
                                   "quoted text ('data/train.csv'), true/false and [lists]") from None
