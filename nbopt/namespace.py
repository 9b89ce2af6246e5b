"""Find what a recipe name refers to: a notebook variable, an import path, or a built-in."""
from __future__ import annotations

import importlib
import re
from typing import Any

from nbopt.components import Component, ComponentSyntaxError, parse_component
from nbopt.errors import RecipeError, closest, shown
from nbopt.registry import Registry


_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class Reference:
    """What a `model:`/`data:` value points at: a user object (with call arguments) or a built-in."""

    def __init__(self, obj: Any = None, builtin: Component | None = None, label: str = "",
                 call_args: Component | None = None, hides: str | None = None):
        self.obj, self.builtin, self.label, self.call_args = obj, builtin, label, call_args
        self.hides = hides  # the kind of built-in a notebook variable of the same name hides, if any

    def hint(self) -> str:
        """For a variable of the wrong type that hides a built-in: the likely mistake, and its fix."""
        if not self.hides:
            return ""
        return (f"; this notebook variable hides nbopt's {self.hides} '{self.label}' — rename the variable "
                f"(or `del {self.label}`) to use the built-in")


def lookup(value: Any, key: str, registry: Registry, namespace: dict | None, line: int | None = None) -> Reference:
    """Notebook variables win over built-ins of the same name, as they would in Python."""
    if not isinstance(value, (str, dict)):
        return Reference(obj=value, label=type(value).__name__)
    if isinstance(value, str) and ":" in value and "(" not in value:
        return Reference(obj=_import(value, key, line), label=value)
    try:
        component = parse_component(value)
    except ComponentSyntaxError as exc:
        raise RecipeError(str(exc), key=key, line=line) from None
    namespace = namespace or {}
    if component.name in namespace:
        called = component if (component.args or component.kwargs or str(value).endswith(")")) else None
        return Reference(obj=namespace[component.name], label=component.name, call_args=called,
                         hides=registry.kind if component.name in registry else None)
    if component.name in registry:
        registry.resolve(component, key, line)  # validates the built-in's arguments now
        return Reference(builtin=component, label=component.to_text())
    user_names = [n for n in namespace if not n.startswith("_")]
    guess = closest(component.name, registry.names() + user_names)
    hint = f" — did you mean '{guess}'?" if guess else ""
    raise RecipeError(f"'{component.name}' is neither a notebook variable nor a {registry.kind} "
                      f"({', '.join(registry.names())}){hint}", key=key, line=line)


def _import(path: str, key: str, line: int | None) -> Any:
    if not _IMPORT_PATH.fullmatch(path):  # importlib's own errors for `:x` or `.mod:x` are not ImportErrors
        raise RecipeError(f"{shown(path)} is not an import path; write `package.module:name`", key=key, line=line)
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecipeError(f"cannot import '{module_name}' ({exc}); is the package installed or on sys.path?",
                          key=key, line=line) from None
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise RecipeError(f"'{module_name}' has no attribute '{attr}'", key=key, line=line) from None
    return obj
