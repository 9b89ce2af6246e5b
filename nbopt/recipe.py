"""The recipe: YAML text (or a dict) → a validated, typed ``Recipe``.

Everything that can be checked without touching data or a model is checked here, so that a typo
costs a second, not an epoch. Model and data names are resolved later, against the notebook.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from nbopt.components import Component, ComponentSyntaxError, parse_component
from nbopt.errors import RecipeError, closest
from nbopt.techniques.activations import ACTIVATIONS
from nbopt.techniques.augment import AUGMENTATIONS
from nbopt.techniques.losses import LOSSES
from nbopt.techniques.optimizers import OPTIMIZERS
from nbopt.techniques.schedulers import check_schedule
from nbopt.yamltext import load_yaml

PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "bf16-mixed", "bf16-true", "16-true",
              "transformer-engine")

_OTHER_MAGIC_KEYS = {"variants": "%%nbopt compare", "search": "%%nbopt sweep"}
_COMPONENT_KEYS = ("optimizer", "loss", "activation")
_OPTIMIZER_ARGUMENTS = {"lr", "learning_rate", "momentum", "weight_decay", "betas", "nesterov"}


class EarlyStopping(BaseModel):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs."""
    model_config = ConfigDict(extra="forbid")
    monitor: str = "val_loss"
    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)
    mode: Literal["min", "max"] | None = None


class Normalize(BaseModel):
    """Explicit per-channel (images) or per-feature (tables) mean and standard deviation."""
    model_config = ConfigDict(extra="forbid")
    mean: list[float]
    std: list[float]


class Prune(BaseModel):
    """Pruning after (`once`) or during (`gradual`) training, then `finetune` epochs at the final sparsity."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    method: Literal["l1_unstructured", "random_unstructured", "channels"] = "l1_unstructured"
    amount: float = Field(0.5, gt=0, lt=1)
    global_: bool = Field(False, alias="global")
    schedule: Literal["once", "gradual"] = "once"
    finetune: int = Field(2, ge=0)
    importance: Literal["l1", "l2", "taylor"] = "l1"
    steps: int = Field(1, ge=1)
    lr: float | None = Field(None, gt=0)


class Distill(BaseModel):
    """Train as the student of a frozen teacher: a·T²·KL(teacher ‖ student at temperature T) + (1−a)·task loss."""
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    teacher: Any
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)


class Recipe(BaseModel):
    """A validated recipe. ``raw`` keeps what the user wrote, for export and for variants."""
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    model: Any
    data: Any
    name: str | None = None
    target: str | None = None
    task: Literal["classification", "regression"] | None = None
    val_split: float = Field(0.2, gt=0, lt=1)
    test_split: float = Field(0.0, ge=0, lt=1)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(10, ge=1)
    seed: int = 0
    normalize: Literal["auto", "none"] | Normalize = "auto"
    loss: Component | None = None
    optimizer: Component = Component("adam")
    scheduler: list[Component] = Field(default_factory=list)
    early_stopping: EarlyStopping | None = None
    augment: list[Component] = Field(default_factory=list)
    batchnorm: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)
    activation: Component | None = None
    lr_find: bool = False
    prune: Prune | None = None
    distill: Distill | None = None
    quantize: Literal["dynamic"] | None = None
    devices: int | Literal["auto"] = 1
    nodes: int = 1
    strategy: str = "auto"
    grad_clip: float | None = Field(None, gt=0)
    accumulate: int = Field(1, ge=1)
    precision: str = "32-true"

    _raw: dict = PrivateAttr(default_factory=dict)
    _lines: dict = PrivateAttr(default_factory=dict)

    @property
    def raw(self) -> dict:
        return dict(self._raw)

    def line(self, key: str) -> int | None:
        return self._lines.get(key)

    def __eq__(self, other) -> bool:
        """Recipes are equal when they mean the same, however each was written (`adam(lr=0.1)` or a mapping)."""
        return isinstance(other, Recipe) and self.model_dump() == other.model_dump()

    __hash__ = None


KNOWN_KEYS = tuple(Recipe.model_fields)


def parse_recipe(source: str | dict | Recipe, lines: dict[str, int] | None = None) -> Recipe:
    """Validate a whole recipe, raising one RecipeError for the first mistake found.

    `lines` maps keys to line numbers for a dict that came from text (compare's variants do).
    """
    if isinstance(source, Recipe):
        return source
    if isinstance(source, str):
        raw, lines = load_yaml(source)
    elif isinstance(source, dict):
        raw, lines = dict(source), dict(lines or {})
    else:
        raise RecipeError(f"a recipe is YAML text or a dict, got {type(source).__name__}")
    _check_keys(raw, lines)
    values = dict(raw)
    for key in _COMPONENT_KEYS:
        if values.get(key) is not None:
            values[key] = _component(values[key], key, lines)
    values["scheduler"] = _component_list(values.get("scheduler"), "scheduler", lines)
    values["augment"] = _component_list(values.get("augment"), "augment", lines)
    if values.get("early_stopping") is True:
        values["early_stopping"] = {}
    elif values.get("early_stopping") is False:
        values["early_stopping"] = None
    if isinstance(values.get("distill"), str):
        values["distill"] = {"teacher": values["distill"]}
    if values.get("quantize") in (False, "none"):
        values["quantize"] = None
    if values.get("precision") is not None:
        values["precision"] = str(values["precision"])
    try:
        recipe = Recipe(**values)
    except ValidationError as exc:
        raise _as_recipe_error(exc, lines) from None
    recipe._raw, recipe._lines = raw, lines
    _check_components(recipe)
    return recipe


def _check_keys(raw: dict, lines: dict) -> None:
    for key in raw:
        if key in KNOWN_KEYS:
            continue
        line = lines.get(str(key))
        if key in _OTHER_MAGIC_KEYS:
            raise RecipeError(f"`{key}:` belongs in a {_OTHER_MAGIC_KEYS[key]} cell, not here", key=key, line=line)
        if key in _OPTIMIZER_ARGUMENTS:
            raise RecipeError(f"`{key}` is an optimizer argument; write it there, e.g. "
                              f"`optimizer: adam({'lr' if key == 'learning_rate' else key}={raw[key]!r})`",
                              key=key, line=line)
        guess = closest(str(key), list(KNOWN_KEYS))
        hint = f" — did you mean '{guess}'?" if guess else f"; valid keys: {', '.join(KNOWN_KEYS)}"
        raise RecipeError(f"unknown recipe key '{key}'{hint}", key=str(key), line=line)
    for required in ("model", "data"):
        if raw.get(required) is None:
            example = "mlp" if required == "model" else "digits"
            raise RecipeError(f"the recipe needs `{required}:` (e.g. `{required}: {example}`)", key=required)


def _component(value: Any, key: str, lines: dict) -> Component:
    try:
        return parse_component(value)
    except ComponentSyntaxError as exc:
        raise RecipeError(str(exc), key=key, line=lines.get(key)) from None


def _component_list(value: Any, key: str, lines: dict) -> list[Component]:
    if value is None or value == "none":
        return []
    items = value if isinstance(value, list) else [value]
    return [_component(item, key, lines) for item in items]


def _as_recipe_error(exc: ValidationError, lines: dict) -> RecipeError:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"] if not str(part).startswith(("literal[", "function-")))
    top = str(error["loc"][0]) if error["loc"] else "recipe"
    message = error["msg"]
    if message.startswith("Input should be"):
        message = "must be" + message[len("Input should be"):]
    elif error["type"] == "extra_forbidden":
        field = str(error["loc"][-1])
        model = {"early_stopping": EarlyStopping, "normalize": Normalize, "prune": Prune, "distill": Distill}.get(top)
        allowed = ", ".join(model.model_fields) if model else ""
        message = f"unknown setting '{field}'" + (f"; allowed: {allowed}" if allowed else "")
    else:
        message = message[0].lower() + message[1:]
    if error["type"] != "extra_forbidden" and "input" in error and not isinstance(error["input"], dict):
        message += f", got {error['input']!r}"
    return RecipeError(message, key=key or top, line=lines.get(key) or lines.get(top))


def _check_components(recipe: Recipe) -> None:
    OPTIMIZERS.resolve(recipe.optimizer, "optimizer", recipe.line("optimizer"))
    if recipe.loss is not None:
        LOSSES.resolve(recipe.loss, "loss", recipe.line("loss"))
    if recipe.activation is not None:
        ACTIVATIONS.resolve(recipe.activation, "activation", recipe.line("activation"))
    for component in recipe.augment:
        AUGMENTATIONS.resolve(component, "augment", recipe.line("augment"))
    if recipe.scheduler:
        check_schedule(recipe.scheduler, recipe.epochs, recipe.line("scheduler"))
    if recipe.precision not in PRECISIONS:
        guess = closest(recipe.precision, PRECISIONS)
        raise RecipeError(f"unknown precision '{recipe.precision}'" + (f" — did you mean '{guess}'?" if guess else
                          f"; choose from {', '.join(PRECISIONS)}"), key="precision", line=recipe.line("precision"))
    if recipe.prune is not None:
        _check_prune(recipe)
    if isinstance(recipe.devices, int) and recipe.devices < 1:
        raise RecipeError(f"devices must be at least 1, got {recipe.devices}", key="devices",
                          line=recipe.line("devices"))
    if recipe.nodes < 1:
        raise RecipeError(f"nodes must be at least 1, got {recipe.nodes}", key="nodes", line=recipe.line("nodes"))
    if recipe.test_split + recipe.val_split >= 0.9:
        raise RecipeError(f"val_split + test_split = {recipe.val_split + recipe.test_split:.2f} leaves too little "
                          "to train on; keep their sum below 0.9", key="val_split", line=recipe.line("val_split"))


def _check_prune(recipe: Recipe) -> None:
    prune, line = recipe.prune, recipe.line("prune")
    if prune.method == "channels" and prune.schedule == "gradual":
        raise RecipeError("channel pruning runs in `steps` with fine-tuning between them; use "
                          "{method: channels, steps: 3, finetune: 2} instead of schedule: gradual", key="prune.schedule",
                          line=recipe.line("prune.schedule") or line)
    if prune.method != "channels" and prune.steps > 1:
        raise RecipeError("`steps` is for channel pruning; unstructured pruning spreads over epochs with "
                          "schedule: gradual", key="prune.steps", line=recipe.line("prune.steps") or line)
    if prune.method != "channels" and prune.importance != "l1":
        raise RecipeError("`importance` is for channel pruning; unstructured pruning ranks by the method "
                          "(l1_unstructured or random_unstructured)", key="prune.importance",
                          line=recipe.line("prune.importance") or line)
