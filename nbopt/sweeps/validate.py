"""Before any trial runs, every value the search space can give must make a recipe that trains.

Each parameter's choices and bounds are tried one at a time in the cell's recipe, through the check
a trial makes (recipe, data, model built and run on a batch) plus the optimizer, which training
builds first; so is a fraction of a range between whole numbers, which a setting that takes whole
numbers cannot take. A value that would fail its trial is a one-line RecipeError naming the search
key now, not a sweep of failed trials later (failed trials do not count towards --trials, so a
space that always fails would never end).
"""
from __future__ import annotations

import inspect
import math

from nbopt.components import Component, ComponentSyntaxError, parse_component
from nbopt.errors import RecipeError
from nbopt.recipe import Recipe, parse_recipe
from nbopt.sweeps.space import Param, apply, label, midpoint


def check_space(base: dict, params: list[Param], lines: dict, namespace: dict):
    """The Plan of the space's midpoint, or a RecipeError for the first value that cannot train."""
    for param in params:
        for value, told, hint in _candidates(param):
            recipe = apply(base, param.key, value, param.line)
            where = {"key": f"search.{param.key}", "line": param.line}
            try:
                _check(recipe, lines, namespace)
            except RecipeError as exc:
                hint = hint or _argument_hint(base, param)
                raise RecipeError(f"{told} makes an invalid recipe: {exc}" + (f"; {hint}" if hint else ""),
                                  **where) from None
            except Exception as exc:  # the model, data or optimizer cannot be built with it: a TypeError, mostly
                reason = type(exc).__name__ + (f": {str(exc).splitlines()[0]}" if str(exc).strip() else "")
                raise RecipeError(f"{told} makes {_owner(base, param.key)} fail ({reason}); "
                                  f"{hint or _what_to_search(base, param)}", **where) from None
    return _check(midpoint(base, params), lines, namespace)


def _check(recipe: dict, lines: dict, namespace: dict):
    """The trial's own check, then its optimizer, which check() leaves to training."""
    from nbopt.plan import check
    from nbopt.techniques.optimizers import build_optimizer
    plan = check(parse_recipe(recipe, lines), namespace)
    build_optimizer(plan.recipe.optimizer, plan.model.net.parameters(), line=plan.recipe.line("optimizer"))
    return plan


def _candidates(param: Param) -> list[tuple[object, str, str]]:
    """(value, how a message names it, what to do when only it fails) for each value worth trying."""
    if param.kind == "choice":
        return [(choice, f"the choice {label(choice)}", "") for choice in param.choices]
    cast = int if param.kind == "int" else float
    values = [(cast(bound), f"the bound {bound:g}", "") for bound in (param.low, param.high)]
    if param.kind != "int" and not param.step and param.low.is_integer() and param.high.is_integer():
        fraction = math.floor((param.low + param.high) / 2) + 0.5
        values.append((fraction, f"a fraction such as {fraction:g}",
                       f"for whole numbers write int({param.low:g}, {param.high:g})"))
    return values


def _owner(base: dict, key: str) -> str:
    """What a value at `key` is given to: the component (`mlp` for model.hidden), else the key."""
    top, _, arg = key.partition(".")
    component = _component(base, top) if arg else None
    return component.name if component is not None else top


def _argument_hint(base: dict, param: Param) -> str:
    """For a component argument the component could not be built with: what kind of value it takes."""
    if "." not in param.key or _example(base, param.key) is None:
        return ""
    return _what_to_search(base, param)


def _what_to_search(base: dict, param: Param) -> str:
    example = _example(base, param.key)
    if example is None:
        return f"search values that {_owner(base, param.key)} takes"
    then = "make each choice such a value" if param.kind == "choice" else "search a list of such values"
    return f"{param.key} takes values like {label(example)}: {then}"


def _example(base: dict, key: str):
    """The recipe's own value at `key`, else the component's default: an example of what it takes."""
    top, _, arg = key.partition(".")
    if not arg:
        return base.get(top)
    component = _component(base, top)
    if component is None:
        return None
    if arg in component.kwargs:
        return component.kwargs[arg]
    from nbopt.helptext import registries
    registry = registries().get(top)
    entry = registry.entries.get(component.name) if registry is not None else None
    default = entry.params.get(arg) if entry is not None else None
    return None if default is inspect.Parameter.empty else default


def _component(base: dict, top: str) -> Component | None:
    current = base.get(top)
    if current is None and top in Recipe.model_fields:
        current = Recipe.model_fields[top].default
    try:
        return parse_component(current)
    except ComponentSyntaxError:
        return None
