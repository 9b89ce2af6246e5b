"""`search:` — the search space: dotted recipe keys mapped to distributions or lists of choices.

    search:
      optimizer.lr: loguniform(1e-4, 1e-1)
      batch_size: [32, 64, 128]
      mlp.hidden: ...                  # (model arguments: `model.hidden`)
      optimizer: [adam, sgd(momentum=0.9)]
      augment: [[], [hflip], [hflip, rotate(15)]]

A dotted key reaches into a component's arguments (`optimizer.lr` sets `lr` of the optimizer) or a
mapping (`prune.amount`); a plain key replaces the whole value.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass

import optuna

from nbopt.components import Component, ComponentSyntaxError, parse_component
from nbopt.errors import RecipeError
from nbopt.recipe import KNOWN_KEYS, Recipe

_MAPPING_KEYS = {"early_stopping", "prune", "distill", "normalize"}


@dataclass(frozen=True)
class Param:
    key: str  # dotted recipe key
    kind: str  # loguniform | uniform | int | choice
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple = ()
    line: int | None = None  # of the key in the recipe, for messages

    def suggest(self, trial: optuna.Trial):
        if self.kind == "loguniform":
            return trial.suggest_float(self.key, self.low, self.high, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1))
        return self.value_of(trial.suggest_categorical(self.key, [label(c) for c in self.choices]))

    def stored(self, value):
        """A value as Optuna stores it (choices by their label): how a grid point is queued."""
        return label(value) if self.kind == "choice" else value

    def value_of(self, suggested):
        """The recipe value for what Optuna stored (choices are stored by their label)."""
        if self.kind == "choice":
            return {label(c): c for c in self.choices}[suggested]
        return suggested

    def grid(self) -> list:
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.kind == "uniform" and self.step:
            count = int(round((self.high - self.low) / self.step))
            return [self.low + i * self.step for i in range(count + 1)]
        raise RecipeError(f"a grid needs a finite list of values, but {self.key} is {self.kind}"
                          f"({self.low}, {self.high}); give a list of values, or int(lo, hi) / "
                          "uniform(lo, hi, step=…)", key=f"search.{self.key}", line=self.line)

    def describe(self) -> str:
        if self.kind == "choice":
            return "[" + ", ".join(str(label(c)) for c in self.choices) + "]"
        step = f", step={self.step:g}" if self.step else ""
        return f"{self.kind}({self.low:g}, {self.high:g}{step})"


def label(choice) -> str | int | float | bool | None:
    """Optuna stores categorical choices as plain values; lists and mappings become their JSON text."""
    if isinstance(choice, (str, int, float, bool)) or choice is None:
        return choice
    return json.dumps(choice)


_DISTRIBUTIONS = {"loguniform": ("low", "high"), "uniform": ("low", "high", "step"), "int": ("low", "high", "step")}


def parse_space(search, lines: dict) -> list[Param]:
    if not isinstance(search, dict) or not search:
        raise RecipeError("a sweep needs a `search:` mapping of recipe keys to spaces, e.g.\n"
                          "search: {optimizer.lr: loguniform(1e-4, 1e-1), batch_size: [32, 64, 128]}",
                          key="search", line=lines.get("search"))
    params = []
    for key, space in search.items():
        line = lines.get(f"search.{key}")
        top = str(key).split(".")[0]
        if top not in KNOWN_KEYS:
            from nbopt.errors import closest
            guess = closest(top, KNOWN_KEYS)
            raise RecipeError(f"'{key}' is not a recipe key" + (f" — did you mean '{guess}'?" if guess else ""),
                              key=f"search.{key}", line=line)
        params.append(_param(str(key), space, line))
    return params


def _param(key: str, space, line) -> Param:
    if isinstance(space, list):
        if not space:
            raise RecipeError("an empty list of choices", key=f"search.{key}", line=line)
        return Param(key, "choice", choices=tuple(space), line=line)
    if isinstance(space, str):
        try:
            component = parse_component(space)
        except ComponentSyntaxError:
            component = None
        if component is not None and component.name in _DISTRIBUTIONS:
            return _distribution(key, space, component, line)
    raise RecipeError(f"expected loguniform(lo, hi), uniform(lo, hi), int(lo, hi) or a list of choices, "
                      f"got {space!r}", key=f"search.{key}", line=line)


def _distribution(key: str, text: str, component: Component, line) -> Param:
    kind, names = component.name, _DISTRIBUTIONS[component.name]
    form = f"{kind}(low, high" + (", step=…)" if "step" in names else ")")
    where = {"key": f"search.{key}", "line": line}
    values = dict(zip(names, component.args)) | component.kwargs
    if set(values) - set(names) or "low" not in values or "high" not in values:
        raise RecipeError(f"write {form}", **where)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
        raise RecipeError(f"write {form} with numbers, got {text}", **where)
    if kind == "int" and not all(float(v).is_integer() for v in values.values()):
        raise RecipeError(f"int takes whole numbers, got {text}; for fractions write uniform(low, high)", **where)
    low, high, step = float(values["low"]), float(values["high"]), values.get("step")
    if not low < high or (kind == "loguniform" and low <= 0):
        raise RecipeError(f"{kind} needs 0 < low < high" if kind == "loguniform"
                          else f"{kind} needs low < high, got ({low:g}, {high:g})", **where)
    if step is not None and not step > 0:
        raise RecipeError(f"{kind} needs a step above 0, got step={step:g}", **where)
    return Param(key, kind, low, high, step, line=line)


def apply(recipe: dict, key: str, value, line: int | None = None) -> dict:
    """A copy of the recipe with `value` at the dotted `key` (`line`: the key's, for messages)."""
    recipe = copy.deepcopy(recipe)
    top, _, rest = key.partition(".")
    if not rest:
        recipe[top] = value
        return recipe
    current = recipe.get(top)
    if top in _MAPPING_KEYS or isinstance(current, dict) and "name" not in current:
        mapping = dict(current or {})
        _set_nested(mapping, rest, value)
        recipe[top] = mapping
        return recipe
    if current is None:
        default = Recipe.model_fields[top].default if top in Recipe.model_fields else None
        current = default.to_text() if isinstance(default, Component) else None
    if current is None:
        raise RecipeError(f"the search sets `{key}`, but the recipe has no `{top}:` to set it on; add one, "
                          f"e.g. `{top}: {_example(top)}`", key=f"search.{key}", line=line)
    try:
        component = parse_component(current)
    except ComponentSyntaxError as exc:
        raise RecipeError(f"cannot set `{key}`: {exc}", key=f"search.{key}", line=line) from None
    recipe[top] = Component(component.name, component.args, {**component.kwargs, rest: value}).to_text()
    return recipe


def _set_nested(mapping: dict, dotted: str, value) -> None:
    head, _, rest = dotted.partition(".")
    if rest:
        mapping[head] = dict(mapping.get(head) or {})
        _set_nested(mapping[head], rest, value)
    else:
        mapping[head] = value


def _example(top: str) -> str:
    return {"optimizer": "adam", "scheduler": "cosine", "loss": "cross_entropy", "model": "mlp"}.get(top, "…")


def midpoint(base: dict, params: list[Param]) -> dict:
    """One representative recipe of the space (first choices, geometric/arithmetic middles)."""
    recipe = base
    for param in params:
        if param.kind == "choice":
            value = param.choices[0]
        elif param.kind == "loguniform":
            value = math.sqrt(param.low * param.high)
        elif param.kind == "int":
            value = int(param.low)
        else:
            value = param.low
        recipe = apply(recipe, param.key, value)
    return recipe
